-- Notifications are leased one attempt at a time by a named worker, so a worker can extend its
-- lease while the attempt is in flight and can tell that it lost it.
ALTER TABLE notifications ADD COLUMN lease_owner TEXT
