//! `berth.toml`: what only berth knows about an app (its name, health check, process
//! commands, instance counts and limits, isolation level, network policy and capabilities). Read with `deny_unknown_fields` so a typo is an error,
//! then validated as a whole so that every problem is reported at once.

use crate::limits::{self, Limits};
use crate::names::{validate_process_type, AppName};
use crate::policy::{self, EgressMode, EgressRule, Isolation, NetworkPolicy};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Default health-check timeout: how long a new instance has to answer before the deploy fails.
pub const DEFAULT_HEALTH_TIMEOUT_SECS: u64 = 30;
/// Most instances of one process type on one machine.
pub const MAX_INSTANCES: u32 = 16;

/// The contents of `berth.toml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BerthToml {
    /// App name; defaults to the directory's name.
    pub name: Option<String>,
    /// `"trusted"` (crun) or `"sandbox"` (gVisor); unset: the platform's default.
    pub isolation: Option<String>,
    /// Health check of new instances before traffic moves to them.
    pub health: HealthToml,
    /// Process types: command override and instance count.
    pub processes: BTreeMap<String, ProcessToml>,
    /// Environment set at build and run time (overridden by `berth env set`).
    pub env: BTreeMap<String, String>,
    /// Whom the app may reach on the network.
    pub network: NetworkToml,
    /// Extra privileges (trusted apps only).
    pub security: SecurityToml,
    /// How secrets reach the app.
    pub secrets: SecretsToml,
    /// Service level objectives (defaults: 99.9% available, 99% under 300 ms).
    pub slo: SloToml,
    /// Where the app serves its own Prometheus metrics (on a cluster with the Prometheus
    /// operator, a ServiceMonitor scrapes them).
    pub metrics: MetricsToml,
    /// How long the app's logs are kept (default: the platform's, 7 days and 1 GiB).
    pub logs: LogsToml,
    /// What a deploy does besides building and starting.
    pub deploy: DeployToml,
    /// An image to deploy from an OCI registry instead of building the directory
    /// (`registry.example.com/team/app:1.4`, or pinned `…@sha256:…`).
    pub image: Option<String>,
    /// The port the `web` process listens on (default: the image's one `EXPOSE`d port, else
    /// 8000, told to the app as `$PORT`).
    pub port: Option<u16>,
    /// How a Dockerfile is built.
    pub build: BuildToml,
    /// Scaling: `min = 0` with `idle` stops the web instances of an idle app; the next
    /// request wakes it.
    pub scale: ScaleToml,
    /// Variables that must be set (with `berth env` or `berth secrets`) before a deploy:
    /// app.json's `required` ones without a value.
    #[serde(skip)]
    pub required_env: Vec<String>,
    /// The score.yaml beside it: resources to provide and variables to resolve at deploy.
    #[serde(skip)]
    pub score: Option<crate::score::Score>,
}

/// `[scale]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScaleToml {
    /// Fewest web instances: 0 lets the app sleep when idle (default: the instances set).
    pub min: Option<u32>,
    /// How long without requests before an app with `min = 0` sleeps (default 5m).
    pub idle: Option<String>,
    /// Most web instances the autoscaler runs.
    pub max: Option<u32>,
    /// Requests under way per web instance the autoscaler aims for: it adds instances
    /// (up to `max`) when there are more, and removes them (down to `min`) when there have
    /// been fewer for `cooldown`.
    pub target_concurrency: Option<u32>,
    /// CPU use per web instance the autoscaler aims for, percent of the instance's CPU
    /// limit (e.g. 70); with `target_concurrency` too, whichever asks for more wins.
    pub target_cpu: Option<u32>,
    /// How long the load must stay low before instances are removed (default 60s).
    pub cooldown: Option<String>,
}

/// Default time the load must stay low before the autoscaler removes instances.
pub const DEFAULT_COOLDOWN_SECS: u64 = 60;

/// The shortest and longest idle time before an app sleeps.
pub const MIN_IDLE_SECS: u64 = 1;
pub const MAX_IDLE_SECS: u64 = 7 * 86_400;
/// Default idle time before an app with `[scale] min = 0` sleeps.
pub const DEFAULT_IDLE_SECS: u64 = 300;

