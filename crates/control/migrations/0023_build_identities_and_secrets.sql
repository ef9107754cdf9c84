-- Each app's build identity: slot n gives the app's builds a uid and subordinate ids of
-- their own. A slot is free again once its app is gone and its host account removed.
CREATE TABLE build_identities (
    slot INTEGER PRIMARY KEY,
    app TEXT NOT NULL UNIQUE
);
-- The secret versions an app's builds get (`berth secrets set APP NAME=… --build`), sealed
-- in secret_versions like every other; never part of a release.
CREATE TABLE app_build_secrets (
    app TEXT NOT NULL,
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (app, name)
);
