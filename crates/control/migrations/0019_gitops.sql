-- Platform definitions applied from a directory of a git repository on every commit.
CREATE TABLE gitops_sources (
    name TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    path TEXT NOT NULL,
    branch TEXT NOT NULL,
    prune INTEGER NOT NULL DEFAULT 0,
    key_id TEXT NOT NULL,
    sealed_secret TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_commit TEXT,
    last_outcome TEXT,
    last_at BIGINT,
    last_trigger TEXT
);
