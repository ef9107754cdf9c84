//! The object model: apps, releases, builds and instances, as plain data.

use crate::limits::Limits;
use crate::policy::{Isolation, NetworkPolicy};
use crate::spec::HealthCheck;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Process type that runs once before a release starts; a failure fails the deploy.
pub const RELEASE_PROCESS: &str = "release";

/// The Procfile line holding the app's tests (run before a release, not a process).
pub const TEST_PROCESS: &str = "test";
/// Process type that receives HTTP traffic from the edge.
pub const WEB_PROCESS: &str = "web";

/// One long-running process type of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProcessSpec {
    /// Command, run with `sh -c` in the app directory.
    pub command: String,
    /// How many instances run.
    pub instances: u32,
    /// Memory, CPU and process limits of each instance.
    #[serde(default)]
    pub limits: Limits,
}

/// Everything about a release except its image: immutable once the release exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
pub struct ReleaseConfig {
    /// Environment variables given to every process.
    pub env: BTreeMap<String, String>,
    /// Long-running process types (never `release`).
    pub processes: BTreeMap<String, ProcessSpec>,
    /// Command run once before the release's processes start.
    pub release_command: Option<String>,
    /// Command run once, on the app's first deploy, after the release command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postdeploy: Option<String>,
    /// Health check applied to new `web` instances.
    pub health: HealthCheck,
    /// Limits of the release command's container.
    #[serde(default)]
    pub release_limits: Limits,
    /// How the release's containers are isolated.
    #[serde(default)]
    pub isolation: Isolation,
    /// Whom the release's instances may reach.
    #[serde(default)]
    pub network: NetworkPolicy,
    /// Capabilities the release's processes keep (trusted only; empty by default).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// The secrets the release runs with: name → version. Values stay encrypted in the
    /// store; a rollback brings back the versions its release had.
    #[serde(default)]
    pub secrets: BTreeMap<String, u32>,
    /// Secrets delivered as files under `/run/secrets` (`"*"`: all); the rest are
    /// environment variables.
    #[serde(default)]
    pub secret_files: Vec<String>,
    /// The app's service level objectives while this release serves.
    #[serde(default)]
    pub slo: crate::slo::SloSpec,
    /// Log retention of the app (max age ms, max bytes), where berth.toml overrides the
    /// platform's.
    #[serde(default)]
    pub log_retention: (Option<i64>, Option<u64>),
    /// The port the `web` process listens on (unset: 8000, told to the app as `$PORT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Where `web` serves its own Prometheus metrics (berth.toml's `[metrics] path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_path: Option<String>,
    /// Set when the image brings its whole root filesystem (a Dockerfile build, an image
    /// from a registry); unset for berth's own builds, which run on the host's `/usr` with
    /// the app in `/app`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub own_root: Option<OwnRoot>,
    /// Seconds without requests after which the web instances stop (`[scale] min = 0`);
    /// the next request starts one again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_secs: Option<u64>,
    /// How the web instances follow the load (`[scale] target_concurrency`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<Autoscale>,
    /// The canary steps berth.toml asked for (`[deploy] strategy = "canary"`): on a cluster
    /// with Argo Rollouts the web pods are a `Rollout` with these steps, whatever changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<crate::canary::CanarySpec>,
}

/// The autoscaler's settings for a release's web instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Autoscale {
    /// Fewest web instances (at least 1; sleeping is `[scale] min = 0` without this).
    pub min: u32,
    /// Most web instances.
    pub max: u32,
    /// Requests under way per instance aimed for (0: not a signal).
    #[serde(default)]
    pub target_concurrency: u32,
    /// CPU use per instance aimed for, percent of its CPU limit (`None`: not a signal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_cpu: Option<u32>,
    /// How long the load stays low before instances are removed, seconds.
    pub cooldown_secs: u64,
}

impl Autoscale {
    /// How many instances the load calls for: `concurrency` requests under way (on
    /// average) and `cpu_used` CPUs busy in all, each instance having `cpu_limit` CPUs;
    /// whichever signal asks for more wins.
    pub fn desired(&self, concurrency: f64, cpu_used: f64, cpu_limit: f64) -> u32 {
        let by_requests = if self.target_concurrency > 0 {
            (concurrency / f64::from(self.target_concurrency)).ceil()
        } else {
            0.0
        };
        let by_cpu = match self.target_cpu {
            Some(t) if t > 0 && cpu_limit > 0.0 => {
                (cpu_used / (cpu_limit * f64::from(t) / 100.0)).ceil()
            }
            _ => 0.0,
        };
        let wanted = by_requests.max(by_cpu).max(0.0);
        (wanted as u32).clamp(self.min.max(1), self.max.max(self.min.max(1)))
    }
}

/// How a release whose image brings its own root filesystem runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OwnRoot {
    /// The image's working directory.
    pub workdir: String,
}

impl ReleaseConfig {
    /// Whether secret `name` reaches the app as a file rather than an environment variable.
    pub fn secret_as_file(&self, name: &str) -> bool {
        self.secret_files.iter().any(|f| f == name || f == "*")
    }
}

/// An OCI image in berth's local image store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImageRef {
    /// Repository name inside the store (the app's name).
    pub repository: String,
    /// Immutable tag: the git commit sha, or `sha256-<content digest>` for plain directories.
    pub tag: String,
    /// Manifest digest (`sha256:…`).
    pub digest: String,
}

impl ImageRef {
    /// The git commit the image was built from, when it was built from one.
    pub fn commit(&self) -> Option<&str> {
        (!self.tag.starts_with("sha256-") && !self.tag.is_empty()).then_some(self.tag.as_str())
    }
}

/// Where a release is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseStatus {
    /// Being deployed.
    Deploying,
    /// Serving traffic now.
    Active,
    /// Served earlier; replaced by a newer release.
    Superseded,
    /// Its deploy failed; it never served.
    Failed,
}

impl ReleaseStatus {
    /// The stable string stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deploying => "deploying",
            Self::Active => "active",
            Self::Superseded => "superseded",
            Self::Failed => "failed",
        }
    }

    /// Parses the stored string.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "deploying" => Self::Deploying,
            "active" => Self::Active,
            "superseded" => Self::Superseded,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

/// State of one running (or once running) process instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// Container being created.
    Starting,
    /// Process alive.
    Running,
    /// Exited; waiting for its backoff before a restart.
    Crashed,
    /// Stopped on purpose (drained, destroyed).
    Stopped,
}

impl InstanceState {
    /// The stable string stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Crashed => "crashed",
            Self::Stopped => "stopped",
        }
    }

    /// Parses the stored string.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "starting" => Self::Starting,
            "running" => Self::Running,
            "crashed" => Self::Crashed,
            "stopped" => Self::Stopped,
            _ => return None,
        })
    }
}

/// The container id berth gives an instance: unique per platform, valid as a crun id and
/// short enough to derive interface names from.
pub fn instance_id(app: &str, release: u32, process: &str, index: u32, nonce: &str) -> String {
    format!("{app}-v{release}-{process}-{index}-{nonce}")
}
