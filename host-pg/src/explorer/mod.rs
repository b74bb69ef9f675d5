//! The background explorer ("ruvector_dag explorer", one per learning database, started by the
//! launcher on demand: when a statement is offered; it stops after [`IDLE_EXIT_S`] without one,
//! so an idle database holds no `max_worker_processes` slot for it): exploration off the users'
//! path.
//!
//! In `learn` mode a statement whose shape has untried candidate plans (or a plan under trial)
//! is offered to a bounded shared-memory queue ([`offer`]: its text, parameters, role and the
//! settings that change plans; only plain read-only SELECTs without volatile functions). The
//! explorer takes the offers one at a time and, in a READ ONLY transaction per run, as the
//! statement's role (`SECURITY_RESTRICTED_OPERATION`), with the session's settings:
//! 1. plans the statement under the default and under every arm BTSP memory does not block
//!    (`EXPLAIN`, nothing run), and records the candidate plans;
//! 2. runs what the optimizer's [`explore_step`](ruvector_dag_core::learning::Optimizer::explore_step)
//!    names (the default plan, a trial, an untried plan) with `EXPLAIN ANALYZE` (the rows are
//!    not sent anywhere), under a statement timeout at [`explore_timeout_ms`] (2x the default
//!    plan's typical time + 50 ms): a loser is cut short and recorded as at least that slow;
//! 3. records every run in the shared ring as a background run (the learner observes it: the
//!    same evidence the foreground uses, without charging the users' exploration budget);
//!    until the evidence settles every candidate or [`EXPLORE_MAX_RUNS`] runs were made.
//!
//! The offers take turns: when other statements wait, one goes back to the end of the queue
//! after [`RUNS_PER_TURN`] runs, or at once when its shape has a verified plan (what users gain
//! most from is a first verified plan for a shape that has none).
//!
//! It is paced by `ruvector.dag_explore_share` (after a run of t ms it waits t x (1 - share) /
//! share), waits while as many client backends and their parallel workers are active as the
//! machine has cores, and waits while `ruvector_dag_explorer_pause()` is in effect. It and the
//! parallel workers of its statements run at `ruvector.dag_explorer_nice` (0, a user's
//! priority, by default), and a run that waited for a CPU too long is not evidence
//! ([`priority`]). A statement it cannot re-plan or re-run (a
//! dropped table, a revoked permission, a changed search_path) is dropped with a counted reason
//! and its shape never offered again until the server restarts; nothing it does is an error in
//! a user's session. It keeps no query text beyond its queue slot.

pub mod offer;
pub mod priority;

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::time::{Duration, Instant};

use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::prelude::*;
use ruvector_dag_core::learning::{
    explore_timeout_ms, Candidate, Decision, Exploration, Rule, RunKind, Step, EXPLORE_MAX_RUNS,
};

use crate::shared::{self, ExplorerCounter};
use crate::{guc, hooks, learner};
use offer::Offer;

/// The default plan's own runs are cut at this many times its typical time (candidates at the
/// core's [`explore_timeout_ms`]).
pub const DEFAULT_TIMEOUT_RATIO: f64 = 5.0;
/// An explorer whose queue stayed empty this long stops, seconds; the launcher starts
/// one again when a statement is offered (`shared::offer` wakes it). A background worker takes
/// one of `max_worker_processes`, which users' parallel queries share: an explorer waiting for
/// work would keep a parallel worker from them.
pub const IDLE_EXIT_S: u64 = 60;
/// A shape explored this recently is not explored again (the learner has not published what
/// the explorer measured yet, or nothing was left), seconds.
pub const REVISIT_AFTER_S: u64 = 30;
/// Longest wait for the server to be less busy before an offer is given back, seconds.
pub const BUSY_WAIT_S: u64 = 30;
/// Runs of one offered statement before it goes back to the end of the queue when other
/// statements wait (at once when its shape has a verified plan): one slow shape with many
/// candidates does not hold up the shapes offered after it.
pub const RUNS_PER_TURN: usize = 3;

/// The shortest quiet window (no user's statement started) an explorer waits for once a run
/// was given up, ms.
pub const QUIET_MIN_MS: u32 = 50;
/// The longest, ms.
pub const QUIET_MAX_MS: u32 = 5_000;
/// A run that completed shortens the window to this share of what it was (below
/// [`QUIET_MIN_MS`], to none): about seven runs completed undo one given up, so at most about
/// one run in eight is given up in a steady state.
pub const QUIET_SHRINK: f64 = 0.9;
/// The window halves for every this many seconds without a run given up (the users' pattern
/// changed; an explorer that had no offers for a while starts afresh).
pub const QUIET_HALF_LIFE_S: u64 = 60;
/// A run expected to take `t` waits for a quiet window of at most this many times `t` (not
/// less than [`QUIET_MIN_MS`]): a quiet as long as that is a gap the run fits in, whatever the
/// window grew to ([`Backoff::needed`]).
pub const QUIET_RUN_FACTOR: f64 = 2.0;
/// The users' gaps (how long after one user's statement started the next did) the explorer
/// remembers, the latest: [`Backoff::needed`] starts a run where most gaps as long as the quiet
/// so far went on long enough for it.
pub const GAPS_KEPT: usize = 16;
/// Gaps remembered before they decide anything (fewer: the window alone).
pub const GAPS_MIN: usize = 4;
/// A gap fits a run expected to take `t` when it lasts `GAP_MARGIN` x `t` past the quiet at
/// which the run starts (a candidate plan can be slower than the default plan's typical time).
pub const GAP_MARGIN: f64 = 1.5;
/// What the explorer expects planning an offered statement under every arm to take, ms (the
/// quiet it waits for before that, at most: [`Backoff::needed`]).
pub const PLANNING_EXPECTED_MS: f64 = 50.0;

/// How long no user's statement must have started before the explorer starts a run.
///
/// A run given up for a user's statement ([`yield_run`]) is wasted work, and until it stops
/// it competes with that statement: it started in a gap between the users' statements that was
/// shorter than the run. Where the gaps are that short (a client that connects for each query
/// and keeps the cores busy between its connections) the explorer waits for a longer quiet
/// before its next run: the window doubles with each run given up (from [`QUIET_MIN_MS`] up to
/// [`QUIET_MAX_MS`]), shrinks with each run that completed ([`QUIET_SHRINK`]) and decays while
/// no run is given up ([`QUIET_HALF_LIFE_S`]). Without runs given up it is zero: the explorer
/// runs as soon as the users leave a core free, as before. The quiet a run waits for is at most
/// [`QUIET_RUN_FACTOR`] times what the run is expected to take ([`Backoff::needed`]): users
/// who start a statement every 2 s leave gaps a 300 ms run fits in, and a window grown past 2 s
/// would never see one.
///
/// Waiting for a quiet of twice the run is still too long where the users' gaps are regular:
/// a session that runs a statement, then two short ones, then sleeps 2 s leaves a 2 s gap a
/// 900 ms run fits in only when it starts at once, not after 1.8 s of it (the explorer gave up
/// every run of such a statement, ten in a row, on a slow CI machine). So the explorer also
/// remembers the users' latest gaps ([`GAPS_KEPT`], measured while it waits) and, once a run
/// was given up, starts at the shortest quiet after which more than half of the gaps that lasted
/// that long went on for the run too ([`GAP_MARGIN`]); a run given up is a gap as well (the one
/// that ended it), a gap during which the users' statements took every core is none. It only
/// ever shortens the wait: where no remembered gap fits the run, the window and its cap
/// decide, as before.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Backoff {
    quiet_ms: u32,
    /// When a run was last given up.
    last_yield: Option<Instant>,
    /// The users' statement count last seen ([`shared::user_starts`]), since when it has
    /// not moved, and whether that moment was seen (the explorer was watching when the count
    /// moved): the quiet so far, carried from one wait to the next (planning a statement's
    /// candidates between two waits does not start the quiet over).
    seen: Option<(u64, Instant, bool)>,
    /// When the count was last read: a move seen within [`WATCHING`] of it ends a gap whose
    /// length is known.
    last_read: Option<Instant>,
    /// The latest gaps, ms ([`GAPS_KEPT`], a ring: `gaps_len` of them, the next at `gaps_next`).
    gaps: [u32; GAPS_KEPT],
    gaps_len: u8,
    gaps_next: u8,
}

/// Two reads of the users' statement count this close watched the gap between them (the
/// explorer polls every 20 ms while it waits).
const WATCHING: Duration = Duration::from_millis(60);

