-- People who sign in with the platform's OIDC provider, and the role each has.
CREATE TABLE people (
    identity TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    scope TEXT NOT NULL DEFAULT 'platform',
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL
);
