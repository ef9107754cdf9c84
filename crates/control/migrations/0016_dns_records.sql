-- Names berth publishes in DNS (RFC 2136): what it published, and how the last update went.
-- A row with published = 1 is berth's to change and remove; nothing else in the zone is.
CREATE TABLE dns_records (
    name TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    records TEXT NOT NULL DEFAULT '',
    published INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL
);
