// The learned state: export / import, reset, learning as an administrator, the health report.

#[pg_test]
fn export_import_round_trip_and_corrupt_bytes_are_refused() {
    setup();
    Spi::run("SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders')").unwrap();
    for _ in 0..6 {
        Spi::run(JOIN).unwrap();
    }
    let patterns: i64 = one("SELECT patterns FROM ruvector_dag.ruvector_dag_learn()");
    assert!(patterns >= 1);
    Spi::run("CREATE TEMP TABLE saved AS SELECT ruvector_dag.ruvector_dag_export() AS b").unwrap();
    let forgotten: i64 = one("SELECT ruvector_dag.ruvector_dag_reset()");
    assert_eq!(forgotten, patterns);
    let now: i64 = one("SELECT count(*) FROM ruvector_dag.ruvector_dag_patterns()");
    assert_eq!(now, 0);
    let imported: i64 = one("SELECT ruvector_dag.ruvector_dag_import(b) FROM saved");
    assert_eq!(imported, patterns);
    let now: i64 = one("SELECT count(*) FROM ruvector_dag.ruvector_dag_patterns()");
    assert_eq!(now, patterns);
    // One flipped byte in the middle: refused, named, and the state stays.
    Spi::run(
        "CREATE TEMP TABLE import_errors (msg text);
         DO $$ BEGIN
           PERFORM ruvector_dag.ruvector_dag_import(
             set_byte(b, length(b) / 2, get_byte(b, length(b) / 2) # 1)) FROM saved;
         EXCEPTION WHEN data_corrupted THEN
           INSERT INTO import_errors VALUES (SQLERRM);
         END $$;",
    )
    .unwrap();
    let err: String = one("SELECT coalesce(string_agg(msg, ' '), 'accepted') FROM import_errors");
    assert!(err.contains("ruvector_dag_import: the bytes are not a usable learned state"), "{err}");
    let now: i64 = one("SELECT count(*) FROM ruvector_dag.ruvector_dag_patterns()");
    assert_eq!(now, patterns);
}

#[pg_test(
    error = "ruvector_dag_import: the bytes are not a usable learned state: learned state cannot be read: 5 bytes is shorter than the 20-byte header"
)]
fn garbage_import_is_refused() {
    Spi::run("SELECT ruvector_dag.ruvector_dag_import('\\x0102030405'::bytea)").unwrap();
}

#[pg_test]
fn health_reports_and_repairs_an_invalid_index() {
    setup();
    Spi::run(
        "CREATE INDEX IF NOT EXISTS t_orders_customer ON t_orders (customer);
         SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders');
         UPDATE pg_index SET indisvalid = false WHERE indexrelid = 't_orders_customer'::regclass;",
    )
    .unwrap();
    let status: String = one(
        "SELECT status FROM ruvector_dag.ruvector_dag_health() WHERE check_name = 'invalid_index' AND object = 't_orders_customer'",
    );
    assert_eq!(status, "warning");
    Spi::run("SET ruvector.dag_healing_repair = on").unwrap();
    let status: String = one(
        "SELECT status FROM ruvector_dag.ruvector_dag_health() WHERE check_name = 'invalid_index' AND object = 't_orders_customer'",
    );
    assert_eq!(status, "repaired");
    let valid: bool =
        one("SELECT indisvalid FROM pg_index WHERE indexrelid = 't_orders_customer'::regclass");
    assert!(valid);
}

#[pg_test(
    error = "ruvector_dag: ruvector_dag_learn needs a superuser or a member of role ruvector_dag_admin"
)]
fn a_non_admin_cannot_learn() {
    Spi::run(
        "DROP ROLE IF EXISTS rv_plain_user2; CREATE ROLE rv_plain_user2;
         SET ROLE rv_plain_user2;
         SELECT * FROM ruvector_dag.ruvector_dag_learn();",
    )
    .unwrap();
}

