-- Who approved: one row per accepted UpdateCustomerPromotionStatus call (the key or user that
-- made it, and the time its entries were stored with), so "Why not?" can name the key that
-- approved a customer without widening every approval row.
CREATE TABLE approval_calls (
    campaign_id BIGINT NOT NULL,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    entries INTEGER NOT NULL
);
CREATE INDEX approval_calls_by_time ON approval_calls (campaign_id, at)
