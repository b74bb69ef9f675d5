// The background explorer's pieces that need no server: what it reads of a statement's text
// and of EXPLAIN's output (scripts/explorer.sh tests it on a real server).

#[pg_test]
fn the_first_word_skips_blanks_comments_and_parentheses() {
    use crate::explorer::offer::first_word;
    assert_eq!(first_word("  SELECT 1"), "SELECT");
    assert_eq!(first_word("-- a comment\n (select 1)"), "select");
    assert_eq!(first_word("/* x */ WITH a AS (SELECT 1) TABLE a"), "WITH");
    assert_eq!(first_word("explain select 1"), "explain");
    assert_eq!(first_word("/* never closed"), "");
}

#[pg_test]
fn an_explained_statement_is_the_statement_it_explains() {
    use crate::explorer::offer::without_explain;
    assert_eq!(without_explain("EXPLAIN (ANALYZE, TIMING OFF) SELECT 1"), "SELECT 1");
    assert_eq!(without_explain("explain analyze verbose select 1"), "select 1");
    assert_eq!(without_explain("EXPLAIN SELECT 1"), "SELECT 1");
    assert_eq!(without_explain("SELECT 1"), "SELECT 1");
    assert_eq!(without_explain("EXPLAIN (ANALYZE"), "EXPLAIN (ANALYZE");
    assert_eq!(without_explain("/*é*/ EXPLAIN SELECT 1"), "/*é*/ EXPLAIN SELECT 1");
    // What follows is the caller's to check (a SELECT's first word).
    assert_eq!(without_explain("EXPLAIN ANALYZE DELETE FROM t"), "DELETE FROM t");
}

