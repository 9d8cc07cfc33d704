-- The anonymous lines of 0003 kept the checkout's receipt id, under which `receipts` keeps the card:
-- one join re-identified every line. They are dropped, not converted: their basket pseudonyms need
-- the processor's key, which the warehouse does not hold. `receiptflow sink replay` refills
-- analytics.baskets from the analytics baskets the topic still holds.
DROP TABLE IF EXISTS analytics_lines;
