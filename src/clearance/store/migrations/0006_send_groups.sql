-- Send groups (Conditional Execution V2): the customers scheduled for one template at one send
-- time. A target row names its group (NULL: a V1 campaign, one group at the campaign's time);
-- each group is notified, frozen and executed on its own, under a lease of its own.
ALTER TABLE target_customers ADD COLUMN send_group_id TEXT;
ALTER TABLE sends ADD COLUMN send_group_id TEXT;
ALTER TABLE send_batches ADD COLUMN send_group_id TEXT;
CREATE INDEX target_customers_group ON target_customers (campaign_id, send_group_id, seq);
CREATE TABLE send_groups (
    campaign_id BIGINT NOT NULL,
    send_group_id TEXT NOT NULL,
    template_id INTEGER,
    scheduled_at BIGINT NOT NULL,
    clearance_required_by BIGINT,
    state TEXT NOT NULL,
    target_count BIGINT NOT NULL DEFAULT 0,
    next_step_at BIGINT,
    lease_owner TEXT,
    lease_until BIGINT,
    exec_cursor BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    notified_at BIGINT,
    cleared_at BIGINT,
    executed_at BIGINT,
    PRIMARY KEY (campaign_id, send_group_id)
);
CREATE INDEX send_groups_due ON send_groups (next_step_at)
