-- One campaign's row, every column campaign_from_row reads. {lock}: empty, or the backend's
-- FOR SHARE / FOR UPDATE (Database.lock_share, lock_update) for the reads others serialize on.
SELECT campaign_id, name, state, conditional, execute_at, process_at, duration_days,
    clearance_lead_seconds, clearance_required_by, action_id, action_name, promo_codes,
    channels, target_count, created_at, executed_at, canceled_at, processed_at, cleared_at,
    exec_cursor, last_error, next_step_at
FROM campaigns
WHERE campaign_id = ?{lock}
