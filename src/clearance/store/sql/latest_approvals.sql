-- Every approval of one campaign, numbered per customer: rn = 1 is the one that counts, the
-- latest (a tie in time goes to "false"); the same rule as latest_approval_column.sql. Rows are
-- keyed by position; the id is part of the key, so a row can only count for the customer it named
-- (the freeze joins on both).
SELECT seq, customer_id, status, at, ROW_NUMBER() OVER (PARTITION BY seq, customer_id
    ORDER BY at DESC, status ASC) AS rn
FROM approvals
WHERE campaign_id = ?
