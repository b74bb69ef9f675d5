// Attention plugins in PostgreSQL: registration, the sandbox, the planner path's plugin kind.

/// A plugin module (built by crate `ruvector-dag-plugin-modules`).
fn plugin_module(name: &str) -> &'static [u8] {
    ruvector_dag_plugin_modules::expect(name)
}

fn register(name: &str, wasm: &[u8]) -> String {
    Spi::get_one_with_args::<String>(
        "SELECT ruvector_dag.ruvector_dag_register_attention($1, $2)",
        &[name.into(), wasm.into()],
    )
    .expect("register")
    .expect("a sha256")
}

fn plugin_scores(name: &str) -> String {
    format!("SELECT * FROM ruvector_dag.ruvector_attention_scores($q${JOIN}$q$, 'plugin:{name}')")
}

#[pg_test]
fn a_plugin_ensemble_equals_the_built_in_one_through_sql() {
    setup();
    let sha = register("guest_ensemble", plugin_module("ensemble"));
    assert_eq!(sha.len(), 64);
    let worst: f64 = one(&format!(
        "SELECT max(abs(p.weight - b.weight))
           FROM ruvector_dag.ruvector_attention_scores($q${JOIN}$q$, 'plugin:guest_ensemble') p
           JOIN ruvector_dag.ruvector_attention_scores($q${JOIN}$q$, 'ensemble') b USING (node)"
    ));
    assert!(worst <= 1e-5, "largest difference {worst}");
    let rows: i64 = one(&format!("SELECT count(*) FROM ({}) s", plugin_scores("guest_ensemble")));
    assert!(rows >= 5);
    // Registering the same bytes again changes nothing; the registry shows the calls.
    let at: String = one("SELECT registered_at::text FROM ruvector_dag.attention_plugins WHERE name = 'guest_ensemble'");
    assert_eq!(register("guest_ensemble", plugin_module("ensemble")), sha);
    let again: String = one("SELECT registered_at::text FROM ruvector_dag.attention_plugins WHERE name = 'guest_ensemble'");
    assert_eq!(at, again);
    let (calls, failures): (Option<i64>, Option<i64>) = Spi::get_two(
        "SELECT calls, failures FROM ruvector_dag.ruvector_dag_plugins() WHERE name = 'guest_ensemble'",
    )
    .unwrap();
    assert_eq!((calls, failures), (Some(2), Some(0)));
    // Unregistered, it is gone, and asking for it names what is registered.
    let removed: String = one("SELECT ruvector_dag.ruvector_dag_unregister_attention('guest_ensemble')");
    assert_eq!(removed, sha);
    let e = error_of(&plugin_scores("guest_ensemble")).expect("an error");
    assert!(e.contains("no attention plugin named 'guest_ensemble'"), "{e}");
}

