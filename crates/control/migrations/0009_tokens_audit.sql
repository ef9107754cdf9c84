-- API tokens beside the bootstrap token: stored as SHA-256 of the token, shown once.
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    scope TEXT NOT NULL DEFAULT 'platform',
    hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    expires_at BIGINT,
    last_used_at BIGINT,
    revoked_at BIGINT
);

-- Every mutating call: who, what, on what, how it ended and what it made. Append-only.
CREATE TABLE audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    token_id TEXT NOT NULL,
    client TEXT,
    request_id TEXT NOT NULL,
    source TEXT,
    action TEXT NOT NULL,
    target TEXT,
    outcome TEXT NOT NULL,
    status BIGINT,
    refs TEXT NOT NULL DEFAULT '{}',
    detail TEXT
);
CREATE INDEX audit_at ON audit (at);
CREATE TRIGGER audit_append_only_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_append_only_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