impl Backoff {
    /// The users had started `starts` statements in all at `now`: how long no user's statement
    /// has started (since this count was first seen).
    pub fn quiet_for(&mut self, starts: u64, now: Instant) -> Duration {
        let watching = self
            .last_read
            .is_some_and(|r| now.saturating_duration_since(r) <= WATCHING);
        self.last_read = Some(now);
        match self.seen {
            Some((n, since, _)) if n == starts => now.saturating_duration_since(since),
            seen => {
                // A gap seen from its start to its end: remembered.
                if let Some((_, since, true)) = seen.filter(|_| watching) {
                    self.remember_gap(now.saturating_duration_since(since));
                }
                self.seen = Some((starts, now, watching));
                Duration::ZERO
            }
        }
    }

    /// A run was given up at `now` for a user's statement, one of `starts` started in all:
    /// the gap the run began in ended there.
    pub fn yielded(&mut self, now: Instant, starts: u64) {
        self.quiet_ms = self
            .window_ms(now)
            .saturating_mul(2)
            .clamp(QUIET_MIN_MS, QUIET_MAX_MS);
        self.last_yield = Some(now);
        // Known when the statement that ended the run was the only one started in it.
        if let Some((n, since, true)) = self.seen {
            if starts == n + 1 {
                self.remember_gap(now.saturating_duration_since(since));
            }
        }
        self.seen = Some((starts, now, true));
        self.last_read = Some(now);
    }

    /// The users' statements executing take every core at this read: the gap under way is no
    /// room for a run, and is not remembered as one.
    pub fn cores_busy(&mut self) {
        if let Some(seen) = &mut self.seen {
            seen.2 = false;
        }
    }

    fn remember_gap(&mut self, gap: Duration) {
        self.gaps[usize::from(self.gaps_next)] = gap.as_millis().min(u128::from(u32::MAX)) as u32;
        self.gaps_next = ((usize::from(self.gaps_next) + 1) % GAPS_KEPT) as u8;
        self.gaps_len = (usize::from(self.gaps_len) + 1).min(GAPS_KEPT) as u8;
    }

    /// The users' latest gaps, ms (oldest first, or in any order once the ring is full).
    pub fn gaps(&self) -> &[u32] {
        &self.gaps[..usize::from(self.gaps_len)]
    }

    /// The shortest quiet, ms, after which more than half of the remembered gaps that lasted
    /// that long went on for a run expected to take `expected_ms` ([`GAP_MARGIN`]); None with
    /// fewer than [`GAPS_MIN`] gaps or where no quiet is such.
    pub fn fitting_quiet_ms(&self, expected_ms: f64) -> Option<u32> {
        let gaps = self.gaps();
        if gaps.len() < GAPS_MIN {
            return None;
        }
        let run = GAP_MARGIN * expected_ms;
        // What the quiet so far knows changes only where it passes a gap's length.
        let mut quiets = [0u32; GAPS_KEPT + 1];
        quiets[1..=gaps.len()].copy_from_slice(gaps);
        let quiets = &mut quiets[..=gaps.len()];
        quiets.sort_unstable();
        quiets.iter().copied().find(|&q| {
            let (lasted, fit) = gaps.iter().filter(|&&g| g > q).fold((0, 0), |(n, f), &g| {
                (n + 1, f + usize::from(f64::from(g) >= f64::from(q) + run))
            });
            2 * fit > lasted
        })
    }

    /// A run completed (at `now`).
    pub fn completed(&mut self, now: Instant) {
        let shrunk = (self.window_ms(now) as f64 * QUIET_SHRINK) as u32;
        self.quiet_ms = if shrunk < QUIET_MIN_MS { 0 } else { shrunk };
        self.last_yield = self.last_yield.filter(|_| self.quiet_ms > 0);
    }

    /// The quiet to wait for at `now` before a run expected to take `expected_ms` (None: not
    /// known): the window, but at most [`QUIET_RUN_FACTOR`] times the run (and not less than
    /// [`QUIET_MIN_MS`]), and at most the quiet after which the users' gaps say the run fits
    /// ([`Backoff::fitting_quiet_ms`]).
    pub fn needed(&self, now: Instant, expected_ms: Option<f64>) -> Duration {
        let window = f64::from(self.window_ms(now));
        let ms = match expected_ms {
            Some(t) if t.is_finite() && t >= 0.0 => {
                let capped = window.min((QUIET_RUN_FACTOR * t).max(f64::from(QUIET_MIN_MS)));
                // The users' gaps say where a run this long fits: sooner, perhaps.
                match self.fitting_quiet_ms(t) {
                    Some(q) if window > 0.0 => capped.min(f64::from(q)),
                    _ => capped,
                }
            }
            _ => window,
        };
        Duration::from_secs_f64(ms / 1000.0)
    }

    /// The quiet window in force at `now`, ms.
    pub fn window_ms(&self, now: Instant) -> u32 {
        let Some(at) = self.last_yield else {
            return self.quiet_ms;
        };
        let halvings = now.saturating_duration_since(at).as_secs() / QUIET_HALF_LIFE_S;
        let w = self
            .quiet_ms
            .checked_shr(halvings.min(31) as u32)
            .unwrap_or(0);
        if w < QUIET_MIN_MS {
            0
        } else {
            w
        }
    }
}

/// `STATEMENT_TIMEOUT` of `enum TimeoutId` (utils/timeout.h, the same from 15 to 18; pgrx
/// does not bind that header).
const STATEMENT_TIMEOUT: std::ffi::c_int = 3;

extern "C-unwind" {
    /// postgres.c's SIGTERM handler (pgrx's binding of it is a Rust wrapper, not a handler).
    #[link_name = "die"]
    fn postgres_die(signal: std::ffi::c_int);
    fn enable_timeout_after(id: std::ffi::c_int, delay_ms: std::ffi::c_int);
    fn disable_timeout(id: std::ffi::c_int, keep_indicator: bool);
    fn get_timeout_indicator(id: std::ffi::c_int, reset_indicator: bool) -> bool;
}

/// A run's statement is executing (set around it in [`run`]): SIGUSR2 cancels it then.
static RUN_EXECUTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// A SIGUSR2 cancelled (or came at the end of) the run executing.
static YIELDED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// SIGUSR2: a user's statement started that leaves the cores fewer than the processes executing
/// (`hooks::Executing`, `shared::ask_explorers_to_yield`): cancel the run executing, as a
/// statement cancel does (its parallel workers end with it). Between runs it only wakes the
/// latch. Async-signal-safe: atomics, PostgreSQL's interrupt flags and SetLatch.
unsafe extern "C-unwind" fn yield_run(_signal: std::ffi::c_int) {
    let saved = *libc::__errno_location();
    if RUN_EXECUTING.load(std::sync::atomic::Ordering::Acquire) {
        YIELDED.store(true, std::sync::atomic::Ordering::Release);
        std::ptr::write_volatile(&raw mut pg_sys::QueryCancelPending, 1);
        std::ptr::write_volatile(&raw mut pg_sys::InterruptPending, 1);
    }
    if !pg_sys::MyLatch.is_null() {
        pg_sys::SetLatch(pg_sys::MyLatch);
    }
    *libc::__errno_location() = saved;
}

/// Install [`yield_run`] as the SIGUSR2 handler (a background worker ignores SIGUSR2 otherwise).
unsafe fn yield_on_sigusr2() {
    /// SIGUSR2 on Linux.
    const SIGUSR2: std::ffi::c_int = 12;
    set_handler(SIGUSR2, yield_run);
}

/// Make `handler` the process's handler of `signal` (PostgreSQL's `pqsignal`).
unsafe fn set_handler(
    signal: std::ffi::c_int,
    handler: unsafe extern "C-unwind" fn(std::ffi::c_int),
) {
    #[cfg(not(feature = "pg18"))]
    pg_sys::pqsignal(signal, Some(handler));
    #[cfg(feature = "pg18")]
    pg_sys::pqsignal_be(signal, Some(handler));
}

/// Install PostgreSQL's `die` as the SIGTERM handler: it marks the process to end, and the
/// next CHECK_FOR_INTERRUPTS (in a running statement, or [`wait`]'s) ends it with FATAL
/// (before_shmem_exit callbacks run: the queue slots are released).
unsafe fn die_on_sigterm() {
    /// SIGTERM on Linux.
    const SIGTERM: std::ffi::c_int = 15;
    set_handler(SIGTERM, postgres_die);
}

