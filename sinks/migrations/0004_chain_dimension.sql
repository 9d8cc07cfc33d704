-- The chain dimension: every chain the granularity policy knows, with its group (S Group, K Group,
-- Lähikauppa, partner) and the level in force when a sink last started. The sink writes it from the
-- policy file at start (upsert on the chain), so it lists chains before their first sale too.
CREATE TABLE IF NOT EXISTS dim_chains (
    chain TEXT PRIMARY KEY,
    chain_group TEXT NOT NULL,
    current_level TEXT NOT NULL,
    current_policy_version TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

-- The chains and stores views of 0003, now with the chain group. A chain with sales the policy does
-- not know still shows (its group is null), and a known chain without sales shows with zero.
DROP VIEW IF EXISTS chains;

CREATE VIEW chains AS
SELECT
    coalesce(d.chain, s.chain) AS chain,
    d.chain_group,
    d.current_level,
    d.current_policy_version,
    coalesce(s.stores, 0) AS stores,
    coalesce(s.receipts, 0) AS receipts,
    s.first_sale,
    s.last_sale
FROM dim_chains AS d
FULL OUTER JOIN (
    SELECT
        chain,
        count(DISTINCT store_id) AS stores,
        count(*) AS receipts,
        min(event_local_date) AS first_sale,
        max(event_local_date) AS last_sale
    FROM receipts
    GROUP BY chain
) AS s ON s.chain = d.chain;

DROP VIEW IF EXISTS stores;

CREATE VIEW stores AS
SELECT
    r.store_id,
    r.chain,
    d.chain_group,
    count(*) AS receipts,
    min(r.event_local_date) AS first_sale,
    max(r.event_local_date) AS last_sale
FROM receipts AS r
LEFT JOIN dim_chains AS d ON d.chain = r.chain
GROUP BY r.store_id, r.chain, d.chain_group;
