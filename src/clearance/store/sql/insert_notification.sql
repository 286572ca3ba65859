-- A notification into the outbox, pending, first due at next_attempt_at (also its created_at).
INSERT INTO notifications (notification_id, campaign_id, event_type_id,
    channel_id, listener_url, body, state, attempts, next_attempt_at, expires_at,
    created_at)
VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?)
