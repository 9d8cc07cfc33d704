-- Analyst views: what a retail analyst opens first. They read only the tables the policy filled, so
-- they show nothing finer than was allowed: the product-group mix comes from receipt_groups (ITEM and
-- PRODUCT_GROUP receipts), basket sizes in lines only from receipts that kept line counts.

-- Sales per day (the register's local date), chain and store, with the card-linked part.
CREATE OR REPLACE VIEW daily_sales AS
SELECT
    event_local_date AS sales_date,
    chain,
    store_id,
    count(*) AS receipts,
    sum(total_cents) AS sales_cents,
    count(card_id) AS card_receipts,
    sum(CASE WHEN card_id IS NOT NULL THEN total_cents ELSE 0 END) AS card_sales_cents
FROM receipts
GROUP BY event_local_date, chain, store_id;

-- Basket size per chain and day: money per receipt, and lines per receipt where lines were kept.
CREATE OR REPLACE VIEW basket_size AS
SELECT
    chain,
    event_local_date AS sales_date,
    count(*) AS receipts,
    CAST(sum(total_cents) AS {double}) / count(*) AS avg_basket_cents,
    count(*) FILTER (WHERE item_count > 0) AS receipts_with_lines,
    CAST(sum(item_count) AS {double}) / NULLIF(count(*) FILTER (WHERE item_count > 0), 0) AS avg_lines
FROM receipts
GROUP BY chain, event_local_date;

-- Share of card purchases per chain and day, by receipts and by money.
CREATE OR REPLACE VIEW card_share AS
SELECT
    chain,
    event_local_date AS sales_date,
    CAST(count(card_id) AS {double}) / count(*) AS card_receipt_share,
    CAST(sum(CASE WHEN card_id IS NOT NULL THEN total_cents ELSE 0 END) AS {double})
        / NULLIF(sum(total_cents), 0) AS card_sales_share
FROM receipts
GROUP BY chain, event_local_date;

-- Product-group mix per chain: money per group and its share of the chain's group-level money.
CREATE OR REPLACE VIEW product_group_mix AS
SELECT
    r.chain,
    g.product_group,
    sum(g.amount_cents) AS amount_cents,
    count(DISTINCT g.receipt_id) AS receipts,
    CAST(sum(g.amount_cents) AS {double}) / sum(sum(g.amount_cents)) OVER (PARTITION BY r.chain) AS share_of_chain
FROM receipt_groups AS g
JOIN receipts AS r ON r.receipt_id = g.receipt_id
GROUP BY r.chain, g.product_group;
