-- A campaign's notifications, in the order they were queued.
SELECT notification_id, event_type_id, channel_id, listener_url, state, attempts,
    next_attempt_at, expires_at, delivered_at, last_error, body
FROM notifications
WHERE campaign_id = ?
ORDER BY created_at, notification_id
