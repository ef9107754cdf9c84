//! The platform as one value: settings, state store, planes, and the background tasks that
//! keep them converged. `berth up` builds one with [`Platform::start`] and serves the API.

use crate::config::PlatformConfig;
use crate::launcher::Launcher;
use crate::policy::PolicyPublisher;
use crate::routing::RoutePublisher;
use crate::store::Store;
use berth_factory::builder::{Factory, FactoryPaths};
use berth_factory::image::ImageStore;
use berth_observe::ingest::Ingester;
use berth_observe::LogStore;
use berth_runtime::crun::Crun;
use berth_runtime::firewall::Firewall;
use berth_runtime::network::Network;
use berth_runtime::proc::ProcessIdentity;
use berth_runtime::runsc::Runsc;
use berth_runtime::select::ByIsolation;
use berth_runtime::Isolation;
use berth_runtime::Runtime;
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Errors starting the platform.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid settings: {}", .0.join("; "))]
    Config(Vec<String>),
    #[error(transparent)]
    Runtime(#[from] berth_runtime::RuntimeError),
    #[error("state store {path}: {source}")]
    Store {
        path: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("the edge could not start: {0}")]
    Edge(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StartError {
    let context = context.into();
    move |source| StartError::Io { context, source }
}

/// The running platform.
pub struct Platform {
    /// Settings.
    pub cfg: PlatformConfig,
    /// State store.
    pub store: Store,
    /// Containers.
    pub launcher: Arc<Launcher>,
    /// Builds.
    pub factory: Arc<Factory>,
    /// Logs.
    pub logs: LogStore,
    /// Log ingester.
    pub ingester: Arc<Mutex<Ingester>>,
    /// Edge routes.
    pub routes: RoutePublisher,
    /// Network policy (nftables).
    pub policy: PolicyPublisher,
    /// Sleeping apps' instances made ready to start (see [`crate::idle::PreparedInstances`]).
    pub prepared: crate::idle::PreparedInstances,
    /// API bearer token.
    pub token: String,
    /// The OIDC provider people sign in with, if one is configured.
    pub oidc: Option<crate::oidc::Oidc>,
    /// Keys that seal secrets.
    pub keyring: tokio::sync::RwLock<berth_data::secrets::Keyring>,
    /// Volume images and mounts.
    pub volumes: berth_data::volumes::VolumeStore,
    /// The database server (`None` when PostgreSQL is not installed).
    pub postgres: Option<berth_data::postgres::Postgres>,
    /// Certificates of the hosts the edge serves.
    pub certificates: crate::certificates::Certificates,
    /// One deploy at a time per app.
    pub app_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Serialises address allocation.
    pub alloc_lock: tokio::sync::Mutex<()>,
    /// One app create at a time (names, domains and databases are checked, then made).
    pub create_lock: tokio::sync::Mutex<()>,
    /// Retries under one Idempotency-Key wait for the first attempt.
    pub idempotency_lock: tokio::sync::Mutex<()>,
    /// One platform backup at a time.
    pub backup_lock: tokio::sync::Mutex<()>,
    /// Platform counters for `/metrics`.
    pub metrics: berth_observe::metrics::Metrics,
    /// Idempotency keys whose first attempt is running.
    pub in_flight: crate::idempotency::InFlight,
    /// Traces of deploys and changes, when an OTLP endpoint is configured.
    pub traces: Option<berth_observe::traces::Traces>,
    /// What the SLO sampler last saw of the edge's counters.
    pub slo_cursor: Mutex<crate::slo::SloCursor>,
    /// What the operational alerts remember between passes.
    pub health_memory: Mutex<crate::health_alerts::HealthMemory>,
    /// Where the next address search starts.
    pub next_address: std::sync::atomic::AtomicUsize,
    /// Canary rollouts under way.
    pub canaries: crate::canary::CanaryControls,
    /// The last blackbox probes of each app's URLs.
    pub probes: crate::probes::ProbeLog,
    /// Publishes app names in DNS, when `--dns` is set.
    pub dns: Option<berth_edge::dns_update::DnsUpdater>,
    /// Wakes the DNS task after routes change.
    pub dns_wake: tokio::sync::Notify,
    /// The app repositories `git push` goes to.
    pub git_repos: berth_factory::git_repos::GitRepos,
    /// Background work (drains) that shutdown waits for.
    pub tasks: TaskTracker,
    /// The proxy builds reach the internet through (by host name).
    pub build_egress: Option<crate::build_egress::BuildEgress>,
    /// Fires on shutdown.
    pub shutdown: CancellationToken,
    /// The cluster apps run in, with `--backend kubernetes`.
    pub kube: Option<crate::kube_backend::KubeBackend>,
}

/// Reads or creates the API token (mode 0600).
fn load_or_create_token(path: &Path) -> Result<String, StartError> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(t) = std::fs::read_to_string(path) {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_string());
        }
    }
    let token = format!("berth_{}", crate::random_id(24));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io(format!("writing {}", path.display())))?;
    std::io::Write::write_all(&mut f, token.as_bytes()).map_err(io("writing the API token"))?;
    Ok(token)
}

