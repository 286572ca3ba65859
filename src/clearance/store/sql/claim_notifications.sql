-- Lease the pending notifications that are due, first due first, up to a limit, skipping those
-- whose lease has not run out. The worker names itself as the lease's owner. {skip_locked}: the
-- backend's FOR UPDATE SKIP LOCKED (Database.skip_locked).
UPDATE notifications SET lease_until = ?, lease_owner = ?
WHERE notification_id IN (
    SELECT notification_id FROM notifications
    WHERE state = 'pending'
        AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until < ?)
    ORDER BY next_attempt_at LIMIT ?{skip_locked}
)
RETURNING notification_id, campaign_id, event_type_id, channel_id, listener_url,
    body, next_attempt_at, expires_at, attempts
