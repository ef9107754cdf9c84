//! A build plan: what a provider decided, as plain data, apart from the code that runs it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How to turn a source directory into a runnable app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildPlan {
    /// Which provider made it (`python`, `node`, `rust`, `static`, `procfile`).
    pub provider: String,
    /// Shell commands run in order in `/app` inside the build container; any failure fails
    /// the build.
    pub build_commands: Vec<String>,
    /// Long-running process types and their commands.
    pub processes: BTreeMap<String, String>,
    /// Command run once before each release starts (Procfile `release`).
    pub release_command: Option<String>,
    /// The app's tests, run in the built image before anything starts (Procfile `test`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_command: Option<String>,
    /// Extra environment for build and run (e.g. `PATH` additions).
    pub env: BTreeMap<String, String>,
}
