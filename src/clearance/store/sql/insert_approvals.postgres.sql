-- Approvals passed as two arrays (customer ids, statuses), stored at each customer's position
-- and only for customers in the target group. LATERAL + LIMIT forces one index probe per entry;
-- a join may get a hash join that scans the whole target table.
INSERT INTO approvals (campaign_id, seq, customer_id, status, at)
SELECT %s, member.seq, v.customer_id, v.status, %s
FROM unnest(%s::text[], %s::boolean[]) AS v(customer_id, status)
CROSS JOIN LATERAL (SELECT t.seq FROM target_customers t
    WHERE t.campaign_id = %s AND t.customer_id = v.customer_id LIMIT 1) AS member
