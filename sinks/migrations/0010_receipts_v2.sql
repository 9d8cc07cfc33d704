-- Receipts v2 (checkout and purchase v2): the receipt's kind, the receipt a refund pays back, the
-- deposits and receipt-level discounts inside its total, and each item line's kind, unit and the line
-- it applies to. Rows written before keep the v1 meaning through the defaults: a sale of pieces.
ALTER TABLE receipts ADD COLUMN receipt_kind TEXT NOT NULL DEFAULT 'SALE';

ALTER TABLE receipts ADD COLUMN original_receipt_id TEXT;

ALTER TABLE receipts ADD COLUMN deposit_cents BIGINT NOT NULL DEFAULT 0;

ALTER TABLE receipts ADD COLUMN adjustment_cents BIGINT NOT NULL DEFAULT 0;

ALTER TABLE receipt_items ADD COLUMN line_kind TEXT NOT NULL DEFAULT 'SALE';

ALTER TABLE receipt_items ADD COLUMN unit TEXT NOT NULL DEFAULT 'PIECE';

ALTER TABLE receipt_items ADD COLUMN ref_line_no INTEGER;

-- Each sale with what was refunded of it since, whenever the refund came: net_cents is what the
-- receipt finally cost, net_goods_cents the same without bottle deposits (what a profile's spend
-- counts). A refund of a receipt the warehouse does not hold is a row of its own, so the sum of
-- net_cents over any set of cards equals the sum of their receipts' totals.
CREATE OR REPLACE VIEW receipts_net AS
SELECT
    r.receipt_id,
    r.chain,
    r.store_id,
    r.card_id,
    r.event_local_date,
    r.receipt_kind,
    r.total_cents,
    r.deposit_cents,
    coalesce(f.refunds, 0) AS refunds,
    coalesce(f.refunded_cents, 0) AS refunded_cents,
    r.total_cents + coalesce(f.refunded_cents, 0) AS net_cents,
    r.total_cents - r.deposit_cents + coalesce(f.refunded_goods_cents, 0) AS net_goods_cents
FROM receipts AS r
LEFT JOIN (
    SELECT
        original_receipt_id,
        count(*) AS refunds,
        sum(total_cents) AS refunded_cents,
        sum(total_cents - deposit_cents) AS refunded_goods_cents
    FROM receipts
    WHERE receipt_kind = 'REFUND'
    GROUP BY original_receipt_id
) AS f ON f.original_receipt_id = r.receipt_id
WHERE r.receipt_kind <> 'REFUND'
    OR NOT EXISTS (SELECT 1 FROM receipts AS o WHERE o.receipt_id = r.original_receipt_id);

-- Per card and month (the register's local dates): receipts, refunds and money net of refunds and
-- without deposits, the figure segments use.
CREATE OR REPLACE VIEW card_months_net AS
SELECT
    card_id,
    CAST(date_trunc('month', event_local_date) AS DATE) AS sales_month,
    count(*) FILTER (WHERE receipt_kind = 'SALE') AS visits,
    count(*) FILTER (WHERE receipt_kind = 'REFUND') AS refunds,
    sum(total_cents) AS net_cents,
    sum(total_cents - deposit_cents) AS net_goods_cents
FROM receipts
WHERE card_id IS NOT NULL
GROUP BY card_id, CAST(date_trunc('month', event_local_date) AS DATE);
