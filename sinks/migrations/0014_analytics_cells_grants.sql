-- dialects: postgres
-- The roles on the analytics cells of 0013 (the grants of 0009 and 0012 on the basket tables and
-- their views went with them). The sink writer inserts cells; analysts read the cells and the views
-- on them, and nothing of the store is card-linked.
GRANT SELECT, INSERT ON analytics.cells TO receiptflow_sink;

GRANT SELECT ON analytics.cells, analytics.daily_sales, analytics.chain_daily_sales, analytics.store_hour_sales,
    analytics.basket_sizes, analytics.group_sales, analytics.sku_sales, analytics.product_pairs, analytics.refunds
    TO receiptflow_analyst;