#[pg_test]
fn evil_plugins_get_clear_errors_and_the_backend_keeps_serving() {
    setup();
    Spi::run("SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders'); SET ruvector.dag_mode = 'learn'").unwrap();
    Spi::run(JOIN).unwrap();
    let state_before: Option<i64> = Spi::get_one("SELECT version FROM ruvector_dag.learned_state").unwrap_or(None);
    let runtime: [(&str, &[u8], &str); 13] = [
        ("evil_spin", plugin_module("evil_spin"), "ran out of fuel (limit 50,000,000)"),
        ("evil_memory_bomb", plugin_module("evil_memory_bomb"), "hit its memory limit (67,108,864 bytes)"),
        ("evil_recursion", plugin_module("evil_recursion"), "overflowed its stack (limit 524,288 bytes)"),
        ("evil_unreachable", plugin_module("evil_unreachable"), "unreachable"),
        ("evil_panic", plugin_module("evil_panic"), "trapped"),
        ("evil_wrong_length", plugin_module("evil_wrong_length"), "weights for"),
        ("evil_nan", plugin_module("evil_nan"), "NaN"),
        ("evil_negative", plugin_module("evil_negative"), "-0.5"),
        ("evil_zeros", plugin_module("evil_zeros"), "sum to zero"),
        ("evil_huge_output", plugin_module("evil_huge_output"), "over the output limit"),
        ("evil_bad_pointer", plugin_module("evil_bad_pointer"), "outside its"),
        ("evil_bad_alloc", plugin_module("evil_bad_alloc"), "request buffer"),
        ("evil_garbage_output", plugin_module("evil_garbage_output"), "does not decode"),
    ];
    for (name, wasm, words) in runtime {
        register(name, wasm);
        let e = error_of(&plugin_scores(name)).unwrap_or_else(|| panic!("{name} returned weights"));
        assert!(e.contains(&format!("plugin '{name}'")) && e.contains(words), "{name}: {e}");
        // The same session goes on: a query, and a good built-in analysis.
        let n: i64 = one("SELECT count(*) FROM t_orders");
        assert_eq!(n, 5000);
        let rows: i64 = one(&format!("SELECT count(*) FROM ruvector_dag.ruvector_attention_scores($q${JOIN}$q$, 'ensemble')"));
        assert!(rows >= 5);
        let (failures, last): (Option<i64>, Option<String>) = Spi::get_two_with_args(
            "SELECT failures, last_error FROM ruvector_dag.ruvector_dag_plugins() WHERE name = $1",
            &[name.into()],
        )
        .unwrap();
        assert_eq!(failures, Some(1), "{name}");
        assert!(last.unwrap_or_default().contains(words), "{name}");
    }
    // Modules that break the ABI are refused at registration, and nothing is stored.
    let refused: [(&str, &[u8], &str); 6] = [
        ("evil_wasi", plugin_module("evil_wasi"), "imports WASI"),
        ("evil_unknown_import", plugin_module("evil_unknown_import"), "env::read_host_secret"),
        ("evil_wrong_abi", plugin_module("evil_wrong_abi"), "ABI version 999"),
        ("evil_missing_export", plugin_module("evil_missing_export"), "does not export rvdag_attend"),
        ("evil_wrong_type", plugin_module("evil_wrong_type"), "func(i32) -> i32"),
        ("not_wasm", b"this is not a wasm module", "not a valid WebAssembly module"),
    ];
    for (name, wasm, words) in refused {
        let e = error_of(&format!(
            "SELECT ruvector_dag.ruvector_dag_register_attention('{name}', '\\x{}'::bytea)",
            wasm.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ))
        .unwrap_or_else(|| panic!("{name} was registered"));
        assert!(e.contains(&format!("plugin '{name}'")) && e.contains(words), "{name}: {e}");
    }
    let stored: i64 = one("SELECT count(*) FROM ruvector_dag.attention_plugins WHERE name IN ('evil_wasi', 'evil_unknown_import', 'evil_wrong_abi', 'evil_missing_export', 'evil_wrong_type', 'not_wasm')");
    assert_eq!(stored, 0);
    // Limits come from the settings: a tighter fuel limit is the one reported.
    Spi::run("SET ruvector.dag_plugin_fuel = 20000").unwrap();
    let e = error_of(&plugin_scores("evil_spin")).unwrap();
    assert!(e.contains("ran out of fuel (limit 20,000)"), "{e}");
    // Nothing learned was touched.
    let state_after: Option<i64> = Spi::get_one("SELECT version FROM ruvector_dag.learned_state").unwrap_or(None);
    assert_eq!(state_before, state_after);
}

#[pg_test]
fn only_admins_register_or_unregister_plugins() {
    setup();
    register("mis", plugin_module("misestimate"));
    Spi::run(
        "DROP ROLE IF EXISTS rv_plugin_user; CREATE ROLE rv_plugin_user;
         GRANT SELECT ON t_orders, t_customers TO rv_plugin_user;
         SET ROLE rv_plugin_user;",
    )
    .unwrap();
    let hex: String = plugin_module("misestimate").iter().map(|b| format!("{b:02x}")).collect();
    let e = error_of(&format!("SELECT ruvector_dag.ruvector_dag_register_attention('mine', '\\x{hex}'::bytea)")).unwrap();
    assert!(e.contains("needs a superuser or a member of role ruvector_dag_admin"), "{e}");
    let e = error_of("SELECT ruvector_dag.ruvector_dag_unregister_attention('mis')").unwrap();
    assert!(e.contains("needs a superuser"), "{e}");
    // Using a registered plugin needs no privilege beyond the tables the query reads.
    let rows: i64 = one(&format!("SELECT count(*) FROM ({}) s", plugin_scores("mis")));
    assert!(rows >= 5);
    Spi::run("RESET ROLE").unwrap();
    let e = error_of("SELECT ruvector_dag.ruvector_dag_register_attention('Bad Name', '\\x00'::bytea)").unwrap();
    assert!(e.contains("is not valid"), "{e}");
    let e = error_of(&format!("SELECT * FROM ruvector_dag.ruvector_attention_scores($q${JOIN}$q$, 'no_such_kind')")).unwrap();
    assert!(e.contains("plugin:<name>"), "{e}");
}

