//! The explorer's place on the CPU. By default its runs compete for the CPU as a user's
//! statement does; with `ruvector.dag_explorer_nice` above 0 the explorer and the parallel
//! workers its statements start run at that nice value, for the process and for its session's
//! autogroup (see [`lower`]), so a user's statement that wants a core gets it first. Measured
//! on 2 cores (README): at 19 one session per query lost less beside its runs (TPC-H learn
//! about 1.12x stock against 1.26x), and the default run learned more slowly (52 % of the
//! oracle's gain against 63 %, plans adopted at the 5th-6th execution against the 3rd-4th). A
//! run that waited for a CPU for more than [`CONTENDED_SHARE`] of its time (the run-queue delay
//! the kernel reports in `/proc/thread-self/schedstat`, of the explorer and of its parallel
//! workers together), beyond what its own processes wait for one another when they outnumber
//! the cores ([`contended`]), measured the users' load, not its plan: it is not evidence, and
//! it is counted (`explorer_contended`).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

use pgrx::pg_sys;

use crate::shared::{self, ExplorerCounter};

/// A run whose processes waited for a CPU, together, longer than this share of its wall time
/// is not evidence (10 %: the smallest gain the evidence acts on is of that order).
pub const CONTENDED_SHARE: f64 = 0.10;

/// Whether this kernel reports run-queue delays (read once; without them no run is taken for
/// contended).
static NO_SCHEDSTAT: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// In a parallel worker of an explorer's statement: the database whose explorer leads it and
    /// the worker's run-queue delay when its execution started.
    static WORKER: Cell<Option<(u32, u64)>> = const { Cell::new(None) };
}

/// Lower this process's scheduling priority to `nice` (0: leave it), and its autogroup's.
///
/// Nice alone is not enough: with the kernel's autogroups (`kernel.sched_autogroup_enabled`,
/// on by default in Debian's and Ubuntu's kernels) the CPU is shared fairly between sessions
/// first and by nice only within one, and every PostgreSQL process is a session of its own
/// (InitPostmasterChild calls setsid): a nice-19 explorer beside one user's backend got half
/// of a core, measured. Its session's autogroup holds only this process (PostgreSQL's
/// processes do not fork), so its nice, in `/proc/self/autogroup`, is this process's share
/// against the others. Raising one's own nice value needs no privilege; the error (a kernel
/// that refuses it) is returned for the log. A kernel without autogroups has no such file.
///
/// The kernel takes an unprivileged write of an autogroup's nice at most once per 100 ms on
/// the whole machine (EAGAIN otherwise: two explorers starting together, the two workers of
/// one Gather): a refused write is tried again every [`AUTOGROUP_RETRY`], `attempts` times in
/// all.
pub fn lower(nice: i32, attempts: u32) -> Result<(), String> {
    if nice <= 0 {
        return Ok(());
    }
    // SAFETY: setpriority on the calling process (who = 0), no memory involved.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if r != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    lower_autogroup(std::path::Path::new("/proc/self/autogroup"), nice, attempts)
}

/// Attempts at the autogroup's nice in the explorer as it starts (two databases' explorers
/// start together), about 2 s.
pub const EXPLORER_ATTEMPTS: u32 = 50;
/// Attempts in a parallel worker of the explorer's, about 120 ms (the kernel's limit is 100).
pub const WORKER_ATTEMPTS: u32 = 4;

/// The pause between two writes of an autogroup's nice the kernel refused as too frequent.
pub const AUTOGROUP_RETRY: std::time::Duration = std::time::Duration::from_millis(40);

/// Write `nice` to the autogroup file `path` when it exists and this process leads
/// its session (then the autogroup is its own; otherwise others share it, and it is left
/// alone), trying again after [`AUTOGROUP_RETRY`] while the kernel says "try again", at most
/// `attempts` times.
pub(crate) fn lower_autogroup(
    path: &std::path::Path,
    nice: i32,
    attempts: u32,
) -> Result<(), String> {
    // SAFETY: getsid/getpid of the calling process, no memory involved.
    let leader = unsafe { libc::getsid(0) == libc::getpid() };
    if !leader || !path.exists() {
        return Ok(());
    }
    let mut tried = 0;
    loop {
        tried += 1;
        match std::fs::write(path, nice.to_string()) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && tried < attempts => {
                std::thread::sleep(AUTOGROUP_RETRY)
            }
            Err(e) => {
                return Err(format!(
                    "its autogroup's nice ({}), {tried} attempt(s): {e}",
                    path.display()
                ))
            }
        }
    }
}

