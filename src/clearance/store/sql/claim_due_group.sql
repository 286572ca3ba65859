-- Lease the send group whose next step is due first, unless another worker's lease on it is
-- still live, and only while its campaign is active. {skip_locked}: the backend's
-- FOR UPDATE SKIP LOCKED (Database.skip_locked), so two workers never claim the same group.
UPDATE send_groups SET lease_owner = ?, lease_until = ?
WHERE (campaign_id, send_group_id) IN (
    SELECT g.campaign_id, g.send_group_id FROM send_groups g
    WHERE g.next_step_at <= ?
        AND g.state IN ('awaiting', 'cleared', 'executing')
        AND (g.lease_until IS NULL OR g.lease_until < ? OR g.lease_owner = ?)
        AND EXISTS (SELECT 1 FROM campaigns c WHERE c.campaign_id = g.campaign_id
            AND c.state IN ('awaiting_clearance', 'cleared'))
    ORDER BY g.next_step_at LIMIT 1{skip_locked}
)
RETURNING campaign_id, send_group_id