/// Run `JOIN` (observed) and EXPLAIN it until the decision's attention is `want` (at most
/// `tries` times); the EXPLAIN line that says so, if any.
fn run_until_attention(want: &str, tries: usize) -> Option<String> {
    for _ in 0..tries {
        Spi::run(JOIN).unwrap();
        let lines = explain_lines(JOIN);
        if let Some(l) = lines.iter().find(|l| l.starts_with("ruvector_dag: arm")) {
            if l.contains(&format!("attention {want},")) {
                return Some(l.clone());
            }
        }
    }
    None
}

#[pg_test]
fn a_plugin_named_by_the_attention_setting_is_one_more_kind_the_selector_picks() {
    setup();
    register("mis", plugin_module("misestimate"));
    Spi::run(
        "SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders');
         SET ruvector.dag_mode = 'learn';
         SET ruvector.dag_attention_type = 'plugin:mis';",
    )
    .unwrap();
    assert_eq!(status("attention_type"), "plugin:mis");
    // The analysis functions use it as the setting's kind.
    let worst: f64 = one(&format!(
        "SELECT max(abs(a.attention - p.weight))
           FROM ruvector_dag.ruvector_dag_analyze($q${JOIN}$q$) a
           JOIN ruvector_dag.ruvector_attention_scores($q${JOIN}$q$, 'plugin:mis') p USING (node)"
    ));
    assert!(worst <= 1e-9, "{worst}");
    // The selector learns from predictions of a trained model: train it, then every built-in
    // kind is tried once before the plugin.
    for _ in 0..4 {
        Spi::run(JOIN).unwrap();
    }
    Spi::run("SELECT * FROM ruvector_dag.ruvector_dag_learn()").unwrap();
    let line = run_until_attention("plugin:mis", 30)
        .unwrap_or_else(|| panic!("the selector never picked the plugin: {}", status("attention_plugin_in_planner")));
    assert!(line.contains("attention plugin:mis"), "{line}");
    assert!(status("attention_plugin_in_planner").contains("the attention selector may pick it"));
    // Its runs are learned from, credited to the plugin, and persisted by the learner.
    Spi::run(JOIN).unwrap();
    Spi::run("SELECT * FROM ruvector_dag.ruvector_dag_learn()").unwrap();
    let run_until_pulled = (0..20).find(|_| {
        Spi::run(JOIN).unwrap();
        Spi::run("SELECT * FROM ruvector_dag.ruvector_dag_learn()").unwrap();
        !status("attention_plugin_selector").starts_with("0 pulls")
    });
    assert!(run_until_pulled.is_some(), "{}", status("attention_plugin_selector"));
    let (calls, failures): (Option<i64>, Option<i64>) = Spi::get_two(
        "SELECT calls, failures FROM ruvector_dag.ruvector_dag_plugins() WHERE name = 'mis'",
    )
    .unwrap();
    // 64 reference plans for its centre, then the statements it served.
    assert!(calls.unwrap_or(0) > 64, "{calls:?}");
    assert_eq!(failures, Some(0));
    assert_eq!(counter("backend_plugin_fallbacks"), 0);
    // The key stays built-in: what was learned is keyed as before.
    assert_eq!(status("backend_last_error"), "none");
}

