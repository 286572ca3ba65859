-- Approvals keyed by the customer's position (seq) in the frozen target group, not by the id
-- string. Listeners page in seq order and approve in that order, so a call's rows now land in
-- index order instead of all over a (campaign_id, customer_id) index: on SQLite each commit had
-- rewritten most of that index's leaf pages, slower with every call (bench/README.md). The id is
-- kept on the row: every reader matches seq AND customer_id against the target row, so an entry
-- can only ever count for the customer it named. Existing rows take their customer's seq; a row
-- whose id is in no target group (none can count) is not carried over.
ALTER TABLE approvals RENAME TO approvals_by_id;
DROP INDEX approvals_latest;
CREATE TABLE approvals (
    campaign_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    customer_id TEXT NOT NULL,
    status BOOLEAN NOT NULL,
    at BIGINT NOT NULL
);
INSERT INTO approvals (campaign_id, seq, customer_id, status, at)
SELECT a.campaign_id, t.seq, a.customer_id, a.status, a.at
FROM approvals_by_id a
JOIN target_customers t ON t.campaign_id = a.campaign_id AND t.customer_id = a.customer_id;
DROP TABLE approvals_by_id;
CREATE INDEX approvals_latest ON approvals (campaign_id, seq, at)