/// How long this thread has waited on a run queue for a CPU since it started, microseconds
/// (the second field of `/proc/thread-self/schedstat`, in nanoseconds). None where the kernel
/// does not report it.
pub fn run_delay_us() -> Option<u64> {
    if NO_SCHEDSTAT.load(Ordering::Relaxed) {
        return None;
    }
    let parsed = std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| parse_schedstat(&s));
    if parsed.is_none() {
        NO_SCHEDSTAT.store(true, Ordering::Relaxed);
    }
    parsed
}

/// The run-queue delay (microseconds) in a schedstat line: "exec_ns run_delay_ns timeslices".
pub(crate) fn parse_schedstat(line: &str) -> Option<u64> {
    let mut fields = line.split_ascii_whitespace();
    fields.next()?.parse::<u64>().ok()?;
    let delay_ns: u64 = fields.next()?.parse().ok()?;
    fields.next()?.parse::<u64>().ok()?;
    Some(delay_ns / 1000)
}

/// Whether a run of `wall_ms` whose processes waited `waited_us` for a CPU in all was
/// contended (see [`CONTENDED_SHARE`]), `processes` of them (its leader and the parallel
/// workers one Gather launched) on a machine of `cores`: a run with more processes than cores
/// waits by itself, on a server with nothing else to do (a parallel plan of 3 on 2 cores: one
/// of them waits at any time, measured), and that wait, up to (processes - cores) x its wall
/// time, is the plan's own, as it is when a user runs it; only what is over it was the users'.
pub fn contended(waited_us: u64, wall_ms: f64, processes: u32, cores: usize) -> bool {
    let own_ms = (f64::from(processes) - cores as f64).max(0.0) * wall_ms;
    waited_us as f64 / 1000.0 - own_ms > CONTENDED_SHARE * wall_ms
}

/// At ExecutorStart in a parallel worker: when its leader is this database's explorer, lower
/// the worker's priority and note its run-queue delay so far ([`worker_end`] adds what it
/// waited to the explorer's count). Any other process: nothing.
pub fn worker_start() {
    // SAFETY: backend globals, read in the worker's own process.
    let (worker, leader, db) = unsafe {
        let leader = if pg_sys::MyProc.is_null() || (*pg_sys::MyProc).lockGroupLeader.is_null() {
            0
        } else {
            (*(*pg_sys::MyProc).lockGroupLeader).pid
        };
        (
            pg_sys::ParallelWorkerNumber >= 0,
            leader,
            pg_sys::MyDatabaseId.to_u32(),
        )
    };
    if !worker || leader == 0 || shared::explorer_pid(db) != leader {
        return;
    }
    // Lowered or not (a kernel that refuses), the wait is measured the same. The second worker
    // of a Gather finds the kernel's limit on autogroup writes just used by the first: it waits
    // for it (the leader and the first worker go on meanwhile), up to WORKER_ATTEMPTS.
    // The leader's ruvector.dag_explorer_nice (a parallel worker runs with its leader's settings).
    let _ = lower(crate::guc::EXPLORER_NICE.get(), WORKER_ATTEMPTS);
    if let Some(d) = run_delay_us() {
        WORKER.with(|w| w.set(Some((db, d))));
    }
}

/// At ExecutorEnd in a parallel worker [`worker_start`] noted: add its run-queue delay since
/// then to the explorer's `explorer_wait_ms` (the explorer reads it when the run ends: the
/// worker ends its execution before the leader's Gather finishes).
pub fn worker_end() {
    if let Some((db, d0)) = WORKER.with(|w| w.take()) {
        if let Some(d1) = run_delay_us() {
            shared::count_explorer(db, ExplorerCounter::WaitUs, d1.saturating_sub(d0));
        }
    }
}
