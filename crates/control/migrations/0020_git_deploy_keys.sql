-- Deploy keys: an ed25519 key pair per app, berth's to read private repositories over
-- ssh; the private half sealed by the keyring.
CREATE TABLE git_deploy_keys (
    app TEXT PRIMARY KEY,
    public_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    key_id TEXT NOT NULL,
    sealed_secret TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
