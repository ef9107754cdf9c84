//! berth's I/O-free core: the object model every plane shares.
//!
//! Nothing in this crate touches the disk, the network or a clock. It holds the names and
//! shapes of things (apps, releases, builds, instances), the parsers and validators for the
//! files users write (`berth.toml`, `Procfile`), and the data the HTTP API exchanges, so that
//! the control plane, the CLI and the other planes agree on one vocabulary.
#![forbid(unsafe_code)]

pub mod alerts;
pub mod api;
pub mod appjson;
pub mod auth;
pub mod canary;
pub mod declare;
pub mod domains;
pub mod dora;
pub mod git;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod names;
pub mod policy;
pub mod procfile;
pub mod projects;
pub mod registries;
pub mod score;
pub mod slo;
pub mod spec;
pub mod state;

pub use names::{AppName, NameError};
