-- Domains and TLS: custom domains per app, the certificates served for every host (private
-- keys sealed by the keyring), and other sealed TLS keys (the local CA, ACME accounts).
CREATE TABLE domains (
    name TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    https_redirect BIGINT NOT NULL,
    -- Why the last certificate issuance failed (retried), or NULL.
    cert_error TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX domains_by_app ON domains (app);
CREATE TABLE certificates (
    -- The host name it is served for.
    name TEXT PRIMARY KEY,
    -- 'acme' or 'local'.
    source TEXT NOT NULL,
    chain_pem TEXT NOT NULL,
    key_id TEXT NOT NULL,
    sealed_key TEXT NOT NULL,
    not_after BIGINT NOT NULL,
    issued_at BIGINT NOT NULL
);
CREATE TABLE tls_keys (
    -- 'local-ca' or 'acme:<directory url>'.
    name TEXT PRIMARY KEY,
    -- The public half (the CA's certificate), if any.
    public_pem TEXT,
    key_id TEXT NOT NULL,
    sealed TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
