-- The freeze of one send group (freeze_approvals.sql for the group's customers only).
-- {latest_approvals}: latest_approvals.sql.
UPDATE target_customers SET approval = a.status, approval_at = a.at
FROM ({latest_approvals}) AS a
WHERE target_customers.campaign_id = ? AND target_customers.send_group_id = ?
    AND target_customers.customer_id = a.customer_id AND a.rn = 1
