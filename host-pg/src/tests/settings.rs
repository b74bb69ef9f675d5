// Scope (enabled tables, who may change it) and the `ruvector.*` settings.

#[pg_test]
fn enable_and_disable_tables() {
    setup();
    assert!(one::<bool>("SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders')"));
    assert!(!one::<bool>("SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders')"));
    let listed: i64 = one(
        "SELECT count(*) FROM ruvector_dag.enabled_tables WHERE relid = 't_orders'::regclass",
    );
    assert_eq!(listed, 1);
    assert_eq!(status("enabled_tables"), "1");
    assert!(one::<bool>("SELECT ruvector_dag.ruvector_disable_neural_dag('t_orders')"));
    assert!(!one::<bool>("SELECT ruvector_dag.ruvector_disable_neural_dag('t_orders')"));
}

#[pg_test]
fn the_enabled_set_is_shared_for_its_version_and_table_only_once_committed() {
    setup();
    let db = crate::database();
    let table: u32 = one::<pg_sys::Oid>("SELECT 'ruvector_dag.enabled_tables'::regclass::oid")
        .to_u32();
    let version = crate::shared::scope_version();
    let set: std::collections::HashSet<u32> = [11, 22, 33].into_iter().collect();
    crate::shared::publish_scope(db, table, version, &set);
    let shared = |t: u32| {
        crate::shared::scope_set(db, t).map(|v| v.into_iter().collect::<std::collections::HashSet<_>>())
    };
    assert_eq!(shared(table), Some(set.clone()));
    // Another extension's table (dropped and created again) or another version: not shared.
    assert_eq!(shared(table + 1), None);
    crate::shared::publish_scope(db, table, version + 1, &set);
    assert_eq!(shared(table), Some(set), "a stale writer does not overwrite");
    crate::shared::bump_scope();
    assert_eq!(shared(table), None);
    // Planning reads the table again; enabled (not committed) in this transaction, t_orders is
    // in this session's scope but never in the shared set.
    Spi::run("SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders')").unwrap();
    crate::shared::bump_scope();
    let lines = explain_lines(JOIN);
    assert!(lines.iter().any(|l| l.starts_with("ruvector_dag")), "{lines:?}");
    let orders: u32 = one::<pg_sys::Oid>("SELECT 't_orders'::regclass::oid").to_u32();
    assert!(shared(table).is_none_or(|s| !s.contains(&orders)));
}

#[pg_test]
fn the_extensions_table_oids_are_shared_until_a_committed_change_of_its_names() {
    // Nothing written yet in this transaction: it may read and share the OIDs.
    assert!(crate::names::shareable());
    let db = crate::database();
    crate::forget_extension_relids();
    let enabled = crate::extension_relid(crate::ENABLED_TABLES);
    let learned = crate::extension_relid(crate::LEARNED_STATE);
    assert_eq!(crate::shared::shared_name(db, 0), Some(enabled));
    assert_eq!(crate::shared::shared_name(db, 1), Some(learned));
    // Forgotten in this process (as in a new session): found in shared memory, no lookup.
    let lookups = crate::names::lookups();
    crate::forget_extension_relids();
    assert_eq!(crate::extension_relid(crate::ENABLED_TABLES), enabled);
    assert_eq!(crate::extension_relid(crate::LEARNED_STATE), learned);
    assert_eq!(crate::names::lookups(), lookups);
    // They are the tables' OIDs.
    let oid = |name: &str| {
        one::<pg_sys::Oid>(&format!("SELECT 'ruvector_dag.{name}'::regclass::oid")).to_u32()
    };
    assert_eq!((enabled, learned), (oid("enabled_tables"), oid("learned_state")));
    // Another table created, renamed and dropped: the extension's names are not touched.
    Spi::run(
        "CREATE TABLE rv_other (x int); ALTER TABLE rv_other RENAME TO rv_other2;
         DROP TABLE rv_other2",
    )
    .unwrap();
    assert!(!crate::names::pending());
    // A transaction that wrote may see its own uncommitted names: it looks them up itself.
    assert!(!crate::names::shareable());
    crate::forget_extension_relids();
    assert_eq!(crate::extension_relid(crate::ENABLED_TABLES), enabled);
    assert_eq!(crate::names::lookups(), lookups + 1);
    // A rename of one of the extension's tables marks the transaction, which sees its own
    // rename.
    Spi::run("ALTER TABLE ruvector_dag.enabled_tables RENAME TO enabled_tables_renamed").unwrap();
    assert!(crate::names::pending());
    assert_eq!(crate::extension_relid(crate::ENABLED_TABLES), 0);
    assert_eq!(crate::shared::shared_name(db, 0), Some(enabled), "not before its commit");
    // Its commit moves the names epoch (here by hand: a test's transaction rolls back): what
    // was shared is forgotten, and a lookup that began before the move shares nothing.
    let epoch = crate::shared::names_epoch();
    crate::shared::names_changed();
    assert_eq!(crate::shared::shared_name(db, 0), None);
    assert_eq!(crate::shared::shared_name(db, 1), None);
    crate::shared::publish_names(db, &[(1, learned)], epoch);
    assert_eq!(crate::shared::shared_name(db, 1), None, "a stale lookup shares nothing");
    crate::shared::publish_names(db, &[(1, learned)], crate::shared::names_epoch());
    assert_eq!(crate::shared::shared_name(db, 1), Some(learned));
    Spi::run("ALTER TABLE ruvector_dag.enabled_tables_renamed RENAME TO enabled_tables").unwrap();
    assert_eq!(crate::extension_relid(crate::ENABLED_TABLES), enabled);
}

