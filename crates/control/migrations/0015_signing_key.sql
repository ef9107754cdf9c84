-- The key berth signs images with (cosign format): its PKCS#8 form sealed by the keyring.
CREATE TABLE signing_key (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    key_id TEXT NOT NULL,
    sealed TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