/// The explorer must end: SIGTERM was seen (pgrx's flag is cleared by the first look at it;
/// this one stays), or a setting it applies only as it starts changed ([`reload`]).
static STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The `ruvector.dag_explorer_nice` this explorer lowered itself to as it started.
static STARTED_NICE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Wait on the latch for at most `timeout`, and take a reloaded configuration in; false once
/// the explorer must end (now or before).
///
/// Every wait of the explorer's goes through here (its main loop, the pause after a run, the
/// wait for a quiet window, which lasts up to [`BUSY_WAIT_S`] while users keep the server
/// busy), so a `pg_reload_conf()` takes effect within one step of any of them.
fn wait(timeout: Option<Duration>) -> bool {
    if stopping() {
        return false;
    }
    let go_on = BackgroundWorker::wait_latch(timeout);
    // A SIGTERM (`die`) ends the process here.
    pgrx::check_for_interrupts!();
    if !go_on {
        STOPPING.store(true, std::sync::atomic::Ordering::Release);
        return false;
    }
    if BackgroundWorker::sighup_received() {
        reload();
    }
    !stopping()
}

/// Read the configuration files again (SIGHUP). A process cannot raise its own scheduling
/// priority again: when `ruvector.dag_explorer_nice` changed, this explorer ends and the
/// launcher starts a new one, which applies the value.
fn reload() {
    // SAFETY: between the explorer's transactions, as PostgreSQL's own workers do.
    unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
    let was = STARTED_NICE.load(std::sync::atomic::Ordering::Relaxed);
    let now = guc::EXPLORER_NICE.get();
    if now != was {
        log!("ruvector_dag explorer: ruvector.dag_explorer_nice changed from {was} to {now}; the explorer stops, the launcher starts it again within {} s", crate::worker::LAUNCHER_PERIOD);
        STOPPING.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// Whether the explorer must end (SIGTERM came, or its nice value changed).
fn stopping() -> bool {
    if BackgroundWorker::sigterm_received() {
        STOPPING.store(true, std::sync::atomic::Ordering::Release);
    }
    STOPPING.load(std::sync::atomic::Ordering::Acquire)
}

/// The explorer's entry point; its argument is the database's OID.
///
/// # Safety
/// Called by the postmaster as a background worker's main function.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn ruvector_dag_explorer_main(arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    // SIGTERM as for a backend (`die`): a run in progress ends at its next interrupt check,
    // not at its timeout, so a shutdown never waits for the explorer.
    die_on_sigterm();
    yield_on_sigusr2();
    let oid = pg_sys::Oid::from(arg.value() as u32);
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(oid), None);
    let db = oid.to_u32();
    hooks::set_explorer_process();
    quiet_logging();
    // Offers an earlier explorer of this database took and never released.
    shared::release_all(db, false);
    shared::set_explorer(db, std::process::id() as i32);
    pg_sys::before_shmem_exit(Some(explorer_exit), pg_sys::Datum::from(db));
    let name = BackgroundWorker::get_extra();
    log!("ruvector_dag explorer: started, exploring for database \"{name}\"");
    // ruvector.dag_explorer_nice above 0: this process and its parallel workers run at that
    // priority (the workers lower their own, see `priority::worker_start`).
    let nice = guc::EXPLORER_NICE.get();
    STARTED_NICE.store(nice, std::sync::atomic::Ordering::Relaxed);
    if let Err(e) = priority::lower(nice, priority::EXPLORER_ATTEMPTS) {
        log!(
            "ruvector_dag explorer: could not lower its scheduling priority to nice {nice} ({e}); its runs compete with users' statements for the CPU"
        );
    }
    let mut recent: HashMap<u64, Instant> = HashMap::new();
    let mut backoff = Backoff::default();
    let mut last_error: Option<String> = None;
    // When it last had a statement in hand (or started).
    let mut last_work = Instant::now();
    while wait(Some(Duration::from_millis(500))) {
        // Nothing offered for a while (nor waiting: a pause with statements queued keeps it,
        // and what it knows of the users' gaps and the shapes it measured, which a new explorer
        // would learn again): give the worker slot back; the launcher starts an explorer again
        // on demand.
        if shared::queued(db) > 0 {
            last_work = Instant::now();
        } else if last_work.elapsed().as_secs() >= IDLE_EXIT_S {
            debug1!("ruvector_dag explorer: nothing offered for {IDLE_EXIT_S} s; stopping (started again when a statement is offered)");
            break;
        }
        if guc::EXPLORE_SHARE.get() <= 0.0 {
            // No exploring: what waits is dropped (the backends offer no more), and the
            // explorer stops once idle.
            shared::release_all(db, true);
            continue;
        }
        if shared::explorers_paused() {
            continue;
        }
        // A standby never explores (its foreground does not offer either).
        if pg_sys::RecoveryInProgress() {
            continue;
        }
        recent.retain(|_, t| t.elapsed().as_secs() < REVISIT_AFTER_S);
        while let Some((slot, bytes)) = shared::take(db) {
            let outcome = explore(db, &bytes, &mut recent, &mut backoff);
            // The idle minute counts from the end of the last turn (users offer a shape again
            // after it, when its turn ended with plans left).
            last_work = Instant::now();
            if matches!(outcome, Ok(Turn::Again)) {
                shared::requeue(slot);
            } else {
                shared::release(slot);
            }
            match outcome {
                Ok(_) => {}
                Err(e) if last_error.as_deref() != Some(e.as_str()) => {
                    log!("ruvector_dag explorer: {e} (logged again only if it changes)");
                    last_error = Some(e);
                }
                Err(_) => {}
            }
            if stopping() {
                break;
            }
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn explorer_exit(_code: i32, arg: pg_sys::Datum) {
    let db = arg.value() as u32;
    shared::explorer_running(db, false);
    shared::set_explorer(db, 0);
    shared::release_all(db, false);
    // A statement offered as it stopped (it saw an explorer running and woke no one).
    shared::explorer_wanted(db);
}

/// The explorer's statements carry users' constants: none of them may reach the server log.
/// For this process (and the parallel workers its statements start, which inherit it): no
/// `STATEMENT:` line after an error (a run cut short is one), no bound parameters in error
/// reports, no statement or duration logging, no auto_explain. Its own log lines name a
/// statement by its shape and an error by [`redacted`] text.
fn quiet_logging() {
    for (name, value) in [
        ("log_min_error_statement", "panic"),
        ("log_parameter_max_length_on_error", "0"),
        ("log_statement", "none"),
        ("log_min_duration_statement", "-1"),
        ("log_duration", "off"),
        ("auto_explain.log_min_duration", "-1"),
    ] {
        let (n, v) = (
            CString::new(name).expect("no NUL"),
            CString::new(value).expect("no NUL"),
        );
        // SAFETY: session-level settings of this process, set as the superuser it connected
        // as; a setting this server does not have is skipped (elevel DEBUG1).
        unsafe {
            hooks::set_setting(
                &n,
                &v,
                pg_sys::GucContext::PGC_SUSET,
                pg_sys::GucAction::GUC_ACTION_SET,
            );
        }
    }
}

/// `message` with every quoted part (where PostgreSQL puts values: `invalid input syntax for
/// type date: "2024-13-01"`) replaced by `"..."`.
pub(crate) fn redacted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut quote: Option<char> = None;
    for c in message.chars() {
        match quote {
            Some(q) if c == q => {
                out.push_str("...");
                out.push(c);
                quote = None;
            }
            Some(_) => {}
            None if c == '"' || c == '\'' => {
                out.push(c);
                quote = Some(c);
            }
            None => out.push(c),
        }
    }
    if quote.is_some() {
        out.push_str("...");
    }
    out
}

/// How one run ended.
enum Ran {
    /// It finished in this many ms; the plan it ran.
    Done(f64, Box<hooks::Probed>),
    /// The statement timeout cut it short.
    Cut,
    /// Given up for a user's statement that needed the cores ([`yield_run`]): no evidence.
    Yielded,
}

/// Why the explorer gave up a statement.
struct Refused {
    counter: ExplorerCounter,
    why: String,
    /// The statement is to blame (its shape is never offered again); otherwise the explorer
    /// (its learned state, the arm list) is, and the statement may be offered again.
    statement: bool,
}

impl Refused {
    /// The explorer's own failure, not the statement's.
    fn ours(why: String) -> Refused {
        Refused {
            counter: ExplorerCounter::Failed,
            why,
            statement: false,
        }
    }
}

impl Refused {
    fn of((code, message): (PgSqlErrorCode, String), what: &str) -> Refused {
        let denied = matches!(
            code,
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE
                | PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION
        );
        Refused {
            counter: if denied {
                ExplorerCounter::Denied
            } else {
                ExplorerCounter::Failed
            },
            why: format!("{what}: {}", redacted(&message)),
            statement: true,
        }
    }
}

/// What becomes of an offer after its turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// Done with: its slot is freed (a later run of the statement may offer it again).
    Over,
    /// Other statements wait and this one has more to run: back to the end of the queue.
    Again,
}

/// Explore one offered statement until the evidence settles it, [`EXPLORE_MAX_RUNS`] runs, the
/// server stays busy, the explorer is paused or stopped, or (after [`RUNS_PER_TURN`] runs, or
/// at once once its shape has a verified plan) other offered statements wait for their turn.
fn explore(
    db: u32,
    bytes: &[u8],
    recent: &mut HashMap<u64, Instant>,
    backoff: &mut Backoff,
) -> Result<Turn, String> {
    let offer: Offer = postcard::from_bytes(bytes)
        .map_err(|e| format!("an offer could not be read ({e}); dropped"))?;
    if recent.contains_key(&offer.fingerprint) {
        return Ok(Turn::Over);
    }
    // Offered before a DROP EXTENSION: nothing to learn into any more.
    if !BackgroundWorker::transaction(crate::worker::extension_here) {
        return Ok(Turn::Over);
    }
    // Planning it under every arm is work beside the users' too.
    if !wait_until_quiet(db, backoff, Some(PLANNING_EXPECTED_MS)) {
        if !stopping() {
            shared::count_explorer(db, ExplorerCounter::Busy, 1);
        }
        return Ok(Turn::Over);
    }
    shared::count_explorer(db, ExplorerCounter::Explored, 1);
    let refuse = |r: Refused| {
        shared::count_explorer(db, r.counter, 1);
        if !r.statement {
            return Err(format!(
                "a statement of shape {:016x} was not explored (offered again later): {}",
                offer.fingerprint, r.why
            ));
        }
        shared::refuse_shape(offer.fingerprint);
        Err(format!(
            "a statement of shape {:016x} cannot be explored, never offered again until restart: {}",
            offer.fingerprint, r.why
        ))
    };
    let (dag, mut d) = match plan_candidates(db, &offer) {
        Ok(x) => x,
        Err(r) => return refuse(r),
    };
    let kind = |cut| RunKind {
        cut,
        background: true,
    };
    // Misestimated scans of the default plan's runs (statistics advice, measured at the end of
    // the turn: [`verify_statistics`]).
    let mut advice: Vec<crate::advice::Misestimate> = Vec::new();
    let measure_advice = |mut advice: Vec<crate::advice::Misestimate>,
                          fingerprint: u64,
                          backoff: &mut Backoff| {
        // The advice users' runs found for the shape, not measured yet.
        for m in advised_for(fingerprint) {
            if !advice
                .iter()
                .any(|a| a.relid == m.relid && a.columns == m.columns)
            {
                advice.push(m);
            }
        }
        if advice.is_empty() {
            return false;
        }
        let typical = hooks::with_shape(fingerprint, |o| {
            o.evidence().get(fingerprint).and_then(|e| e.default_ms())
        })
        .and_then(|(ms, _)| ms);
        match typical {
            Some(typical) => verify_statistics(db, &offer, fingerprint, advice, typical, backoff),
            None => false,
        }
    };
    // After RUNS_PER_TURN runs in this turn, whatever became of them, a statement that others
    // wait behind goes back to the end of the queue.
    let turn_is_up = |n: usize| n >= RUNS_PER_TURN && shared::queued(db) > 1;
    let mut spilled_here = false;
    // With arms that raise memory, whether the default plan spills decides whether they are
    // candidates: its instrumented run comes first (a turn may end, and the users' statements
    // stop offering the shape, before the other plans are done).
    let spill_first =
        (1..arm_count()).any(|a| hooks::memory::sets_memory(a) && !d.blocked.contains(&a));
    for n in 1..=EXPLORE_MAX_RUNS {
        let step =
            hooks::with_shape(d.fingerprint, |o| o.explore_step(&d)).map_or(Step::Done, |(s, _)| s);
        let (arm, expected) = match step {
            _ if spill_first && !default_checked(d.fingerprint) => (0, d.fingerprint),
            // Nothing left to run for the plans: the default plan once per shape in this
            // explorer, if none of its runs here was instrumented yet: it finds the scans the
            // default plan misestimates (statistics advice), and it is a background measure of
            // the default plan like any other. After the plans: a verified plan is what users
            // gain most from first.
            Step::Done if !default_checked(d.fingerprint) => (0, d.fingerprint),
            Step::Done => break,
            Step::Default => (0, d.fingerprint),
            Step::Plan { arm, plan } => (arm, plan),
        };
        let default_ms = hooks::with_shape(d.fingerprint, |o| {
            o.evidence().get(d.fingerprint).and_then(|e| e.default_ms())
        })
        .and_then(|(ms, _)| ms);
        if !wait_until_quiet(db, backoff, default_ms) {
            // Given back: offered again by a later run of the statement.
            if !stopping() {
                shared::count_explorer(db, ExplorerCounter::Busy, 1);
            }
            return Ok(Turn::Over);
        }
        let timeout_ms = match (arm, default_ms) {
            (0, Some(ms)) => DEFAULT_TIMEOUT_RATIO * ms + 1000.0,
            (_, Some(ms)) => explore_timeout_ms(ms),
            // The default plan's time is not known yet: the session's own limit, at most 5 min.
            (_, None) => 300_000.0,
        };
        let waited_before = waited(db);
        let own_before = priority::run_delay_us();
        let t0 = Instant::now();
        shared::explorer_running(db, true);
        let ran = run(&offer, arm, timeout_ms, true);
        shared::explorer_running(db, false);
        let wall_ms = t0.elapsed().as_secs_f64() * 1000.0;
        if let (Some(a), Some(b)) = (own_before, priority::run_delay_us()) {
            shared::count_explorer(db, ExplorerCounter::WaitUs, b.saturating_sub(a));
        }
        shared::count_explorer(db, ExplorerCounter::Runs, 1);
        shared::count_explorer(db, ExplorerCounter::RunUs, (wall_ms * 1000.0) as u64);
        // Given up for a user's statement: not evidence; tried again when the cores are free,
        // or, after RUNS_PER_TURN runs in this turn, when its turn comes again (a statement
        // whose runs do not fit between the users' does not hold up those offered after it).
        if matches!(ran, Ok(Ran::Yielded)) {
            shared::count_explorer(db, ExplorerCounter::Yielded, 1);
            backoff.yielded(Instant::now(), shared::user_starts());
            shared::set_explorer_quiet_ms(db, backoff.window_ms(Instant::now()));
            if !pace(wall_ms) {
                return Ok(Turn::Over);
            }
            if turn_is_up(n) {
                return Ok(Turn::Again);
            }
            continue;
        }
        // The processes it kept busy: what it launched when it completed, or (cut short) what
        // its settings let it launch.
        let processes = match &ran {
            Ok(Ran::Done(_, p)) => p.workers.saturating_add(1),
            _ => processes_allowed(&offer, arm),
        };
        // Held up by the users' work (waiting for a CPU beside them, beyond what its own
        // processes wait for one another): the time says how busy the server was, not how fast
        // the plan is. Not evidence; tried again after the pause (or in its next turn). Except
        // a candidate's run that took less than the default plan's typical time even so:
        // waiting only makes a run slower, so the plan is at most that slow, evidence that
        // leans towards the default plan (on a server whose users keep every core busy, the
        // only evidence for a plan that wins). The default plan's own runs held up are never
        // kept: a default measured slower than it is would lean towards the candidates.
        let contended = ran.is_ok()
            && priority::contended(
                waited(db).saturating_sub(waited_before),
                wall_ms,
                processes,
                hooks::cores(),
            );
        let kept = contended
            && matches!(&ran, Ok(Ran::Done(ms, _)) if kept_though_contended(arm, *ms, default_ms));
        if kept {
            shared::count_explorer(db, ExplorerCounter::ContendedKept, 1);
        }
        if contended && !kept {
            shared::count_explorer(db, ExplorerCounter::Contended, 1);
            if !pace(wall_ms) {
                return Ok(Turn::Over);
            }
            if turn_is_up(n) {
                return Ok(Turn::Again);
            }
            continue;
        }
        let mut misestimated = Vec::new();
        let (ms, plan, cut) = match ran {
            Ok(Ran::Done(ms, probed)) => {
                let probed = *probed;
                if arm == 0 && probed.spilled {
                    spilled_here = true;
                }
                let plan = probed.plan();
                misestimated = probed.misestimates;
                (ms, plan, false)
            }
            // The default plan cut short: the server is slower than it was; try another time.
            Ok(Ran::Cut) if arm == 0 => return Ok(Turn::Over),
            Ok(Ran::Cut) => {
                shared::count_explorer(db, ExplorerCounter::Cut, 1);
                (timeout_ms, expected, true)
            }
            Ok(Ran::Yielded) => continue,
            Err(r) => return refuse(r),
        };
        backoff.completed(Instant::now());
        shared::set_explorer_quiet_ms(db, backoff.window_ms(Instant::now()));
        // The default plan is what ran under the default arm, whatever its hash now.
        let plan = if arm == 0 { d.fingerprint } else { plan };
        d.arm = arm;
        d.plan = plan;
        record(db, &d, &offer.relids, ms as f32, kind(cut))?;
        // The default plan misestimated a scan on columns statistics could fix: kept as advice
        // at once, measured at the end of the turn (the plans come first: users gain most from
        // a verified plan).
        if arm == 0 {
            DEFAULT_CHECKED.with(|c| c.borrow_mut().insert(d.fingerprint));
            for mut m in misestimated {
                m.fingerprint = d.fingerprint;
                if let Ok(bytes) = learner::Record::misestimate(m.clone()) {
                    if shared::push(db, &bytes).is_ok() {
                        shared::count_advice_pushed();
                    }
                }
                if !advice.iter().any(|a: &crate::advice::Misestimate| {
                    a.relid == m.relid && a.columns == m.columns
                }) {
                    advice.push(m);
                }
            }
        }
        // The default plan spilled to disk: the arms that raise memory where the plan runs
        // are candidates for this shape from now on (planned here once).
        if std::mem::take(&mut spilled_here)
            && SPILLED.with(|s| s.borrow_mut().insert(d.fingerprint))
        {
            let memory_arms: Vec<u8> = (1..arm_count())
                .filter(|&a| hooks::memory::sets_memory(a) && !d.blocked.contains(&a))
                .collect();
            if !memory_arms.is_empty() {
                let candidates = match plan_arms(&offer, &memory_arms) {
                    Ok(c) => c,
                    Err(r) => return refuse(r),
                };
                if let Err(r) = note_candidates(db, &d, &candidates) {
                    return refuse(r);
                }
            }
        }
        // Refresh what BTSP memory blocks (a catastrophe just ran) for the next step.
        if let Some((Ok(fresh), _)) = hooks::with_shape(d.fingerprint, |o| {
            o.decide_with(&dag, Exploration::Explorer)
        }) {
            d = fresh;
        }
        if !pace(wall_ms) {
            return Ok(Turn::Over);
        }
        let others_wait = shared::queued(db) > 1;
        let more = hooks::with_shape(d.fingerprint, |o| o.explore_step(&d) != Step::Done)
            .is_some_and(|(more, _)| more);
        if others_wait && more && (n >= RUNS_PER_TURN || d.rule == Rule::Verified) {
            measure_advice(advice, d.fingerprint, backoff);
            return Ok(Turn::Again);
        }
    }
    let advice_waits = measure_advice(advice, d.fingerprint, backoff);
    // Every plan is settled, but runs given up for the users' statements took the turn before
    // the default plan's instrumented run (what statistics advice and the arms raising memory
    // need), or before the advice was measured: the offer goes back to the queue, a few times,
    // rather than wait for a user to run it again (once its plans are settled, users' runs of
    // it offer it no more). (A turn that ran out with plans left to run waits, as always, for the learner
    // to publish and a user to offer it again: exploring on at once cost the users' rounds.)
    let plans_done = hooks::with_shape(d.fingerprint, |o| o.explore_step(&d) == Step::Done)
        .is_some_and(|(done, _)| done);
    if plans_done
        && (!default_checked(d.fingerprint) || advice_waits)
        && requeued_again(d.fingerprint)
    {
        return Ok(Turn::Again);
    }
    // Settled (or as far as one offer goes): not explored again until the learner has
    // published what was measured here.
    recent.insert(offer.fingerprint, Instant::now());
    recent.insert(d.fingerprint, Instant::now());
    Ok(Turn::Over)
}

/// Plan the offered statement under the default arm (its decision) and under every arm the
/// decision does not block, and record the candidate plans (here and, for the learner, in the
/// ring).
fn plan_candidates(
    db: u32,
    offer: &Offer,
) -> Result<(ruvector_dag_core::PlanDag, Decision), Refused> {
    let dag = match run(offer, 0, 60_000.0, false)? {
        Ran::Done(_, p) => p.dag,
        Ran::Cut | Ran::Yielded => {
            return Err(Refused {
                counter: ExplorerCounter::Failed,
                why: "planning it took over a minute".into(),
                statement: true,
            })
        }
    };
    let decided = BackgroundWorker::transaction(|| {
        hooks::with_optimizer_for(dag.shape_hash(), |o| {
            o.decide_with(&dag, Exploration::Explorer)
        })
    });
    let d = match decided {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => return Err(Refused::ours(format!("deciding: {e}"))),
        Err(e) => return Err(Refused::ours(format!("loading the learned state: {e}"))),
    };
    // Arms that raise memory where the plan runs only for a shape whose default plan spilled
    // to disk here (after that run, see `explore`).
    let spilled = SPILLED.with(|s| s.borrow().contains(&d.fingerprint));
    let arms: Vec<u8> = (1..arm_count())
        .filter(|&a| !d.blocked.contains(&a) && (spilled || !hooks::memory::sets_memory(a)))
        .collect();
    let candidates = plan_arms(offer, &arms)?;
    note_candidates(db, &d, &candidates)?;
    Ok((dag, d))
}

/// The arms of `ruvector.dag_arms` (the default one included).
fn arm_count() -> u8 {
    guc::arms_shared().map_or(0, |(a, _)| a.len().min(usize::from(u8::MAX)) as u8)
}

/// The offered statement planned under each of `arms`: its candidate plans.
fn plan_arms(offer: &Offer, arms: &[u8]) -> Result<Vec<Candidate>, Refused> {
    let mut candidates = Vec::new();
    for &arm in arms {
        if let Ran::Done(_, p) = run(offer, arm, 60_000.0, false)? {
            candidates.push(Candidate {
                arm,
                plan: p.plan(),
                cost: p.cost,
            });
        }
    }
    Ok(candidates)
}

/// Record `candidates` of `d`'s shape (here and, for the learner, in the ring).
fn note_candidates(db: u32, d: &Decision, candidates: &[Candidate]) -> Result<(), Refused> {
    let noted = hooks::with_shape(d.fingerprint, |o| {
        o.note_candidates(d.fingerprint, d.default_cost, candidates)
    });
    let booked = match noted {
        Some((Err(e), _)) => return Err(Refused::ours(format!("recording its candidates: {e}"))),
        Some((Ok(_), booked)) => booked,
        None => false,
    };
    // Without the shared book the learner records them (with it, they are recorded already).
    if !booked {
        if let Ok(bytes) = learner::Record::candidates(d.fingerprint, d.default_cost, candidates) {
            let _ = shared::push(db, &bytes);
        }
    }
    Ok(())
}

/// Observe one background run here and push it to the ring for the learner.
fn record(db: u32, d: &Decision, relids: &[u32], ms: f32, kind: RunKind) -> Result<(), String> {
    let (bytes, _, _) = hooks::observe_shared(d, d.arm, None, ms.max(1e-3), relids, kind)
        .ok_or("recording a background run: no learned state loaded")?
        .map_err(|e| format!("recording a background run: {e}"))?;
    shared::push(db, &bytes).map_err(|e| format!("pushing a background run to the ring: {e:?}"))
}

/// What the explorer of `db` and its parallel workers have waited for a CPU so far, us.
fn waited(db: u32) -> u64 {
    shared::explorer_counters(db)[ExplorerCounter::WaitUs as usize]
}

/// Wait `wall_ms` x (1 - share) / share after a run of `wall_ms` (at least 10 ms), and while
/// the explorers are paused. False when the explorer must stop (SIGTERM).
fn pace(wall_ms: f64) -> bool {
    let share = guc::EXPLORE_SHARE.get().clamp(0.001, 1.0);
    let rest_ms = (wall_ms * (1.0 - share) / share).max(10.0);
    let until = Instant::now() + Duration::from_secs_f64(rest_ms / 1000.0);
    while Instant::now() < until {
        let left = until.saturating_duration_since(Instant::now());
        if !wait(Some(left.min(Duration::from_millis(500)))) {
            return false;
        }
    }
    while_paused()
}

/// Wait while the explorers are paused (`ruvector_dag_explorer_pause()`). False when the
/// explorer must stop (SIGTERM).
fn while_paused() -> bool {
    while shared::explorers_paused() {
        if !wait(Some(Duration::from_millis(20))) {
            return false;
        }
    }
    true
}

/// Wait while the users' work takes as many processes as the machine has cores: statements
/// executing in client backends and in the parallel workers of their queries
/// ([`shared::executing`]; this explorer is between runs here, so neither it nor its workers
/// count), and, after runs given up, until no user's statement started for the [`Backoff`]
/// window, at most [`QUIET_RUN_FACTOR`] times `expected_ms`, what the run is expected to take
/// ([`Backoff::needed`]). A run started beside them is given up as soon as a user's statement
/// leaves the cores fewer than the processes executing ([`yield_run`]). At most
/// [`BUSY_WAIT_S`], not counting a pause. False when the server stayed busy, or the explorer
/// must stop.
fn wait_until_quiet(db: u32, backoff: &mut Backoff, expected_ms: Option<f64>) -> bool {
    let cores = hooks::cores() as i32;
    let step = Duration::from_millis(20);
    let mut busy = Duration::ZERO;
    loop {
        if !while_paused() {
            return false;
        }
        let now = Instant::now();
        let quiet = backoff.quiet_for(shared::user_starts(), now);
        // Again at every read: a gap that just ended may change it.
        let free = shared::executing().0 < cores;
        if !free {
            backoff.cores_busy();
        }
        let window = backoff.needed(now, expected_ms);
        shared::set_explorer_quiet_ms(db, window.as_millis() as u32);
        if free && quiet >= window {
            return true;
        }
        busy += step;
        if busy.as_secs() >= BUSY_WAIT_S || !wait(Some(step)) {
            return false;
        }
    }
}

/// Plan (`analyze` false) or run the offered statement under `arm`, in a READ ONLY
/// transaction of its own, as its role, with its session's settings, cut short after
/// `timeout_ms`.
fn run(offer: &Offer, arm: u8, timeout_ms: f64, analyze: bool) -> Result<Ran, Refused> {
    BackgroundWorker::transaction(|| run_here(offer, arm, timeout_ms, analyze))
}

/// [`run`] in the transaction under way.
fn run_here(offer: &Offer, arm: u8, timeout_ms: f64, analyze: bool) -> Result<Ran, Refused> {
    let mut settings = offer.settings.clone();
    if arm != 0 {
        let arms = guc::arms_shared().map_err(|e| Refused::ours(format!("the arm list: {e}")))?;
        match arms.0.get(usize::from(arm)) {
            Some((_, s)) => settings.extend(s.iter().cloned()),
            None => {
                return Err(Refused::ours(format!(
                    "arm {arm} is not in ruvector.dag_arms any more"
                )))
            }
        }
    }
    let what = if analyze { "running it" } else { "planning it" };
    // The arm's raise of memory over the statement's own settings, if any: its plan is known
    // by a salted identity (`memory::plan_id`).
    let salt = if hooks::memory::sets_memory(arm) {
        hooks::under_arm(&offer.settings, || hooks::memory::salt_of(arm)).unwrap_or(0)
    } else {
        0
    };
    {
        // READ ONLY, as SET TRANSACTION READ ONLY makes it (the setting itself cannot be set at
        // a GUC nest level from PostgreSQL 16 on); a subtransaction keeps it.
        // SAFETY: this transaction's flag, reset when the next one starts.
        unsafe { pg_sys::XactReadOnly = true };
        // SAFETY: the user id is restored on success below and by the subtransaction's abort.
        let (saved_user, saved_context) = unsafe {
            let (mut u, mut c) = (pg_sys::InvalidOid, 0);
            pg_sys::GetUserIdAndSecContext(&mut u, &mut c);
            (u, c)
        };
        hooks::begin_probe();
        let result = crate::guarded_coded(|| {
            // SAFETY: inside the subtransaction, which restores the user id if it aborts.
            unsafe {
                pg_sys::SetUserIdAndSecContext(
                    pg_sys::Oid::from(offer.role),
                    saved_context
                        | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32
                        | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
                );
            }
            let r = hooks::under_arm(&settings, || {
                // SAFETY: the timer is disabled after the statement, on every path (below).
                unsafe {
                    enable_timeout_after(
                        STATEMENT_TIMEOUT,
                        timeout_ms.clamp(1.0, i32::MAX as f64) as i32,
                    );
                }
                RUN_EXECUTING.store(analyze, std::sync::atomic::Ordering::Release);
                let r = explain(offer, analyze);
                RUN_EXECUTING.store(false, std::sync::atomic::Ordering::Release);
                r
            });
            // SAFETY: restoring what was saved before the subtransaction.
            unsafe { pg_sys::SetUserIdAndSecContext(saved_user, saved_context) };
            r?
        });
        // A yield that came after the statement ended (or was not reached) cancels nothing later.
        RUN_EXECUTING.store(false, std::sync::atomic::Ordering::Release);
        let yielded = YIELDED.swap(false, std::sync::atomic::Ordering::AcqRel);
        // SAFETY: the statement is over; a timer that fired unhandled, or a yield that came too
        // late to cancel it, is cleared (a timer that was handled raised the ERROR, and reset its
        // indicator).
        unsafe {
            if get_timeout_indicator(STATEMENT_TIMEOUT, true) || yielded {
                pg_sys::QueryCancelPending = 0;
            }
            disable_timeout(STATEMENT_TIMEOUT, false);
        }
        let probed = hooks::take_probe();
        match result {
            Ok((ms, spilled, workers)) => match probed {
                Some(mut p) => {
                    (p.spilled, p.salt, p.workers) = (spilled, salt, workers);
                    Ok(Ran::Done(ms, Box::new(p)))
                }
                None => Err(Refused {
                    counter: ExplorerCounter::Failed,
                    why: format!("{what}: no plan was made"),
                    statement: true,
                }),
            },
            Err((PgSqlErrorCode::ERRCODE_QUERY_CANCELED, m)) if m.contains("statement timeout") => {
                Ok(Ran::Cut)
            }
            Err((PgSqlErrorCode::ERRCODE_QUERY_CANCELED, _)) if yielded => Ok(Ran::Yielded),
            Err(e) => Err(Refused::of(e, what)),
        }
    }
}

/// Whether a run of `arm`'s plan that took `ms` while it waited for a CPU beside the users'
/// work is evidence all the same: a candidate's (not the default plan's) that took less than
/// the default plan's typical time `default_ms` (waiting only makes a run slower: the plan is
/// at most that slow).
pub(crate) fn kept_though_contended(arm: u8, ms: f64, default_ms: Option<f64>) -> bool {
    arm != 0 && default_ms.is_some_and(|typical| ms < typical)
}

/// The processes a run of `offer`'s statement under `arm` may keep busy at once (a run cut short
/// does not say what it launched): its leader and the most workers its settings let one Gather
/// launch ([`processes_bound`]).
fn processes_allowed(offer: &Offer, arm: u8) -> u32 {
    let arm_settings = if arm == 0 {
        Vec::new()
    } else {
        guc::arms_shared()
            .ok()
            .and_then(|a| a.0.get(usize::from(arm)).map(|(_, s)| s.clone()))
            .unwrap_or_default()
    };
    // SAFETY: this process's settings, read in it.
    let (per_gather, in_all) = unsafe {
        (
            pg_sys::max_parallel_workers_per_gather,
            pg_sys::max_parallel_workers,
        )
    };
    processes_bound(
        offer
            .settings
            .iter()
            .chain(arm_settings.iter())
            .map(|(n, v)| (n.as_str(), v.as_str())),
        per_gather,
        in_all,
    )
}

/// 1 + the parallel workers one Gather may launch under `settings` (later ones win; the
/// server's `per_gather` when none sets `max_parallel_workers_per_gather`), at most `in_all`
/// (`max_parallel_workers`).
pub(crate) fn processes_bound<'a>(
    settings: impl Iterator<Item = (&'a str, &'a str)>,
    per_gather: i32,
    in_all: i32,
) -> u32 {
    let mut workers = per_gather;
    for (name, value) in settings {
        if name.eq_ignore_ascii_case("max_parallel_workers_per_gather") {
            if let Ok(w) = value.trim().parse::<i32>() {
                workers = w;
            }
        }
    }
    1 + workers.min(in_all).max(0) as u32
}

