-- Inside a query over target_customers t: the {column} (status or at) of the approval that
-- counts for that customer, the latest (a tie in time goes to "false"); the same rule as
-- latest_approvals.sql. One probe of approvals_latest by position; the id must match too.
(SELECT a.{column} FROM approvals a WHERE a.campaign_id = t.campaign_id AND a.seq = t.seq
    AND a.customer_id = t.customer_id ORDER BY a.at DESC, a.status ASC LIMIT 1)
