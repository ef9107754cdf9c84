-- Registry credentials belong to a scope: 'platform' (every project may use them),
-- 'tenant:NAME' or 'project:NAME'. A host may have credentials in several scopes; a deploy
-- uses the most specific its project may use.
CREATE TABLE registry_credentials_scoped (
    host TEXT NOT NULL,
    scope TEXT NOT NULL,
    username TEXT NOT NULL,
    key_id TEXT NOT NULL,
    sealed TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (host, scope)
);
INSERT INTO registry_credentials_scoped (host, scope, username, key_id, sealed, created_at, created_by)
    SELECT host, 'platform', username, key_id, sealed, created_at, created_by FROM registry_credentials;
DROP TABLE registry_credentials;
ALTER TABLE registry_credentials_scoped RENAME TO registry_credentials;

-- What a tenant's apps are held to (JSON: the least isolation level, the capabilities its
-- apps may keep).
ALTER TABLE tenants ADD COLUMN policy TEXT NOT NULL DEFAULT '{}';
