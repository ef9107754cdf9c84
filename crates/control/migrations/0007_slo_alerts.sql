-- Responses per app between two samples of the edge's counters (for SLO windows), and the
-- alerts berth raised.
CREATE TABLE slo_samples (
    app TEXT NOT NULL,
    at BIGINT NOT NULL,
    requests BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    slow BIGINT NOT NULL
);
CREATE INDEX slo_samples_by_app ON slo_samples (app, at);
CREATE TABLE alerts (
    id TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    name TEXT NOT NULL,
    severity TEXT NOT NULL,
    summary TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    resolved_at BIGINT
);
CREATE INDEX alerts_by_state ON alerts (resolved_at, app, name);
