//! The deploy workflow: build → release record → release command → start → health →
//! switch → drain. Each step is recorded in the store; any failure before the switch stops
//! the new instances and leaves the previous release serving untouched.

use crate::config::APP_PORT;
use crate::error::ApiError;
use crate::launcher::{Attachments, VolumeMount};
use crate::platform::Platform;
use crate::store::InstanceRow;
use axum::http::StatusCode;
use berth_core::api::{DeployEvent, EnvChange, ReleaseView};
use berth_core::model::{instance_id, ProcessSpec, ReleaseConfig, ReleaseStatus, WEB_PROCESS};
use berth_core::spec::BerthToml;
use berth_core::AppName;
use berth_factory::build_user::{self, BuildIdentity};
use berth_factory::builder::{BuildError, BuildRequest};
use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, Seek};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::UnboundedSender;

/// The longest a push to the registry may take.
const PUSH_TIMEOUT: Duration = Duration::from_secs(600);

/// The app's tests, as a deploy runs them.
#[derive(Debug, Clone)]
pub struct TestStep {
    /// The command (`pytest -q`).
    pub command: String,
    /// How long they may take.
    pub timeout: Duration,
}

/// A container a deploy runs to its end.
#[derive(Debug, Clone, Copy)]
enum OneOff {
    /// The app's tests, with their time limit.
    Tests(Duration),
    /// The release command.
    ReleaseCommand,
    /// The postdeploy script of the app's first deploy.
    Postdeploy,
}

impl OneOff {
    fn name(self) -> &'static str {
        match self {
            Self::Tests(_) => "test",
            Self::ReleaseCommand => "release",
            Self::Postdeploy => "postdeploy",
        }
    }
}

pub type Events = UnboundedSender<DeployEvent>;

/// Lines of log shown with a failure.
pub(crate) const TAIL_LINES: usize = 20;

pub(crate) fn step(events: &Events, step: &str) {
    let _ = events.send(DeployEvent::Step { step: step.into() });
}

