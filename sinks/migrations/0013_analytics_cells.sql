-- Analytics cells (issue 28): the anonymous store holds cells, never baskets.
--
-- The basket tables of 0007 and 0011 go, with every view built on them. Their rows ARE the risk: a
-- basket's store, local hour and total, joined to the card-linked receipts, re-identified about 80 %
-- of the baskets and handed their SKU lines to cards whose chain keeps only group or receipt totals.
-- They are dropped, not converted: a cell needs whole closed windows of baskets, which only the
-- aggregator sees (`receiptflow aggregate run`, from purchases.baskets).
DROP VIEW IF EXISTS analytics.daily_sales_net;

DROP VIEW IF EXISTS analytics.store_hour_sales;

DROP VIEW IF EXISTS analytics.product_group_mix;

DROP VIEW IF EXISTS analytics.basket_size;

DROP VIEW IF EXISTS analytics.daily_sales;

DROP TABLE IF EXISTS analytics.basket_lines;

DROP TABLE IF EXISTS analytics.baskets;

-- One row per cell as the aggregator published it on purchases.analytics (the Avro record
-- analytics_cell; its families and dimensions in receiptflow.cells): at least k baskets of one chain
-- and local date behind each figure. A dimension the family lacks is null. A cell is identified by
-- where it was read, like the consent audit: its dimensions are nullable, so no key of them holds
-- on both engines, and a replay or a second group sees the same positions.
CREATE TABLE IF NOT EXISTS analytics.cells (
    window_id TEXT NOT NULL,
    family TEXT NOT NULL,
    chain TEXT NOT NULL,
    local_date DATE NOT NULL,
    store_id TEXT,
    hour INTEGER,
    product_group TEXT,
    sku TEXT,
    sku_b TEXT,
    size_bucket TEXT,
    baskets BIGINT NOT NULL,
    lines BIGINT NOT NULL,
    quantity {double} NOT NULL,
    amount_cents BIGINT NOT NULL,
    k INTEGER NOT NULL,
    source_topic TEXT NOT NULL,
    source_partition INTEGER NOT NULL,
    source_offset BIGINT NOT NULL,
    PRIMARY KEY (source_topic, source_partition, source_offset)
);

-- Analyst views, from the cells only. Dates and hours are the store's local ones; money in cents.
-- Sales per store and local date (store_day cells).
CREATE OR REPLACE VIEW analytics.daily_sales AS
SELECT
    chain,
    store_id,
    local_date AS sales_date,
    baskets,
    lines,
    amount_cents AS sales_cents
FROM {in_analytics}cells
WHERE family = 'store_day';

-- Sales per chain and local date (chain_day cells).
CREATE OR REPLACE VIEW analytics.chain_daily_sales AS
SELECT
    chain,
    local_date AS sales_date,
    baskets,
    lines,
    amount_cents AS sales_cents
FROM {in_analytics}cells
WHERE family = 'chain_day';

-- Sales per store and local hour (store_hour cells).
CREATE OR REPLACE VIEW analytics.store_hour_sales AS
SELECT
    chain,
    store_id,
    local_date AS sales_date,
    hour,
    baskets,
    lines,
    amount_cents AS sales_cents
FROM {in_analytics}cells
WHERE family = 'store_hour';

-- Baskets per size bucket (distinct goods SKUs) and their share of the chain's sale baskets that day.
CREATE OR REPLACE VIEW analytics.basket_sizes AS
SELECT
    s.chain,
    s.local_date AS sales_date,
    s.size_bucket,
    s.baskets,
    CAST(s.baskets AS {double}) / d.baskets AS share_of_day
FROM {in_analytics}cells AS s
LEFT JOIN {in_analytics}cells AS d ON d.window_id = s.window_id AND d.family = 'chain_day'
WHERE s.family = 'basket_size';

-- Goods per product group, net of returns, refunds and discounts, deposits in none: per chain
-- (level 'chain', store_id null: chain_group cells) and per store (level 'store': store_group).
CREATE OR REPLACE VIEW analytics.group_sales AS
SELECT
    CASE family WHEN 'chain_group' THEN 'chain' ELSE 'store' END AS level,
    chain,
    store_id,
    local_date AS sales_date,
    product_group,
    baskets,
    lines,
    quantity,
    amount_cents
FROM {in_analytics}cells
WHERE family IN ('chain_group', 'store_group');

-- The same per SKU (chain_sku and store_sku cells).
CREATE OR REPLACE VIEW analytics.sku_sales AS
SELECT
    CASE family WHEN 'chain_sku' THEN 'chain' ELSE 'store' END AS level,
    chain,
    store_id,
    local_date AS sales_date,
    product_group,
    sku,
    baskets,
    lines,
    quantity,
    amount_cents
FROM {in_analytics}cells
WHERE family IN ('chain_sku', 'store_sku');

-- Product pairs of a chain and day (sku_pair cells): support = baskets with both / the day's sale
-- baskets; confidence a->b = baskets with both / baskets with a (chain_sku), b->a likewise; lift =
-- both * day / (a * b). A SKU sold in more than one product group (receipt-level lines such as a
-- benefit) has a cell per group and no exact basket count of its own: its confidence and lift are null.
CREATE OR REPLACE VIEW analytics.product_pairs AS
SELECT
    p.chain,
    p.local_date AS sales_date,
    p.sku AS sku_a,
    p.sku_b,
    p.baskets,
    CAST(p.baskets AS {double}) / d.baskets AS support,
    CAST(p.baskets AS {double}) / a.baskets AS confidence_a_b,
    CAST(p.baskets AS {double}) / b.baskets AS confidence_b_a,
    CAST(p.baskets AS {double}) * d.baskets / (CAST(a.baskets AS {double}) * b.baskets) AS lift
FROM {in_analytics}cells AS p
LEFT JOIN {in_analytics}cells AS d ON d.window_id = p.window_id AND d.family = 'chain_day'
LEFT JOIN (
    SELECT window_id, sku, CASE WHEN count(*) = 1 THEN max(baskets) END AS baskets
    FROM {in_analytics}cells
    WHERE family = 'chain_sku'
    GROUP BY window_id, sku
) AS a ON a.window_id = p.window_id AND a.sku = p.sku
LEFT JOIN (
    SELECT window_id, sku, CASE WHEN count(*) = 1 THEN max(baskets) END AS baskets
    FROM {in_analytics}cells
    WHERE family = 'chain_sku'
    GROUP BY window_id, sku
) AS b ON b.window_id = p.window_id AND b.sku = p.sku_b
WHERE p.family = 'sku_pair';

-- Refund baskets per chain and local date (refunds cells; a refund names no sale, so it counts on
-- the day it is paid). refunded_cents is the money paid back, negative.
CREATE OR REPLACE VIEW analytics.refunds AS
SELECT
    chain,
    local_date AS sales_date,
    baskets AS refunds,
    lines,
    amount_cents AS refunded_cents
FROM {in_analytics}cells
WHERE family = 'refunds';