/// The edge process: pid file with identity, started detached so that it outlives the
/// control plane.
pub struct EdgeProcess;

impl EdgeProcess {
    fn pid_file(cfg: &PlatformConfig) -> PathBuf {
        cfg.edge_dir().join("edge.pid")
    }

    /// The running edge of this data dir, if any.
    pub fn running(cfg: &PlatformConfig) -> Option<ProcessIdentity> {
        let text = std::fs::read_to_string(Self::pid_file(cfg)).ok()?;
        let (pid, start) = text.trim().split_once(' ')?;
        let id = ProcessIdentity {
            pid: pid.parse().ok()?,
            start_ticks: start.parse().ok()?,
        };
        id.alive().then_some(id)
    }

    /// Where the running edge offers its sockets to a successor.
    pub fn handover_socket(cfg: &PlatformConfig) -> PathBuf {
        cfg.edge_dir().join("handover.sock")
    }

    /// The edge's command line for this platform's settings.
    fn arguments(cfg: &PlatformConfig, routes: &RoutePublisher) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec![
            "edge".into(),
            "--listen".into(),
            cfg.edge_listen.to_string().into(),
            "--routes".into(),
            routes.routes_file().into(),
            "--applied".into(),
            routes.applied_file().into(),
            "--metrics".into(),
            cfg.edge_metrics_file().into(),
            "--handover".into(),
            Self::handover_socket(cfg).into(),
        ];
        if cfg.access_log {
            args.extend(["--access-log".into(), cfg.edge_access_log().into()]);
        }
        for range in &cfg.trusted_proxies {
            args.extend(["--trusted-proxy".into(), range.to_string().into()]);
        }
        if let Some(tls) = cfg.edge_tls_listen {
            args.extend([
                "--tls-listen".into(),
                tls.to_string().into(),
                "--certs".into(),
                cfg.edge_certs_file().into(),
            ]);
        }
        args
    }

    /// Why the running edge `id` is not the one this platform would start: another berth
    /// binary (an upgrade) or other settings. `None`: it is.
    fn outdated(
        cfg: &PlatformConfig,
        routes: &RoutePublisher,
        id: &ProcessIdentity,
    ) -> Option<&'static str> {
        use std::os::unix::fs::MetadataExt;
        let running = std::fs::metadata(format!("/proc/{}/exe", id.pid)).ok()?;
        let ours = std::fs::metadata(&cfg.berth_binary).ok()?;
        if (running.dev(), running.ino()) != (ours.dev(), ours.ino()) {
            return Some("berth was upgraded");
        }
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", id.pid)).ok()?;
        let args: Vec<&[u8]> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .collect();
        let wanted = Self::arguments(cfg, routes);
        let same = args
            .iter()
            .skip(1)
            .copied()
            .filter(|a| *a != b"--take-over")
            .eq(wanted.iter().map(|w| w.as_encoded_bytes()));
        (!same).then_some("its settings changed")
    }

    /// Adopts the running edge or starts a new one, and waits until it serves. A running
    /// edge of another berth binary or other settings is replaced gracefully: the new edge
    /// takes its listening sockets over, and the old one drains (no connection refused or
    /// dropped); an edge too old to hand over is stopped, then replaced.
    pub fn ensure(cfg: &PlatformConfig, routes: &RoutePublisher) -> Result<(), StartError> {
        if let Some(id) = Self::running(cfg) {
            let Some(reason) = Self::outdated(cfg, routes, &id) else {
                tracing::info!(pid = id.pid, "edge already running; adopting it");
                return Ok(());
            };
            tracing::info!(
                pid = id.pid,
                reason,
                "replacing the running edge; it hands its sockets over"
            );
            match Self::spawn(cfg, routes, true) {
                Ok(new) => {
                    tracing::info!(
                        old = id.pid,
                        new,
                        "edge replaced; the old one drains its connections"
                    );
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the running edge did not hand over; restarting it");
                    Self::stop(cfg);
                }
            }
        }
        Self::spawn(cfg, routes, false).map(|_| ())
    }

    /// Starts an edge (taking the running one's sockets over when `take_over`), waits until
    /// it serves, and records it; returns its pid.
    fn spawn(
        cfg: &PlatformConfig,
        routes: &RoutePublisher,
        take_over: bool,
    ) -> Result<u32, StartError> {
        let log_path = cfg.edge_dir().join("edge.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(format!("opening {}", log_path.display())))?;
        let log_len = log.metadata().map(|m| m.len()).unwrap_or(0);
        let log2 = log.try_clone().map_err(io("opening the edge log"))?;
        let _ = std::fs::remove_file(routes.applied_file());
        let mut command = Command::new(&cfg.berth_binary);
        command.args(Self::arguments(cfg, routes));
        if take_over {
            command.arg("--take-over");
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            // Its own process group: a signal to berth up's group does not reach it.
            .process_group(0)
            .spawn()
            .map_err(io("starting the edge"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let text = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail = text
                    .get(log_len as usize..)
                    .unwrap_or(&text)
                    .trim()
                    .to_string();
                return Err(StartError::Edge(format!(
                    "it exited with {status}: {}",
                    tail.lines().last().unwrap_or("no output")
                )));
            }
            if routes.applied_generation().is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(StartError::Edge(
                    "it did not start serving within 10 seconds".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let id = ProcessIdentity::of(child.id())
            .ok_or_else(|| StartError::Edge("it exited right after starting".into()))?;
        std::fs::write(
            Self::pid_file(cfg),
            format!("{} {}", id.pid, id.start_ticks),
        )
        .map_err(io("writing the edge pid file"))?;
        // The edge outlives us (its own process group); should it end first, a thread
        // waits for it so that it leaves no zombie behind in `berth up`.
        let reaper = std::thread::Builder::new()
            .name("edge-reaper".into())
            .spawn(move || {
                let _ = child.wait();
            });
        if let Err(e) = reaper {
            tracing::warn!(error = %e, "no thread to wait for the edge; it becomes a zombie should it end before berth up");
        }
        Ok(id.pid)
    }

    /// Stops the edge of this data dir.
    pub fn stop(cfg: &PlatformConfig) {
        if let Some(id) = Self::running(cfg) {
            let pid = nix::unistd::Pid::from_raw(id.pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while id.alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if id.alive() {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
        let _ = std::fs::remove_file(Self::pid_file(cfg));
    }
}

impl Platform {
    /// Prepares everything `berth up` needs: checks the runtime, opens the store, starts or
    /// adopts the edge, re-adopts running containers and rolls back interrupted deploys.
    pub async fn start(cfg: PlatformConfig) -> Result<Arc<Self>, StartError> {
        let problems = cfg.validate();
        if !problems.is_empty() {
            return Err(StartError::Config(problems));
        }
        // A cluster that does not answer stops the start before anything (the edge) runs.
        let kube = match &cfg.kube {
            Some(target) => Some(
                crate::kube_backend::KubeBackend::connect(target)
                    .await
                    .map_err(|e| StartError::Other(format!("--backend kubernetes: {e}")))?,
            ),
            None => None,
        };
        for dir in [
            cfg.data_dir.clone(),
            cfg.edge_dir(),
            cfg.images_dir(),
            cfg.rootfs_dir(),
            cfg.instances_dir(),
            cfg.cache_dir(),
            cfg.builds_dir(),
            cfg.logs_dir(),
            cfg.runtime_state_dir(),
            cfg.sandbox_state_dir(),
        ] {
            std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        }
        // The platform's state, keys, sources and logs are root's alone: nothing that runs
        // as another user (a build, an app, a local account) lists or reads them.
        std::fs::set_permissions(&cfg.data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io(format!("restricting {}", cfg.data_dir.display())))?;
        let runtimes = runtimes(&cfg);
        runtimes.preflight()?;
        if cfg.default_isolation == Isolation::Sandbox {
            runtimes.runtime_for(Isolation::Sandbox).preflight()?;
        }
        let runtime = Arc::new(runtimes);
        let network = Network {
            bridge: cfg.bridge.clone(),
            subnet: cfg.subnet,
        };
        Firewall::preflight()?;
        let created = network.ensure_bridge()?;
        // A start that fails from here on leaves no bridge of its own behind.
        let mut undo = CreatedBridge(created.then(|| network.clone()));
        let shutdown = CancellationToken::new();
        // Builds leave their namespaces through this proxy only, by host name.
        let build_egress = crate::build_egress::BuildEgress::start(
            crate::build_egress::EgressConfig {
                blocked: crate::build_network::blocked(&cfg),
                ..crate::build_egress::EgressConfig::new(std::net::SocketAddr::from((
                    cfg.subnet.gateway(),
                    0,
                )))
            },
            shutdown.clone(),
        )
        .await
        .map_err(|e| StartError::Other(format!("the build proxy: {e}")))?;
        let firewall = Firewall::new(cfg.bridge.clone(), cfg.subnet)
            .with_database(cfg.subnet.gateway(), berth_data::postgres::PORT)
            .with_build_proxy(cfg.subnet.gateway(), build_egress.addr().port())
            .with_egress_block(
                cfg.egress_block
                    .iter()
                    .map(ToString::to_string)
                    .filter(|r| !r.contains(':'))
                    .collect(),
            );
        let store = Store::open(&cfg.db_path())
            .await
            .map_err(|source| StartError::Store {
                path: cfg.db_path().display().to_string(),
                source,
            })?;
        let token = load_or_create_token(&cfg.token_path())?;
        let keyring = berth_data::secrets::Keyring::open(cfg.secrets_key_source())
            .map_err(|e| StartError::Other(e.to_string()))?;
        let secret_files = berth_data::secret_files::SecretFiles::ensure(cfg.secrets_runtime_dir())
            .map_err(|e| StartError::Other(e.to_string()))?;
        let build_files = berth_data::secret_files::SecretFiles::ensure_sized(
            cfg.build_secrets_runtime_dir(),
            "256m",
        )
        .map_err(|e| StartError::Other(e.to_string()))?;
        let volumes = berth_data::volumes::VolumeStore::new(cfg.volumes_dir());
        let postgres = berth_data::postgres::Postgres::locate(cfg.postgres_layout()).ok();
        let has_databases = !store
            .databases()
            .await
            .map_err(|source| StartError::Store {
                path: cfg.db_path().display().to_string(),
                source,
            })?
            .is_empty();
        if let (Some(pg), true) = (postgres.clone(), has_databases) {
            // Apps with a database need their server before they start again.
            match tokio::task::spawn_blocking(move || pg.ensure_running()).await {
                Ok(Err(e)) => tracing::error!(error = %e, "starting the database server failed"),
                Err(e) => tracing::error!(error = %e, "starting the database server failed"),
                Ok(Ok(())) => {}
            }
        }
        // On a cluster, volumes are claims there: nothing to mount here.
        let here = cfg.kube.is_none();
        for v in store
            .volumes(None)
            .await
            .map_err(|source| StartError::Store {
                path: cfg.db_path().display().to_string(),
                source,
            })?
            .into_iter()
            .filter(|_| here)
        {
            if let Err(e) = volumes.mount(&v.app, &v.name) {
                tracing::error!(app = %v.app, volume = %v.name, error = %e, "mounting a volume failed");
            }
        }
        let logs = LogStore::open(cfg.logs_dir()).map_err(|e| StartError::Other(e.to_string()))?;
        let images = ImageStore::new(cfg.images_dir());
        let launcher = Arc::new(
            Launcher::new(
                cfg.clone(),
                runtime.clone(),
                network,
                images.clone(),
                logs.clone(),
            )
            .with_secret_files(secret_files)
            .with_build_files(build_files),
        );
        let pkcs8 = crate::signing_key::load_or_create(&store, &keyring)
            .await
            .map_err(StartError::Other)?;
        let signer = berth_factory::signing::Signer::from_pkcs8(&pkcs8)
            .map_err(|e| StartError::Other(format!("the image signing key: {e}")))?;
        signer
            .write_public(&cfg.signing_dir())
            .map_err(|e| StartError::Other(format!("the image signing key: {e}")))?;
        let mut factory = Factory::new(
            FactoryPaths {
                work_root: cfg.builds_dir(),
                cache_root: cfg.cache_dir(),
                build_user_root: cfg.build_user_dir(),
            },
            images,
            runtime,
        )
        .with_signer(signer);
        if let Some(gate) = &cfg.vuln_gate {
            // A database that does not read stops the start, not the first deploy.
            let db = berth_factory::vulns::VulnDb::load(&gate.db)
                .map_err(|e| StartError::Other(format!("--vuln-db: {e}")))?;
            tracing::info!(records = db.len(), threshold = %gate.threshold, "vulnerability gate");
            factory = factory.with_vuln_gate(gate.clone());
        }
        let factory = Arc::new(factory);
        let routes = RoutePublisher::new(cfg.clone());
        {
            let cfg = cfg.clone();
            tokio::task::spawn_blocking(move || {
                EdgeProcess::ensure(&cfg, &RoutePublisher::new(cfg.clone()))
            })
            .await
            .map_err(|e| StartError::Other(e.to_string()))??;
        }
        let cfg_otlp = cfg.otlp_endpoint.clone();
        let cfg_git_root = cfg.data_dir.join("git");
        let cfg_dns = cfg
            .dns
            .clone()
            .map(berth_edge::dns_update::DnsUpdater::new)
            .transpose()
            .map_err(|e| StartError::Other(e.to_string()))?;
        let cfg_oidc = cfg.oidc.clone();
        let cfg_oidc_secret = cfg.oidc_client_secret.clone();
        let (cfg_acme, cert_check_interval, certs_file) = (
            cfg.acme.clone(),
            cfg.cert_check_interval,
            cfg.edge_certs_file(),
        );
        let platform = Arc::new(Self {
            kube,
            ingester: Arc::new(Mutex::new({
                let mut ingester = Ingester::open(logs.clone());
                ingester.add(
                    crate::config::EDGE_ACCESS_SOURCE,
                    berth_observe::ingest::Labels {
                        project: "default".into(),
                        app: berth_observe::ingest::ACCESS_SOURCE_APP.into(),
                        release: 0,
                        process: "edge".into(),
                        index: 0,
                        commit: None,
                    },
                );
                ingester
            })),
            cfg,
            store,
            launcher,
            factory,
            logs,
            routes,
            policy: PolicyPublisher::new(firewall),
            prepared: Default::default(),
            token,
            oidc: match &cfg_oidc {
                Some((issuer, client_id)) => Some(
                    crate::oidc::Oidc::new(issuer, client_id, cfg_oidc_secret.clone())
                        .map_err(|e| StartError::Other(format!("--oidc-issuer: {e}")))?,
                ),
                None => None,
            },
            keyring: tokio::sync::RwLock::new(keyring),
            volumes,
            postgres,
            certificates: crate::certificates::Certificates::new(
                cfg_acme,
                cert_check_interval,
                certs_file,
            ),
            app_locks: Mutex::new(HashMap::new()),
            alloc_lock: tokio::sync::Mutex::new(()),
            create_lock: tokio::sync::Mutex::new(()),
            idempotency_lock: tokio::sync::Mutex::new(()),
            backup_lock: tokio::sync::Mutex::new(()),
            metrics: berth_observe::metrics::Metrics::default(),
            in_flight: Default::default(),
            traces: match &cfg_otlp {
                Some(endpoint) => Some(
                    berth_observe::traces::Traces::start(endpoint)
                        .map_err(|e| StartError::Other(format!("--otlp-endpoint: {e}")))?,
                ),
                None => None,
            },
            slo_cursor: Mutex::new(crate::slo::SloCursor::default()),
            health_memory: Mutex::new(crate::health_alerts::HealthMemory::default()),
            next_address: std::sync::atomic::AtomicUsize::new(0),
            canaries: crate::canary::CanaryControls::default(),
            probes: crate::probes::ProbeLog::default(),
            dns: cfg_dns,
            dns_wake: tokio::sync::Notify::new(),
            git_repos: berth_factory::git_repos::GitRepos::new(cfg_git_root),
            tasks: TaskTracker::new(),
            build_egress: Some(build_egress),
            shutdown,
        });
        platform
            .recover()
            .await
            .map_err(|e| StartError::Other(format!("recovering state: {e}")))?;
        platform.load_restored_databases().await;
        undo.0 = None;
        Ok(platform)
    }

    /// The lock that serialises deploys of one app.
    pub fn app_lock(&self, app: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.app_locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(app.to_string()).or_default().clone()
    }

    /// Runs blocking launcher work off the async threads.
    pub async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Launcher) -> T + Send + 'static,
    ) -> T {
        let launcher = self.launcher.clone();
        match tokio::task::spawn_blocking(move || f(&launcher)).await {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// After a restart: rolls back deploys that were cut off, re-adopts containers that kept
    /// running, marks dead ones crashed (the supervisor restarts them), removes orphans, and
    /// republishes routes.
    async fn recover(self: &Arc<Self>) -> Result<(), crate::ApiError> {
        let cut = self
            .store
            .fail_interrupted_builds(crate::now_secs())
            .await?;
        if cut > 0 {
            tracing::warn!(
                builds = cut,
                "builds interrupted by a restart are marked failed"
            );
        }
        for (deploy_id, app, version, step) in self.store.interrupted_deploys().await? {
            let current = self.store.app(&app).await?.and_then(|a| a.current_release);
            if current == Some(version) {
                // It had switched: the release serves. Finish its drain (the older
                // instances are stopped below) and count the deploy as done.
                tracing::warn!(%app, version, %step, "finishing a deploy that had switched before a restart");
                for inst in self.store.instances(Some(&app)).await? {
                    if inst.release != version {
                        self.store.instance_stopping(&inst.id).await?;
                    }
                }
                self.store
                    .finish_deploy(&deploy_id, "succeeded", None, crate::now_secs())
                    .await?;
                continue;
            }
            tracing::warn!(%app, version, %step, "rolling back a deploy interrupted by a restart");
            for inst in self.store.instances(Some(&app)).await? {
                if inst.release == version {
                    self.store.instance_stopping(&inst.id).await?;
                    let id = inst.id.clone();
                    let timeout = self.cfg.stop_timeout;
                    self.blocking(move |l| l.stop(&id, timeout)).await;
                    self.store.delete_instance(&inst.id).await?;
                }
            }
            self.store
                .fail_release(
                    &app,
                    version,
                    "interrupted by a platform restart; the previous release kept serving",
                )
                .await?;
            self.store
                .finish_deploy(
                    &deploy_id,
                    "failed",
                    Some("interrupted by a platform restart"),
                    crate::now_secs(),
                )
                .await?;
        }
        let instances = self.store.instances(None).await?;
        let known: std::collections::HashSet<String> =
            instances.iter().map(|i| i.id.clone()).collect();
        for inst in &instances {
            let commit = match self.store.release(&inst.app, inst.release).await {
                Ok(Some(r)) => r.image.commit().map(str::to_string),
                _ => None,
            };
            if let Ok(mut ing) = self.ingester.lock() {
                ing.add(&inst.id, crate::deploy::log_labels(inst, commit));
            }
            match inst.state {
                berth_core::model::InstanceState::Stopped => {
                    let id = inst.id.clone();
                    let timeout = self.cfg.stop_timeout;
                    self.blocking(move |l| l.stop(&id, timeout)).await;
                    self.store.delete_instance(&inst.id).await?;
                }
                berth_core::model::InstanceState::Crashed => {}
                _ => {
                    let id = inst.id.clone();
                    match self.blocking(move |l| l.running(&id)).await {
                        Some(pid) => {
                            tracing::info!(instance = %inst.id, pid = pid.pid, "re-adopted running instance");
                            self.store
                                .instance_running(
                                    &inst.id,
                                    Some((pid.pid, pid.start_ticks)),
                                    inst.started_at,
                                )
                                .await?;
                        }
                        None => {
                            let id = inst.id.clone();
                            let exit = self.blocking(move |l| l.exit_info(&id)).await;
                            self.store
                                .instance_crashed(&inst.id, exit.code, exit.reason())
                                .await?;
                        }
                    }
                }
            }
        }
        let listed = self
            .blocking(|l| l.runtime().list())
            .await
            .unwrap_or_default();
        for id in listed.into_iter().filter(|id| !known.contains(id)) {
            tracing::warn!(container = %id, "removing orphaned container");
            let timeout = Duration::from_secs(1);
            self.blocking(move |l| l.stop(&id, timeout)).await;
        }
        // Lines the re-adopted instances print keep their secrets hidden.
        let mut apps: Vec<(String, u32)> = instances
            .iter()
            .map(|i| (i.app.clone(), i.release))
            .collect();
        apps.sort();
        apps.dedup();
        for (app, version) in apps {
            if let Some(r) = self.store.release(&app, version).await? {
                if let Err(e) = self.resolve_secrets(&app, &r.config).await {
                    tracing::warn!(%app, error = %e.message, "reading secrets for log redaction failed");
                }
            }
        }
        self.publish_network().await?;
        Ok(())
    }

    /// Brings the firewall and then the edge's routes in step with the store.
    pub async fn publish_network(&self) -> Result<(), crate::ApiError> {
        self.policy.publish(&self.store).await?;
        // New hosts get their (local) certificate before their route.
        if let Err(e) = self.ensure_certificates(false).await {
            tracing::warn!(error = %e.message, "updating certificates failed");
        }
        self.routes.publish(&self.store).await?;
        self.dns_wake.notify_one();
        Ok(())
    }

    /// Stops every app container and the edge, and removes the bridge (`berth down`).
    pub fn teardown(cfg: &PlatformConfig) {
        let runtime = runtimes(cfg);
        let network = Network {
            bridge: cfg.bridge.clone(),
            subnet: cfg.subnet,
        };
        for id in runtime.list().unwrap_or_default() {
            let _ = runtime.kill(&id, "KILL");
            let _ = runtime.delete(&id);
            network.detach(&id);
        }
        EdgeProcess::stop(cfg);
        Firewall::new(cfg.bridge.clone(), cfg.subnet).remove();
        network.remove_bridge();
        // Volumes come back (mounted again) with the next `berth up`.
        for app in std::fs::read_dir(cfg.volumes_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            for v in std::fs::read_dir(app.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let path = v.path();
                if path.extension().is_some_and(|e| e == "mnt")
                    && berth_data::volumes::is_mounted(&path)
                {
                    let _ = Command::new("umount").arg(&path).status();
                }
            }
        }
        berth_data::secret_files::SecretFiles::unmount(&cfg.secrets_runtime_dir());
        berth_data::secret_files::SecretFiles::unmount(&cfg.build_secrets_runtime_dir());
        if let Ok(pg) = berth_data::postgres::Postgres::locate(cfg.postgres_layout()) {
            pg.stop();
        }
    }
}

/// A bridge that [`Platform::start`] created, removed again unless the start succeeds.
struct CreatedBridge(Option<Network>);

impl Drop for CreatedBridge {
    fn drop(&mut self) {
        if let Some(network) = self.0.take() {
            network.remove_bridge();
        }
    }
}

/// crun for trusted apps, runsc for sandboxed ones, each with its own state root.
fn runtimes(cfg: &PlatformConfig) -> ByIsolation {
    ByIsolation::new(
        Arc::new(Crun::new(cfg.runtime_state_dir())),
        Arc::new(Runsc::new(cfg.sandbox_state_dir())),
    )
}
