-- Cards erased by `receiptflow erase`, as the salted hash the profile store's erased-cards record
-- keeps (no card id). Erasure adds the hash in the same transaction as it deletes the card's rows,
-- and the sink leaves out every row of a card listed here, so neither the live sink nor a replay of
-- a retained topic stores the card again.
CREATE TABLE IF NOT EXISTS erased_cards (
    card_hash TEXT PRIMARY KEY,
    erased_at TIMESTAMPTZ NOT NULL
);