#[pg_test(error = "relation \"no_such_table\" does not exist")]
fn enabling_an_unknown_table_is_an_error() {
    Spi::run("SELECT ruvector_dag.ruvector_enable_neural_dag('no_such_table')").unwrap();
}

#[pg_test(
    error = "ruvector_dag: \"t_orders_pkey\" is not a table (only tables, partitioned tables and materialized views can be enabled)"
)]
fn enabling_an_index_is_an_error() {
    setup();
    Spi::run("SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders_pkey')").unwrap();
}

#[pg_test(
    error = "ruvector_dag: ruvector_enable_neural_dag needs a superuser or a member of role ruvector_dag_admin"
)]
fn a_non_admin_cannot_enable_tables() {
    setup();
    Spi::run(
        "DROP ROLE IF EXISTS rv_plain_user; CREATE ROLE rv_plain_user;
         GRANT SELECT ON t_orders TO rv_plain_user;
         SET ROLE rv_plain_user;
         SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders');",
    )
    .unwrap();
}

#[pg_test]
fn an_admin_member_can_enable_tables() {
    setup();
    Spi::run(
        "DROP ROLE IF EXISTS rv_admin_user; CREATE ROLE rv_admin_user IN ROLE ruvector_dag_admin;
         GRANT SELECT ON t_orders TO rv_admin_user;
         SET ROLE rv_admin_user;",
    )
    .unwrap();
    assert!(one::<bool>("SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders')"));
    let admin = status("is_admin");
    assert_eq!(admin, "true");
}

#[pg_test]
fn status_reflects_settings() {
    let mode = status("mode");
    assert_eq!(mode, "observe");
    Spi::run("SET ruvector.dag_mode = 'learn'").unwrap();
    let mode = status("mode");
    assert_eq!(mode, "learn");
    // As many arms as the setting lists.
    let listed: i64 =
        one("SELECT cardinality(string_to_array(current_setting('ruvector.dag_arms'), '|'))::bigint");
    assert_eq!(status("arms"), listed.to_string());
    let (ring, setting): (String, i64) = Spi::get_two(
        "SELECT (SELECT value FROM ruvector_dag.ruvector_dag_status() WHERE key = 'ring_bytes'),
                pg_size_bytes(current_setting('ruvector.dag_ring_size'))",
    )
    .map(|(a, b)| (a.unwrap_or_default(), b.unwrap_or(0)))
    .unwrap();
    assert_eq!(ring, setting.to_string());
    assert!(setting >= 1 << 20);
    Spi::run("SET ruvector.dag_arms = 'default|enable_seqscan=off'").unwrap();
    let arms = status("arms");
    assert_eq!(arms, "2");
    // A malformed arm list is refused when set, with the reason, and the old value stays.
    Spi::run(
        "CREATE TEMP TABLE guc_errors (msg text, detail text);
         DO $$ DECLARE d text; BEGIN
           SET ruvector.dag_arms = 'seqscan_off';
         EXCEPTION WHEN invalid_parameter_value THEN
           GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL;
           INSERT INTO guc_errors VALUES (SQLERRM, d);
         END $$;",
    )
    .unwrap();
    let detail: String = one("SELECT detail FROM guc_errors");
    assert_eq!(detail, "ruvector.dag_arms: the first arm must be 'default', not 'seqscan_off'");
    let arms = status("arms");
    assert_eq!(arms, "2");
}

#[pg_test(error = "invalid value for parameter \"ruvector.dag_mode\": \"sometimes\"")]
fn bad_mode_is_refused_by_postgres() {
    Spi::run("SET ruvector.dag_mode = 'sometimes'").unwrap();
}

#[pg_test(error = "1.5 is outside the valid range for parameter \"ruvector.dag_attention_exploration\" (0 .. 1)")]
fn bad_exploration_is_refused_by_postgres() {
    Spi::run("SET ruvector.dag_attention_exploration = 1.5").unwrap();
}

#[pg_test(error = "invalid value for parameter \"ruvector.dag_arms\": \"nodefault|x\"")]
fn bad_arms_are_refused_by_postgres() {
    Spi::run("SET ruvector.dag_arms = 'nodefault|x'").unwrap();
}

#[pg_test]
fn arms_lists_each_arm_as_the_setting_parses() {
    Spi::run("SET ruvector.dag_arms = 'default|enable_nestloop=off| enable_hashjoin = off ; enable_mergejoin=off'").unwrap();
    let rows: String = one(
        "SELECT string_agg(arm || ':' || name || ':' || coalesce(setting, '-') || '=' || coalesce(value, '-'), ' / ' ORDER BY arm, setting) \
         FROM ruvector_dag.ruvector_dag_arms()",
    );
    assert_eq!(
        rows,
        "0:default:-=- / 1:enable_nestloop=off:enable_nestloop=off / \
         2:enable_hashjoin = off ; enable_mergejoin=off:enable_hashjoin=off / \
         2:enable_hashjoin = off ; enable_mergejoin=off:enable_mergejoin=off"
    );
    assert_eq!(status("arms"), "3");
}

#[pg_test]
fn the_database_setting_restricts_or_excludes() {
    let sel = crate::worker::parse_selection(" a, b ,!c, a,, ! d ");
    assert_eq!(sel.only, vec!["a".to_string(), "b".to_string()]);
    assert_eq!(sel.never, vec!["c".to_string(), "d".to_string()]);
    assert_eq!(crate::worker::parse_selection(""), Default::default());
}
