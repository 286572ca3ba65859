-- The freeze of one send group: each of its customers' approval that counts, written onto its
-- row. Driven from the group's rows with one index probe each ({latest_status}, {latest_at}:
-- latest_approval_column.sql), so the plan cannot turn into a scan of every approval per row.
UPDATE target_customers AS t SET approval = {latest_status}, approval_at = {latest_at}
WHERE t.campaign_id = ? AND t.send_group_id = ?
    AND EXISTS (SELECT 1 FROM approvals a WHERE a.campaign_id = t.campaign_id
        AND a.seq = t.seq AND a.customer_id = t.customer_id)
