-- One channel's sends for the target positions first..last, written by the database from the
-- rows it just read: no round trip. send_no numbers the campaign's sends densely, so wire paging
-- ($skip) seeks by key. {approved}: empty, or the filter on the frozen approval.
INSERT INTO sends (campaign_id, seq, channel_id, customer_id, template_id,
    scheduled_at, send_no)
SELECT campaign_id, seq, CAST(? AS INTEGER),
    customer_id, CAST(? AS INTEGER), CAST(? AS BIGINT), CAST(? AS BIGINT)
    + (ROW_NUMBER() OVER (ORDER BY seq) - 1) * CAST(? AS BIGINT)
FROM target_customers
WHERE campaign_id = ? AND seq >= ?
    AND seq <= ?{approved}
