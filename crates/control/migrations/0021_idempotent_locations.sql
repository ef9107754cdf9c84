-- Where a kept answer redirected (the dashboard's forms answer 303): a replay sends the
-- browser to the same place.
ALTER TABLE idempotency_keys ADD COLUMN location TEXT;
