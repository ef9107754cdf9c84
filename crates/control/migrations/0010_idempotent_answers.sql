-- Answers kept for Idempotency-Key retries of any change: the content type too, since
-- workflow answers are NDJSON streams.
ALTER TABLE idempotency_keys ADD COLUMN content_type TEXT;
