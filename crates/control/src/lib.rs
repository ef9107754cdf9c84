//! berth's control plane: the platform's state and the one HTTP API into it.
//!
//! - [`config`]: platform settings (data dir, ports, bridge, limits) with validation.
//! - [`store`]: the state store (SQLite, WAL, migrations; portable SQL).
//! - [`launcher`]: turns a release's image into containers for the run plane.
//! - [`deploy`]: the deploy workflow (build → release → start → health → switch → drain),
//!   each step recorded so a restart rolls an interrupted deploy back instead of guessing.
//! - [`supervisor`]: watches instances, restarts crashed ones with backoff, re-adopts running
//!   containers after a restart, feeds the log ingester.
//! - [`routing`]: publishes the edge's route snapshot and waits until the edge serves it.
//! - [`secrets`]: sealed secrets, their changes as releases, key rotation.
//! - [`volumes`]: volumes of an app: create, snapshot, restore, destroy, and what deploys
//!   do about exclusive ones.
//! - [`databases`]: each app's PostgreSQL database on the platform's server.
//! - [`domains`]: custom domains of an app; [`certificates`]: the certificate of every host
//!   the edge serves (local CA or ACME), renewals, and the snapshot the edge reads;
//!   [`tls_store`]: their tables.
//! - [`create`]: an app with domains, secrets, volumes and a database in one call, all or
//!   nothing, idempotent under an `Idempotency-Key`.
//! - [`backups`]: platform backups to a directory or S3 (create, schedule, list, verify,
//!   prune) and the offline restore.
//! - [`dora`]: the DORA four keys of an app or the platform, from the rollout records.
//! - [`slo`]: each app's objectives, sampled from the edge's counters and evaluated with
//!   multi-window burn rates; alerts raised and resolved.
//! - [`health_alerts`]: app down, crash and OOM loops, certificates, disk, backups.
//! - [`notify`]: alerts to Alertmanager (v2 API) and to a signed webhook (outbox, retries).
//! - [`metrics`]: what `/metrics` reads at each scrape (edge counts, instances' cgroups).
//! - [`api`]: the HTTP API (axum) that the CLI, web UI and MCP server all use.
//! - [`platform`]: wires it all together for `berth up`.
#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod autoscale;
pub mod backups;
pub mod build_egress;
pub mod build_network;
pub mod canary;
pub mod certificates;
pub mod config;
pub mod control_plane;
pub mod create;
pub mod databases;
pub mod declarative;
pub mod deploy;
pub mod deploy_keys;
pub mod dns_records;
pub mod doctor;
pub mod domains;
pub mod dora;
pub mod error;
pub mod export;
pub mod extract;
pub mod gc;
pub mod git_connect;
pub mod git_http;
pub mod gitops;
pub mod guard;
pub mod health_alerts;
pub mod idempotency;
pub mod idle;
pub mod kube_backend;
pub mod launcher;
pub mod metrics;
pub mod notify;
pub mod oidc;
pub mod openapi;
pub mod people;
pub mod platform;
pub mod policy;
pub mod probes;
pub mod projects;
pub mod qualified;
pub mod registries;
pub mod request_path;
pub mod routing;
pub mod score;
pub mod secrets;
pub mod signing_key;
pub mod slo;
pub mod status;
pub mod store;
pub mod supervisor;
pub mod tls_store;
pub mod tokens;
pub mod ui;
pub mod volumes;
pub mod webhooks;

pub use config::PlatformConfig;
pub use error::ApiError;

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A short random hex id.
pub fn random_id(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    hex::encode(buf)
}
