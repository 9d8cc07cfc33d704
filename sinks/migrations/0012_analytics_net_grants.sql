-- dialects: postgres
-- Analysts read the analytics view of 0011 as they read the others of the anonymous store.
GRANT SELECT ON analytics.daily_sales_net TO receiptflow_analyst;
