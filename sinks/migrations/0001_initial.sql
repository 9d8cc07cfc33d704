-- Receipts as the policy allowed them, with lineage (policy version, consent state) and the Kafka
-- position they came from; items only for ITEM granularity, group totals for ITEM and PRODUCT_GROUP.
CREATE TABLE IF NOT EXISTS receipts (
    receipt_id TEXT PRIMARY KEY,
    chain TEXT NOT NULL,
    store_id TEXT NOT NULL,
    card_id TEXT,
    event_time TIMESTAMPTZ NOT NULL,
    event_local_date DATE NOT NULL,
    payment_method TEXT NOT NULL,
    currency TEXT NOT NULL,
    total_cents BIGINT NOT NULL,
    granularity TEXT NOT NULL,
    item_count INTEGER NOT NULL,
    policy_version TEXT NOT NULL,
    consent_product_data_marketing BOOLEAN NOT NULL,
    consent_electronic_marketing BOOLEAN NOT NULL,
    consent_known BOOLEAN NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL,
    source_topic TEXT NOT NULL,
    source_partition INTEGER NOT NULL,
    source_offset BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS receipt_items (
    receipt_id TEXT NOT NULL,
    line_no INTEGER NOT NULL,
    sku TEXT NOT NULL,
    product_group TEXT NOT NULL,
    quantity {double} NOT NULL,
    unit_price_cents BIGINT NOT NULL,
    amount_cents BIGINT NOT NULL,
    PRIMARY KEY (receipt_id, line_no)
);

CREATE TABLE IF NOT EXISTS receipt_groups (
    receipt_id TEXT NOT NULL,
    product_group TEXT NOT NULL,
    quantity {double} NOT NULL,
    amount_cents BIGINT NOT NULL,
    lines INTEGER NOT NULL,
    PRIMARY KEY (receipt_id, product_group)
);

-- The sink's consumed positions, committed in the same transaction as the rows they produced.
CREATE TABLE IF NOT EXISTS sink_offsets (
    consumer TEXT NOT NULL,
    topic TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    next_offset BIGINT NOT NULL,
    PRIMARY KEY (consumer, topic, kafka_partition)
);
