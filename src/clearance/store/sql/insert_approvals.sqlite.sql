-- One approval, run once per entry: stored, at the customer's position, only if the customer is
-- in the target group.
INSERT INTO approvals (campaign_id, seq, customer_id, status, at)
SELECT campaign_id, seq, customer_id, ?, ?
FROM target_customers WHERE campaign_id = ? AND customer_id = ?
