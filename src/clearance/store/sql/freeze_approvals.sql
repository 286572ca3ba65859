-- The freeze: each target customer's approval that counts, written onto its row, where the
-- executor and the outcome reads then find it. {latest_approvals}: latest_approvals.sql. The row
-- is found by its key (campaign_id, seq) and must carry the same customer id.
UPDATE target_customers SET approval = a.status, approval_at = a.at
FROM ({latest_approvals}) AS a
WHERE target_customers.campaign_id = ? AND target_customers.seq = a.seq
    AND target_customers.customer_id = a.customer_id AND a.rn = 1