/// `[build]`: a Dockerfile build.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BuildToml {
    /// The Dockerfile, relative to the app directory (default `Dockerfile` when there is one).
    pub dockerfile: Option<String>,
    /// Build arguments (`ARG`).
    pub args: BTreeMap<String, String>,
    /// The stage to build (`--target`; default the last).
    pub target: Option<String>,
    /// Where build steps may connect: `"open"` (default: any host by name, through the
    /// build proxy) or `"none"` (nothing: a build that needs no download).
    pub egress: Option<String>,
}

/// The longest a test step may take when berth.toml does not say.
pub const DEFAULT_TEST_TIMEOUT_SECS: u64 = 600;
/// The longest it may be told to take.
pub const MAX_TEST_TIMEOUT_SECS: u64 = 3600;

/// `[deploy]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeployToml {
    /// The app's tests (e.g. `pytest -q`), run in the freshly built image before anything
    /// starts; a failure fails the deploy. Overrides a Procfile `test:` line.
    pub test: Option<String>,
    /// How long the tests may take (default 10m).
    pub test_timeout: Option<String>,
    /// `"canary"`: the new release gets a growing share of requests (`steps`), each step
    /// analysed against the stable release; default: all at once once healthy.
    pub strategy: Option<String>,
    /// Canary steps: percent of requests, growing (default [10, 50]).
    pub steps: Option<Vec<u8>>,
    /// How long each canary step lasts (default 30s).
    pub step_pause: Option<String>,
    /// Each client stays on one side of a canary (by its address), and a client on the
    /// canary stays there as its share grows; default: requests spread one by one.
    pub sticky: Option<bool>,
    /// A command run once, on the app's first deploy, after the release command and before
    /// traffic moves (app.json's `scripts.postdeploy`, e.g. seeding a database); a failure
    /// fails that deploy.
    pub postdeploy: Option<String>,
}

/// `[logs]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogsToml {
    /// Lines older than this go, e.g. "3d" (at most 90 days).
    pub retention: Option<String>,
    /// The oldest lines go while the app's log is bigger than this, e.g. "200M".
    pub max_size: Option<String>,
}

/// `[metrics]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsToml {
    /// The path on the web process's port, e.g. `/metrics`.
    pub path: Option<String>,
}

/// `[slo]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SloToml {
    /// Percent of responses that are not 5xx, e.g. 99.9.
    pub availability: Option<f64>,
    /// Share of responses faster than `latency_ms`, e.g. 0.99.
    pub latency_p: Option<f64>,
    /// Latency threshold, milliseconds, e.g. 300.
    pub latency_ms: Option<u64>,
}

/// `[secrets]`: secrets are environment variables unless listed in `files`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecretsToml {
    /// Secrets that appear as files `/run/secrets/NAME` instead of environment variables
    /// (`"*"`: all of them).
    pub files: Vec<String>,
}

/// `[network]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkToml {
    /// Apps this one may connect to.
    pub allow: Vec<String>,
    /// `"open"` (default: anything but the blocklist), `"allowlist"` or `"none"`.
    pub egress: Option<String>,
    /// Destinations allowed in allowlist mode: `"203.0.113.0/24"`, `"198.51.100.7:443"`.
    pub egress_allow: Vec<String>,
    /// Apps of other projects that may connect to this one, as `PROJECT/APP` (apps of the
    /// same project need not be named: their own `allow` is enough).
    pub accept_from: Vec<String>,
}

/// `[security]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityToml {
    /// Capabilities to keep (all others are dropped); trusted apps only.
    pub capabilities: Vec<String>,
    /// Known vulnerabilities (advisory ids or CVEs) the vulnerability gate lets through.
    pub accept_vulnerabilities: Vec<String>,
}

/// A memory size in `berth.toml`: bytes, or a string with a unit (`"256M"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SizeToml {
    /// A plain number of bytes.
    Bytes(u64),
    /// A size with a unit.
    Text(String),
}

/// A CPU count in `berth.toml`: `1` or `0.5`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CpusToml {
    /// Whole CPUs.
    Whole(u32),
    /// A fraction of CPUs.
    Fraction(f64),
}

impl CpusToml {
    fn value(self) -> f64 {
        match self {
            Self::Whole(n) => n as f64,
            Self::Fraction(f) => f,
        }
    }
}

/// `[health]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthToml {
    /// Path to GET; when set the instance must answer 2xx or 3xx. Unset: any HTTP answer.
    pub path: Option<String>,
    /// Seconds a new instance has to become healthy.
    pub timeout_secs: Option<u64>,
}

