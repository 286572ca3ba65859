-- Triggered sends committed with their decisions (the outbox) and delivered by the worker in
-- batches; event ids reserved once per campaign; decisions paged in commit order.
CREATE TABLE triggered_sends (
    decision_id TEXT NOT NULL,
    channel_id BIGINT NOT NULL,
    campaign_key TEXT NOT NULL,
    record TEXT NOT NULL,
    at BIGINT NOT NULL,
    batch_id TEXT,
    state TEXT NOT NULL,
    delivered_at BIGINT,
    last_error TEXT,
    PRIMARY KEY (decision_id, channel_id)
) {table_options_plain};
CREATE INDEX triggered_sends_batch ON triggered_sends (batch_id, decision_id);
CREATE TABLE triggered_batches (
    batch_id TEXT PRIMARY KEY,
    campaign_key TEXT NOT NULL,
    channel_id BIGINT NOT NULL,
    first_decision TEXT NOT NULL,
    last_decision TEXT NOT NULL,
    sends INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT,
    last_error TEXT,
    delivered_at BIGINT
);
CREATE INDEX triggered_batches_due ON triggered_batches (state, next_attempt_at);
CREATE TABLE event_ids (
    campaign_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    decision_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (campaign_key, event_id)
);
CREATE INDEX event_ids_at ON event_ids (at);
ALTER TABLE decisions ADD COLUMN event_id TEXT;
-- The paging key, seq, grows in commit order: decision writes take one lock (SQLite: the single
-- writer; PostgreSQL: an advisory lock, see TriggeredStore.write_decisions) and number their rows
-- inside it, so no row is ever committed behind one already visible.
ALTER TABLE decisions ADD COLUMN seq BIGINT;
UPDATE decisions SET seq = o.n FROM (
    SELECT decision_id, row_number() OVER (ORDER BY decision_id) AS n FROM decisions
) AS o WHERE decisions.decision_id = o.decision_id;
{decision_order};
CREATE INDEX decisions_order ON decisions (seq);
CREATE INDEX decisions_campaign_order ON decisions (campaign_key, seq)
