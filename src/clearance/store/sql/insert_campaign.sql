-- A new campaign (draft or scheduled); its target group is appended after, which sets
-- target_count.
INSERT INTO campaigns (campaign_id, name, state, conditional, execute_at,
    process_at, duration_days, clearance_lead_seconds, action_id, action_name,
    promo_codes, channels, target_count, next_step_at, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)