/// `[processes.<type>]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessToml {
    /// Command, run with `sh -c`; overrides the detected or Procfile command.
    pub command: Option<String>,
    /// How many instances to run.
    pub instances: Option<u32>,
    /// Memory limit per instance (`"256M"`).
    pub memory: Option<SizeToml>,
    /// CPUs per instance (`0.5`).
    pub cpus: Option<CpusToml>,
    /// Most processes and threads per instance.
    pub pids: Option<u32>,
}

/// A `berth.toml` that could not be read; names the file, line and field where known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("berth.toml: {0}")]
pub struct SpecError(pub String);

/// The health check a deploy applies to new instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HealthCheck {
    /// Path to GET, or `None` for "any HTTP response".
    pub path: Option<String>,
    /// Seconds allowed.
    pub timeout_secs: u64,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            path: None,
            timeout_secs: DEFAULT_HEALTH_TIMEOUT_SECS,
        }
    }
}

impl BerthToml {
    /// The autoscaler's settings, when `[scale] target_concurrency` or `target_cpu` is set.
    pub fn autoscale(&self) -> Option<crate::model::Autoscale> {
        if self.scale.target_concurrency.is_none() && self.scale.target_cpu.is_none() {
            return None;
        }
        let min = self.scale.min.unwrap_or(1).max(1);
        Some(crate::model::Autoscale {
            min,
            max: self.scale.max.unwrap_or(min),
            target_concurrency: self.scale.target_concurrency.unwrap_or(0),
            target_cpu: self.scale.target_cpu,
            cooldown_secs: self
                .scale
                .cooldown
                .as_deref()
                .and_then(|c| humantime::parse_duration(c).ok())
                .map_or(DEFAULT_COOLDOWN_SECS, |d| d.as_secs()),
        })
    }

    /// How long an idle app waits before its web instances stop (`[scale] min = 0`).
    pub fn idle_secs(&self) -> Option<u64> {
        (self.scale.min == Some(0)).then(|| {
            self.scale
                .idle
                .as_deref()
                .and_then(|i| humantime::parse_duration(i).ok())
                .map_or(DEFAULT_IDLE_SECS, |d| d.as_secs())
        })
    }

    /// The canary rollout berth.toml asks for, if any.
    pub fn canary(&self) -> Option<crate::canary::CanarySpec> {
        (self.deploy.strategy.as_deref() == Some("canary")).then(|| crate::canary::CanarySpec {
            steps: self
                .deploy
                .steps
                .clone()
                .unwrap_or_else(|| crate::canary::DEFAULT_STEPS.to_vec()),
            step_secs: self
                .deploy
                .step_pause
                .as_deref()
                .and_then(|p| humantime::parse_duration(p).ok())
                .map_or(crate::canary::DEFAULT_STEP_SECS, |d| d.as_secs()),
            sticky: self.deploy.sticky.unwrap_or(false),
        })
    }

    /// Parses and validates `berth.toml` text. Errors carry line and column from the TOML
    /// parser, or the dotted field path from validation; all validation errors are joined.
    pub fn parse(text: &str) -> Result<Self, SpecError> {
        let parsed: BerthToml = toml::from_str(text).map_err(|e| {
            let mut msg = e.message().to_string();
            if let Some(span) = e.span() {
                let line = text[..span.start.min(text.len())].lines().count().max(1);
                let line = if text[..span.start.min(text.len())].ends_with('\n') {
                    line + 1
                } else {
                    line
                };
                msg = format!("line {line}: {msg}");
            }
            SpecError(msg)
        })?;
        let problems = parsed.validate();
        if problems.is_empty() {
            Ok(parsed)
        } else {
            Err(SpecError(problems.join("; ")))
        }
    }

