-- The console: "Why not?" finds every campaign a customer was in, by customer id alone.
CREATE INDEX target_customers_by_customer ON target_customers (customer_id);
