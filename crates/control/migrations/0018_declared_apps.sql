-- What the last `berth apply` deployed of each app it manages: berth.toml as written, the
-- digest of the rest of the source, and the release it made (another release serving
-- since is drift).
CREATE TABLE declared_apps (
    app TEXT PRIMARY KEY,
    dir TEXT NOT NULL,
    berth_toml TEXT NOT NULL,
    code_digest TEXT NOT NULL,
    release BIGINT NOT NULL,
    applied_at BIGINT NOT NULL
);
