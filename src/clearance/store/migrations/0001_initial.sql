-- clearance schema, version 1. Portable SQL; table_options braces are filled per dialect.
CREATE TABLE api_keys (
    key_id TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL UNIQUE,
    access_type TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE TABLE users (
    username TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    access_type TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    access_type TEXT NOT NULL,
    last_used_at BIGINT NOT NULL
);
CREATE TABLE listeners (
    event_type_id INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    listener_url TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (event_type_id, channel_id)
);
CREATE TABLE channels (
    channel_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL DEFAULT '',
    clearance_lead_seconds INTEGER,
    delivery TEXT NOT NULL DEFAULT 'file',
    target TEXT,
    updated_at BIGINT NOT NULL
);
CREATE TABLE promotions (
    promo_code TEXT PRIMARY KEY,
    promotion_name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE campaigns (
    campaign_id BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    conditional BOOLEAN NOT NULL,
    execute_at BIGINT NOT NULL,
    process_at BIGINT,
    duration_days INTEGER NOT NULL,
    clearance_lead_seconds INTEGER,
    clearance_required_by BIGINT,
    action_id BIGINT NOT NULL,
    action_name TEXT NOT NULL,
    promo_codes TEXT NOT NULL,
    channels TEXT NOT NULL,
    target_count BIGINT NOT NULL DEFAULT 0,
    next_step_at BIGINT,
    lease_owner TEXT,
    lease_until BIGINT,
    exec_cursor BIGINT NOT NULL DEFAULT 0,
    sends_count BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    processed_at BIGINT,
    cleared_at BIGINT,
    executed_at BIGINT,
    canceled_at BIGINT
);
CREATE INDEX campaigns_due ON campaigns (next_step_at);
CREATE TABLE target_customers (
    campaign_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    customer_id TEXT NOT NULL,
    attributes TEXT,
    approval BOOLEAN,
    approval_at BIGINT,
    late_attempt_at BIGINT,
    PRIMARY KEY (campaign_id, seq)
) {table_options};
CREATE UNIQUE INDEX target_customers_customer ON target_customers (campaign_id, customer_id);
-- Every approval call appends here; the latest word per customer (a tie goes to "false") counts,
-- and at ClearanceRequiredBy it is frozen into target_customers.approval.
CREATE TABLE approvals (
    campaign_id BIGINT NOT NULL,
    customer_id TEXT NOT NULL,
    status BOOLEAN NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX approvals_latest ON approvals (campaign_id, customer_id, at);
CREATE TABLE sends (
    campaign_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    channel_id INTEGER NOT NULL,
    customer_id TEXT NOT NULL,
    template_id INTEGER,
    scheduled_at BIGINT NOT NULL,
    send_no BIGINT NOT NULL,
    PRIMARY KEY (campaign_id, seq, channel_id)
) {table_options_plain};
CREATE UNIQUE INDEX sends_by_number ON sends (campaign_id, send_no);
CREATE TABLE send_batches (
    campaign_id BIGINT NOT NULL,
    channel_id INTEGER NOT NULL,
    first_seq BIGINT NOT NULL,
    last_seq BIGINT NOT NULL,
    sends INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    delivered_at BIGINT,
    last_error TEXT,
    PRIMARY KEY (campaign_id, channel_id, first_seq)
);
CREATE TABLE notifications (
    notification_id TEXT PRIMARY KEY,
    campaign_id BIGINT,
    event_type_id INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    listener_url TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    lease_until BIGINT,
    created_at BIGINT NOT NULL,
    delivered_at BIGINT,
    last_error TEXT
);
CREATE INDEX notifications_due ON notifications (state, next_attempt_at);
CREATE INDEX notifications_campaign ON notifications (campaign_id);
CREATE TABLE notification_attempts (
    notification_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    at BIGINT NOT NULL,
    status_code INTEGER,
    error TEXT,
    duration_ms INTEGER NOT NULL,
    PRIMARY KEY (notification_id, attempt)
)