/// Whether this explorer ran shape `fingerprint`'s default plan with instrumentation since
/// it started (a few thousand shapes remembered).
fn default_checked(fingerprint: u64) -> bool {
    DEFAULT_CHECKED.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() > 4096 {
            c.clear();
        }
        c.contains(&fingerprint)
    })
}

/// Whether shape `fingerprint`'s offer may go back to the queue once more for its default
/// plan's instrumented run ([`REQUEUES`] times per shape in this explorer).
fn requeued_again(fingerprint: u64) -> bool {
    REQUEUED.with(|r| {
        let mut r = r.borrow_mut();
        if r.len() > 4096 {
            r.clear();
        }
        let n = r.entry(fingerprint).or_insert(0);
        *n += 1;
        *n <= REQUEUES
    })
}

/// Times a shape's offer goes back to the queue for its default plan's instrumented run.
const REQUEUES: u32 = 3;

/// The statistics advice kept for shape `fingerprint` that was not measured yet (found on the
/// users' runs timed per node); empty when it cannot be read.
fn advised_for(fingerprint: u64) -> Vec<crate::advice::Misestimate> {
    BackgroundWorker::transaction(|| {
        crate::guarded(|| {
            Spi::connect(|c| {
                let rows = c.select(
                    "SELECT relid::oid, columns, estimated_rows, actual_rows \
                   FROM ruvector_dag.statistics_advice \
                  WHERE $1 = ANY (shapes) AND verified_at IS NULL \
                  ORDER BY worst_factor DESC LIMIT 4",
                    None,
                    &[(fingerprint as i64).into()],
                )?;
                let mut out = Vec::new();
                for r in rows {
                    if let (Some(relid), Some(columns)) =
                        (r.get::<pg_sys::Oid>(1)?, r.get::<Vec<i16>>(2)?)
                    {
                        out.push(crate::advice::Misestimate {
                            fingerprint,
                            relid: relid.to_u32(),
                            columns,
                            estimated: r.get::<f64>(3)?.unwrap_or_default(),
                            actual: r.get::<f64>(4)?.unwrap_or_default(),
                            verified: None,
                        });
                    }
                }
                Ok::<_, pgrx::spi::Error>(out)
            })
            .map_err(|e| e.to_string())
        })
        .unwrap_or_default()
    })
}

