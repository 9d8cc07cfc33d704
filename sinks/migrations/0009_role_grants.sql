-- dialects: postgres
-- What each role of 0006 may do: the least it needs. Nothing in the default schema is readable by
-- PUBLIC, so a login that is only an analyst or marketing member gets "permission denied" on the
-- card-linked tables.

-- Analysts see card-linked facts only under a pseudonym of the card: a keyed SHA-256 of the card
-- id under a random key made here, kept in a table no reader role may read (the view runs with its
-- owner's rights). It is not the erasure hash: that one is shared with the profile store and the
-- erasure topic, and a pseudonym must stay unlinkable to them. Rotating: UPDATE card_pseudonym_key.
CREATE TABLE IF NOT EXISTS card_pseudonym_key (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pseudonym_key TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);

INSERT INTO card_pseudonym_key (id, pseudonym_key)
SELECT 1, replace(gen_random_uuid()::text, '-', '') || replace(gen_random_uuid()::text, '-', '')
ON CONFLICT (id) DO NOTHING;

-- Card activity per month and chain under the pseudonym. Spend is in whole euros and no single
-- receipt is shown, so no row carries a basket's exact sum or time to match against analytics.
CREATE OR REPLACE VIEW pseudonymous.card_months AS
SELECT
    substr(encode(sha256(convert_to(k.pseudonym_key || ':' || r.card_id, 'UTF8')), 'hex'), 1, 32) AS card_pseudonym,
    r.chain,
    CAST(date_trunc('month', r.event_local_date) AS DATE) AS sales_month,
    count(*) AS receipts,
    round(sum(r.total_cents) / 100.0) AS spend_eur
FROM receipts AS r
CROSS JOIN card_pseudonym_key AS k
WHERE r.card_id IS NOT NULL
GROUP BY 1, r.chain, CAST(date_trunc('month', r.event_local_date) AS DATE);

-- Marketing: card-linked aggregates per chain and day, no card.
CREATE OR REPLACE VIEW marketing.card_share AS
SELECT chain, sales_date, card_receipt_share, card_sales_share FROM card_share;

REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;

REVOKE CREATE ON SCHEMA public FROM PUBLIC;

REVOKE ALL ON SCHEMA analytics, pseudonymous, marketing FROM PUBLIC;

-- The sink writer: inserts rows and moves its positions; never updates or deletes a row.
GRANT USAGE ON SCHEMA public, analytics TO receiptflow_sink;

GRANT SELECT, INSERT ON receipts, receipt_items, receipt_groups, consent_changes TO receiptflow_sink;

GRANT SELECT, INSERT, UPDATE ON sink_offsets, dim_chains TO receiptflow_sink;

GRANT SELECT ON erased_cards, schema_migrations TO receiptflow_sink;

GRANT SELECT, INSERT ON analytics.baskets, analytics.basket_lines TO receiptflow_sink;

GRANT SELECT, INSERT, UPDATE ON analytics.sink_offsets TO receiptflow_sink;

-- Analysts: the anonymous analytics and the pseudonymous card view, nothing card-linked.
GRANT USAGE ON SCHEMA analytics, pseudonymous TO receiptflow_analyst;

GRANT SELECT ON analytics.baskets, analytics.basket_lines, analytics.daily_sales, analytics.basket_size,
    analytics.product_group_mix, analytics.store_hour_sales TO receiptflow_analyst;

GRANT SELECT ON pseudonymous.card_months TO receiptflow_analyst;

-- Marketing: its views only.
GRANT USAGE ON SCHEMA marketing TO receiptflow_marketing;

GRANT SELECT ON marketing.card_share TO receiptflow_marketing;

-- Support / DPO: subject access (export) and erasure of a card's rows, with the erased-cards record.
GRANT USAGE ON SCHEMA public TO receiptflow_support;

GRANT SELECT, DELETE ON receipts, receipt_items, receipt_groups, consent_changes TO receiptflow_support;

GRANT SELECT, INSERT ON erased_cards TO receiptflow_support;
