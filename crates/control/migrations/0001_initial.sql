-- berth's state. Portable SQL (SQLite now, PostgreSQL for larger installs): TEXT and BIGINT
-- columns, no SQLite-only types. Tenancy is here from the start: tenant -> project -> app.
CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);
CREATE TABLE projects (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);
INSERT INTO tenants (id, name, created_at) VALUES ('default', 'default', 0);
INSERT INTO projects (id, tenant_id, name, created_at) VALUES ('default', 'default', 'default', 0);

CREATE TABLE apps (
    name TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id),
    env TEXT NOT NULL DEFAULT '{}',
    current_release BIGINT,
    created_at BIGINT NOT NULL
);
CREATE TABLE releases (
    app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    version BIGINT NOT NULL,
    image_repository TEXT NOT NULL,
    image_tag TEXT NOT NULL,
    image_digest TEXT NOT NULL,
    config TEXT NOT NULL,
    description TEXT NOT NULL,
    status TEXT NOT NULL,
    actor TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    failure TEXT,
    PRIMARY KEY (app, version)
);
CREATE TABLE builds (
    id TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    source_id TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE INDEX builds_by_app ON builds (app, created_at);
CREATE TABLE deploys (
    id TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    release_version BIGINT NOT NULL,
    step TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    error TEXT
);
CREATE TABLE instances (
    id TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    release_version BIGINT NOT NULL,
    process TEXT NOT NULL,
    idx BIGINT NOT NULL,
    address TEXT NOT NULL UNIQUE,
    port BIGINT NOT NULL,
    state TEXT NOT NULL,
    restarts BIGINT NOT NULL DEFAULT 0,
    last_exit BIGINT,
    -- Why it last exited when berth knows more than the code ("oom_killed").
    last_exit_reason TEXT,
    started_at BIGINT NOT NULL,
    pid BIGINT,
    pid_start BIGINT
);
CREATE INDEX instances_by_app ON instances (app, release_version);