thread_local! {
    /// Shapes whose default plan spilled to disk in this explorer's instrumented run: the arms
    /// that raise memory where the plan runs are their candidates ([`hooks::memory`]).
    static SPILLED: std::cell::RefCell<std::collections::HashSet<u64>> =
        std::cell::RefCell::new(std::collections::HashSet::new());
    /// Times each shape's offer went back to the queue for its default plan's instrumented run
    /// ([`requeued_again`]).
    static REQUEUED: std::cell::RefCell<std::collections::HashMap<u64, u32>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
    /// Shapes whose default plan this explorer ran with instrumentation ([`default_checked`]).
    static DEFAULT_CHECKED: std::cell::RefCell<std::collections::HashSet<u64>> =
        std::cell::RefCell::new(std::collections::HashSet::new());
    /// Statistics advice (table, columns) this explorer measured, and when: not measured again
    /// for [`VERIFY_AGAIN_S`].
    static MEASURED_ADVICE: std::cell::RefCell<HashMap<(u32, Vec<i16>), Instant>> =
        std::cell::RefCell::new(HashMap::new());
}

/// A piece of statistics advice is measured again after this long, seconds.
pub const VERIFY_AGAIN_S: u64 = 3600;

/// Measure the statistics advice for the scans `found` misestimated in the default plan of the
/// offered statement (shape `fingerprint`, typically `default_ms` without them): in a
/// subtransaction rolled back afterwards, create the extended statistics on each scan's
/// columns and ANALYZE those columns (as this worker, which owns nothing the users see: the
/// objects and statistics are gone with the rollback, the only locks are those CREATE
/// STATISTICS and ANALYZE take, which never block writers, waited for at most
/// [`ADVICE_LOCK_TIMEOUT_MS`]), then run the statement as its role, read-only, twice, under the
/// explorer's timeout; the faster run is what the statistics give. The result goes to the
/// learner (`ruvector_dag.statistics_advice`). Advice already covered by statistics, measured
/// within [`VERIFY_AGAIN_S`], or whose run was given up for a user's statement is left. True
/// when advice is left because the users' statements kept the cores (its runs given up every
/// time, or no quiet came).
fn verify_statistics(
    db: u32,
    offer: &Offer,
    fingerprint: u64,
    found: Vec<crate::advice::Misestimate>,
    default_ms: f64,
    backoff: &mut Backoff,
) -> bool {
    for mut m in found {
        let key = (m.relid, m.columns.clone());
        let recent = MEASURED_ADVICE.with(|a| {
            a.borrow()
                .get(&key)
                .is_some_and(|t| t.elapsed() < Duration::from_secs(VERIFY_AGAIN_S))
        });
        if stopping() {
            return false;
        }
        if recent {
            continue;
        }
        let timeout_ms = explore_timeout_ms(default_ms);
        let mut measured = None;
        let mut wall_ms = 0.0;
        // A run given up for users' statements is tried again, as the candidates' runs are.
        for _ in 0..ADVICE_ATTEMPTS {
            // The statement (faster with the statistics, if they help) and the ANALYZE of a
            // few columns.
            if !wait_until_quiet(db, backoff, Some(default_ms + ANALYZE_EXPECTED_MS)) {
                return !stopping();
            }
            let t0 = Instant::now();
            shared::explorer_running(db, true);
            let ran = BackgroundWorker::transaction(|| statistics_run(offer, &m, timeout_ms));
            shared::explorer_running(db, false);
            wall_ms = t0.elapsed().as_secs_f64() * 1000.0;
            shared::count_explorer(db, ExplorerCounter::Runs, 1);
            shared::count_explorer(db, ExplorerCounter::RunUs, (wall_ms * 1000.0) as u64);
            match ran {
                Ok(Some(x)) => {
                    measured = Some(Ok(x));
                    break;
                }
                Ok(None) => {
                    shared::count_explorer(db, ExplorerCounter::Yielded, 1);
                    backoff.yielded(Instant::now(), shared::user_starts());
                    shared::set_explorer_quiet_ms(db, backoff.window_ms(Instant::now()));
                    if !pace(wall_ms) {
                        return false;
                    }
                }
                Err(why) => {
                    measured = Some(Err(why));
                    break;
                }
            }
        }
        let (after_ms, cut) = match measured {
            Some(Ok(x)) => {
                backoff.completed(Instant::now());
                x
            }
            // Given up for users' statements every time: measured another time.
            None => return true,
            Some(Err(why)) => {
                // Covered already, a lock not granted in time, a statement that fails: not
                // measured now, not tried again soon.
                MEASURED_ADVICE.with(|a| a.borrow_mut().insert(key, Instant::now()));
                log!("ruvector_dag explorer: statistics advice on table {} columns {:?} not measured: {why}", m.relid, m.columns);
                continue;
            }
        };
        MEASURED_ADVICE.with(|a| a.borrow_mut().insert(key, Instant::now()));
        m.fingerprint = fingerprint;
        m.verified = Some(crate::advice::Verified {
            before_ms: default_ms,
            after_ms,
            cut,
        });
        if let Ok(bytes) = learner::Record::misestimate(m) {
            if shared::push(db, &bytes).is_ok() {
                shared::count_advice_pushed();
            }
        }
        if !pace(wall_ms) {
            return false;
        }
    }
    false
}

