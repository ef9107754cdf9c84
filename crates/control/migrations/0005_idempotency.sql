-- Answers of requests made with an Idempotency-Key header, returned again to retries.
CREATE TABLE idempotency_keys (
    key TEXT PRIMARY KEY,
    -- What was asked (secret values left out), so a key reused for another request is refused.
    request_hash TEXT NOT NULL,
    status BIGINT NOT NULL,
    response TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