/// The last `n` lines of a file.
pub fn file_tail(path: &Path, n: usize) -> Vec<String> {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Streams new lines of `path` to `events` until `stop` fires (then flushes the rest).
fn follow_file(
    path: PathBuf,
    events: Events,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_blocking(move || {
        let mut offset = 0u64;
        let mut pending = String::new();
        loop {
            let stopping = stop.is_cancelled();
            if let Ok(mut f) = std::fs::File::open(&path) {
                if f.seek(std::io::SeekFrom::Start(offset)).is_ok() {
                    let mut reader = std::io::BufReader::new(f);
                    loop {
                        let mut buf = Vec::new();
                        match reader.read_until(b'\n', &mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                offset += n as u64;
                                pending.push_str(&String::from_utf8_lossy(&buf));
                                if pending.ends_with('\n') {
                                    let line = pending.trim_end_matches(['\n', '\r']).to_string();
                                    pending.clear();
                                    let _ = events.send(DeployEvent::Log { line });
                                }
                            }
                        }
                    }
                }
            }
            if stopping {
                if !pending.is_empty() {
                    let _ = events.send(DeployEvent::Log { line: pending });
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

/// Checks one instance: any HTTP response (no path) or a 2xx/3xx answer (path given).
pub(crate) async fn probe(address: &str, port: u16, path: Option<&str>) -> bool {
    let connect = tokio::net::TcpStream::connect((address, port));
    let Ok(Ok(mut stream)) = tokio::time::timeout(Duration::from_secs(2), connect).await else {
        return false;
    };
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: berth-health\r\nConnection: close\r\n\r\n",
        path.unwrap_or("/")
    );
    if stream.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    // Read the whole (bounded) answer so the app is not left writing into a closed socket.
    let mut buf = Vec::new();
    let mut limited = (&mut stream).take(64 * 1024);
    let read = limited.read_to_end(&mut buf);
    if tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .is_err()
        && buf.is_empty()
    {
        return false;
    }
    let head = String::from_utf8_lossy(&buf[..buf.len().min(64)]);
    let Some(code) = head
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse::<u16>().ok())
    else {
        return false;
    };
    path.is_none() || (200..400).contains(&code)
}

/// The answer to a build that failed: status, code and what to do about it.
fn build_refusal(e: &BuildError) -> (StatusCode, &'static str, String) {
    use berth_factory::providers::DetectError;
    use berth_factory::registry::RegistryError;
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    match e {
        BuildError::Detect(DetectError::Unrecognised) => (
            unprocessable,
            "nothing_to_build",
            "add a Procfile with a `web:` line, a Dockerfile, or one of the files berth looks for".into(),
        ),
        BuildError::Detect(DetectError::Procfile(_)) => (
            unprocessable,
            "invalid_procfile",
            "fix the Procfile line named above and deploy again".into(),
        ),
        BuildError::Detect(_) => (
            unprocessable,
            "invalid_app_files",
            "fix the file named above and deploy again".into(),
        ),
        BuildError::Source(_) => (unprocessable, "bad_source", "check the uploaded directory".into()),
        BuildError::Failed { .. } => (
            unprocessable,
            "build_failed",
            "fix the error shown in the build output and deploy again".into(),
        ),
        BuildError::TimedOut(_) => (
            unprocessable,
            "build_timeout",
            "make the build faster, or start berth with a larger --build-timeout".into(),
        ),
        BuildError::Dockerfile(_) => (
            unprocessable,
            "invalid_dockerfile",
            "fix the Dockerfile and deploy again".into(),
        ),
        BuildError::Privileged(_) => (
            unprocessable,
            "privileged_build_step",
            "builds run without privileges; remove the flag named above".into(),
        ),
        BuildError::Base { .. } => (
            unprocessable,
            "base_image_unavailable",
            "name a base image in a registry berth can reach (berth registry login HOST for one that needs credentials, berth up --registry-mirror for Docker Hub names)".into(),
        ),
        BuildError::BadReference(_) => (
            unprocessable,
            "invalid_image_reference",
            "give HOST/PATH:TAG or HOST/PATH@sha256:…".into(),
        ),
        BuildError::WrongPlatform { .. } => (
            unprocessable,
            "wrong_architecture",
            "deploy an image built for this machine's platform (a multi-platform image works too)".into(),
        ),
        BuildError::Vulnerable { .. } => (
            unprocessable,
            "vulnerable_image",
            "upgrade the packages named (a newer base image, newer dependencies), or accept a finding you have judged with [security] accept_vulnerabilities = [\"CVE-…\"] in berth.toml".into(),
        ),
        BuildError::Ports(_) => (
            unprocessable,
            "ambiguous_port",
            "add port = N to berth.toml".into(),
        ),
        BuildError::NoCommand => (
            unprocessable,
            "image_without_command",
            "set [processes.web] command in berth.toml".into(),
        ),
        BuildError::Registry(RegistryError::NotFound { .. }) => (
            unprocessable,
            "image_not_found",
            "check the image's name and tag (skopeo list-tags docker://HOST/PATH)".into(),
        ),
        BuildError::Registry(RegistryError::Unauthorized { reference, .. }) => (
            unprocessable,
            "registry_unauthorized",
            format!(
                "give berth credentials for that registry: berth registry login {} --username USER --password-stdin",
                reference.split('/').next().unwrap_or_default()
            ),
        ),
        BuildError::Registry(RegistryError::Missing) | BuildError::MissingTool(..) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "tool_missing",
            "install what the message names on the berth host (scripts/install-deps does)".into(),
        ),
        BuildError::Registry(_) => (
            StatusCode::BAD_GATEWAY,
            "pull_failed",
            "check that the registry answers; the serving release is untouched".into(),
        ),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "build_error",
            "see `berth logs --build` and the output of `berth up`".into(),
        ),
    }
}

/// A deploy failure: what the API reports, plus the log tail that explains it.
#[derive(Debug)]
pub struct DeployFailure {
    /// The error.
    pub error: ApiError,
    /// Last log lines.
    pub log_tail: Vec<String>,
}

impl From<ApiError> for DeployFailure {
    fn from(error: ApiError) -> Self {
        Self {
            error,
            log_tail: vec![],
        }
    }
}

impl From<sqlx::Error> for DeployFailure {
    fn from(e: sqlx::Error) -> Self {
        ApiError::from(e).into()
    }
}

/// Release number of a workflow result that deployed nothing: the change was stored and
/// applies at the app's first deploy; the string is the message.
pub const STORED_ONLY: u32 = 0;

/// Sends the final event for a workflow result.
pub fn finish(events: &Events, result: Result<(u32, String), DeployFailure>) {
    let _ = events.send(match result {
        Ok((STORED_ONLY, message)) => DeployEvent::Stored { message },
        Ok((release, url)) => DeployEvent::Done { release, url },
        Err(f) => DeployEvent::Failed {
            error: f.error.body(),
            log_tail: f.log_tail,
        },
    });
}

/// The spec of a packed source: its berth.toml, with what an app.json and a score.yaml say
/// where berth.toml is silent.
pub fn spec_of(archive: &[u8]) -> Result<BerthToml, ApiError> {
    // One bounded pass over the archive: each a regular file (or a link to one inside it)
    // of at most 1 MiB; a link out of the source is refused by name.
    let mut specs =
        berth_factory::source::read_files(archive, &["berth.toml", "app.json", "score.yaml"])
            .map_err(|e| {
                ApiError::invalid("bad_upload", e.to_string()).hint(
                    "keep berth.toml, app.json and score.yaml regular files inside the source",
                )
            })?;
    let mut toml = match specs.remove("berth.toml") {
        Some(text) => BerthToml::parse(&text).map_err(|e| {
            ApiError::invalid("invalid_berth_toml", e.to_string())
                .hint("fix berth.toml and deploy again")
        })?,
        None => BerthToml::default(),
    };
    // The other formats fill in what berth.toml leaves unset; what they cannot honour is
    // refused by name.
    let mut other = |file: &str| -> Result<Option<String>, ApiError> { Ok(specs.remove(file)) };
    let refused = |code: &'static str, file: &str, problems: Vec<String>| {
        ApiError::invalid(code, problems.join("; ")).hint(format!(
            "fix {file} (or remove what berth cannot honour) and deploy again"
        ))
    };
    if let Some(text) = other("app.json")? {
        berth_core::appjson::AppJson::parse(&text)
            .map_err(|p| refused("invalid_app_json", "app.json", p))?
            .apply_to(&mut toml);
    }
    if let Some(text) = other("score.yaml")? {
        berth_core::score::Score::parse(&text)
            .map_err(|p| refused("invalid_score_yaml", "score.yaml", p))?
            .apply_to(&mut toml);
    }
    let problems = toml.validate();
    if !problems.is_empty() {
        return Err(ApiError::invalid("invalid_berth_toml", problems.join("; "))
            .hint("fix berth.toml (or what score.yaml or app.json set) and deploy again"));
    }
    Ok(toml)
}

/// The labels of an instance's log lines.
pub fn log_labels(
    inst: &crate::store::InstanceRow,
    commit: Option<String>,
) -> berth_observe::ingest::Labels {
    berth_observe::ingest::Labels {
        project: "default".into(),
        app: inst.app.clone(),
        release: inst.release,
        process: inst.process.clone(),
        index: inst.index,
        commit,
    }
}

/// What an uploaded source is.
#[derive(Debug, Clone)]
pub struct SourceRef {
    /// Its id: the git commit sha of a clean checkout, else `sha256-<content digest>`.
    pub id: String,
    /// When that commit was made (Unix seconds), for lead time.
    pub commit_time: Option<i64>,
    /// The project of the app (a new app is made in it).
    pub project: String,
}

impl Platform {
    /// Copies a build's log into the app's searchable log (stream `build`).
    async fn keep_build_log(&self, app: &str, release: u32, log_file: &Path) {
        let (logs, app, path) = (self.logs.clone(), app.to_string(), log_file.to_path_buf());
        let stored =
            tokio::task::spawn_blocking(move || logs.store_build_log(&app, release, &path)).await;
        if let Ok(Err(e)) = stored {
            tracing::warn!(error = %e, "storing a build log failed");
        }
    }

    /// Builds an uploaded source and deploys it. A score.yaml's resources are provided
    /// first; an app this deploy made is gone again when it fails.
    pub async fn deploy_source(
        self: &Arc<Self>,
        app: AppName,
        archive: bytes::Bytes,
        source: SourceRef,
        mut toml: BerthToml,
        actor: String,
        events: Events,
    ) -> Result<(u32, String), DeployFailure> {
        let Some(score) = toml.score.clone() else {
            return self
                .build_and_deploy(app, archive, source, toml, actor, events)
                .await;
        };
        let new_app = self.store.app(app.as_str()).await?.is_none();
        let result = match self
            .provide_score(&app, &source.project, &score, &toml, &actor, &events)
            .await
        {
            Ok(env) => {
                toml.env.extend(env);
                self.build_and_deploy(app.clone(), archive, source, toml, actor, events)
                    .await
            }
            Err(f) => Err(f),
        };
        if result.is_err() && new_app && self.store.app(app.as_str()).await?.is_some() {
            if let Err(e) = self.remove_app(app.as_str(), false).await {
                tracing::warn!(%app, error = %e.message, "removing the app a failed first deploy made");
            }
        }
        result
    }

    async fn build_and_deploy(
        self: &Arc<Self>,
        app: AppName,
        archive: bytes::Bytes,
        source: SourceRef,
        toml: BerthToml,
        actor: String,
        events: Events,
    ) -> Result<(u32, String), DeployFailure> {
        let SourceRef {
            id: source_id,
            commit_time,
            project,
        } = source;
        let lock = self.app_lock(app.as_str());
        let _guard = lock.lock().await;
        // Another project's first deploy may have made the app meanwhile: its build state
        // (identity, cache, build secrets) never goes to a build of this one.
        if let Some(owner) = self.store.app_project(app.as_str()).await? {
            if owner != project {
                return Err(ApiError::app_not_found(app.as_str()).into());
            }
        }
        // A build that would fill the disk fails half-way; refuse it before it starts.
        if let Some(free) = crate::doctor::free_bytes(&self.cfg.data_dir) {
            if free < self.cfg.min_free_disk {
                return Err(ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "disk_full",
                    format!(
                        "only {} free on the data directory's disk; a build needs at least {}",
                        crate::doctor::human(free),
                        crate::doctor::human(self.cfg.min_free_disk)
                    ),
                )
                .hint("free space: `berth gc` drops old releases' images and oversized build caches; `berth status` shows the disk")
                .into());
            }
        }
        let existed = self.store.app(app.as_str()).await?.is_some();
        let build_id = format!("{}-{}", app, crate::random_id(6));
        let log_file = self.logs.build_path(&build_id);
        // Everything that can refuse the build is settled before it is recorded and its
        // log followed: a refusal leaves no build row running and no follower behind.
        let isolation = self.isolation_for(&project, &toml).await?;
        // Registry credentials reach the pull (never the build itself) for its duration.
        let auth = self.registries_auth_file(&project).await?;
        // The build's own network, whose only way out is the build proxy.
        let build_net = self
            .open_build_network(&build_id, toml.build_egress(), &log_file)
            .await?;
        // The app's own build identity, and its build secrets readable by it alone.
        let identity = self.build_identity(app.as_str()).await?;
        let build_secrets = self
            .open_build_secrets(app.as_str(), &build_id, &identity)
            .await?;
        self.store
            .insert_build(&build_id, app.as_str(), &source_id, crate::now_secs())
            .await?;
        step(&events, "build");
        let stop = tokio_util::sync::CancellationToken::new();
        let follower = follow_file(log_file.clone(), events.clone(), stop.clone());
        let factory = self.factory.clone();
        let access = berth_factory::registry::Access {
            auth_file: auth.as_ref().map(|a| a.0.clone()),
            plain_http: self
                .cfg
                .registry
                .iter()
                .filter(|r| r.plain_http)
                .map(|r| r.host().to_string())
                .collect(),
            docker_hub_mirror: self.cfg.registry_mirror.clone(),
        };
        // With build secrets, the build writes its log through a redacting pump.
        let output = crate::launcher::RedactedOutput::start(
            self.launcher.build_files(),
            &format!("build-{build_id}.out"),
            &log_file,
            build_secrets.redactor(),
        );
        let req = BuildRequest {
            app: app.to_string(),
            build_id: build_id.clone(),
            tag: source_id.clone(),
            toml: toml.clone(),
            log_file: output.path().to_path_buf(),
            timeout: self.cfg.build_timeout,
            isolation,
            access,
            self_contained: self.kube.is_some(),
            network: Some(build_net.network.clone()),
            identity,
            secrets: build_secrets.secrets.clone(),
        };
        let build_started = std::time::Instant::now();
        let built = tokio::task::spawn_blocking(move || factory.build(&req, &archive)).await;
        output.finish();
        drop(build_secrets);
        drop(auth);
        drop(build_net);
        self.metrics.build_finished(
            app.as_str(),
            if matches!(built, Ok(Ok(_))) {
                "succeeded"
            } else {
                "failed"
            },
            build_started.elapsed(),
        );
        stop.cancel();
        let _ = follower.await;
        let out = match built {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => {
                self.store
                    .finish_build(&build_id, "failed", crate::now_secs())
                    .await?;
                self.keep_build_log(app.as_str(), 0, &log_file).await;
                if !existed {
                    let _ = std::fs::remove_dir_all(self.cfg.cache_dir().join(app.as_str()));
                    let _ = std::fs::remove_dir_all(
                        self.cfg.build_user_dir().join("cache").join(app.as_str()),
                    );
                    self.forget_build_identity(app.as_str(), identity).await;
                }
                let (status, code, hint) = build_refusal(&e);
                return Err(DeployFailure {
                    error: ApiError::new(status, code, e.to_string()).hint(hint),
                    log_tail: file_tail(&log_file, TAIL_LINES),
                });
            }
            Err(e) => return Err(ApiError::internal("build", e).into()),
        };
        self.store
            .finish_build(&build_id, "succeeded", crate::now_secs())
            .await?;
        self.push_image(&out.image, &log_file, &events).await?;

        self.store
            .ensure_app_in(app.as_str(), &project, crate::now_secs())
            .await?;
        let app_row = self
            .store
            .app(app.as_str())
            .await?
            .ok_or_else(|| ApiError::app_not_found(app.as_str()))?;
        let mut env: BTreeMap<String, String> = out
            .meta
            .env
            .iter()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        env.extend(app_row.env.clone());
        let processes = out
            .meta
            .processes
            .iter()
            .map(|(kind, command)| {
                let instances = toml
                    .processes
                    .get(kind)
                    .and_then(|p| p.instances)
                    .unwrap_or(1);
                (
                    kind.clone(),
                    ProcessSpec {
                        command: command.clone(),
                        instances,
                        limits: toml.limits(kind).unwrap_or_default(),
                    },
                )
            })
            .collect();
        // The app's tests run once, in this build's image, before it is rolled out.
        let tests = out.meta.test_command.clone().map(|command| TestStep {
            command,
            timeout: toml.test_timeout(),
        });
        let config = ReleaseConfig {
            env,
            processes,
            release_command: out.meta.release_command.clone(),
            postdeploy: toml.deploy.postdeploy.clone(),
            health: toml.health_check(),
            release_limits: toml
                .limits(berth_core::model::RELEASE_PROCESS)
                .unwrap_or_default(),
            isolation: self.isolation_for(&project, &toml).await?,
            network: toml.network_policy().unwrap_or_default(),
            capabilities: toml.capabilities(),
            secrets: self.store.app_secrets(app.as_str()).await?,
            secret_files: toml.secrets.files.clone(),
            slo: toml.slo(),
            metrics_path: toml.metrics.path.clone(),
            log_retention: toml.log_retention(),
            port: berth_factory::foreign::web_port(&out.meta, &toml),
            own_root: out.meta.own_root.clone(),
            idle_secs: toml.idle_secs(),
            autoscale: toml.autoscale(),
            canary: toml.canary(),
        };
        // Within the project's quota, or nothing changes (a new app is not kept).
        if let Err(e) = self
            .store
            .check_quota(
                &project,
                crate::projects::Growth {
                    app: Some(app.as_str()),
                    config: Some(&config),
                    ..Default::default()
                },
            )
            .await
        {
            if !existed {
                let _ = self.store.delete_app_records(app.as_str(), false).await;
                self.forget_build_identity(app.as_str(), identity).await;
            }
            return Err(e.into());
        }
        let description = match (&toml.image, source_id.strip_prefix("sha256-")) {
            (Some(image), _) => format!(
                "deploy of image {}",
                berth_core::registries::parse_reference(image)
                    .map(|r| r.pinned(&out.image.digest))
                    .unwrap_or_else(|_| image.clone())
            ),
            (None, Some(digest)) => {
                format!("deploy of directory {}", &digest[..digest.len().min(12)])
            }
            (None, None) => format!("deploy of commit {}", &source_id[..source_id.len().min(12)]),
        };
        let version = self
            .store
            .create_release(
                app.as_str(),
                &out.image,
                &config,
                &description,
                &actor,
                crate::now_secs(),
            )
            .await?;
        self.store
            .mark_release(
                app.as_str(),
                version,
                berth_core::dora::ReleaseKind::Deploy,
                commit_time,
            )
            .await?;
        let result = self
            .rollout(
                app.as_str(),
                version,
                Some(log_file.clone()),
                tests,
                toml.canary(),
                &events,
            )
            .await;
        // Stored once the release command and the tests have written theirs too.
        self.keep_build_log(app.as_str(), version, &log_file).await;
        result
    }

    /// Creates a new release from the one before the current (or `to`) and deploys it,
    /// without building.
    pub async fn rollback(
        self: &Arc<Self>,
        app: &str,
        to: Option<u32>,
        actor: String,
        events: Events,
    ) -> Result<(u32, String), DeployFailure> {
        let lock = self.app_lock(app);
        let _guard = lock.lock().await;
        let app_row = self
            .store
            .app(app)
            .await?
            .ok_or_else(|| ApiError::app_not_found(app))?;
        let releases = self.store.releases(app).await?;
        let current = app_row.current_release;
        let target: &ReleaseView = match to {
            Some(v) => {
                let r = releases.iter().find(|r| r.version == v).ok_or_else(|| {
                    ApiError::invalid("release_not_found", format!("{app} has no release v{v}"))
                        .hint(format!("list releases with `berth releases {app}`"))
                })?;
                if r.status == ReleaseStatus::Failed {
                    return Err(ApiError::invalid(
                        "release_failed",
                        format!("v{v} of {app} failed to deploy and never served"),
                    )
                    .hint("pick a release that served; see `berth releases`")
                    .into());
                }
                if Some(v) == current {
                    return Err(ApiError::invalid(
                        "already_serving",
                        format!("v{v} is the release {app} serves now"),
                    )
                    .into());
                }
                r
            }
            None => releases
                .iter()
                .find(|r| Some(r.version) < current && r.status == ReleaseStatus::Superseded)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "no_previous_release",
                        format!("{app} has no earlier release that served"),
                    )
                    .hint(format!("see `berth releases {app}`"))
                })?,
        };
        if !self.factory.images().holds(&target.image) {
            return Err(ApiError::invalid(
                "image_collected",
                format!(
                    "v{}'s image was garbage-collected (berth keeps the images of each app's last {} releases and of any release in use)",
                    target.version,
                    crate::gc::KEEP_RELEASES
                ),
            )
            .hint("deploy that release's source again, or roll back to a newer release")
            .into());
        }
        // The older release may run more, or bigger, instances than the project (or its
        // tenant) has room for now.
        if let Some(project) = self.store.app_project(app).await? {
            self.store
                .check_quota(
                    &project,
                    crate::projects::Growth {
                        app: Some(app),
                        config: Some(&target.config),
                        ..Default::default()
                    },
                )
                .await?;
        }
        step(&events, "release");
        let version = self
            .store
            .create_release(
                app,
                &target.image,
                &target.config,
                &format!("rollback to v{}", target.version),
                &actor,
                crate::now_secs(),
            )
            .await?;
        self.store
            .mark_release(app, version, berth_core::dora::ReleaseKind::Rollback, None)
            .await?;
        let result = self.rollout(app, version, None, None, None, &events).await;
        if result.is_ok() {
            // The app's own variables follow the release rolled back to.
            let env: BTreeMap<String, String> = app_row
                .env
                .keys()
                .filter_map(|k| target.config.env.get(k).map(|v| (k.clone(), v.clone())))
                .collect();
            self.store.set_app_env(app, &env).await?;
            self.store
                .set_app_secrets(app, &target.config.secrets)
                .await?;
        }
        result
    }

    /// Changes environment variables: a new release with the current image and the new
    /// environment, deployed with zero downtime. The app's stored environment changes only
    /// when that deploy succeeds.
    /// Changes how many instances each process type runs: a new release of the same image
    /// and configuration, rolled out like any other (within the project's quota).
    pub async fn scale(
        self: &Arc<Self>,
        app: &str,
        change: berth_core::api::ScaleChange,
        actor: String,
        events: Events,
    ) -> Result<(u32, String), DeployFailure> {
        let lock = self.app_lock(app);
        let _guard = lock.lock().await;
        let release = self.serving_or_refuse(app).await?;
        let mut problems = Vec::new();
        if change.processes.is_empty() {
            problems.push("nothing to change: give TYPE=COUNT, e.g. web=3".to_string());
        }
        let mut config = release.config.clone();
        for (kind, count) in &change.processes {
            let Some(p) = config.processes.get_mut(kind) else {
                let known: Vec<&str> = release
                    .config
                    .processes
                    .keys()
                    .map(String::as_str)
                    .collect();
                problems.push(format!(
                    "{app} has no process type {kind:?} (it has {})",
                    known.join(", ")
                ));
                continue;
            };
            if *count > berth_core::spec::MAX_INSTANCES {
                problems.push(format!(
                    "{kind}={count} is more than the maximum of {} instances",
                    berth_core::spec::MAX_INSTANCES
                ));
            } else if kind == berth_core::model::WEB_PROCESS && *count == 0 {
                problems.push("web=0 would take the app offline; keep at least 1".to_string());
            }
            p.instances = *count;
        }
        if !problems.is_empty() {
            return Err(ApiError::invalid("invalid_scale", problems.join("; "))
                .hint(format!("see `berth releases {app}` for its process types"))
                .into());
        }
        if config == release.config {
            return Ok((release.version, self.cfg.app_url(app)));
        }
        if let Some(project) = self.store.app_project(app).await? {
            self.store
                .check_quota(
                    &project,
                    crate::projects::Growth {
                        app: Some(app),
                        config: Some(&config),
                        ..Default::default()
                    },
                )
                .await?;
        }
        step(&events, "release");
        let description = format!(
            "scale {}",
            change
                .processes
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        self.deploy_config(app, &release.image, config, &description, &actor, &events)
            .await
    }

    /// A new release of the serving one's image and settings, rolled out like a deploy.
    pub async fn redeploy(
        self: &Arc<Self>,
        app: &str,
        actor: String,
        events: Events,
    ) -> Result<(u32, String), DeployFailure> {
        let lock = self.app_lock(app);
        let _guard = lock.lock().await;
        let release = self.serving_or_refuse(app).await?;
        step(&events, "release");
        self.deploy_config(
            app,
            &release.image,
            release.config.clone(),
            "redeploy",
            &actor,
            &events,
        )
        .await
    }

    pub async fn change_env(
        self: &Arc<Self>,
        app: &str,
        change: EnvChange,
        actor: String,
        events: Events,
    ) -> Result<(u32, String), DeployFailure> {
        let mut problems = Vec::new();
        for k in change.set.keys().chain(change.unset.iter()) {
            if let Err(e) = berth_core::names::validate_env_key(k) {
                problems.push(e);
            }
        }
        if change.set.is_empty() && change.unset.is_empty() {
            problems.push(
                "nothing to change: give KEY=VALUE pairs to set or KEY names to unset".into(),
            );
        }
        if !problems.is_empty() {
            return Err(ApiError::invalid("invalid_env", problems.join("; ")).into());
        }
        let lock = self.app_lock(app);
        let _guard = lock.lock().await;
        let app_row = self
            .store
            .app(app)
            .await?
            .ok_or_else(|| ApiError::app_not_found(app))?;
        let current = app_row.current_release.ok_or_else(|| {
            ApiError::invalid("no_release", format!("{app} has no release serving yet"))
                .hint("deploy it first with `berth deploy`")
        })?;
        let release = self
            .store
            .release(app, current)
            .await?
            .ok_or_else(|| ApiError::internal("release lookup", "current release missing"))?;
        let mut env = release.config.env.clone();
        let mut app_env = app_row.env.clone();
        for k in &change.unset {
            if env.remove(k).is_none() {
                return Err(
                    ApiError::invalid("env_not_set", format!("{k} is not set on {app}"))
                        .hint(format!("see `berth env list {app}`"))
                        .into(),
                );
            }
            app_env.remove(k);
        }
        for (k, v) in &change.set {
            env.insert(k.clone(), v.clone());
            app_env.insert(k.clone(), v.clone());
        }
        let mut keys: Vec<&String> = change.set.keys().chain(change.unset.iter()).collect();
        keys.sort();
        let config = ReleaseConfig {
            env,
            ..release.config.clone()
        };
        step(&events, "release");
        let description = format!(
            "env {}",
            keys.iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let result = self
            .deploy_config(app, &release.image, config, &description, &actor, &events)
            .await;
        if result.is_ok() {
            self.store.set_app_env(app, &app_env).await?;
        }
        result
    }

    /// Every app that has a release serving, with that release.
    pub(crate) async fn serving_releases(
        &self,
    ) -> Result<Vec<(crate::store::AppRow, ReleaseView)>, ApiError> {
        let mut out = Vec::new();
        for app in self.store.apps().await? {
            let Some(current) = app.current_release else {
                continue;
            };
            if let Some(release) = self.store.release(&app.name, current).await? {
                out.push((app, release));
            }
        }
        Ok(out)
    }

    /// The release an app serves now, if any.
    /// The release serving `app`, or a refusal that says to deploy it first.
    pub async fn serving_or_refuse(&self, app: &str) -> Result<ReleaseView, ApiError> {
        self.serving_release(app).await?.ok_or_else(|| {
            ApiError::invalid("no_release", format!("{app} has no release serving yet"))
                .hint("deploy it first with `berth deploy`")
        })
    }

    pub async fn serving_release(&self, app: &str) -> Result<Option<ReleaseView>, ApiError> {
        match self.store.app(app).await?.and_then(|a| a.current_release) {
            Some(v) => Ok(self.store.release(app, v).await?),
            None => Ok(None),
        }
    }

    /// Makes a release of an existing image with `config` and rolls it out (no build).
    /// Call with the app's lock held.
    pub(crate) async fn deploy_config(
        self: &Arc<Self>,
        app: &str,
        image: &berth_core::model::ImageRef,
        config: ReleaseConfig,
        description: &str,
        actor: &str,
        events: &Events,
    ) -> Result<(u32, String), DeployFailure> {
        let version = self
            .store
            .create_release(app, image, &config, description, actor, crate::now_secs())
            .await?;
        self.rollout(app, version, None, None, None, events).await
    }

    /// What an instance of `release` gets besides its image: its secrets (opened) and the
    /// app's volumes (mounted on the host if they were not).
    pub async fn attachments(
        &self,
        app: &str,
        release: &ReleaseView,
    ) -> Result<Arc<Attachments>, ApiError> {
        let secrets = self.resolve_secrets(app, &release.config).await?;
        let mut volumes = Vec::new();
        for v in self.store.volumes(Some(app)).await? {
            let (store, a, n) = (self.volumes.clone(), app.to_string(), v.name.clone());
            let source = tokio::task::spawn_blocking(move || store.mount(&a, &n))
                .await
                .map_err(|e| ApiError::internal("mounting a volume", e))?
                .map_err(|e| ApiError::internal("mounting a volume", e))?;
            volumes.push(VolumeMount {
                source,
                destination: v.mount_path,
            });
        }
        Ok(Arc::new(Attachments { secrets, volumes }))
    }

    /// Picks a free address, cycling through the subnet so that an address is reused as late
    /// as possible (the edge may still hold connections to its previous owner).
    pub(crate) async fn allocate_address(
        &self,
        taken: &mut HashSet<String>,
    ) -> Result<String, ApiError> {
        let used: HashSet<String> = self
            .store
            .used_addresses()
            .await?
            .into_iter()
            .chain(self.policy.transient_addresses())
            .collect();
        let all: Vec<String> = self
            .cfg
            .subnet
            .instance_addresses()
            .map(|a| a.to_string())
            .collect();
        let start = self.next_address.load(std::sync::atomic::Ordering::SeqCst) % all.len().max(1);
        all.iter()
            .cycle()
            .skip(start)
            .take(all.len())
            .find(|a| !used.contains(*a) && !taken.contains(*a))
            .cloned()
            .inspect(|a| {
                taken.insert(a.clone());
                if let Some(pos) = all.iter().position(|x| x == a) {
                    self.next_address
                        .store(pos + 1, std::sync::atomic::Ordering::SeqCst);
                }
            })
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_addresses",
                    format!("every address of {} is in use", self.cfg.subnet),
                )
                .hint("remove unused apps, or start berth with a larger --subnet")
            })
    }

    /// Pushes a built image to the platform's registry, when it has one; a push that fails
    /// fails the deploy (whatever pulls from there would not find the release).
    async fn push_image(
        &self,
        image: &berth_core::model::ImageRef,
        log_file: &Path,
        events: &Events,
    ) -> Result<(), DeployFailure> {
        let Some(registry) = self.cfg.registry.clone() else {
            return Ok(());
        };
        step(events, "push");
        let say = |line: String| {
            berth_factory::builder::log_step(log_file, &line);
            let _ = events.send(DeployEvent::Log {
                line: format!("-----> {line}"),
            });
        };
        say(format!("Pushing to {}", registry.reference(image)));
        let auth = self.registry_auth_file(registry.host()).await?;
        let (images, image2) = (self.factory.images().clone(), image.clone());
        let pushed = tokio::task::spawn_blocking(move || {
            let path = auth.as_ref().map(|a| a.0.as_path());
            registry.push(&images, &image2, path, PUSH_TIMEOUT)
        })
        .await
        .map_err(|e| ApiError::internal("push", e))?;
        match pushed {
            Ok(reference) => {
                say(format!("Pushed {reference} ({})", image.digest));
                Ok(())
            }
            Err(e) => Err(DeployFailure {
                error: ApiError::new(StatusCode::BAD_GATEWAY, "push_failed", e.to_string())
                    .hint("check that the registry (berth up --registry) answers and takes pushes; the serving release is untouched"),
                log_tail: file_tail(log_file, TAIL_LINES),
            }),
        }
    }

    /// Runs a release's one-off container — its tests, or its release command — to its end
    /// with the app's network policy, its output in `log` (streamed to the client when
    /// `follow`); a non-zero exit, or tests outliving their timeout, fails the deploy.
    #[allow(clippy::too_many_arguments)]
    async fn one_off(
        self: &Arc<Self>,
        app: &str,
        release: &ReleaseView,
        kind: OneOff,
        command: &str,
        log: &Path,
        follow: bool,
        attach: &Arc<Attachments>,
        events: &Events,
    ) -> Result<(), DeployFailure> {
        let version = release.version;
        // It acts for the app: it reaches what the release allows (a database to migrate)
        // and leaves by the app's egress policy. The address is taken under the allocation
        // lock, so no other deploy takes it.
        let (address, ip) = {
            let _a = self.alloc_lock.lock().await;
            let address = self.allocate_address(&mut HashSet::new()).await?;
            let ip: Ipv4Addr = address
                .parse()
                .map_err(|e| ApiError::internal("one-off address", e))?;
            self.policy.add_transient(app, version, ip);
            (address, ip)
        };
        if let Err(e) = self.publish_network().await {
            self.policy.forget(ip);
            return Err(e.into());
        }
        let stop = tokio_util::sync::CancellationToken::new();
        let follower = follow.then(|| follow_file(log.to_path_buf(), events.clone(), stop.clone()));
        let id = crate::launcher::Launcher::one_off_id(app, version, kind.name());
        // Tests that outlive their time are killed.
        let timed_out = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watchdog = match kind {
            OneOff::Tests(limit) => {
                let (platform, id, timed_out) = (self.clone(), id.clone(), timed_out.clone());
                Some(tokio::spawn(async move {
                    tokio::time::sleep(limit).await;
                    timed_out.store(true, std::sync::atomic::Ordering::SeqCst);
                    platform
                        .blocking(move |l| {
                            let _ = berth_runtime::Runtime::kill(l.runtime().as_ref(), &id, "KILL");
                        })
                        .await;
                }))
            }
            OneOff::ReleaseCommand | OneOff::Postdeploy => None,
        };
        let (rel, app_s, log2, addr2, cmd, id2) = (
            release.clone(),
            app.to_string(),
            log.to_path_buf(),
            address.clone(),
            command.to_string(),
            id.clone(),
        );
        let attach2 = attach.clone();
        let code = self
            .blocking(move |l| l.run_one_off(&id2, &app_s, &rel, &cmd, &addr2, log2, &attach2))
            .await;
        if let Some(w) = watchdog {
            w.abort();
        }
        self.policy.forget(ip);
        if let Err(e) = self.publish_network().await {
            tracing::warn!(error = %e, "network policy after a one-off container");
        }
        stop.cancel();
        if let Some(f) = follower {
            let _ = f.await;
        }
        let failed = |code: &'static str, message: String, hint: &str| DeployFailure {
            error: ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message).hint(hint),
            log_tail: file_tail(log, TAIL_LINES),
        };
        match (kind, code) {
            (_, Ok(0)) => Ok(()),
            (OneOff::Tests(limit), Ok(_))
                if timed_out.load(std::sync::atomic::Ordering::SeqCst) =>
            {
                Err(failed(
                    "tests_timed_out",
                    format!("the tests ran longer than {}", humantime::format_duration(limit)),
                    "the previous release keeps serving; make the tests faster, or raise test_timeout under [deploy] in berth.toml",
                ))
            }
            (OneOff::Tests(_), Ok(code)) => Err(failed(
                "tests_failed",
                format!("the tests failed (exit code {code})"),
                "the previous release keeps serving; their output is above and in `berth logs APP --stream build`",
            )),
            (OneOff::ReleaseCommand, Ok(code)) => Err(failed(
                "release_command_failed",
                format!("the release command exited with code {code}"),
                "the previous release keeps serving; fix the release command and deploy again",
            )),
            (OneOff::Postdeploy, Ok(code)) => Err(failed(
                "postdeploy_failed",
                format!("the postdeploy script exited with code {code}"),
                "nothing was rolled out; fix scripts.postdeploy (app.json) or [deploy] postdeploy (berth.toml) and deploy again — it runs on the app's first deploy only",
            )),
            (_, Err(e)) => Err(ApiError::internal(kind.name(), e).into()),
        }
    }

    /// Rolls a release out: release command, new instances, health check, switch, drain.
    async fn rollout(
        self: &Arc<Self>,
        app: &str,
        version: u32,
        log_file: Option<PathBuf>,
        tests: Option<TestStep>,
        canary: Option<berth_core::canary::CanarySpec>,
        events: &Events,
    ) -> Result<(u32, String), DeployFailure> {
        let deploy_id = crate::random_id(8);
        self.store
            .insert_deploy(&deploy_id, app, version, crate::now_secs())
            .await?;
        let mut stopped_first = None;
        let rollout_started = std::time::Instant::now();
        let result = if self.kube.is_some() {
            self.kube_rollout(app, version, tests, canary.is_some(), events, &deploy_id)
                .await
        } else {
            self.rollout_steps(
                app,
                version,
                log_file,
                tests,
                canary,
                events,
                &deploy_id,
                &mut stopped_first,
            )
            .await
        };
        self.metrics.deploy_finished(
            app,
            if result.is_ok() {
                "succeeded"
            } else {
                "failed"
            },
            rollout_started.elapsed(),
        );
        match &result {
            Ok(_) => {
                self.store
                    .finish_deploy(&deploy_id, "succeeded", None, crate::now_secs())
                    .await?;
            }
            Err(f) => {
                // Undo: stop whatever this release started; the previous release was never
                // touched.
                let started: Vec<InstanceRow> = self
                    .store
                    .instances(Some(app))
                    .await?
                    .into_iter()
                    .filter(|i| i.release == version)
                    .collect();
                self.stop_instances(&started, Duration::from_secs(2))
                    .await?;
                self.store
                    .fail_release(app, version, &f.error.message)
                    .await?;
                // A stop-first deploy took the previous release down: bring it back.
                if let Some(previous) = stopped_first {
                    let _ = events.send(DeployEvent::Log {
                        line: format!("-----> starting v{previous} again"),
                    });
                    if let Err(e) = self.restart_release(app, previous).await {
                        tracing::error!(%app, previous, error = %e.error.message, "restarting the previous release failed");
                    }
                }
                self.store
                    .finish_deploy(
                        &deploy_id,
                        "failed",
                        Some(&f.error.message),
                        crate::now_secs(),
                    )
                    .await?;
            }
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn rollout_steps(
        self: &Arc<Self>,
        app: &str,
        version: u32,
        log_file: Option<PathBuf>,
        tests: Option<TestStep>,
        canary: Option<berth_core::canary::CanarySpec>,
        events: &Events,
        deploy_id: &str,
        stopped_first: &mut Option<u32>,
    ) -> Result<(u32, String), DeployFailure> {
        let release = self
            .store
            .release(app, version)
            .await?
            .ok_or_else(|| ApiError::internal("release lookup", "release missing"))?;

        // With --require-signed, an image whose signature does not verify never starts.
        if self.cfg.require_signed {
            let (factory, image) = (self.factory.clone(), release.image.clone());
            let verdict = tokio::task::spawn_blocking(move || factory.verify(&image))
                .await
                .map_err(|e| ApiError::internal("verifying the image", e))?
                .map_err(|e| ApiError::internal("verifying the image", e))?;
            let why = match verdict {
                berth_factory::signing::Verdict::Verified => None,
                berth_factory::signing::Verdict::Unsigned => Some("it is not signed".to_string()),
                berth_factory::signing::Verdict::Invalid(why) => Some(why),
            };
            if let Some(why) = why {
                return Err(ApiError::invalid(
                    "unsigned_image",
                    format!("image {} of v{version} may not run: {why}", release.image.digest),
                )
                .hint("this platform runs only images it signed (berth up --require-signed); deploy from source or a registry again to sign a new image")
                .into());
            }
            let _ = events.send(DeployEvent::Log {
                line: format!("-----> signature of {} verified", release.image.digest),
            });
        }

        // The app's tests, before anything of the running release is touched.
        if let Some(tests) = tests {
            self.store.deploy_step(deploy_id, "test").await?;
            step(events, "test");
            let log = log_file
                .clone()
                .unwrap_or_else(|| self.logs.build_path(&format!("{app}-v{version}-test")));
            let _ = events.send(DeployEvent::Log {
                line: format!("-----> running the tests: {}", tests.command),
            });
            self.one_off(
                app,
                &release,
                OneOff::Tests(tests.timeout),
                &tests.command,
                &log,
                log_file.is_none(),
                // No secrets, no volumes: tests do not touch what the running app holds.
                &Arc::new(Attachments::default()),
                events,
            )
            .await?;
            let _ = events.send(DeployEvent::Log {
                line: "-----> the tests passed".into(),
            });
        }
        let attach = self.attachments(app, &release).await?;

        // An exclusive volume is used by one instance at a time: the old release stops
        // before the new one starts.
        let exclusive: Vec<String> = self
            .store
            .volumes(Some(app))
            .await?
            .into_iter()
            .filter(|v| v.exclusive)
            .map(|v| v.name)
            .collect();
        if !exclusive.is_empty() {
            let total: u32 = release.config.processes.values().map(|p| p.instances).sum();
            if total > 1 {
                return Err(ApiError::invalid(
                    "exclusive_volume",
                    format!(
                        "volume {} is exclusive (one instance at a time), but this release runs {total} instances",
                        exclusive.join(", ")
                    ),
                )
                .hint("run one instance in all (instances in berth.toml), or make the volume shareable")
                .into());
            }
            let old: Vec<InstanceRow> = self
                .store
                .instances(Some(app))
                .await?
                .into_iter()
                .filter(|i| i.release != version)
                .collect();
            if !old.is_empty() {
                self.store.deploy_step(deploy_id, "stop_first").await?;
                step(events, "stop_first");
                let _ = events.send(DeployEvent::Log {
                    line: format!(
                        "-----> volume {} is exclusive: stopping the running release before v{version} starts (the app is unavailable until it is healthy)",
                        exclusive.join(", ")
                    ),
                });
                *stopped_first = self.store.app(app).await?.and_then(|a| a.current_release);
                self.stop_instances(&old, self.cfg.stop_timeout).await?;
                self.publish_network().await?;
            }
        }

        if let Some(command) = release.config.release_command.clone() {
            self.store.deploy_step(deploy_id, "release_command").await?;
            step(events, "release_command");
            let log = log_file
                .clone()
                .unwrap_or_else(|| self.logs.build_path(&format!("{app}-v{version}-release")));
            self.one_off(
                app,
                &release,
                OneOff::ReleaseCommand,
                &command,
                &log,
                log_file.is_none(),
                &attach,
                events,
            )
            .await?;
        }

        // The postdeploy script: once, on the app's first deploy.
        if let Some(command) = release.config.postdeploy.clone() {
            let first = self
                .store
                .app(app)
                .await?
                .is_none_or(|a| a.current_release.is_none());
            if first {
                self.store.deploy_step(deploy_id, "postdeploy").await?;
                step(events, "postdeploy");
                let log = log_file.clone().unwrap_or_else(|| {
                    self.logs
                        .build_path(&format!("{app}-v{version}-postdeploy"))
                });
                self.one_off(
                    app,
                    &release,
                    OneOff::Postdeploy,
                    &command,
                    &log,
                    log_file.is_none(),
                    &attach,
                    events,
                )
                .await?;
            }
        }

        // Start every instance of the new release.
        self.store.deploy_step(deploy_id, "start").await?;
        step(events, "start");
        let started = self.start_instances(app, &release, &attach, 0).await?;

        // Health: every web instance must answer; every other instance must stay up.
        self.store.deploy_step(deploy_id, "health").await?;
        step(events, "health");
        let health = release.config.health.clone();
        let deadline = Instant::now() + Duration::from_secs(health.timeout_secs);
        let mut pending: Vec<&InstanceRow> = started.iter().collect();
        while !pending.is_empty() {
            let mut still = Vec::new();
            for inst in pending {
                let id = inst.id.clone();
                if self.blocking(move |l| l.running(&id)).await.is_none() {
                    let id = inst.id.clone();
                    let exit = self.blocking(move |l| l.exit_info(&id)).await;
                    let (how, hint) = if exit.oom_killed {
                        (
                            format!(
                                " after going past its memory limit of {} (OOMKilled)",
                                berth_core::limits::format_memory(exit.memory_limit)
                            ),
                            "raise `memory` under [processes.<type>] in berth.toml; the previous release keeps serving",
                        )
                    } else {
                        (
                            exit.code
                                .map(|c| format!(" with code {c}"))
                                .unwrap_or_default(),
                            "the previous release keeps serving; see the app's output below",
                        )
                    };
                    return Err(DeployFailure {
                        error: ApiError::new(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "instance_exited",
                            format!(
                                "{}.{} exited{how} before it became healthy",
                                inst.process, inst.index,
                            ),
                        )
                        .hint(hint),
                        log_tail: file_tail(&self.logs.raw_path(&inst.id), TAIL_LINES),
                    });
                }
                let healthy = if inst.process == WEB_PROCESS {
                    probe(&inst.address, inst.port, health.path.as_deref()).await
                } else {
                    true
                };
                if !healthy {
                    still.push(inst);
                }
            }
            pending = still;
            if pending.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                let inst = pending[0];
                return Err(DeployFailure {
                    error: ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "health_check_failed",
                        format!(
                            "{}.{} did not pass its health check ({}) within {} s",
                            inst.process,
                            inst.index,
                            match &health.path {
                                Some(p) => format!("GET {p} answering 2xx or 3xx on $PORT"),
                                None => "any HTTP answer on $PORT".into(),
                            },
                            health.timeout_secs
                        ),
                    )
                    .hint("the previous release keeps serving; make the app listen on $PORT (0.0.0.0) or fix [health] in berth.toml"),
                    log_tail: file_tail(&self.logs.raw_path(&inst.id), TAIL_LINES),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // A canary gets a growing share of the requests first, each step analysed.
        if let Some(spec) = canary {
            let serving = self.store.app(app).await?.and_then(|a| a.current_release);
            match serving {
                Some(stable) if stable != version => {
                    self.store.deploy_step(deploy_id, "canary").await?;
                    step(events, "canary");
                    self.canary_steps(app, &release, stable, &spec, events)
                        .await?;
                }
                _ => {
                    let _ = events.send(DeployEvent::Log {
                        line: format!("-----> canary: no release serving yet to compare with; v{version} takes all requests"),
                    });
                }
            }
        }

        // Switch traffic, then drain the old release in the background.
        self.store.deploy_step(deploy_id, "switch").await?;
        step(events, "switch");
        self.store.activate_release(app, version).await?;
        self.publish_network().await?;
        self.store.deploy_step(deploy_id, "drain").await?;
        let old: Vec<InstanceRow> = self
            .store
            .instances(Some(app))
            .await?
            .into_iter()
            .filter(|i| i.release != version)
            .collect();
        for inst in &old {
            self.store.instance_stopping(&inst.id).await?;
        }
        let platform = self.clone();
        self.tasks.spawn(async move {
            tokio::time::sleep(platform.cfg.drain_grace).await;
            for inst in old {
                let id = inst.id.clone();
                let timeout = platform.cfg.stop_timeout;
                platform.blocking(move |l| l.stop(&id, timeout)).await;
                if let Ok(mut ing) = platform.ingester.lock() {
                    ing.remove(&inst.id);
                }
                let _ = platform.store.delete_instance(&inst.id).await;
            }
        });
        Ok((version, self.cfg.app_url(app)))
    }

    /// Creates and starts every instance of `release` (its network policy in force first).
    pub(crate) async fn start_instances(
        self: &Arc<Self>,
        app: &str,
        release: &ReleaseView,
        attach: &Arc<Attachments>,
        first_index: u32,
    ) -> Result<Vec<InstanceRow>, DeployFailure> {
        let version = release.version;
        let mut started: Vec<InstanceRow> = Vec::new();
        // Prepared instances this start resumes, and those it does not need.
        let mut resumed = HashSet::new();
        let unused;
        // Whether every instance got an address the rules in force already hold.
        let mut under_rules_in_force = true;
        {
            let _a = self.alloc_lock.lock().await;
            let mut taken = HashSet::new();
            // A sleeping app wakes at the addresses its web instances had (another
            // release's are given up).
            let mut reserved: Vec<String> = self
                .policy
                .take_reserved(app)
                .into_iter()
                .filter(|(rel, _)| *rel == version)
                .map(|(_, a)| a.to_string())
                .collect();
            // Instances prepared while it slept, taken by the address they were made for.
            let mut ready = self.prepared.take(app);
            for (kind, p) in &release.config.processes {
                for index in first_index..first_index + p.instances {
                    let kept = if kind == WEB_PROCESS {
                        reserved.pop()
                    } else {
                        None
                    };
                    let address = match kept {
                        Some(a) => {
                            taken.insert(a.clone());
                            a
                        }
                        None => {
                            under_rules_in_force = false;
                            self.allocate_address(&mut taken).await?
                        }
                    };
                    let prepared = ready
                        .iter()
                        .position(|p| {
                            p.release == version && p.process == *kind && p.address == address
                        })
                        .map(|i| ready.swap_remove(i));
                    if let Some(p) = &prepared {
                        resumed.insert(p.id.clone());
                    }
                    let inst = InstanceRow::starting(
                        prepared.map_or_else(
                            || instance_id(app, version, kind, index, &crate::random_id(3)),
                            |p| p.id,
                        ),
                        app,
                        version,
                        kind,
                        index,
                        address,
                        release.config.port.unwrap_or(APP_PORT),
                    );
                    self.store.insert_instance(&inst).await?;
                    started.push(inst);
                }
            }
            unused = ready;
        }
        // Prepared for another release (or more instances than now): not needed.
        for inst in unused {
            self.blocking(move |l| l.discard(&inst.id)).await;
        }
        // The new instances' network policy is in force before they start (for a waking
        // app's kept addresses, it is already).
        if !under_rules_in_force || started.is_empty() {
            self.policy.publish(&self.store).await?;
        }
        for inst in &started {
            if let Ok(mut ing) = self.ingester.lock() {
                ing.add(
                    &inst.id,
                    log_labels(inst, release.image.commit().map(str::to_string)),
                );
            }
            let (i, r, a) = (inst.clone(), release.clone(), attach.clone());
            let runtime_started = std::time::Instant::now();
            let resume = resumed.contains(&inst.id);
            let start = self.blocking(move |l| {
                if resume {
                    l.resume(&i, &r, &a)
                } else {
                    l.start(&i, &r, &a)
                }
            });
            match start.await {
                Ok(pid) => {
                    tracing::debug!(%app, took_us = runtime_started.elapsed().as_micros() as u64, prepared = resume, "instance started");
                    self.store
                        .instance_running(
                            &inst.id,
                            pid.map(|p| (p.pid, p.start_ticks)),
                            crate::now_secs(),
                        )
                        .await?
                }
                Err(e) => {
                    return Err(DeployFailure {
                        error: ApiError::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "start_failed",
                            format!("starting {}.{} failed: {e}", inst.process, inst.index),
                        )
                        .hint("see the output of `berth up`"),
                        log_tail: file_tail(&self.logs.raw_path(&inst.id), TAIL_LINES),
                    })
                }
            }
        }
        Ok(started)
    }

    /// Stops instances now (no drain: SIGTERM, `timeout`, SIGKILL) and forgets them.
    pub(crate) async fn stop_instances(
        &self,
        instances: &[InstanceRow],
        timeout: Duration,
    ) -> Result<(), ApiError> {
        for inst in instances {
            self.store.instance_stopping(&inst.id).await?;
        }
        for inst in instances {
            let id = inst.id.clone();
            self.blocking(move |l| l.stop(&id, timeout)).await;
            if let Ok(mut ing) = self.ingester.lock() {
                ing.remove(&inst.id);
            }
            self.store.delete_instance(&inst.id).await?;
        }
        Ok(())
    }

    /// Starts a release's instances again after they were stopped (a failed stop-first
    /// deploy, a volume restore) and routes traffic to them.
    pub(crate) async fn restart_release(
        self: &Arc<Self>,
        app: &str,
        version: u32,
    ) -> Result<(), DeployFailure> {
        let release = self
            .store
            .release(app, version)
            .await?
            .ok_or_else(|| ApiError::internal("release lookup", "release missing"))?;
        let attach = self.attachments(app, &release).await?;
        self.start_instances(app, &release, &attach, 0).await?;
        self.publish_network().await?;
        Ok(())
    }

    /// Stops everything of an app and forgets it: instances, routes, releases, images,
    /// build cache and logs.
    pub async fn destroy(self: &Arc<Self>, app: &str) -> Result<(), ApiError> {
        self.remove_app(app, true).await
    }

    /// [`Platform::destroy`]; without `links`, the app's git connection, deploy key,
    /// repository and place in a platform definition stay (a first deploy that failed is
    /// undone, and the next push tries again).
    pub(crate) async fn remove_app(
        self: &Arc<Self>,
        app: &str,
        links: bool,
    ) -> Result<(), ApiError> {
        let lock = self.app_lock(app);
        let _guard = lock.lock().await;
        if self.store.app(app).await?.is_none() {
            return Err(ApiError::app_not_found(app));
        }
        // In a cluster, its objects go first: if the cluster refuses, berth keeps its records.
        if self.kube.is_some() {
            for deleted in self.kube_remove(app).await? {
                tracing::info!(%app, "deleted {deleted}");
            }
        }
        let releases = self.store.releases(app).await?;
        let instances = self.store.instances(Some(app)).await?;
        let volumes = self.store.volumes(Some(app)).await?;
        if let Err(e) = self.drop_database(app).await {
            tracing::warn!(%app, error = %e.message, "dropping the app's database failed");
        }
        for inst in &instances {
            self.store.instance_stopping(&inst.id).await?;
        }
        self.discard_prepared(app).await;
        self.policy.take_reserved(app);
        let build_slot = self.store.existing_build_slot(app).await?;
        self.store.delete_app_records(app, links).await?;
        self.publish_network().await?;
        let timeout = self.cfg.stop_timeout;
        for inst in instances {
            let id = inst.id.clone();
            self.blocking(move |l| l.stop(&id, timeout)).await;
            if let Ok(mut ing) = self.ingester.lock() {
                ing.remove(&inst.id);
            }
        }
        for v in volumes {
            let (store, a) = (self.volumes.clone(), app.to_string());
            let _ = tokio::task::spawn_blocking(move || store.destroy(&a, &v.name)).await;
        }
        let _ = self.factory.images().remove_repository(app);
        for r in releases {
            let _ = std::fs::remove_dir_all(
                self.cfg
                    .rootfs_dir()
                    .join(r.image.digest.trim_start_matches("sha256:")),
            );
        }
        let _ = std::fs::remove_dir_all(self.cfg.cache_dir().join(app));
        let _ = std::fs::remove_dir_all(self.cfg.build_user_dir().join("cache").join(app));
        // Its build identity goes with its caches.
        if let Some(identity) = build_slot.and_then(|s| BuildIdentity::new(s).ok()) {
            self.forget_build_identity(app, identity).await;
        }
        if links {
            if let Err(e) = self.git_repos.remove(app) {
                tracing::warn!(%app, error = %e, "removing the app's git repository failed");
            }
        }
        self.logs.remove_app(app);
        Ok(())
    }
}

impl Platform {
    /// The app's build identity: the slot it holds, or the lowest one no app holds and no
    /// account of this machine uses, claimed by making its account (its ids are then the
    /// app's alone, whatever other platforms run on the machine).
    async fn build_identity(&self, app: &str) -> Result<BuildIdentity, ApiError> {
        let identity = |slot| {
            BuildIdentity::new(slot).map_err(|e| {
                ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "no_build_identity",
                    e.to_string(),
                )
                .hint("destroy apps this platform no longer needs: each holds a build identity")
            })
        };
        if let Some(slot) = self.store.existing_build_slot(app).await? {
            return identity(slot);
        }
        let on_host = tokio::task::spawn_blocking(|| {
            build_user::reclaim_stale()?;
            build_user::slots_in_use_on_host()
        })
        .await
        .map_err(|e| ApiError::internal("reading the build accounts", e))?
        .map_err(|e| ApiError::internal("reading the build accounts", e))?;
        let held = self.store.build_slots().await?;
        for slot in 1..=build_user::MAX_SLOT {
            if held.contains(&slot) || on_host.contains(&slot) {
                continue;
            }
            if !self.store.claim_build_slot(app, slot).await? {
                continue;
            }
            // The machine's accounts are shared by every platform on it: the slot is this
            // app's once its account is made here.
            let candidate = identity(slot)?;
            let owner = self.cfg.data_dir.clone();
            let made = tokio::task::spawn_blocking(move || candidate.claim(&owner))
                .await
                .map_err(|e| ApiError::internal("making the build account", e));
            match made {
                Ok(Ok(true)) => return Ok(candidate),
                Ok(Ok(false)) => self.store.release_build_slot(app).await?,
                Ok(Err(e)) => {
                    self.store.release_build_slot(app).await?;
                    return Err(ApiError::internal("making the build account", e));
                }
                Err(e) => {
                    self.store.release_build_slot(app).await?;
                    return Err(e);
                }
            }
        }
        identity(build_user::MAX_SLOT + 1)
    }

    /// Frees the app's build identity: the host account its builds ran as, then the slot
    /// (while the account stays — a process of it still runs, say — no app gets the slot).
    async fn forget_build_identity(&self, app: &str, identity: BuildIdentity) {
        match tokio::task::spawn_blocking(move || identity.forget()).await {
            Ok(Err(e)) => {
                tracing::warn!(%app, error = %e, "removing the app's build account failed")
            }
            Err(e) => tracing::warn!(%app, error = %e, "removing the app's build account failed"),
            Ok(Ok(())) => {}
        }
        if let Err(e) = self.store.release_build_slot(app).await {
            tracing::warn!(%app, error = %e, "freeing the app's build identity failed");
        }
    }
}
