-- Anonymous receipt lines from purchases.analytics: no card, no register, the time rounded to the
-- hour by the processor. What analysts may use without any consent.
CREATE TABLE IF NOT EXISTS analytics_lines (
    receipt_id TEXT NOT NULL,
    line_no INTEGER NOT NULL,
    chain TEXT NOT NULL,
    store_id TEXT NOT NULL,
    event_hour TIMESTAMPTZ NOT NULL,
    payment_method TEXT NOT NULL,
    sku TEXT NOT NULL,
    product_group TEXT NOT NULL,
    quantity {double} NOT NULL,
    unit_price_cents BIGINT NOT NULL,
    amount_cents BIGINT NOT NULL,
    policy_version TEXT NOT NULL,
    PRIMARY KEY (receipt_id, line_no)
);

-- Every consent change as it arrived on the consents topic (audit): who allowed what, when, where.
CREATE TABLE IF NOT EXISTS consent_changes (
    card_id TEXT NOT NULL,
    changed_at TIMESTAMPTZ NOT NULL,
    product_data_marketing BOOLEAN NOT NULL,
    electronic_marketing BOOLEAN NOT NULL,
    source TEXT NOT NULL,
    source_topic TEXT NOT NULL,
    source_partition INTEGER NOT NULL,
    source_offset BIGINT NOT NULL,
    PRIMARY KEY (source_topic, source_partition, source_offset)
);

-- Dimensions, derived from the receipts so they are never out of step with them.
CREATE OR REPLACE VIEW stores AS
SELECT
    store_id,
    chain,
    count(*) AS receipts,
    min(event_local_date) AS first_sale,
    max(event_local_date) AS last_sale
FROM receipts
GROUP BY store_id, chain;

CREATE OR REPLACE VIEW chains AS
SELECT
    chain,
    count(DISTINCT store_id) AS stores,
    count(*) AS receipts,
    min(event_local_date) AS first_sale,
    max(event_local_date) AS last_sale
FROM receipts
GROUP BY chain;