#[pg_test]
fn a_prepared_statement_is_the_statement_it_prepares() {
    use crate::explorer::offer::without_prepare;
    assert_eq!(without_prepare("PREPARE q (int, text) AS SELECT $1, $2"), "SELECT $1, $2");
    assert_eq!(without_prepare("prepare q as select 1"), "select 1");
    assert_eq!(without_prepare(r#"PREPARE "my q" AS SELECT 1"#), "SELECT 1");
    assert_eq!(without_prepare("PREPARE q (int AS SELECT 1"), "PREPARE q (int AS SELECT 1");
    assert_eq!(without_prepare("PREPARE q SELECT 1"), "PREPARE q SELECT 1");
    assert_eq!(without_prepare("SELECT 1"), "SELECT 1");
}

#[pg_test]
fn the_execution_time_is_read_from_explain_json() {
    use crate::explorer::execution_ms;
    let json = r#"[{"Plan": {"Node Type": "Result"}, "Planning Time": 0.05, "Execution Time": 12.5}]"#;
    assert_eq!(execution_ms(json), Ok(12.5));
    assert!(execution_ms(r#"[{"Plan": {}}]"#).unwrap_err().contains("no Execution Time"));
    assert!(execution_ms("not json").unwrap_err().contains("not JSON"));
}

#[pg_test]
fn only_a_plain_read_only_select_is_offered() {
    // What the planner hook checks before offering (ineligible(): the analyzed query).
    setup();
    let reason = |sql: &str| -> Option<&'static str> {
        let sql = std::ffi::CString::new(sql).unwrap();
        // SAFETY: parse analysis of one statement in this transaction.
        unsafe {
            let raw = pg_sys::raw_parser(sql.as_ptr(), pg_sys::RawParseMode::RAW_PARSE_DEFAULT);
            let stmt = (*(*raw).elements).ptr_value as *mut pg_sys::RawStmt;
            let q = pg_sys::parse_analyze_fixedparams(stmt, sql.as_ptr(), std::ptr::null_mut(), 0, std::ptr::null_mut());
            crate::explorer::offer::ineligible(q)
        }
    };
    assert_eq!(reason("SELECT * FROM t_orders o JOIN t_customers c ON c.id = o.customer"), None);
    assert_eq!(reason("SELECT * FROM t_orders FOR UPDATE"), Some("it locks rows (FOR UPDATE / SHARE)"));
    assert_eq!(reason("SELECT * FROM t_orders WHERE random() < 0.5"), Some("it calls a volatile function"));
    assert_eq!(
        reason("SELECT * FROM (SELECT pg_advisory_lock(id) FROM t_orders) s"),
        Some("it calls a volatile function")
    );
    assert_eq!(
        reason("WITH d AS (DELETE FROM t_orders RETURNING id) SELECT * FROM d"),
        Some("it has a data-modifying WITH")
    );
    Spi::run("CREATE TEMP TABLE t_tmp (id int)").unwrap();
    assert_eq!(reason("SELECT * FROM t_orders JOIN t_tmp USING (id)"), Some("it reads a temporary table"));
    assert_eq!(reason("INSERT INTO t_orders SELECT * FROM t_orders LIMIT 0"), Some("it is not a SELECT"));
}

#[pg_test]
fn the_explorers_log_lines_carry_no_quoted_value() {
    use crate::explorer::redacted;
    assert_eq!(
        redacted(r#"invalid input syntax for type date: "2024-13-01""#),
        r#"invalid input syntax for type date: "...""#
    );
    assert_eq!(redacted("permission denied for table orders"), "permission denied for table orders");
    assert_eq!(redacted("value 'secret"), "value '...");
}

#[pg_test]
fn schedstat_lines_are_read_and_bad_ones_refused() {
    use crate::explorer::priority::parse_schedstat;
    assert_eq!(parse_schedstat("1731903 4014839 2\n"), Some(4014));
    assert_eq!(parse_schedstat("0 999 1"), Some(0));
    assert_eq!(parse_schedstat(""), None);
    assert_eq!(parse_schedstat("12 x 3"), None);
    assert_eq!(parse_schedstat("12 34"), None);
}

#[pg_test]
fn a_run_is_contended_past_its_share_of_waiting() {
    use crate::explorer::priority::{contended, CONTENDED_SHARE};
    // A 100 ms run: waiting exactly its share is not over it, a microsecond more is.
    let limit_us = (CONTENDED_SHARE * 100.0 * 1000.0) as u64;
    assert!(!contended(limit_us, 100.0, 1, 2));
    assert!(contended(limit_us + 1, 100.0, 1, 2));
    assert!(!contended(0, 0.5, 1, 2));
    // As many processes as cores: none of the wait is the run's own.
    assert!(contended(limit_us + 1, 100.0, 2, 2));
    // A leader and two workers on 2 cores: one of them waits at any time by itself (100 ms
    // of a 100 ms run); the share counts only what is over it.
    assert!(!contended(100_000 + limit_us, 100.0, 3, 2));
    assert!(contended(100_000 + limit_us + 1, 100.0, 3, 2));
    // Its own processes on a larger machine never excuse a wait.
    assert!(contended(limit_us + 1, 100.0, 3, 4));
}

#[pg_test]
fn a_contended_run_is_kept_only_for_a_candidate_faster_than_the_default_plan() {
    use crate::explorer::kept_though_contended;
    // A candidate faster than the default's typical time even while it waited: kept.
    assert!(kept_though_contended(3, 40.0, Some(100.0)));
    // As slow or slower: it says nothing about the plan.
    assert!(!kept_though_contended(3, 100.0, Some(100.0)));
    assert!(!kept_though_contended(3, 250.0, Some(100.0)));
    // The default plan's own runs never: a default measured slow would favour the candidates.
    assert!(!kept_though_contended(0, 40.0, Some(100.0)));
    // Without the default's time there is nothing to compare with.
    assert!(!kept_though_contended(3, 40.0, None));
}

#[pg_test]
fn a_run_is_expected_to_take_its_leader_and_the_workers_its_settings_allow() {
    use crate::explorer::processes_bound;
    // What a run may launch: the server's per-Gather limit, the statement's or the arm's
    // setting after it (the last one wins), never over max_parallel_workers, never below 0.
    let none: [(&str, &str); 0] = [];
    assert_eq!(processes_bound(none.into_iter(), 2, 8), 3);
    assert_eq!(
        processes_bound([("max_parallel_workers_per_gather", "4")].into_iter(), 2, 8),
        5
    );
    assert_eq!(
        processes_bound(
            [
                ("max_parallel_workers_per_gather", "4"),
                ("work_mem", "64MB"),
                ("MAX_PARALLEL_WORKERS_PER_GATHER", "0"),
            ]
            .into_iter(),
            2,
            8
        ),
        1
    );
    assert_eq!(processes_bound(none.into_iter(), 6, 3), 4);
    assert_eq!(
        processes_bound([("max_parallel_workers_per_gather", "x")].into_iter(), 2, 8),
        3
    );
    assert_eq!(processes_bound(none.into_iter(), -1, 8), 1);
}

#[pg_test]
fn the_workers_a_run_launched_are_read_from_its_explain_analyze() {
    use crate::explorer::workers_launched;
    Spi::run(
        "CREATE TABLE wide_scan AS SELECT g AS x FROM generate_series(1, 20000) g; ANALYZE wide_scan",
    )
    .unwrap();
    let explain = |sets: &str| -> serde_json::Value {
        Spi::run(sets).unwrap();
        let mut out = None;
        Spi::connect(|c| {
            let rows = c
                .select(
                    "EXPLAIN (ANALYZE, TIMING OFF, COSTS OFF, FORMAT JSON) SELECT count(*) FROM wide_scan",
                    None,
                    &[],
                )
                .unwrap();
            for r in rows {
                out = r.get::<pgrx::Json>(1).unwrap();
            }
        });
        out.expect("EXPLAIN returned a row").0
    };
    // Parallel plans made cheap: a Gather launches what the server lets it.
    let parallel = explain(
        "SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; \
         SET min_parallel_table_scan_size = 0; SET max_parallel_workers_per_gather = 2",
    );
    let launched = workers_launched(&parallel, 0);
    let text = parallel.to_string();
    assert!(text.contains("\"Workers Launched\""), "{text}");
    assert!(launched <= 2, "{text}");
    // The number read is the one EXPLAIN printed (how many started depends on free slots).
    assert!(
        text.contains(&format!("\"Workers Launched\":{launched}")),
        "read {launched} from {text}"
    );
    let serial = explain("SET max_parallel_workers_per_gather = 0");
    assert_eq!(workers_launched(&serial, 0), 0, "{serial}");
    // Malformed or foreign values count as none.
    let odd: serde_json::Value =
        serde_json::from_str(r#"[{"Plan": {"Workers Launched": "two", "Plans": [{"Workers Launched": 3}]}}]"#)
            .unwrap();
    assert_eq!(workers_launched(&odd, 0), 3);
}

#[pg_test]
fn the_explorer_waits_longer_after_runs_given_up_and_less_after_runs_completed() {
    use crate::explorer::{
        Backoff, QUIET_HALF_LIFE_S, QUIET_MAX_MS, QUIET_MIN_MS, QUIET_RUN_FACTOR,
    };
    use std::time::{Duration, Instant};
    let t = Instant::now();
    let mut b = Backoff::default();
    // No run given up: no window, and a completed run leaves it so.
    assert_eq!(b.window_ms(t), 0);
    b.completed(t);
    assert_eq!(b.window_ms(t), 0);
    // Each run given up doubles it, from the minimum, up to the maximum.
    b.yielded(t, 0);
    assert_eq!(b.window_ms(t), QUIET_MIN_MS);
    b.yielded(t, 0);
    assert_eq!(b.window_ms(t), 2 * QUIET_MIN_MS);
    for _ in 0..20 {
        b.yielded(t, 0);
    }
    assert_eq!(b.window_ms(t), QUIET_MAX_MS);
    // A run waits for the window, but at most a multiple of what it is expected to take (users
    // starting a statement every 2 s leave gaps a 300 ms run fits in), and at least the minimum.
    let ms = |d: Duration| d.as_millis() as u32;
    assert_eq!(ms(b.needed(t, None)), QUIET_MAX_MS);
    assert_eq!(
        ms(b.needed(t, Some(300.0))),
        (QUIET_RUN_FACTOR * 300.0) as u32
    );
    assert_eq!(ms(b.needed(t, Some(1.0))), QUIET_MIN_MS);
    assert_eq!(ms(b.needed(t, Some(60_000.0))), QUIET_MAX_MS);
    assert_eq!(ms(b.needed(t, Some(f64::NAN))), QUIET_MAX_MS);
    assert_eq!(ms(Backoff::default().needed(t, Some(300.0))), 0);
    // A completed run shortens it, but one does not undo a run given up.
    let before = b.window_ms(t);
    b.completed(t);
    let after = b.window_ms(t);
    assert!(after < before && after > before / 2, "{before} -> {after}");
    // Enough completed runs bring it back to none.
    for _ in 0..200 {
        b.completed(t);
    }
    assert_eq!(b.window_ms(t), 0);
    // Without runs given up it decays with time: halved after a half-life, gone after many.
    let mut b = Backoff::default();
    for _ in 0..5 {
        b.yielded(t, 0);
    }
    let w = b.window_ms(t);
    let later = t + Duration::from_secs(QUIET_HALF_LIFE_S);
    assert_eq!(b.window_ms(later), w / 2);
    assert_eq!(b.window_ms(t + Duration::from_secs(QUIET_HALF_LIFE_S * 40)), 0);
    // A run given up after the decay starts from the decayed window.
    b.yielded(later, 0);
    assert_eq!(b.window_ms(later), w);
    // The quiet so far: it grows while no user's statement starts, from one wait to the next,
    // and starts over when one does.
    let mut b = Backoff::default();
    let s = Duration::from_millis(1);
    assert_eq!(b.quiet_for(7, t), Duration::ZERO);
    assert_eq!(b.quiet_for(7, t + 300 * s), 300 * s);
    assert_eq!(b.quiet_for(7, t + 900 * s), 900 * s);
    assert_eq!(b.quiet_for(8, t + 950 * s), Duration::ZERO);
    assert_eq!(b.quiet_for(8, t + 1000 * s), 50 * s);
}

/// Reads the users' statement count every 20 ms from `from` to `to` (ms after `t`), as
/// `wait_until_quiet` does, with users' statements starting at `starts` and taking every core
/// in the `busy` spans (ms after `t`).
#[cfg(any(test, feature = "pg_test"))]
fn watch(
    b: &mut crate::explorer::Backoff,
    t: std::time::Instant,
    starts: &[u64],
    busy: &[(u64, u64)],
    span: (u64, u64),
) {
    let mut at = span.0;
    while at <= span.1 {
        let n = starts.iter().filter(|&&s| s <= at).count() as u64;
        b.quiet_for(n, t + std::time::Duration::from_millis(at));
        if busy.iter().any(|&(from, to)| (from..to).contains(&at)) {
            b.cores_busy();
        }
        at += 20;
    }
}

#[pg_test]
fn the_explorer_starts_a_run_where_the_users_gaps_say_it_fits() {
    use crate::explorer::{Backoff, GAPS_KEPT, GAPS_MIN, QUIET_RUN_FACTOR};
    use std::time::{Duration, Instant};
    let t = Instant::now();
    let ms = |d: Duration| d.as_millis() as u32;
    let at = |m: u64| t + Duration::from_millis(m);
    // A session that runs a 1 s statement (parallel: every core), two short ones 40 ms apart,
    // then sleeps 2 s, over and over: a 900 ms run fits the 2 s gaps only when it starts at
    // once.
    let (mut starts, mut busy) = (Vec::new(), Vec::new());
    for c in 0..12u64 {
        let s = c * 3100;
        starts.extend([s, s + 1000, s + 1040]);
        busy.push((s, s + 1000));
    }
    let mut b = Backoff::default();
    // Gaps seen while no run was given up decide nothing: no wait.
    watch(&mut b, t, &starts, &busy, (0, 3 * 3100));
    assert!(b.gaps().len() >= GAPS_MIN, "gaps {:?}", b.gaps());
    assert_eq!(ms(b.needed(at(3 * 3100), Some(900.0))), 0);
    // Runs given up in the 40 ms gap between the short statements: the window grows past twice
    // the run, and the gaps they ended are remembered too.
    let mut from = 3 * 3100 + 20;
    for c in 3..10 {
        watch(&mut b, t, &starts, &busy, (from, c * 3100 + 1020));
        b.yielded(at(c * 3100 + 1040), 3 * c + 3);
        from = c * 3100 + 1060;
    }
    let now = at(9 * 3100 + 1040);
    let capped = (QUIET_RUN_FACTOR * 900.0) as u32;
    assert!(b.window_ms(now) > capped, "window {}", b.window_ms(now));
    // Where the gaps say a 900 ms run fits: after the short statements, far sooner than twice
    // the run; the window alone would have it wait 1.8 s of a 2.06 s gap.
    let q = ms(b.needed(now, Some(900.0)));
    assert!((40..200).contains(&q), "a 900 ms run waits {q} ms of quiet, gaps {:?}", b.gaps());
    // A run longer than any gap is left to the window and its cap.
    let long = (QUIET_RUN_FACTOR * 1500.0) as u32;
    assert_eq!(ms(b.needed(now, Some(1500.0))), b.window_ms(now).min(long));
    // The statement's own second while it took every core is no gap.
    assert!(b.gaps().iter().all(|&g| g != 1000), "gaps {:?}", b.gaps());
    // Users starting a statement every 100 ms: no gap fits a 300 ms run, the window decides.
    let every: Vec<u64> = (0..40).map(|i| i * 100).collect();
    let mut b = Backoff::default();
    watch(&mut b, t, &every, &[], (0, 3990));
    assert_eq!(b.gaps().len(), GAPS_KEPT);
    for _ in 0..6 {
        b.yielded(at(3990), 40);
    }
    let w = b.window_ms(at(3990));
    assert!(w > 0);
    assert_eq!(ms(b.needed(at(3990), Some(300.0))), w.min((QUIET_RUN_FACTOR * 300.0) as u32));
    // A gap the explorer did not watch from start to end (it was away) is not remembered.
    let mut b = Backoff::default();
    b.quiet_for(1, t);
    b.quiet_for(1, at(20));
    b.quiet_for(2, at(900));
    b.quiet_for(2, at(920));
    b.quiet_for(3, at(940));
    assert!(b.gaps().is_empty(), "{:?}", b.gaps());
    b.quiet_for(4, at(960));
    assert_eq!(b.gaps(), &[20]);
}

#[pg_test]
fn this_backend_reports_a_run_queue_delay_that_only_grows() {
    use crate::explorer::priority::run_delay_us;
    // A kernel without schedstat reports nothing (then no run is taken for contended).
    let Some(a) = run_delay_us() else { return };
    let b = run_delay_us().expect("read once, read again");
    assert!(b >= a);
}

#[pg_test]
fn the_explorer_lowers_its_own_autogroup_only() {
    use crate::explorer::priority::lower_autogroup;
    // A backend leads its own session (InitPostmasterChild's setsid): its autogroup is its own.
    let dir = std::env::temp_dir().join(format!("ruvector_dag_autogroup_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("autogroup");
    std::fs::write(&file, "/autogroup-1 nice 0\n").unwrap();
    // SAFETY: reading the calling process's ids.
    let leader = unsafe { libc::getsid(0) == libc::getpid() };
    lower_autogroup(&file, 17, 1).unwrap();
    let written = std::fs::read_to_string(&file).unwrap();
    if leader {
        assert_eq!(written.trim(), "17");
    } else {
        assert_eq!(written, "/autogroup-1 nice 0\n", "a shared autogroup is left alone");
    }
    // A kernel without autogroups: nothing to do, no error.
    assert_eq!(lower_autogroup(&dir.join("absent"), 17, 1), Ok(()));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[pg_test]
fn autogroup_writes_the_kernel_refuses_as_too_frequent_are_retried() {
    use crate::explorer::priority::{lower_autogroup, WORKER_ATTEMPTS};
    // This backend's own autogroup (it only lowers this test backend's CPU share). The kernel
    // takes an unprivileged write at most every 100 ms: the second of two writes in a row is
    // refused and has to be retried, as in the second parallel worker of a Gather.
    let real = std::path::Path::new("/proc/self/autogroup");
    // SAFETY: reading the calling process's ids.
    let leader = unsafe { libc::getsid(0) == libc::getpid() };
    if !real.exists() || !leader {
        return;
    }
    for _ in 0..3 {
        lower_autogroup(real, 19, WORKER_ATTEMPTS).expect("lowered, retried while refused");
    }
    let now = std::fs::read_to_string(real).unwrap();
    assert!(now.trim_end().ends_with(" nice 19"), "{now}");
}

#[pg_test]
fn the_explorer_keeps_a_users_priority_by_default() {
    use crate::explorer::priority::lower;
    // SAFETY: reading the calling process's priority.
    let before = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let group = std::fs::read_to_string("/proc/self/autogroup").ok();
    lower(crate::guc::EXPLORER_NICE.get(), 1).unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }, before);
    assert_eq!(std::fs::read_to_string("/proc/self/autogroup").ok(), group);
}

#[pg_test]
fn a_users_statement_counts_as_executing_until_it_ends_or_fails() {
    use crate::shared::{executing, Executor};
    // This test's own statement (SELECT of the test function, from a client backend) is the
    // outermost run: counted as a user's for the explorer's pacing.
    assert_eq!(crate::hooks::run_depth(), (1, Some(Executor::User)));
    assert!(executing().0 >= 1, "{:?}", executing());
    // Nested statements are not counted again, and leave the count as it was.
    Spi::run("SELECT count(*) FROM generate_series(1, 10)").unwrap();
    assert_eq!(crate::hooks::run_depth(), (1, Some(Executor::User)));
    // A statement that fails inside (an ERROR unwinds through the hook) leaves it too.
    Spi::run(
        "DO $do$ BEGIN PERFORM 1 / (SELECT 0); EXCEPTION WHEN division_by_zero THEN NULL; END $do$",
    )
    .unwrap();
    assert_eq!(crate::hooks::run_depth(), (1, Some(Executor::User)));
}

#[pg_test]
fn an_arm_raising_work_mem_is_a_plan_of_its_own_and_the_server_bounds_what_raises_take() {
    setup();
    Spi::run(
        "CREATE TABLE t_spill AS SELECT g AS id, md5(g::text) AS pad FROM generate_series(1, 20000) g;
         ANALYZE t_spill;
         SET ruvector.dag_arms = 'default|work_mem=32MB|enable_seqscan=off|hash_mem_multiplier=8';",
    )
    .unwrap();
    // EXPLAIN ANALYZE's output says whether a sort spilled to disk.
    let spilled_under = |work_mem: &str| -> bool {
        Spi::run(&format!("SET work_mem = '{work_mem}'")).unwrap();
        let json = Spi::get_one::<pgrx::Json>(
            "EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) SELECT id, pad FROM t_spill ORDER BY pad",
        )
        .unwrap()
        .unwrap()
        .0;
        crate::explorer::spilled(&json, 0)
    };
    assert!(spilled_under("64kB"));
    assert!(!spilled_under("32MB"));
    use crate::hooks::memory::{plan_id, raise, sets_memory};
    // Under 64 kB of work_mem, arm 1 raises it: its plans are told from the same shape's
    // default plan; arm 2 raises nothing; arm 3 raises a hash's memory (work_mem times 8).
    Spi::run("SET work_mem = '64kB'").unwrap();
    let shape = 0x1234_5678_9abc_def0_u64;
    assert!(sets_memory(1) && !sets_memory(2) && sets_memory(3) && !sets_memory(0));
    let r = raise(1).expect("a raise");
    assert_eq!(r.settings, vec![("work_mem".to_string(), "32MB".to_string())]);
    assert!(raise(2).is_none() && raise(0).is_none() && raise(3).is_some());
    assert_ne!(plan_id(shape, 1), shape);
    assert_ne!(plan_id(shape, 1), plan_id(shape, 3));
    assert_eq!(plan_id(shape, 2), shape);
    assert_eq!(plan_id(shape, 0), shape);
    // A session that has as much already: the arm raises nothing, its plan is the shape's.
    Spi::run("SET work_mem = '64MB'; SET hash_mem_multiplier = 8").unwrap();
    assert!(raise(1).is_none() && raise(3).is_none());
    assert_eq!(plan_id(shape, 1), shape);
    // A value PostgreSQL would not take is no raise (the arm fails where it is planned).
    Spi::run("SET work_mem = '64kB'; SET ruvector.dag_arms = 'default|work_mem=lots'").unwrap();
    assert!(raise(1).is_none() && sets_memory(1));
    // The server's bound: a share is granted while the rest allows it, refused beyond, and
    // given back.
    let [now, _, granted, refused] = crate::shared::work_mem_grants();
    let cap = now + 1000;
    assert!(crate::shared::grant_work_mem(600, cap));
    assert!(!crate::shared::grant_work_mem(600, cap));
    crate::shared::release_work_mem(600);
    assert!(crate::shared::grant_work_mem(600, cap));
    crate::shared::release_work_mem(600);
    let [after, peak, granted_after, refused_after] = crate::shared::work_mem_grants();
    assert_eq!((after, granted_after - granted, refused_after - refused), (now, 2, 1));
    assert!(peak >= now + 600);
    assert!(counter("work_mem_raised_runs") >= granted_after);
}
