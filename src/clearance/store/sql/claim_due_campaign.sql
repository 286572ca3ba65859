-- Lease the campaign whose next step is due first, unless another worker's lease on it is still
-- live. {active_states}: one placeholder per active state. {skip_locked}: the backend's
-- FOR UPDATE SKIP LOCKED (Database.skip_locked), so two workers never claim the same row.
UPDATE campaigns SET lease_owner = ?, lease_until = ?
WHERE campaign_id = (
    SELECT campaign_id FROM campaigns
    WHERE next_step_at <= ?
        AND state IN ({active_states})
        AND (lease_until IS NULL OR lease_until < ? OR lease_owner = ?)
    ORDER BY next_step_at LIMIT 1{skip_locked}
)
RETURNING campaign_id
