-- One PostgreSQL database per app (at most), on the platform's server.
CREATE TABLE databases (
    app TEXT PRIMARY KEY,
    database_name TEXT NOT NULL,
    role_name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
