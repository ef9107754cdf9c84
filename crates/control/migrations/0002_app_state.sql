-- App state: secrets (every version kept, sealed; values never in plaintext) and volumes.
CREATE TABLE secret_versions (
    app TEXT NOT NULL,
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    -- Which keyring key sealed it, and base64(nonce || ciphertext).
    key_id TEXT NOT NULL,
    sealed TEXT NOT NULL,
    actor TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (app, name, version)
);
-- The secrets an app's next release gets: name -> version.
CREATE TABLE app_secrets (
    app TEXT NOT NULL,
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (app, name)
);
CREATE TABLE volumes (
    app TEXT NOT NULL,
    name TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    mount_path TEXT NOT NULL,
    -- 1: one instance at a time; deploys stop the old instance before starting the new.
    exclusive BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (app, name)
);
