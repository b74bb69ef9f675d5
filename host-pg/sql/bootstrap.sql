-- ruvector_dag: objects created before the functions (schema ruvector_dag, from the control file).

-- Tables whose statements the optimizer watches. regclass so that pg_dump writes names, not
-- OIDs, and a restore finds the same tables again.
CREATE TABLE enabled_tables (
    relid      regclass    PRIMARY KEY,
    enabled_at timestamptz NOT NULL DEFAULT now(),
    enabled_by name        NOT NULL DEFAULT current_user
);
SELECT pg_catalog.pg_extension_config_dump('enabled_tables', '');

-- Who may enable tables and run the administrative functions, besides superusers.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'ruvector_dag_admin') THEN
        CREATE ROLE ruvector_dag_admin NOLOGIN;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA ruvector_dag TO PUBLIC;
GRANT SELECT ON enabled_tables TO PUBLIC;

-- The learned state: one row, written by the learning cycle (background worker or
-- ruvector_dag_learn()); `version` moves on every write and backends reload when it does.
-- `snapshot` is the model every backend loads; `pending` the trajectories waiting for the next
-- training (read by the learner only; NULL when none wait).
CREATE TABLE learned_state (
    id           int         PRIMARY KEY CHECK (id = 1),
    version      bigint      NOT NULL,
    snapshot     bytea       NOT NULL,
    pending      bytea,
    arms         text        NOT NULL,
    trajectories bigint      NOT NULL DEFAULT 0,
    cycles       bigint      NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
SELECT pg_catalog.pg_extension_config_dump('learned_state', '');

-- The patterns of the learned state, rewritten by every cycle (readable; the snapshot is
-- what the optimizer loads).
CREATE TABLE patterns (
    id              bigint PRIMARY KEY,
    members         bigint NOT NULL,
    best_arm        text,
    confidence      real   NOT NULL,
    runs            bigint NOT NULL,
    best_mean_ms    double precision,
    default_mean_ms double precision
);

-- Self-healing: arms reverted and blocked because they ran slower than the default plan
-- (the newest 10,000 are kept).
CREATE TABLE healing_log (
    id          bigserial   PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    fingerprint bigint      NOT NULL,
    pattern     bigint,
    arm         text        NOT NULL,
    actual_ms   real        NOT NULL,
    baseline_ms real        NOT NULL,
    action      text        NOT NULL
);
SELECT pg_catalog.pg_extension_config_dump('healing_log', '');

GRANT SELECT ON patterns, healing_log TO PUBLIC;
-- Backends of every user read the learned state to decide (it holds numbers and fingerprints,
-- never query text or constants); administrators change it.
GRANT SELECT ON learned_state TO PUBLIC;
GRANT INSERT, UPDATE, DELETE ON enabled_tables, learned_state, patterns, healing_log
    TO ruvector_dag_admin;
GRANT USAGE ON SEQUENCE healing_log_id_seq TO ruvector_dag_admin;

-- Executions the learner learned from (the newest 10,000): fingerprints and numbers, never
-- query text or constants. node_shares: each plan node's share of the measured time, from
-- the executor's per-node instrumentation (empty when the statement was not timed per node).
CREATE TABLE trajectory_history (
    id           bigserial   PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    fingerprint  bigint      NOT NULL,
    arm          text        NOT NULL,
    actual_ms    real        NOT NULL,
    predicted_ms real,
    quality      real        NOT NULL,
    timed_nodes  int         NOT NULL,
    node_shares  real[]      NOT NULL
);
GRANT SELECT ON trajectory_history TO PUBLIC;
GRANT INSERT, DELETE ON trajectory_history TO ruvector_dag_admin;
GRANT USAGE ON SEQUENCE trajectory_history_id_seq TO ruvector_dag_admin;

-- Which enabled tables each learned query shape reads, with the shape's key (its plan
-- embedding: numbers only): what ruvector_dag_reset(regclass) forgets. The 20,000 most
-- recently seen are kept.
CREATE TABLE shape_tables (
    fingerprint bigint      NOT NULL,
    relid       oid         NOT NULL,
    key         real[]      NOT NULL,
    last_seen   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (fingerprint, relid)
);
CREATE INDEX ON shape_tables (relid);
GRANT SELECT ON shape_tables TO PUBLIC;
GRANT INSERT, UPDATE, DELETE ON shape_tables TO ruvector_dag_admin;

-- Statistics advice (ruvector_dag_advice() lists it): a scan whose row estimate was off by 10x
-- or more while it filtered on two or more columns of its table, the sign of columns that do
-- not vary independently, which PostgreSQL assumes without extended statistics on them. Found
-- on runs timed per node; table OIDs, column numbers, query shapes and row counts only, never a
-- constant. The learner writes it; the 1,000 most recently seen column sets are kept.
-- before_ms / after_ms: what the background explorer measured (a statement of the shape run
-- with the statistics created and the table analyzed, in a transaction it rolled back, against
-- the default plan's typical time without them); NULL until then.
CREATE TABLE statistics_advice (
    relid          regclass         NOT NULL,
    columns        smallint[]       NOT NULL,
    runs           bigint           NOT NULL,
    shapes         bigint[]         NOT NULL,
    worst_factor   double precision NOT NULL,
    estimated_rows double precision NOT NULL,
    actual_rows    double precision NOT NULL,
    before_ms      double precision,
    after_ms       double precision,
    after_cut      boolean,
    verified_at    timestamptz,
    -- Created by the learner (ruvector.dag_healing_repair) under this name; never again once
    -- dropped.
    applied_name   name,
    applied_at     timestamptz,
    first_seen     timestamptz      NOT NULL DEFAULT now(),
    last_seen      timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (relid, columns)
);
GRANT SELECT ON statistics_advice TO PUBLIC;
GRANT INSERT, UPDATE, DELETE ON statistics_advice TO ruvector_dag_admin;

-- Attention plugins (wasm modules run in the sandbox), registered by administrators with
-- ruvector_dag_register_attention(name, wasm). Readable by everyone (the bytes are code, like a
-- function's source); ruvector_dag_plugins() adds each one's calls, failures and last error.
CREATE TABLE attention_plugins (
    name          text        PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    wasm          bytea       NOT NULL,
    sha256        text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    bytes         int         NOT NULL CHECK (bytes = octet_length(wasm)),
    registered_at timestamptz NOT NULL DEFAULT now(),
    registered_by name        NOT NULL DEFAULT current_user
);
SELECT pg_catalog.pg_extension_config_dump('attention_plugins', '');
GRANT SELECT ON attention_plugins TO PUBLIC;
GRANT INSERT, UPDATE, DELETE ON attention_plugins TO ruvector_dag_admin;