#[pg_test]
fn reset_of_one_table_forgets_only_its_statements() {
    setup();
    let customers = "SELECT region, count(*) FROM t_customers GROUP BY region ORDER BY 2";
    Spi::run(
        "SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders');
         SELECT ruvector_dag.ruvector_enable_neural_dag('t_customers');",
    )
    .unwrap();
    for _ in 0..6 {
        Spi::run(JOIN).unwrap();
        Spi::run(customers).unwrap();
    }
    let (patterns, rejected): (i64, i64) =
        Spi::get_two("SELECT patterns, rejected FROM ruvector_dag.ruvector_dag_learn()")
            .map(|(a, b)| (a.unwrap_or(0), b.unwrap_or(-1)))
            .unwrap();
    assert!(patterns >= 2, "{patterns}");
    let all: String = one("SELECT string_agg(relid::regclass::text || ':' || fingerprint, ', ') FROM ruvector_dag.shape_tables");
    assert_eq!(rejected, 0, "{all}");
    let shapes: i64 = one(
        "SELECT count(*) FROM ruvector_dag.shape_tables WHERE relid = 't_orders'::regclass",
    );
    assert_eq!(shapes, 1, "the join is the only shape reading t_orders: {all}");
    let forgotten: i64 = one("SELECT ruvector_dag.ruvector_dag_reset('t_orders'::regclass)");
    assert!(forgotten >= 1 && forgotten < patterns, "{forgotten} of {patterns}");
    let left: i64 = one("SELECT count(*) FROM ruvector_dag.ruvector_dag_patterns()");
    assert_eq!(left, patterns - forgotten);
    let shapes: i64 = one(
        "SELECT count(*) FROM ruvector_dag.shape_tables WHERE relid = 't_orders'::regclass",
    );
    assert_eq!(shapes, 0);
    // The customers query still finds its pattern; the join starts over.
    let lines = explain_lines(customers);
    let d = lines.iter().find(|l| l.starts_with("ruvector_dag: arm")).unwrap();
    assert!(d.contains("similarity 1.000") || d.contains("similarity 0.99"), "{d}");
    let lines = explain_lines(JOIN);
    let d = lines.iter().find(|l| l.starts_with("ruvector_dag: arm")).unwrap();
    assert!(!d.contains("similarity 1.000"), "{d}");
}

#[pg_test]
fn the_model_cache_holds_the_newest_version_of_its_table_only() {
    setup();
    use crate::model_cache::{check, publish, stats};
    // What the cache holds, copied out (the loader decodes it in place).
    let read = |db, table, held| crate::model_cache::read(db, table, held, |b: &[u8]| b.to_vec());
    // A table OID no test's learned state has: the tests' own loads never find these bytes.
    let (db, table) = (crate::database(), 4_000_000_001u32);
    let (_, _, capacity) = stats(db).expect("the cache is on by default");
    publish(db, table, 5, b"model five");
    assert_eq!(read(db, table, None), Some((5, Some(b"model five".to_vec()))));
    assert_eq!(read(db, table, Some(5)), Some((5, None)), "held: not read again");
    assert_eq!(read(db, table + 1, None), None, "another table (the extension re-created)");
    // An older writer committing late does not overwrite a newer version.
    publish(db, table, 4, b"model four");
    assert_eq!(read(db, table, None).map(|r| r.0), Some(5));
    publish(db, table, 6, b"model six");
    assert_eq!(read(db, table, None), Some((6, Some(b"model six".to_vec()))));
    // Read at exactly one version (a copy restored lean loading its model): another version
    // is not read, a database without a slot has none.
    let exact = |db, version| crate::model_cache::read_exact(db, table, version, |b: &[u8]| b.to_vec());
    assert_eq!(exact(db, 6), Some(b"model six".to_vec()));
    assert_eq!(exact(db, 5), None);
    assert_eq!(exact(db.wrapping_add(1_000_000), 6), None);
    // The learner read another version from the table: the slot is emptied.
    check(db, table, 6);
    assert!(read(db, table, None).is_some());
    check(db, table, 7);
    assert_eq!(read(db, table, None), None);
    // A model larger than a slot is not cached, and leaves no older version behind.
    publish(db, table, 8, b"model eight");
    let before = stats(db).unwrap().1;
    publish(db, table, 9, &vec![1u8; capacity + 1]);
    assert_eq!(read(db, table, None), None);
    assert_eq!(stats(db).unwrap().1, before + 1);
    let shown = status("model_cache");
    assert!(shown.contains("models too large"), "{shown}");
}