#[pg_test]
fn a_plugin_that_fails_while_planning_costs_the_statement_only_the_built_in_kind() {
    setup();
    register("spin", plugin_module("evil_spin"));
    Spi::run(
        "SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders');
         SET ruvector.dag_mode = 'learn';
         SET ruvector.dag_plugin_fuel = 20000;
         SET ruvector.dag_attention_type = 'plugin:spin';",
    )
    .unwrap();
    // Inside this one test function, a statement run through SPI is planned under the
    // function's own snapshot, which predates the registration above; an EXPLAIN run through
    // read-write SPI plans its statement after SPI took a new snapshot, so it reads the
    // registry first (separate statements of a session see a registration at once).
    Spi::run(&format!("EXPLAIN {JOIN}")).unwrap();
    let planner = status("attention_plugin_in_planner");
    assert!(planner.contains("may pick it"), "{planner}");
    for _ in 0..4 {
        Spi::run(JOIN).unwrap();
    }
    let expected: i64 = one(&format!("SELECT count(*) FROM ({JOIN}) q"));
    Spi::run("SELECT * FROM ruvector_dag.ruvector_dag_learn()").unwrap();
    // Every statement runs and answers; once the selector picks the plugin it fails, the
    // decision uses the key's kind, and the plugin is not used again in this session.
    for _ in 0..30 {
        let n: i64 = one(&format!("SELECT count(*) FROM ({JOIN}) q"));
        assert_eq!(n, expected);
        if counter("backend_plugin_fallbacks") > 0 {
            break;
        }
    }
    assert_eq!(counter("backend_plugin_fallbacks"), 1);
    let last = status("backend_plugin_last_error");
    assert!(last.contains("plugin 'spin' ran out of fuel (limit 20,000)"), "{last}");
    let planner = status("attention_plugin_in_planner");
    assert!(planner.contains("not used again in this session"), "{planner}");
    let calls: i64 = one("SELECT calls FROM ruvector_dag.ruvector_dag_plugins() WHERE name = 'spin'");
    for _ in 0..10 {
        Spi::run(JOIN).unwrap();
    }
    let again: i64 = one("SELECT calls FROM ruvector_dag.ruvector_dag_plugins() WHERE name = 'spin'");
    assert_eq!(calls, again, "a failed plugin was called again");
    assert_eq!(counter("backend_plugin_fallbacks"), 1);
    let lines = explain_lines(JOIN);
    assert!(!lines.iter().any(|l| l.contains("attention plugin:")), "{lines:?}");
    let (state, detail): (Option<String>, Option<String>) = Spi::get_two(
        "SELECT status, detail FROM ruvector_dag.ruvector_dag_health() WHERE check_name = 'attention_plugin'",
    )
    .unwrap();
    assert_eq!(state.as_deref(), Some("warning"));
    assert!(detail.unwrap_or_default().contains("ran out of fuel"));
    // Learning goes on, and registering the plugin again lets it be tried again (it fails
    // again, once, and the statement falls back again).
    Spi::run("SELECT * FROM ruvector_dag.ruvector_dag_learn()").unwrap();
    assert_eq!(status("backend_last_error"), "none");
    Spi::run("SELECT ruvector_dag.ruvector_dag_unregister_attention('spin')").unwrap();
    register("spin", plugin_module("evil_spin"));
    Spi::run(&format!("EXPLAIN {JOIN}")).unwrap();
    Spi::run(JOIN).unwrap();
    assert_eq!(counter("backend_plugin_fallbacks"), 2);
    let calls: i64 = one("SELECT calls FROM ruvector_dag.ruvector_dag_plugins() WHERE name = 'spin'");
    assert_eq!(calls, 1);
}

#[pg_test]
fn an_unregistered_or_misspelled_plugin_setting_is_handled() {
    setup();
    Spi::run(
        "SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders');
         SET ruvector.dag_mode = 'learn';
         SET ruvector.dag_attention_type = 'plugin:nobody';",
    )
    .unwrap();
    for _ in 0..3 {
        Spi::run(JOIN).unwrap();
    }
    // Counted and reported once; the statements ran with the built-in kinds.
    assert_eq!(counter("backend_plugin_fallbacks"), 1);
    let last = status("backend_plugin_last_error");
    assert!(last.contains("no attention plugin named 'nobody'"), "{last}");
    assert!(counter("backend_planned_in_scope") >= 3);
    // The analysis functions raise it as an error.
    let e = error_of(&format!("SELECT * FROM ruvector_dag.ruvector_dag_analyze($q${JOIN}$q$)")).unwrap();
    assert!(e.contains("no attention plugin named 'nobody'"), "{e}");
    // Names that cannot be a kind are refused when set, and the old value stays.
    for bad in ["bogus", "plugin:Bad Name", "plugin:"] {
        let e = error_of(&format!("SELECT set_config('ruvector.dag_attention_type', '{bad}', true)")).unwrap();
        assert!(e.contains("invalid value for parameter \"ruvector.dag_attention_type\""), "{bad}: {e}");
    }
    assert_eq!(status("attention_type"), "plugin:nobody");
    Spi::run("SET ruvector.dag_attention_type = 'critical_path'").unwrap();
    assert_eq!(status("attention_type"), "critical_path");
}
