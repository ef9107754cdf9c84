-- Apps deployed from a branch of a remote repository: webhooks (secret sealed by the
-- keyring) and polling.
CREATE TABLE git_connections (
    app TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    branch TEXT NOT NULL,
    project TEXT NOT NULL,
    key_id TEXT NOT NULL,
    sealed_secret TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_commit TEXT,
    last_outcome TEXT,
    last_at BIGINT,
    last_trigger TEXT
);

-- Webhook deliveries seen (by the provider's delivery id): a replay triggers nothing.
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    received_at BIGINT NOT NULL
);
