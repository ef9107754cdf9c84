//! Shapes exchanged over berth's HTTP API (JSON). The CLI, the web UI and the MCP server all
//! read these; they are the only way into the platform's state.

use crate::model::{ImageRef, InstanceState, ReleaseConfig, ReleaseStatus};
use serde::{Deserialize, Serialize};

/// Header carrying who asks (shown in `berth releases`).
pub const ACTOR_HEADER: &str = "x-berth-actor";

/// Every API error: a stable machine-readable code, a human message naming the problem, and
/// where possible a hint saying what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable code, e.g. `invalid_app_name`, `app_not_found`, `build_failed`.
    pub code: String,
    /// What went wrong.
    pub message: String,
    /// What to do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// One app in `berth apps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AppSummary {
    /// App name.
    pub name: String,
    /// URL at the edge.
    pub url: String,
    /// Version of the release serving now.
    pub current_release: Option<u32>,
    /// Running instances.
    pub running: u32,
    /// Unix seconds.
    pub created_at: i64,
    /// Isolation level of the serving release (`trusted` or `sandbox`).
    #[serde(default)]
    pub isolation: Option<String>,
    /// The project it belongs to.
    #[serde(default)]
    pub project: String,
    /// Asleep: idle, its web instances stopped until the next request (`[scale] min = 0`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sleeping: bool,
}

/// One image of an app in `berth images`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImageView {
    /// Manifest digest (`sha256:…`).
    pub digest: String,
    /// The tag it has in berth's store (a commit, or `sha256-…`).
    pub tag: String,
    /// Bytes stored: config and compressed layers.
    pub size: u64,
    /// The releases that run it, newest first.
    pub releases: Vec<u32>,
    /// Packages in its SBOM (SPDX 2.3), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom_packages: Option<usize>,
    /// `verified` (cosign-format signature by the platform's key), `unsigned`, or
    /// `invalid: why`.
    pub signature: String,
}

/// One release in `berth releases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReleaseView {
    /// App name.
    pub app: String,
    /// 1, 2, …
    pub version: u32,
    /// Image it runs.
    pub image: ImageRef,
    /// Environment and processes.
    pub config: ReleaseConfig,
    /// What made it: `build <source id>`, `rollback to v2`, `env set GREETING`.
    pub description: String,
    /// Where it is in its life.
    pub status: ReleaseStatus,
    /// Who asked for it.
    pub actor: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Why its deploy failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// One instance in `berth ps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InstanceView {
    /// Container id.
    pub id: String,
    /// Release it belongs to.
    pub release: u32,
    /// Process type.
    pub process: String,
    /// Index within the process type.
    pub index: u32,
    /// Current state.
    pub state: InstanceState,
    /// Address the edge sends traffic to.
    pub address: String,
    /// How often it was restarted after exiting.
    pub restarts: u32,
    /// Exit code of its last exit (128+N for signal N).
    pub last_exit: Option<i32>,
    /// Why it last exited when berth knows more than the code: `oom_killed` (went past its
    /// memory limit).
    #[serde(default)]
    pub last_exit_reason: Option<String>,
    /// Unix seconds when its current process started.
    pub started_at: i64,
}

/// What differs between an app's objects in the cluster and what berth applied (the
/// Kubernetes backend): a change made by hand, or an object gone or left over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DriftView {
    /// `Deployment berth-default/shop-web`.
    pub object: String,
    /// `create` (gone from the cluster), `update` (changed), `delete` (berth's, but no
    /// longer declared).
    pub action: String,
    /// The fields that differ (names only, never a secret's value).
    pub fields: Vec<String>,
}

/// A line of the NDJSON stream that `POST /v1/apps/{app}/deploys` answers with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum DeployEvent {
    /// The deploy moved to a new step.
    Step { step: String },
    /// A line of build or release-command output.
    Log { line: String },
    /// The deploy finished; this release serves now.
    Done { release: u32, url: String },
    /// The change was stored; no release serves yet, so it applies at the first deploy.
    Stored { message: String },
    /// The deploy failed; the previous release (if any) keeps serving.
    Failed {
        #[serde(flatten)]
        error: ErrorBody,
        #[serde(default)]
        log_tail: Vec<String>,
    },
}

/// Body of `POST /v1/apps/{app}/rollback`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RollbackRequest {
    /// Version to go back to; default: the release before the current one.
    pub to: Option<u32>,
}

/// Body of `POST /v1/apps/{app}/scale`: instances per process type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleChange {
    /// Process type → how many instances (0 stops the type; `web` keeps at least 1).
    pub processes: std::collections::BTreeMap<String, u32>,
}

/// Body of `POST /v1/apps/{app}/env`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnvChange {
    /// Variables to set.
    #[serde(default)]
    pub set: std::collections::BTreeMap<String, String>,
    /// Variables to remove.
    #[serde(default)]
    pub unset: Vec<String>,
}

/// One probe's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProbeResult {
    /// Unix seconds.
    pub at: i64,
    pub url: String,
    /// The HTTP status, when an answer came.
    pub status: Option<u16>,
    /// Until the answer's head, milliseconds.
    pub latency_ms: f64,
    /// What went wrong, when nothing usable came back.
    pub error: Option<String>,
    /// When the certificate served for the name expires (Unix seconds), over HTTPS.
    pub tls_expires_at: Option<i64>,
}

impl ProbeResult {
    /// An answer that is not a server error.
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.status.is_some_and(|s| s < 500)
    }
}
