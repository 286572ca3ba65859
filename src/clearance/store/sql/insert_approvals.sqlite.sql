-- One approval, run once per entry: stored only if the customer is in the target group.
INSERT INTO approvals (campaign_id, customer_id, status, at)
SELECT ?, ?, ?, ?
WHERE EXISTS (SELECT 1 FROM target_customers WHERE campaign_id = ?
    AND customer_id = ?)
