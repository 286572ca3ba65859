-- Salted API key hashes (keys made before this are found by scanning, and re-hashed with a salt on
-- first use), per-key rate limits, and the audit trail of who changed what.
ALTER TABLE api_keys ADD COLUMN rate_limit_per_second DOUBLE PRECISION;
ALTER TABLE api_keys ADD COLUMN by_scan INTEGER NOT NULL DEFAULT 0;
UPDATE api_keys SET by_scan = 1;
CREATE TABLE audit_log (
    audit_id {serial_key},
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_log_target ON audit_log (target, audit_id)
