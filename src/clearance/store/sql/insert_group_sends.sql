-- One channel's sends for one send group's customers at positions first..last (insert_sends.sql
-- for a group): the group's template and send time, send_no dense over the campaign's sends.
-- {approved}: empty, or the filter on the frozen approval.
INSERT INTO sends (campaign_id, seq, channel_id, customer_id, template_id,
    scheduled_at, send_no, send_group_id)
SELECT campaign_id, seq, CAST(? AS INTEGER),
    customer_id, CAST(? AS INTEGER), CAST(? AS BIGINT), CAST(? AS BIGINT)
    + (ROW_NUMBER() OVER (ORDER BY seq) - 1) * CAST(? AS BIGINT), send_group_id
FROM target_customers
WHERE campaign_id = ? AND send_group_id = ? AND seq >= ?
    AND seq <= ?{approved}
