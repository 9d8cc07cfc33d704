-- Consent changes in the order they were written, with their proof. appended_at is the broker's
-- append time of the change's record (the consents topic is LogAppendTime): every reader orders a
-- card's changes by it, never by changed_at, the time the writer put on the change. Rows stored
-- before it take their own time (the order they were read in so far). principal, channel and
-- text_version (consent_change v2): the Kafka principal that wrote the change, where the customer
-- gave it and the version of the consent text they saw; empty for a change written as v1.
ALTER TABLE consent_changes ADD COLUMN appended_at TIMESTAMPTZ;

UPDATE consent_changes SET appended_at = changed_at WHERE appended_at IS NULL;

ALTER TABLE consent_changes ADD COLUMN principal TEXT NOT NULL DEFAULT '';

ALTER TABLE consent_changes ADD COLUMN channel TEXT NOT NULL DEFAULT '';

ALTER TABLE consent_changes ADD COLUMN text_version TEXT NOT NULL DEFAULT '';
