//! The API client (`berth-client`), found from the CLI's global flags.

use crate::cli::Global;
pub use berth_client::{ApiFailure, Client};
use std::path::PathBuf;

/// Where the API is, from `--data-dir`, `--api-url` and `--token` (or their variables).
pub fn target(g: &Global) -> berth_client::Target {
    berth_client::Target {
        data_dir: g.data_dir.clone(),
        api_url: g.api_url.clone(),
        token: g.token.clone(),
        client: "cli".into(),
    }
}

/// The data directory chosen by flags or environment, made absolute.
pub fn data_dir(g: &Global) -> PathBuf {
    target(g).data_dir()
}

/// The API client for these flags.
pub fn discover(g: &Global) -> anyhow::Result<Client> {
    Client::discover(&target(g))
}
