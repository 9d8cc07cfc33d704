"""The exactly-once aggregator: the router's anonymous baskets in, anonymous analytics cells out.

The router writes every basket to the internal ``purchases.baskets`` (keyed by chain); only this wing
reads it, and only cells of at least k baskets leave it, on ``purchases.analytics``. Where a change goes:

- the close marker of a window (what was published and counted for it): :mod:`.marker`, pure;
- the open windows of a partition, what closes them and what offset is committed: :mod:`.windows`, pure
  (the cells themselves are :func:`receiptflow.suppression.release`'s);
- reading a record as a basket or a dead letter: :mod:`.decode`;
- the Kafka clients and the close markers read back: :mod:`.clients`; the loop (assign, revoke,
  transactions): :mod:`.worker`.
"""