    /// Every problem found, each naming its field.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(t) = &self.deploy.test {
            if t.trim().is_empty() {
                problems.push(
                    "deploy.test: empty; remove it or give the command that runs the tests".into(),
                );
            }
        }
        if let Some(t) = &self.deploy.test_timeout {
            match humantime::parse_duration(t) {
                Ok(d) if d.as_secs() >= 1 && d.as_secs() <= MAX_TEST_TIMEOUT_SECS => {}
                Ok(_) => problems.push(format!(
                    "deploy.test_timeout: {t:?} must be between 1s and {}m",
                    MAX_TEST_TIMEOUT_SECS / 60
                )),
                Err(e) => problems.push(format!("deploy.test_timeout: {t:?}: {e}")),
            }
        }
        if let Some(image) = &self.image {
            if let Err(e) = crate::registries::parse_reference(image) {
                problems.push(format!("image: {e}"));
            }
            if self.build.dockerfile.is_some() {
                problems.push(
                    "image: an app is either an image from a registry or a Dockerfile build; remove image or build.dockerfile"
                        .into(),
                );
            }
        }
        if self.port == Some(0) {
            problems.push("port: 0 is not a port; give the port the web process listens on".into());
        }
        if let Some(f) = &self.build.dockerfile {
            let ok = !f.is_empty()
                && !f.starts_with('/')
                && std::path::Path::new(f)
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !ok {
                problems.push(format!(
                    "build.dockerfile: {f:?} must be a path inside the app directory"
                ));
            }
        }
        for key in self.build.args.keys() {
            if let Err(e) = crate::names::validate_env_key(key) {
                problems.push(format!("build.args.{key}: {e}"));
            }
        }
        if let Some(t) = &self.build.target {
            if t.is_empty()
                || !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                problems.push(format!("build.target: {t:?} is not a stage name"));
            }
        }
        if let Some(min) = self.scale.min {
            if min > 0 && self.scale.idle.is_some() {
                problems.push("scale.idle: only an app with scale.min = 0 sleeps when idle".into());
            }
            if min > MAX_INSTANCES {
                problems.push(format!(
                    "scale.min: {min} is more than the maximum of {MAX_INSTANCES}"
                ));
            }
        }
        if let Some(t) = self.scale.target_cpu {
            if !(1..=100).contains(&t) {
                problems.push(format!(
                    "scale.target_cpu: {t} must be a percent of the instance's CPU limit, 1 to 100"
                ));
            }
        }
        if self.scale.target_concurrency.is_some() || self.scale.target_cpu.is_some() {
            if self.scale.target_concurrency == Some(0) {
                problems.push("scale.target_concurrency: must be at least 1".into());
            }
            let min = self.scale.min.unwrap_or(1).max(1);
            match self.scale.max {
                None => problems.push(
                    "scale.max: the autoscaler needs a most, e.g. max = 5 (with target_concurrency or target_cpu)"
                        .into(),
                ),
                Some(max) if max < min || max > MAX_INSTANCES => problems.push(format!(
                    "scale.max: {max} must be between {min} and {MAX_INSTANCES}"
                )),
                Some(_) => {}
            }
        } else if self.scale.max.is_some() || self.scale.cooldown.is_some() {
            problems.push(
                "scale.max and scale.cooldown are the autoscaler's: set scale.target_concurrency or scale.target_cpu too"
                    .into(),
            );
        }
        if let Some(c) = &self.scale.cooldown {
            match humantime::parse_duration(c) {
                Ok(d) if (1..=3600).contains(&d.as_secs()) => {}
                _ => problems.push(format!(
                    "scale.cooldown: {c:?} must be a duration between 1s and 1h, e.g. \"60s\""
                )),
            }
        }
        if let Some(idle) = &self.scale.idle {
            match humantime::parse_duration(idle) {
                Ok(d) if (MIN_IDLE_SECS..=MAX_IDLE_SECS).contains(&d.as_secs()) => {}
                _ => problems.push(format!(
                    "scale.idle: {idle:?} must be a duration between 1s and 7d, e.g. \"5m\""
                )),
            }
        }
        match self.deploy.strategy.as_deref() {
            None | Some("canary") | Some("all-at-once") => {}
            Some(other) => problems.push(format!(
                "deploy.strategy: {other:?} is not a strategy; use \"canary\" or \"all-at-once\""
            )),
        }
        if let Some(steps) = &self.deploy.steps {
            if let Err(e) = crate::canary::validate_steps(steps) {
                problems.push(e);
            }
        }
        if let Some(p) = &self.deploy.step_pause {
            match humantime::parse_duration(p) {
                Ok(d) if d.as_secs() >= 1 && d.as_secs() <= 3600 => {}
                _ => problems.push(format!(
                    "deploy.step_pause: {p:?} must be a duration between 1s and 1h, e.g. \"30s\""
                )),
            }
        }
        if self.deploy.strategy.as_deref() != Some("canary")
            && (self.deploy.steps.is_some()
                || self.deploy.step_pause.is_some()
                || self.deploy.sticky.is_some())
        {
            problems.push(
                "deploy.steps, deploy.step_pause and deploy.sticky are for strategy = \"canary\"; set it or remove them"
                    .into(),
            );
        }
        if let Some(name) = &self.name {
            if let Err(e) = AppName::parse(name) {
                problems.push(format!("name: {e}"));
            }
        }
        if let Some(path) = &self.health.path {
            if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                problems.push(format!(
                    "health.path: {path:?} must start with '/' and contain no spaces"
                ));
            }
        }
        problems.extend(self.slo().validate());
        if let Some(p) = self.metrics.path.as_deref().filter(|p| !p.starts_with('/')) {
            problems.push(format!(
                "metrics.path: {p:?} is not a path (it starts with /, e.g. \"/metrics\")"
            ));
        }
        if let Some(r) = &self.logs.retention {
            match humantime::parse_duration(r) {
                Ok(d) if d.as_secs() >= 3_600 && d.as_secs() <= 90 * 86_400 => {}
                _ => problems.push(format!(
                    "logs.retention: {r:?} must be a duration between 1h and 90d, e.g. \"7d\""
                )),
            }
        }
        if let Some(m) = &self.logs.max_size {
            match crate::limits::parse_memory(m) {
                Ok(b) if b >= 1 << 20 => {}
                Ok(_) => problems.push(format!("logs.max_size: {m:?} is less than 1M")),
                Err(e) => problems.push(format!("logs.max_size: {e}")),
            }
        }
        if let Some(t) = self.health.timeout_secs {
            if !(1..=600).contains(&t) {
                problems.push(format!(
                    "health.timeout_secs: {t} must be between 1 and 600"
                ));
            }
        }
        for (kind, p) in &self.processes {
            if let Err(e) = validate_process_type(kind) {
                problems.push(format!("processes.{kind}: {e}"));
            }
            if let Some(n) = p.instances {
                if n > MAX_INSTANCES {
                    problems.push(format!(
                        "processes.{kind}.instances: {n} is more than the maximum of {MAX_INSTANCES}"
                    ));
                }
                if kind == "release" {
                    problems.push(
                        "processes.release.instances: the release command runs once per deploy; it has no instances"
                            .into(),
                    );
                }
            }
            if let Some(c) = &p.command {
                if c.trim().is_empty() {
                    problems.push(format!("processes.{kind}.command: is empty"));
                }
            }
        }
        for key in self.env.keys() {
            if let Err(e) = crate::names::validate_env_key(key) {
                problems.push(format!("env.{key}: {e}"));
            }
        }
        for kind in self.processes.keys() {
            if let Err(e) = self.limits(kind) {
                problems.extend(e);
            }
        }
        let isolation = match self.isolation.as_deref().map(Isolation::parse) {
            Some(Err(e)) => {
                problems.push(format!("isolation: {e}"));
                None
            }
            Some(Ok(i)) => Some(i),
            None => None,
        };
        if let Err(e) = self.network_policy() {
            problems.extend(e);
        }
        if let Some(mode) = &self.build.egress {
            if !matches!(mode.as_str(), "open" | "none") {
                problems.push(format!(
                    "build.egress: {mode:?} is not a build egress mode; use \"open\" (through the build proxy) or \"none\""
                ));
            }
        }
        for name in &self.secrets.files {
            if name != "*" {
                if let Err(e) = crate::state::validate_secret_name(name) {
                    problems.push(format!("secrets.files: {e}"));
                }
            }
        }
        for cap in &self.security.capabilities {
            if let Err(e) = policy::parse_capability(cap) {
                problems.push(format!("security.capabilities: {e}"));
            }
        }
        if isolation == Some(Isolation::Sandbox) && !self.security.capabilities.is_empty() {
            problems.push(
                "security.capabilities: only trusted apps may keep capabilities; remove them or set isolation = \"trusted\""
                    .into(),
            );
        }
        problems
    }

    /// The isolation level asked for, if any (call after [`BerthToml::parse`]).
    pub fn isolation(&self) -> Option<Isolation> {
        self.isolation
            .as_deref()
            .and_then(|i| Isolation::parse(i).ok())
    }

    /// Limits of a process type: the file's values over the defaults. Errors name the field.
    pub fn limits(&self, kind: &str) -> Result<Limits, Vec<String>> {
        let mut l = Limits::default();
        let mut problems = Vec::new();
        let Some(p) = self.processes.get(kind) else {
            return Ok(l);
        };
        if let Some(m) = &p.memory {
            let field = format!("processes.{kind}.memory");
            let bytes = match m {
                SizeToml::Bytes(b) => Ok(*b),
                SizeToml::Text(t) => limits::parse_memory(t).map_err(|e| format!("{field}: {e}")),
            };
            match bytes.and_then(|b| limits::check_memory(&field, b).map(|_| b)) {
                Ok(b) => l.memory_bytes = b,
                Err(e) => problems.push(e),
            }
        }
        if let Some(c) = p.cpus {
            match limits::cpu_millis(&format!("processes.{kind}.cpus"), c.value()) {
                Ok(m) => l.cpu_millis = m,
                Err(e) => problems.push(e),
            }
        }
        if let Some(n) = p.pids {
            match limits::check_pids(&format!("processes.{kind}.pids"), n) {
                Ok(()) => l.pids = n,
                Err(e) => problems.push(e),
            }
        }
        if problems.is_empty() {
            Ok(l)
        } else {
            Err(problems)
        }
    }

    /// Whether build steps may connect out (through the build proxy): all but
    /// `[build] egress = "none"`.
    pub fn build_egress(&self) -> bool {
        self.build.egress.as_deref() != Some("none")
    }

    /// The network policy asked for. Errors name the field. Whether the allowed apps exist
    /// is for the control plane to check.
    pub fn network_policy(&self) -> Result<NetworkPolicy, Vec<String>> {
        let mut problems = Vec::new();
        let mut policy = NetworkPolicy::default();
        for name in &self.network.allow {
            match AppName::parse(name) {
                Ok(n) => policy.allow.push(n.to_string()),
                Err(e) => problems.push(format!("network.allow: {e}")),
            }
        }
        for caller in &self.network.accept_from {
            match crate::names::split_qualified(caller) {
                (Some(project), app)
                    if crate::projects::check_project_name(project).is_ok()
                        && AppName::parse(app).is_ok() =>
                {
                    policy.accept_from.push(format!("{project}/{app}"));
                }
                _ => problems.push(format!(
                    "network.accept_from: {caller:?} is not PROJECT/APP (an app of another project, named with its project)"
                )),
            }
        }
        if let Some(mode) = &self.network.egress {
            match EgressMode::parse(mode) {
                Ok(m) => policy.egress = m,
                Err(e) => problems.push(format!("network.egress: {e}")),
            }
        }
        for rule in &self.network.egress_allow {
            match EgressRule::parse(rule) {
                Ok(r) => policy.egress_allow.push(r),
                Err(e) => problems.push(format!("network.egress_allow: {e}")),
            }
        }
        if !policy.egress_allow.is_empty() && policy.egress != EgressMode::Allowlist {
            problems.push(
                "network.egress_allow: only used with egress = \"allowlist\"; add that line".into(),
            );
        }
        if problems.is_empty() {
            Ok(policy)
        } else {
            Err(problems)
        }
    }

    /// Capabilities the app keeps, normalised (call after [`BerthToml::parse`]).
    pub fn capabilities(&self) -> Vec<String> {
        self.security
            .capabilities
            .iter()
            .filter_map(|c| policy::parse_capability(c).ok())
            .collect()
    }

    /// The log retention this file asks for: (max age in ms, max bytes), each `None` when
    /// the platform's default applies.
    pub fn log_retention(&self) -> (Option<i64>, Option<u64>) {
        (
            self.logs
                .retention
                .as_deref()
                .and_then(|t| humantime::parse_duration(t).ok())
                .map(|d| d.as_millis() as i64),
            self.logs
                .max_size
                .as_deref()
                .and_then(|t| crate::limits::parse_memory(t).ok()),
        )
    }

    /// How long the test step may take.
    pub fn test_timeout(&self) -> std::time::Duration {
        self.deploy
            .test_timeout
            .as_deref()
            .and_then(|t| humantime::parse_duration(t).ok())
            .unwrap_or(std::time::Duration::from_secs(DEFAULT_TEST_TIMEOUT_SECS))
    }

    /// The objectives this file asks for, with defaults filled in.
    pub fn slo(&self) -> crate::slo::SloSpec {
        let d = crate::slo::SloSpec::default();
        crate::slo::SloSpec {
            availability: self.slo.availability.unwrap_or(d.availability),
            latency_p: self.slo.latency_p.unwrap_or(d.latency_p),
            latency_ms: self.slo.latency_ms.unwrap_or(d.latency_ms),
        }
    }

    /// The health check this file asks for, with defaults filled in.
    pub fn health_check(&self) -> HealthCheck {
        HealthCheck {
            path: self.health.path.clone(),
            timeout_secs: self
                .health
                .timeout_secs
                .unwrap_or(DEFAULT_HEALTH_TIMEOUT_SECS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_file() {
        let t = BerthToml::parse(
            r#"
name = "shop"
[health]
path = "/healthz"
timeout_secs = 10
[processes.web]
instances = 2
[processes.worker]
command = "python3 worker.py"
[env]
MODE = "prod"
"#,
        )
        .unwrap();
        assert_eq!(t.name.as_deref(), Some("shop"));
        assert_eq!(t.health_check().path.as_deref(), Some("/healthz"));
        assert_eq!(t.processes["web"].instances, Some(2));
        assert_eq!(t.env["MODE"], "prod");
    }

    #[test]
    fn unknown_field_names_line_and_field() {
        let e = BerthToml::parse("name = \"a\"\n[health]\npaht = \"/x\"\n").unwrap_err();
        let s = e.to_string();
        assert!(s.contains("line 3"), "{s}");
        assert!(s.contains("paht"), "{s}");
    }

    #[test]
    fn validation_reports_every_problem() {
        let e = BerthToml::parse(
            "name = \"Bad Name\"\n[health]\ntimeout_secs = 0\n[processes.web]\ninstances = 99\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("name:"), "{e}");
        assert!(e.contains("health.timeout_secs"), "{e}");
        assert!(e.contains("processes.web.instances"), "{e}");
    }

    #[test]
    fn limits_isolation_and_policy_parse() {
        let t = BerthToml::parse(
            r#"
isolation = "sandbox"
[processes.web]
memory = "128M"
cpus = 0.5
pids = 64
[processes.worker]
cpus = 2
[network]
allow = ["db"]
egress = "allowlist"
egress_allow = ["203.0.113.0/24:443"]
"#,
        )
        .unwrap();
        assert_eq!(t.isolation(), Some(Isolation::Sandbox));
        let web = t.limits("web").unwrap();
        assert_eq!(
            (web.memory_bytes, web.cpu_millis, web.pids),
            (128 << 20, 500, 64)
        );
        assert_eq!(t.limits("worker").unwrap().cpu_millis, 2000);
        assert_eq!(t.limits("other").unwrap(), Limits::default());
        let p = t.network_policy().unwrap();
        assert_eq!(p.allow, vec!["db".to_string()]);
        assert_eq!(p.egress, EgressMode::Allowlist);
        assert_eq!(p.egress_allow[0].port, Some(443));
    }

    #[test]
    fn bad_limits_and_policy_name_their_fields() {
        let e = BerthToml::parse(
            r#"
isolation = "vm"
[processes.web]
memory = "1M"
cpus = 0.001
pids = 2
[network]
allow = ["Bad/Name"]
egress = "sometimes"
egress_allow = ["example.com"]
[security]
capabilities = ["SYS_ADMIN"]
"#,
        )
        .unwrap_err()
        .to_string();
        for field in [
            "isolation:",
            "processes.web.memory",
            "processes.web.cpus",
            "processes.web.pids",
            "network.allow",
            "network.egress:",
            "network.egress_allow",
            "security.capabilities",
        ] {
            assert!(e.contains(field), "{field} missing in {e}");
        }
    }

    #[test]
    fn sandboxed_apps_cannot_keep_capabilities() {
        let e = BerthToml::parse(
            "isolation = \"sandbox\"\n[security]\ncapabilities = [\"NET_BIND_SERVICE\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("only trusted apps"), "{e}");
        let ok = BerthToml::parse("[security]\ncapabilities = [\"net_bind_service\"]\n").unwrap();
        assert_eq!(ok.capabilities(), vec!["CAP_NET_BIND_SERVICE".to_string()]);
    }

    #[test]
    fn wrong_type_is_reported() {
        let e = BerthToml::parse("[processes.web]\ninstances = \"two\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
    }
}