/// Attempts at measuring one piece of advice in a turn (a run given up for users' statements is
/// tried again).
pub const ADVICE_ATTEMPTS: usize = 4;

/// What the explorer expects ANALYZE of a few columns to take (a sample of 30,000 rows), ms.
pub const ANALYZE_EXPECTED_MS: f64 = 100.0;

/// Waited for at most this long for the locks CREATE STATISTICS and ANALYZE take (a VACUUM or
/// another ANALYZE of the table holds them: measured another time), ms.
pub const ADVICE_LOCK_TIMEOUT_MS: u32 = 200;

/// [`verify_statistics`]'s measurement, in the transaction under way: `Ok(Some((ms, cut)))`,
/// the faster of two runs with the statistics (cut: at least the timeout); `Ok(None)`: given
/// up for a user's statement; `Err`: why it could not be measured.
fn statistics_run(
    offer: &Offer,
    m: &crate::advice::Misestimate,
    timeout_ms: f64,
) -> Result<Option<(f64, bool)>, String> {
    let ran = crate::rolled_back(|| {
        let columns: Vec<i16> = m.columns.clone();
        let (covered, create, analyze) = Spi::connect(|c| {
            let row = c
                .select(
                    &format!(
                        "SELECT EXISTS ({covering}), \
                                format('CREATE STATISTICS %I.%I (dependencies, ndistinct, mcv) ON %s FROM %s', \
                                       n.nspname, 'ruvector_dag_measuring_' || pg_backend_pid(), \
                                       cols.list, a.relid), \
                                format('ANALYZE %s (%s)', a.relid, cols.list), \
                                cols.n = cardinality(a.columns) \
                           FROM (SELECT $1::regclass AS relid, $2::int2[] AS columns) a \
                           JOIN pg_catalog.pg_class c ON c.oid = a.relid \
                           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                           {columns}",
                        covering = crate::advice::COVERING,
                        columns = crate::advice::COLUMNS,
                    ),
                    Some(1),
                    &[pg_sys::Oid::from(m.relid).into(), columns.into()],
                )?
                .first();
            let whole = row.get::<bool>(4)?.unwrap_or(false);
            Ok::<_, pgrx::spi::Error>((
                row.get::<bool>(1)?.unwrap_or(false),
                row.get::<String>(2)?.filter(|_| whole),
                row.get::<String>(3)?,
            ))
        })
        .map_err(|e| format!("reading the table's columns: {e}"))?;
        let (Some(create), Some(analyze)) = (create, analyze) else {
            return Err("the table or one of its columns is gone".into());
        };
        if covered {
            return Err("statistics on those columns exist already".into());
        }
        Spi::run(&format!(
            "SET LOCAL lock_timeout = {ADVICE_LOCK_TIMEOUT_MS}; {create}; {analyze}"
        ))
        .map_err(|e| format!("creating and analyzing the statistics: {e}"))?;
        let mut best: Option<(f64, bool)> = None;
        for _ in 0..2 {
            let run = match run_here(offer, 0, timeout_ms, true) {
                Ok(Ran::Done(ms, _)) => (ms, false),
                Ok(Ran::Cut) => (timeout_ms, true),
                // Given up for users' statements: the run before it is the measure, if any.
                Ok(Ran::Yielded) => return Ok(best),
                Err(r) => return Err(r.why),
            };
            if best.is_none_or(|b| run.0 < b.0) {
                best = Some(run);
            }
        }
        Ok(best)
    });
    ran.map_err(|(_, why)| why)
}

