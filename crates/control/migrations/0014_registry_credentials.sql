-- Credentials for the registries berth pushes to: the password sealed by the keyring.
CREATE TABLE registry_credentials (
    host TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    key_id TEXT NOT NULL,
    sealed TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL
);
