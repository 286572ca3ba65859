-- Every approval of one campaign, numbered per customer: rn = 1 is the one that counts, the
-- latest (a tie in time goes to "false"); the same rule as latest_approval_column.sql.
SELECT customer_id, status, at, ROW_NUMBER() OVER (PARTITION BY customer_id
    ORDER BY at DESC, status ASC) AS rn
FROM approvals
WHERE campaign_id = ?
