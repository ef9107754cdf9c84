//! berth's end-to-end tests, one binary: each module drives real `berth up` platforms (one
//! per test, with its own data directory, ports, bridge and subnet, so tests run side by
//! side) through the real CLI, API and edge, with the real components they need. Built and
//! linked once; `cargo test -p berth --test e2e MODULE::` runs one module.

mod common;

mod alerts;
mod app_state;
mod attacks;
mod authz;
mod autoscale;
mod backups;
mod bad_input;
mod canary;
mod containment;
mod declarative;
mod dns;
mod domains;
mod dora;
mod drill;
mod durable;
mod e2e;
mod edge_upgrade;
mod export;
mod formats;
mod gc;
mod git_connect;
mod git_push;
mod gitops;
mod grafana;
mod idempotency;
mod images;
mod kube;
mod kube_backend;
mod kube_canary;
mod kube_node;
mod logs;
mod mcp;
mod metrics;
mod oidc;
mod openapi;
mod operating;
mod projects;
mod registry;
mod replicas;
mod scale_to_zero;
mod slo;
mod teams;
mod tenants;
mod test_step;
mod ui;