/// EXPLAIN (with ANALYZE: run, rows discarded) the offered statement with its parameters; the
/// execution time, ms (0 without ANALYZE), whether it spilled ([`spilled`]) and the most
/// parallel workers one of its Gathers launched ([`workers_launched`]).
fn explain(offer: &Offer, analyze: bool) -> Result<(f64, bool, u32), String> {
    let sql = if analyze {
        format!(
            "EXPLAIN (ANALYZE, TIMING OFF, SUMMARY, FORMAT JSON) {}",
            offer.query
        )
    } else {
        format!("EXPLAIN (FORMAT JSON) {}", offer.query)
    };
    let sql = CString::new(sql).map_err(|_| "the statement's text holds a NUL".to_string())?;
    // SAFETY: SPI connected and finished here (an ERROR in between is cleaned up by the
    // subtransaction's abort); parameter values are built by their types' input functions.
    unsafe {
        let mut types = Vec::with_capacity(offer.params.len());
        let mut values = Vec::with_capacity(offer.params.len());
        let mut nulls = Vec::with_capacity(offer.params.len());
        for (ty, text) in &offer.params {
            let ty = pg_sys::Oid::from(*ty);
            types.push(ty);
            match text {
                None => {
                    values.push(pg_sys::Datum::from(0usize));
                    nulls.push(b'n' as std::ffi::c_char);
                }
                Some(t) => {
                    let (mut input, mut ioparam) = (pg_sys::InvalidOid, pg_sys::InvalidOid);
                    pg_sys::getTypeInputInfo(ty, &mut input, &mut ioparam);
                    let c = CString::new(t.as_str())
                        .map_err(|_| "a parameter holds a NUL".to_string())?;
                    values.push(pg_sys::OidInputFunctionCall(
                        input,
                        c.as_ptr() as *mut _,
                        ioparam,
                        -1,
                    ));
                    nulls.push(b' ' as std::ffi::c_char);
                }
            }
        }
        if pg_sys::SPI_connect() != pg_sys::SPI_OK_CONNECT as i32 {
            return Err("SPI_connect failed".into());
        }
        let rc = pg_sys::SPI_execute_with_args(
            sql.as_ptr(),
            types.len() as i32,
            types.as_mut_ptr(),
            values.as_mut_ptr(),
            nulls.as_ptr(),
            false,
            0,
        );
        let text = if rc >= 0 && !pg_sys::SPI_tuptable.is_null() && pg_sys::SPI_processed > 0 {
            let t = pg_sys::SPI_tuptable;
            let v = pg_sys::SPI_getvalue(*(*t).vals, (*t).tupdesc, 1);
            (!v.is_null()).then(|| CStr::from_ptr(v).to_string_lossy().into_owned())
        } else {
            None
        };
        pg_sys::SPI_finish();
        let text = text.ok_or_else(|| format!("EXPLAIN returned nothing (SPI code {rc})"))?;
        if !analyze {
            return Ok((0.0, false, 0));
        }
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("EXPLAIN's output is not JSON: {e}"))?;
        Ok((
            execution_ms_of(&v)?,
            spilled(&v, 0),
            workers_launched(&v, 0),
        ))
    }
}

