-- Analytics baskets v2: the basket's receipt kind, the deposits and receipt-level adjustments inside its
-- total, and each line's kind, unit and share of those adjustments. Rows written before keep the v1
-- meaning through the defaults: a sale of pieces without adjustments. No column links a refund basket
-- to the basket of its sale (that would join two visits of one shopper): refunds net the figures of
-- the day and hour they happen in.
ALTER TABLE analytics.baskets ADD COLUMN receipt_kind TEXT NOT NULL DEFAULT 'SALE';

ALTER TABLE analytics.baskets ADD COLUMN deposit_cents BIGINT NOT NULL DEFAULT 0;

ALTER TABLE analytics.baskets ADD COLUMN adjustment_cents BIGINT NOT NULL DEFAULT 0;

ALTER TABLE analytics.basket_lines ADD COLUMN line_kind TEXT NOT NULL DEFAULT 'SALE';

ALTER TABLE analytics.basket_lines ADD COLUMN unit TEXT NOT NULL DEFAULT 'PIECE';

ALTER TABLE analytics.basket_lines ADD COLUMN adjustment_cents BIGINT NOT NULL DEFAULT 0;

-- Product groups net of returns, refunds, voids, line discounts and benefits, with each line's share
-- of the receipt-level adjustments; deposits are money held for bottles, in no product group. A basket
-- counts where it is a sale.
CREATE OR REPLACE VIEW analytics.product_group_mix AS
SELECT
    b.chain,
    l.product_group,
    sum(l.amount_cents + l.adjustment_cents) AS amount_cents,
    count(DISTINCT l.basket_id) FILTER (WHERE b.receipt_kind = 'SALE') AS baskets,
    CAST(sum(l.amount_cents + l.adjustment_cents) AS {double})
    / nullif(sum(sum(l.amount_cents + l.adjustment_cents)) OVER (PARTITION BY b.chain), 0) AS share_of_chain
FROM {in_analytics}basket_lines AS l
JOIN {in_analytics}baskets AS b ON b.basket_id = l.basket_id
WHERE l.line_kind NOT IN ('DEPOSIT', 'DEPOSIT_REFUND')
GROUP BY b.chain, l.product_group;

-- The average sale: refund and cancelled baskets are no baskets of their own here.
CREATE OR REPLACE VIEW analytics.basket_size AS
SELECT
    chain,
    CAST(local_hour AS DATE) AS sales_date,
    count(*) AS baskets,
    CAST(sum(total_cents) AS {double}) / count(*) AS avg_basket_cents,
    CAST(sum(line_count) AS {double}) / count(*) AS avg_lines
FROM {in_analytics}baskets
WHERE receipt_kind = 'SALE'
GROUP BY chain, CAST(local_hour AS DATE);

-- Per store and local date: sales, the refunds paid back that day (whenever the sale was), and the
-- money net of them, with and without bottle deposits (net_goods_cents: what product figures count).
CREATE OR REPLACE VIEW analytics.daily_sales_net AS
SELECT
    CAST(local_hour AS DATE) AS sales_date,
    chain,
    store_id,
    count(*) FILTER (WHERE receipt_kind = 'SALE') AS baskets,
    count(*) FILTER (WHERE receipt_kind = 'REFUND') AS refunds,
    coalesce(sum(total_cents) FILTER (WHERE receipt_kind <> 'REFUND'), 0) AS sales_cents,
    coalesce(sum(total_cents) FILTER (WHERE receipt_kind = 'REFUND'), 0) AS refunded_cents,
    sum(total_cents) AS net_cents,
    sum(total_cents - deposit_cents) AS net_goods_cents
FROM {in_analytics}baskets
GROUP BY CAST(local_hour AS DATE), chain, store_id;
