"""The exactly-once router: checkouts and consent changes in, per-chain granularity and consent out.

Where a change goes:

- what a checkout becomes (granularity, marketing level, analytics basket): :mod:`.route`, pure;
- one record's decision with the partition's state (dedup, consent at the checkout's time,
  dead letters): :mod:`.step`, pure, with its compiled twin :mod:`.fast_path`;
- a card's consent history in write order: :mod:`.consent`; the consent record itself is decoded by
  :func:`receiptflow.consent_codec.decode_consent`, the one decoder every reader uses;
- ordering the two input topics by append time: :mod:`.merge`;
- the partition state, its changelog and restore: :mod:`.state`;
- the Kafka clients and the worker loop (assign, revoke, transactions): :mod:`.clients`,
  :mod:`.worker`, with :mod:`.watchdog` for client calls that hang;
- Avro encoding of the outputs: :mod:`.encoding`; the analytics pseudonym: :mod:`.pseudonym`.
"""
