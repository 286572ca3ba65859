-- Approvals passed as two arrays (customer ids, statuses), stored only for customers in the
-- target group. LATERAL + LIMIT forces one index probe per entry; with EXISTS the planner may
-- pick a hash join that scans the whole target table.
INSERT INTO approvals (campaign_id, customer_id, status, at)
SELECT %s, v.customer_id, v.status, %s
FROM unnest(%s::text[], %s::boolean[]) AS v(customer_id, status)
CROSS JOIN LATERAL (SELECT 1 FROM target_customers t
    WHERE t.campaign_id = %s AND t.customer_id = v.customer_id LIMIT 1) AS member
