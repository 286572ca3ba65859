-- Which of the ids passed as an array are not in the campaign's target group, in their order.
SELECT v.customer_id
FROM unnest(%s::text[]) WITH ORDINALITY AS v(customer_id, n)
LEFT JOIN LATERAL (SELECT 1 AS found FROM target_customers t
    WHERE t.campaign_id = %s AND t.customer_id = v.customer_id LIMIT 1) AS member
    ON TRUE
WHERE member.found IS NULL
ORDER BY v.n
