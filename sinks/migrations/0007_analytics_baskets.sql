-- The anonymous analytics store: baskets under the processor's keyed pseudonym (no receipt, card or
-- register id, the hour of the sale only) and their lines, in the `analytics` schema on PostgreSQL and
-- in the attached analytics database file on DuckDB. It holds no card-linked table, and a DuckDB file
-- of it can be handed to an analyst as it is.
CREATE TABLE IF NOT EXISTS analytics.baskets (
    basket_id TEXT PRIMARY KEY,
    key_period TEXT NOT NULL,
    chain TEXT NOT NULL,
    store_id TEXT NOT NULL,
    event_hour TIMESTAMPTZ NOT NULL,
    local_hour TIMESTAMP NOT NULL,
    payment_method TEXT NOT NULL,
    currency TEXT NOT NULL,
    total_cents BIGINT NOT NULL,
    line_count INTEGER NOT NULL
);

-- line_seq numbers the lines in the basket's canonical order (product group, SKU, amount), not the
-- register's line numbers.
CREATE TABLE IF NOT EXISTS analytics.basket_lines (
    basket_id TEXT NOT NULL,
    line_seq INTEGER NOT NULL,
    sku TEXT NOT NULL,
    product_group TEXT NOT NULL,
    quantity {double} NOT NULL,
    unit_price_cents BIGINT NOT NULL,
    amount_cents BIGINT NOT NULL,
    PRIMARY KEY (basket_id, line_seq)
);

-- The sink's positions on purchases.analytics, committed with the basket rows (on DuckDB the
-- analytics file is written in transactions of its own).
CREATE TABLE IF NOT EXISTS analytics.sink_offsets (
    consumer TEXT NOT NULL,
    topic TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    next_offset BIGINT NOT NULL,
    PRIMARY KEY (consumer, topic, kafka_partition)
);

-- Analyst views. Dates and hours are the store's local ones.
CREATE OR REPLACE VIEW analytics.daily_sales AS
SELECT
    CAST(local_hour AS DATE) AS sales_date,
    chain,
    store_id,
    count(*) AS baskets,
    sum(total_cents) AS sales_cents
FROM {in_analytics}baskets
GROUP BY CAST(local_hour AS DATE), chain, store_id;

CREATE OR REPLACE VIEW analytics.basket_size AS
SELECT
    chain,
    CAST(local_hour AS DATE) AS sales_date,
    count(*) AS baskets,
    CAST(sum(total_cents) AS {double}) / count(*) AS avg_basket_cents,
    CAST(sum(line_count) AS {double}) / count(*) AS avg_lines
FROM {in_analytics}baskets
GROUP BY chain, CAST(local_hour AS DATE);

CREATE OR REPLACE VIEW analytics.product_group_mix AS
SELECT
    b.chain,
    l.product_group,
    sum(l.amount_cents) AS amount_cents,
    count(DISTINCT l.basket_id) AS baskets,
    CAST(sum(l.amount_cents) AS {double}) / sum(sum(l.amount_cents)) OVER (PARTITION BY b.chain) AS share_of_chain
FROM {in_analytics}basket_lines AS l
JOIN {in_analytics}baskets AS b ON b.basket_id = l.basket_id
GROUP BY b.chain, l.product_group;

-- Sales per store and local hour, for reports that leave the analytics team: a cell with fewer than
-- 5 baskets is left out (a minimum cell size; see docs/privacy.md), since a small cell's figures are
-- close to one basket's.
CREATE OR REPLACE VIEW analytics.store_hour_sales AS
SELECT
    chain,
    store_id,
    local_hour,
    count(*) AS baskets,
    sum(total_cents) AS sales_cents,
    sum(line_count) AS lines
FROM {in_analytics}baskets
GROUP BY chain, store_id, local_hour
HAVING count(*) >= 5;