/// Whether EXPLAIN (ANALYZE, FORMAT JSON)'s output `v` shows a sort, hash or aggregate that
/// spilled to disk (the leader's or a worker's): a sort on disk, a hash join in more than one
/// batch, a hash aggregate that wrote to disk.
pub(crate) fn spilled(v: &serde_json::Value, depth: usize) -> bool {
    use serde_json::Value;
    if depth > 200 {
        return false;
    }
    match v {
        Value::Array(a) => a.iter().any(|x| spilled(x, depth + 1)),
        Value::Object(o) => {
            let num = |k: &str| o.get(k).and_then(Value::as_f64).unwrap_or(0.0);
            o.get("Sort Space Type").and_then(Value::as_str) == Some("Disk")
                || num("Hash Batches") > 1.0
                || num("HashAgg Batches") > 1.0
                || num("Disk Usage") > 0.0
                || o.values().any(|x| spilled(x, depth + 1))
        }
        _ => false,
    }
}

/// The most parallel workers one Gather (or Gather Merge) launched in EXPLAIN (ANALYZE, FORMAT
/// JSON)'s output `v` ("Workers Launched"; 0 for a plan without one): with its leader, the
/// processes the run kept busy at once (a plan's Gathers rarely run together).
pub(crate) fn workers_launched(v: &serde_json::Value, depth: usize) -> u32 {
    use serde_json::Value;
    if depth > 200 {
        return 0;
    }
    match v {
        Value::Array(a) => a
            .iter()
            .map(|x| workers_launched(x, depth + 1))
            .max()
            .unwrap_or(0),
        Value::Object(o) => {
            let here = o
                .get("Workers Launched")
                .and_then(Value::as_u64)
                .map_or(0, |n| n.min(u64::from(u32::MAX)) as u32);
            o.values()
                .map(|x| workers_launched(x, depth + 1))
                .fold(here, u32::max)
        }
        _ => 0,
    }
}

/// "Execution Time" of EXPLAIN (ANALYZE, FORMAT JSON)'s output, ms.
#[cfg(any(test, feature = "pg_test"))]
pub(crate) fn execution_ms(json: &str) -> Result<f64, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("EXPLAIN's output is not JSON: {e}"))?;
    execution_ms_of(&v)
}

/// [`execution_ms`] of the parsed output.
fn execution_ms_of(v: &serde_json::Value) -> Result<f64, String> {
    v.get(0)
        .and_then(|x| x.get("Execution Time"))
        .and_then(|x| x.as_f64())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
        .ok_or_else(|| "EXPLAIN's output has no Execution Time".to_string())
}
