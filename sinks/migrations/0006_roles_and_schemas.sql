-- dialects: postgres
-- Stores separated by role. The card-linked tables (receipts, receipt_items, receipt_groups,
-- consent_changes) stay in the default schema with the sink's bookkeeping (sink_offsets,
-- schema_migrations, dim_chains, erased_cards); the anonymous analytics go to `analytics`, card-linked
-- facts under a keyed card pseudonym to `pseudonymous`, and what marketing may read to `marketing`.
-- DuckDB has no roles: there the analytics are a database file of their own (see sinks.duckdb).
CREATE SCHEMA IF NOT EXISTS analytics;

CREATE SCHEMA IF NOT EXISTS pseudonymous;

CREATE SCHEMA IF NOT EXISTS marketing;

-- Group roles (NOLOGIN): logins are made members of them, e.g.
-- CREATE ROLE alice LOGIN PASSWORD '...' IN ROLE receiptflow_analyst. Roles belong to the cluster,
-- not the database, so a role that already exists (another warehouse of the cluster) is kept.
DO $$
BEGIN
    CREATE ROLE receiptflow_sink NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

DO $$
BEGIN
    CREATE ROLE receiptflow_analyst NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

DO $$
BEGIN
    CREATE ROLE receiptflow_marketing NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

DO $$
BEGIN
    CREATE ROLE receiptflow_support NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;
