-- Triggered campaigns, the single gateway, and the decision log.
CREATE TABLE triggered_campaigns (
    campaign_key TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    trigger_event TEXT NOT NULL,
    active BOOLEAN NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX triggered_campaigns_event ON triggered_campaigns (trigger_event);
CREATE TABLE gateway (
    singleton INTEGER PRIMARY KEY,
    url TEXT NOT NULL,
    timeout_ms INTEGER NOT NULL,
    secret TEXT,
    headers TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE config_versions (
    name TEXT PRIMARY KEY,
    version BIGINT NOT NULL
);
INSERT INTO config_versions (name, version) VALUES ('triggered', 0);
CREATE TABLE decisions (
    decision_id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    campaign_key TEXT NOT NULL,
    user_id TEXT NOT NULL,
    is_visitor BOOLEAN NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT,
    latency_ms DOUBLE PRECISION NOT NULL,
    sent BOOLEAN NOT NULL,
    shadow BOOLEAN NOT NULL
);
CREATE INDEX decisions_campaign ON decisions (campaign_key, decision_id);
CREATE INDEX decisions_user ON decisions (user_id, decision_id)
