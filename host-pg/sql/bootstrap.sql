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
