-- What made each release (for DORA: code deploys, rollbacks, config changes) and, for
-- releases built from a git checkout, when its commit was made.
ALTER TABLE releases ADD COLUMN kind TEXT NOT NULL DEFAULT 'config';
ALTER TABLE releases ADD COLUMN commit_time BIGINT;
UPDATE releases SET kind = 'deploy' WHERE description LIKE 'deploy of %';
UPDATE releases SET kind = 'rollback' WHERE description LIKE 'rollback to v%';
CREATE INDEX deploys_by_time ON deploys (started_at);
