//! Turns releases into containers: prepares each image's root filesystem once, assembles the
//! container description for an instance (command, environment, mounts, network namespace)
//! and starts and stops instances on the run plane. Blocking; call from `spawn_blocking`.

use crate::config::PlatformConfig;
use crate::store::InstanceRow;
use berth_core::api::ReleaseView;
use berth_core::limits::Limits;
use berth_core::model::ImageRef;
use berth_factory::image::ImageStore;
use berth_factory::providers::BERTH_IN_CONTAINER;
use berth_observe::LogStore;
use berth_runtime::bundle::{host_stack_skeleton, BindMount, APP_GID, APP_UID};
use berth_runtime::network::Network;
use berth_runtime::proc::ProcessIdentity;
use berth_runtime::select::ByIsolation;
use berth_runtime::{
    ContainerSpec, Isolation, NetworkMode, Privileges, Resources, Runtime, RuntimeError,
};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the per-instance status directory is mounted inside containers.
const STATUS_DIR: &str = "/.berth/status";
/// Where berth's init finds the secrets that become environment variables.
const SECRETS_ENV_DIR: &str = "/.berth/secrets";
/// Where the host's `/usr` is mounted in an image's own root, for berth's init to run from.
const HOST_USR: &str = "/.berth/host/usr";
const HOST_USR_IN_ROOT: &str = ".berth/host/usr";

/// The decrypted secrets one release runs with. Never written to the data directory.
#[derive(Default)]
pub struct ResolvedSecrets {
    /// Secrets given as environment variables.
    pub env: Vec<(String, zeroize::Zeroizing<String>)>,
    /// Secrets given as files under `/run/secrets`.
    pub files: Vec<(String, zeroize::Zeroizing<Vec<u8>>)>,
}

/// A volume as a container sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    /// The volume's mount point on the host.
    pub source: PathBuf,
    /// Where it appears inside the container.
    pub destination: String,
}

/// What an instance gets besides its release's image and config: its secrets and volumes.
#[derive(Default)]
pub struct Attachments {
    /// Decrypted secrets.
    pub secrets: ResolvedSecrets,
    /// Volumes to mount, read-write.
    pub volumes: Vec<VolumeMount>,
}

/// Errors launching or stopping containers.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Image(#[from] berth_factory::image::ImageError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("instance address {0:?} is not an IPv4 address")]
    BadAddress(String),
    #[error(transparent)]
    Secrets(#[from] berth_data::secret_files::SecretFilesError),
    #[error("this host's dynamic loader was not found: berth cannot start an image's own root filesystem here")]
    NoLoader,
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> LaunchError {
    let context = context.into();
    move |source| LaunchError::Io { context, source }
}

/// How an instance's container last ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    /// Exit code its init recorded (128+N for signal N), if it recorded one.
    pub code: Option<i32>,
    /// Whether the kernel's out-of-memory killer ended it.
    pub oom_killed: bool,
    /// Its memory limit, bytes (for messages).
    pub memory_limit: u64,
}

impl ExitInfo {
    /// The reason stored with the instance.
    pub fn reason(&self) -> Option<&'static str> {
        self.oom_killed.then_some("oom_killed")
    }
}

/// The argv of a command in an image's own root: the plain words, or the image's shell
/// for a shell command (a command with quotes split by shell rules when it has no shell).
fn own_root_argv(command: &str, rootfs: &std::path::Path) -> Vec<String> {
    let argv = berth_core::procfile::command_argv(command);
    if argv.first().is_some_and(|a| a == "/bin/sh") && !rootfs.join("bin/sh").exists() {
        return shlex::split(command).unwrap_or(argv);
    }
    argv
}

/// How berth's init is started in an image's own root: the host's dynamic loader, from
/// the host's `/usr` mounted at [`HOST_USR`], with the host's libraries.
fn host_loader_argv() -> Option<Vec<String>> {
    let interpreter = match std::env::consts::ARCH {
        "x86_64" => "/lib64/ld-linux-x86-64.so.2",
        "aarch64" => "/lib/ld-linux-aarch64.so.1",
        _ => return None,
    };
    let real = std::fs::canonicalize(interpreter).ok()?;
    // Merged /usr: /lib is /usr/lib.
    let under_usr = real
        .strip_prefix("/usr")
        .or_else(|_| real.strip_prefix("/"))
        .ok()?
        .to_path_buf();
    let loader = std::path::Path::new(HOST_USR).join(&under_usr);
    let libdir = loader.parent()?.to_path_buf();
    Some(vec![
        loader.display().to_string(),
        "--inhibit-cache".into(),
        "--library-path".into(),
        libdir.display().to_string(),
    ])
}

/// The cgroup of a container, relative to the hierarchy roots.
pub fn cgroup_path(id: &str) -> String {
    format!("/berth/{id}")
}

/// Files every container's root filesystem has: resolver, hosts and name-service files.
fn berth_files() -> [(&'static str, String); 5] {
    [
        ("etc/passwd", format!("root:x:0:0:root:/root:/usr/sbin/nologin\napp:x:{APP_UID}:{APP_GID}:app:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")),
        ("etc/group", format!("root:x:0:\napp:x:{APP_GID}:\nnogroup:x:65534:\n")),
        ("etc/hosts", "127.0.0.1 localhost\n::1 localhost ip6-localhost\n".into()),
        ("etc/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files dns\n".into()),
        // Apps have no route to the host's resolver; with no nameserver line the resolver
        // asks 127.0.0.1 inside the app's namespace and fails at once instead of timing
        // out (Python's HTTPServer, for one, looks up its own address at startup).
        ("etc/resolv.conf", "# berth: no DNS resolver is reachable from apps\noptions timeout:1 attempts:1\n".into()),
    ]
}

/// Mount points berth's own mounts need in every root filesystem.
const BERTH_MOUNT_POINTS: &[&str] = &[".berth/status", ".berth/secrets", "run/secrets"];

/// A berth build's root: the app under `/app`, the host's `/usr` mounted beneath it.
fn prepare_host_stack_root(tmp: &std::path::Path) -> Result<(), LaunchError> {
    // The app's own files belong to the unprivileged app user (the root filesystem is
    // mounted read-only, so owning them only means being able to read them).
    berth_runtime::ownership::chown_tree(&tmp.join("app"), APP_UID, APP_GID)?;
    host_stack_skeleton(tmp)?;
    for d in BERTH_MOUNT_POINTS
        .iter()
        .chain(&["etc/ssl", "etc/alternatives", "app"])
    {
        std::fs::create_dir_all(tmp.join(d)).map_err(io("preparing the root filesystem"))?;
    }
    std::fs::write(tmp.join(".berth/berth"), b"").map_err(io("preparing the root filesystem"))?;
    for (path, content) in berth_files() {
        std::fs::write(tmp.join(path), content).map_err(io("preparing the root filesystem"))?;
    }
    Ok(())
}

/// An image's own root: berth's mount points and network files added, the app user made
/// known; berth's init runs from the host's `/usr` mounted at [`HOST_USR`].
fn prepare_own_root(tmp: &std::path::Path) -> Result<(), LaunchError> {
    for d in
        BERTH_MOUNT_POINTS
            .iter()
            .chain(&["proc", "dev", "sys", "tmp", "etc", HOST_USR_IN_ROOT])
    {
        let p = tmp.join(d);
        // A link in the image must not steer berth's files elsewhere.
        if p.symlink_metadata().is_ok_and(|m| !m.is_dir()) {
            std::fs::remove_file(&p).map_err(io("preparing the image's root filesystem"))?;
        }
        std::fs::create_dir_all(&p).map_err(io("preparing the image's root filesystem"))?;
    }
    let replace = |rel: &str, content: &str| -> std::io::Result<()> {
        let p = tmp.join(rel);
        if p.symlink_metadata().is_ok() {
            std::fs::remove_file(&p)?;
        }
        std::fs::write(&p, content)
    };
    replace(".berth/berth", "").map_err(io("preparing the image's root filesystem"))?;
    for (path, content) in berth_files() {
        match path {
            "etc/passwd" | "etc/group" => {
                let p = tmp.join(path);
                let existing = match p.symlink_metadata() {
                    Ok(m) if m.is_file() => std::fs::read_to_string(&p).unwrap_or_default(),
                    _ => String::new(),
                };
                let id = if path == "etc/passwd" {
                    APP_UID
                } else {
                    APP_GID
                };
                let known = existing
                    .lines()
                    .any(|l| l.split(':').nth(2) == Some(id.to_string().as_str()));
                let line = content
                    .lines()
                    .find(|l| l.starts_with("app:"))
                    .unwrap_or_default();
                let text = match (existing.is_empty(), known) {
                    (true, _) => content.clone(),
                    (false, true) => existing,
                    (false, false) => format!("{}\n{line}\n", existing.trim_end()),
                };
                replace(path, &text)
            }
            "etc/nsswitch.conf" if tmp.join(path).is_file() => Ok(()),
            _ => replace(path, &content),
        }
        .map_err(io("preparing the image's root filesystem"))?;
    }
    Ok(())
}

/// What one container runs.
#[derive(Clone, Copy)]
struct What<'a> {
    id: &'a str,
    app: &'a str,
    release: &'a ReleaseView,
    process: &'a str,
    index: u32,
    command: &'a str,
    port: u16,
    limits: Limits,
    /// Whether its init holds the app back until the namespace has its default route.
    wait_for_network: bool,
    /// Secrets and volumes.
    attach: &'a Attachments,
}

impl<'a> What<'a> {
    /// Instance `inst` of `release`, running `process` (none: an empty command, default
    /// limits).
    fn instance(
        inst: &'a InstanceRow,
        release: &'a ReleaseView,
        process: Option<&'a berth_core::model::ProcessSpec>,
        attach: &'a Attachments,
    ) -> Self {
        Self {
            id: &inst.id,
            app: &inst.app,
            release,
            process: &inst.process,
            index: inst.index,
            command: process.map_or("", |p| p.command.as_str()),
            port: inst.port,
            limits: process.map(|p| p.limits).unwrap_or_default(),
            wait_for_network: false,
            attach,
        }
    }
}

/// Launches and stops app containers.
pub struct Launcher {
    cfg: PlatformConfig,
    runtime: Arc<ByIsolation>,
    network: Network,
    images: ImageStore,
    logs: LogStore,
    secret_files: Option<berth_data::secret_files::SecretFiles>,
    build_files: Option<berth_data::secret_files::SecretFiles>,
}

impl Launcher {
    /// A launcher.
    pub fn new(
        cfg: PlatformConfig,
        runtime: Arc<ByIsolation>,
        network: Network,
        images: ImageStore,
        logs: LogStore,
    ) -> Self {
        Self {
            cfg,
            runtime,
            network,
            images,
            logs,
            secret_files: None,
            build_files: None,
        }
    }

    /// Gives instances their secrets through `files` (a RAM-backed directory).
    pub fn with_secret_files(mut self, files: berth_data::secret_files::SecretFiles) -> Self {
        self.secret_files = Some(files);
        self
    }

    /// Gives builds their secrets and raw output through `files` (a RAM-backed directory
    /// apart from instances').
    pub fn with_build_files(mut self, files: berth_data::secret_files::SecretFiles) -> Self {
        self.build_files = Some(files);
        self
    }

    /// The RAM-backed directory builds' secrets are opened into, where there is one.
    pub(crate) fn build_files(&self) -> Option<&berth_data::secret_files::SecretFiles> {
        self.build_files.as_ref()
    }

    /// Writes an instance's secrets where its container will find them; returns the mounts.
    fn secret_mounts(
        &self,
        id: &str,
        secrets: &ResolvedSecrets,
    ) -> Result<Vec<BindMount>, LaunchError> {
        let Some(files) = &self.secret_files else {
            return Ok(Vec::new());
        };
        let env = berth_runtime::init::encode_env_file(
            secrets.env.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let env = zeroize::Zeroizing::new(env);
        let written = files.write(id, &env, &secrets.files, APP_UID, APP_GID)?;
        Ok(vec![
            BindMount {
                source: written.env_dir,
                destination: SECRETS_ENV_DIR.into(),
                readonly: true,
            },
            BindMount {
                source: written.files_dir,
                destination: berth_core::state::SECRET_FILES_DIR.into(),
                readonly: true,
            },
        ])
    }

    /// The runtimes in use (crun for trusted apps, runsc for sandboxed ones).
    pub fn runtime(&self) -> &Arc<ByIsolation> {
        &self.runtime
    }

    /// Checks that containers of `isolation` can run on this host (runsc installed, for
    /// sandboxed apps).
    pub fn check_isolation(&self, isolation: Isolation) -> Result<(), RuntimeError> {
        self.runtime.runtime_for(isolation).preflight()
    }

    /// The bridge network.
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// The image's root filesystem, unpacked on first use and shared read-only by every
    /// instance of it. `own_root`: the image brings a whole root filesystem (else it holds
    /// the app under `/app`, on the host's `/usr`).
    pub fn rootfs(&self, image: &ImageRef, own_root: bool) -> Result<PathBuf, LaunchError> {
        let hex = image.digest.trim_start_matches("sha256:");
        let dir = self.cfg.rootfs_dir().join(hex);
        if dir.join(".berth-ready").exists() {
            return Ok(dir);
        }
        let tmp = self
            .cfg
            .rootfs_dir()
            .join(format!("{hex}.tmp-{}", crate::random_id(4)));
        self.images.unpack(image, &tmp)?;
        let prepared = if own_root {
            prepare_own_root(&tmp)
        } else {
            prepare_host_stack_root(&tmp)
        };
        if let Err(e) = prepared {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        std::fs::write(tmp.join(".berth-ready"), b"")
            .map_err(io("preparing the root filesystem"))?;
        if std::fs::rename(&tmp, &dir).is_err() {
            // Another deploy prepared it first.
            let _ = std::fs::remove_dir_all(&tmp);
        }
        Ok(dir)
    }

    fn instance_dir(&self, id: &str) -> PathBuf {
        self.cfg.instances_dir().join(id)
    }

    /// How an instance's container ended: the exit status its init recorded and whether the
    /// out-of-memory killer was involved. Call before the container is deleted.
    pub fn exit_info(&self, id: &str) -> ExitInfo {
        let code =
            berth_runtime::init::read_exit_status(&self.instance_dir(id).join("status/exit"));
        let oom_killed = berth_runtime::cgroups::oom_kills(&cgroup_path(id)).unwrap_or(0) > 0;
        let memory_limit = std::fs::read_to_string(self.instance_dir(id).join("memory-limit"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        ExitInfo {
            code: if oom_killed { code.or(Some(137)) } else { code },
            oom_killed,
            memory_limit,
        }
    }

    fn spec(&self, w: &What<'_>, netns: PathBuf) -> Result<ContainerSpec, LaunchError> {
        let What {
            id,
            app,
            release,
            process,
            index,
            command,
            port,
            limits,
            wait_for_network,
            attach,
        } = *w;
        let own_root = release.config.own_root.as_ref();
        let rootfs = self.rootfs(&release.image, own_root.is_some())?;
        let dir = self.instance_dir(id);
        let status = dir.join("status");
        std::fs::create_dir_all(&status).map_err(io(format!("creating {}", status.display())))?;
        let _ = std::fs::remove_file(status.join("exit"));
        berth_runtime::ownership::chown_tree(&status, APP_UID, APP_GID)?;
        std::fs::write(dir.join("memory-limit"), limits.memory_bytes.to_string())
            .map_err(io(format!("writing {}", dir.display())))?;
        let mut env: Vec<String> = vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            "HOME=/tmp".into(),
            "LANG=C.UTF-8".into(),
        ];
        let mut vars = release.config.env.clone();
        vars.insert("PORT".into(), port.to_string());
        vars.insert("BERTH_APP".into(), app.to_string());
        vars.insert("BERTH_RELEASE".into(), release.version.to_string());
        vars.insert("BERTH_PROCESS".into(), process.to_string());
        vars.insert("BERTH_INSTANCE".into(), index.to_string());
        if let Some(endpoint) = &self.cfg.otlp_endpoint {
            // OpenTelemetry SDKs read these; what the app sets itself wins.
            let version = release
                .image
                .commit()
                .map_or_else(|| format!("v{}", release.version), str::to_string);
            for (k, v) in [
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
                ("OTEL_SERVICE_NAME", app.to_string()),
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    format!(
                        "service.version={version},berth.release={},berth.process={process},berth.instance={index}",
                        release.version
                    ),
                ),
            ] {
                vars.entry(k.into()).or_insert(v);
            }
        }
        env.retain(|e| e.split_once('=').is_none_or(|(k, _)| !vars.contains_key(k)));
        env.extend(vars.iter().map(|(k, v)| format!("{k}={v}")));
        let secret_mounts = self.secret_mounts(id, &attach.secrets)?;
        let secrets_env = (!secret_mounts.is_empty()).then(|| {
            [
                "--secrets-env".to_string(),
                format!("{SECRETS_ENV_DIR}/{}", berth_data::secret_files::ENV_FILE),
            ]
        });
        let host_stack = if own_root.is_some() {
            vec![BindMount {
                source: "/usr".into(),
                destination: HOST_USR.into(),
                readonly: true,
            }]
        } else {
            vec![
                BindMount::ro_same("/usr"),
                BindMount::ro_same("/etc/ssl"),
                BindMount::ro_same("/etc/alternatives"),
            ]
        };
        let mut mounts = host_stack;
        mounts.extend([
            BindMount {
                source: self.cfg.berth_binary.clone(),
                destination: BERTH_IN_CONTAINER.into(),
                readonly: true,
            },
            BindMount {
                source: status,
                destination: STATUS_DIR.into(),
                readonly: false,
            },
        ]);
        mounts.extend(secret_mounts);
        // In an image's own root, berth's init runs through the host's dynamic loader from
        // the host's /usr (the image may have another C library, or none); the app it
        // starts is the image's own.
        let (launch, argv) = match own_root {
            Some(_) => (
                host_loader_argv().ok_or(LaunchError::NoLoader)?,
                own_root_argv(command, &rootfs),
            ),
            None => (Vec::new(), berth_core::procfile::command_argv(command)),
        };
        let cwd = own_root.map_or_else(|| "/app".to_string(), |r| r.workdir.clone());
        mounts.extend(attach.volumes.iter().map(|v| BindMount {
            source: v.source.clone(),
            destination: v.destination.clone().into(),
            readonly: false,
        }));
        Ok(ContainerSpec {
            id: id.to_string(),
            bundle_dir: dir.join("bundle"),
            rootfs,
            readonly_rootfs: true,
            args: launch
                .into_iter()
                .chain([
                    BERTH_IN_CONTAINER.into(),
                    "container-init".into(),
                    "--status-file".into(),
                    format!("{STATUS_DIR}/exit"),
                ])
                .chain(wait_for_network.then(|| "--wait-for-network".to_string()))
                .chain(secrets_env.into_iter().flatten())
                .chain(["--".to_string()])
                .chain(argv)
                .collect(),
            env,
            cwd,
            hostname: app.to_string(),
            mounts,
            network: NetworkMode::Namespace(netns),
            log_file: self.logs.raw_path(id),
            resources: Resources {
                memory_bytes: Some(limits.memory_bytes),
                cpu_millis: Some(limits.cpu_millis),
                pids: Some(limits.pids),
            },
            privileges: Privileges::app(release.config.capabilities.clone()),
            cgroup_path: Some(cgroup_path(id)),
            isolation: release.config.isolation,
        })
    }

    fn netns(&self, id: &str, address: &str) -> Result<PathBuf, LaunchError> {
        let addr: Ipv4Addr = address
            .parse()
            .map_err(|_| LaunchError::BadAddress(address.to_string()))?;
        Ok(self.network.attach(id, addr)?)
    }

    /// Starts (or restarts) an instance's container; returns its init's identity.
    pub fn start(
        &self,
        inst: &InstanceRow,
        release: &ReleaseView,
        attach: &Attachments,
    ) -> Result<Option<ProcessIdentity>, LaunchError> {
        let command = release.config.processes.get(&inst.process);
        let _ = self.runtime.delete(&inst.id);
        let addr: Ipv4Addr = inst
            .address
            .parse()
            .map_err(|_| LaunchError::BadAddress(inst.address.clone()))?;
        let mut what = What::instance(inst, release, command, attach);
        let started = match release.config.isolation {
            // gVisor copies the namespace's address and route into its own network stack
            // when the sandbox starts: they must be in place first.
            Isolation::Sandbox => self
                .network
                .attach(&inst.id, addr)
                .map_err(LaunchError::from)
                .and_then(|netns| Ok(self.runtime.start(&self.spec(&what, netns)?)?)),
            // crun starts while the namespace is being configured; berth's init holds the
            // app back until the default route is there.
            Isolation::Trusted => {
                let pending = self.network.begin_attach(&inst.id, addr)?;
                what.wait_for_network = true;
                let started = self
                    .spec(&what, pending.path())
                    .and_then(|spec| Ok(self.runtime.start(&spec)?));
                match (started, pending.finish()) {
                    (Ok(state), Ok(_)) => Ok(state),
                    (Ok(_), Err(e)) => {
                        let _ = self.runtime.delete(&inst.id);
                        Err(e.into())
                    }
                    (Err(e), _) => Err(e),
                }
            }
        };
        // A start that failed leaves no namespace (and no secrets) behind.
        let state = started.inspect_err(|_| {
            self.network.detach(&inst.id);
            self.forget_secrets(&inst.id);
        })?;
        Ok(state.pid.and_then(ProcessIdentity::of))
    }

    /// Prepares a trusted instance of a sleeping app for a quick wake-up: its network
    /// namespace configured and its container created, its process not started (what waits
    /// is the runtime's small init, none of the app's code). [`Launcher::resume`] starts it.
    /// Sandboxed instances are not prepared (a gVisor sandbox is a running kernel): `false`.
    pub fn prepare(
        &self,
        inst: &InstanceRow,
        release: &ReleaseView,
        attach: &Attachments,
    ) -> Result<bool, LaunchError> {
        if release.config.isolation != Isolation::Trusted {
            return Ok(false);
        }
        let command = release.config.processes.get(&inst.process);
        let netns = self.netns(&inst.id, &inst.address)?;
        let what = What::instance(inst, release, command, attach);
        let created = self
            .spec(&what, netns)
            .and_then(|spec| Ok(self.runtime.create(&spec)?));
        created.inspect_err(|_| self.discard(&inst.id))?;
        Ok(true)
    }

    /// Starts an instance [`Launcher::prepare`]d for it (its secrets and attachments as they
    /// were then); when that fails, starts it the usual way.
    pub fn resume(
        &self,
        inst: &InstanceRow,
        release: &ReleaseView,
        attach: &Attachments,
    ) -> Result<Option<ProcessIdentity>, LaunchError> {
        let bundle = self.instance_dir(&inst.id).join("bundle");
        match self.runtime.start_created(&inst.id, &bundle) {
            Ok(state) => Ok(state.pid.and_then(ProcessIdentity::of)),
            Err(e) => {
                tracing::warn!(instance = %inst.id, error = %e, "the prepared instance did not start; starting it anew");
                self.start(inst, release, attach)
            }
        }
    }

    /// Removes a prepared (or failed) instance: its container, namespace, secrets, files.
    pub fn discard(&self, id: &str) {
        let _ = self.runtime.delete(id);
        self.network.detach(id);
        self.forget_secrets(id);
        let _ = std::fs::remove_dir_all(self.instance_dir(id));
    }

    /// Whether the instance's container is alive according to the runtime.
    pub fn running(&self, id: &str) -> Option<ProcessIdentity> {
        match self.runtime.state(id) {
            Ok(Some(s)) if s.running => s.pid.and_then(ProcessIdentity::of),
            _ => None,
        }
    }

    /// Kills an instance abruptly (SIGKILL), as a crash would; its container stays for the
    /// supervisor to restart.
    pub fn kill(&self, id: &str) -> Result<(), berth_runtime::RuntimeError> {
        self.runtime.kill(id, "KILL")
    }

    /// Stops an instance: SIGTERM, up to `timeout` to exit, then SIGKILL; removes the
    /// container, its network namespace and its files.
    pub fn stop(&self, id: &str, timeout: Duration) {
        let _ = self.runtime.kill(id, "TERM");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.runtime.state(id) {
                Ok(Some(s)) if s.running => std::thread::sleep(Duration::from_millis(50)),
                _ => break,
            }
        }
        let _ = self.runtime.kill(id, "KILL");
        if let Err(e) = self.runtime.delete(id) {
            tracing::warn!(instance = id, error = %e, "removing container failed");
        }
        self.network.detach(id);
        self.forget_secrets(id);
        let _ = std::fs::remove_dir_all(self.instance_dir(id));
    }

    fn forget_secrets(&self, id: &str) {
        if let Some(files) = &self.secret_files {
            files.remove(id);
        }
    }

    /// The container id of a one-off container (`release` command, `test`) of a release.
    pub fn one_off_id(app: &str, version: u32, kind: &str) -> String {
        format!("{app}-v{version}-{kind}-{}", crate::random_id(3))
    }

    /// Runs `command` in a one-off container of `release` (its release command, its
    /// tests) to its end; its exit code.
    #[allow(clippy::too_many_arguments)]
    pub fn run_one_off(
        &self,
        id: &str,
        app: &str,
        release: &ReleaseView,
        command: &str,
        address: &str,
        log_file: PathBuf,
        attach: &Attachments,
    ) -> Result<i32, LaunchError> {
        let netns = self.netns(id, address)?;
        let spec = self.spec(
            &What {
                id,
                app,
                release,
                process: "release",
                index: 0,
                command,
                port: release.config.port.unwrap_or(crate::config::APP_PORT),
                limits: release.config.release_limits,
                wait_for_network: false,
                attach,
            },
            netns,
        );
        let mut spec = match spec {
            Ok(s) => s,
            Err(e) => {
                self.network.detach(id);
                self.forget_secrets(id);
                return Err(e);
            }
        };
        // With secrets about, the output goes through a RAM-backed file first and reaches
        // the log with secret values redacted, line by line as it comes.
        let output = RedactedOutput::start(
            self.secret_files.as_ref(),
            &format!("{id}.out"),
            &log_file,
            attach.secrets.redactor(),
        );
        spec.log_file = output.path().to_path_buf();
        let result = self.runtime.run_to_exit(&spec);
        output.finish();
        self.network.detach(id);
        self.forget_secrets(id);
        let _ = std::fs::remove_dir_all(self.instance_dir(id));
        Ok(result?)
    }
}

impl ResolvedSecrets {
    /// What hides these secrets' values in logs.
    pub fn redactor(&self) -> berth_observe::redact::Redactor {
        let files: Vec<(String, String)> = self
            .files
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).to_string()))
            .collect();
        berth_observe::redact::Redactor::new(
            self.env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .chain(files.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        )
    }
}

/// Output that reaches a log with secret values redacted: written to a RAM-backed file
/// (among the secret files) and copied to the log line by line as it comes, by a thread.
/// With nothing to redact, or no RAM-backed directory, it is the log itself.
pub(crate) struct RedactedOutput {
    path: std::path::PathBuf,
    pump: Option<(
        Arc<std::sync::atomic::AtomicBool>,
        std::thread::JoinHandle<()>,
    )>,
}

impl RedactedOutput {
    /// Starts redacting into `log` what is written to [`RedactedOutput::path`]; `name`
    /// names the raw file among the secret files.
    pub(crate) fn start(
        files: Option<&berth_data::secret_files::SecretFiles>,
        name: &str,
        log: &std::path::Path,
        redactor: berth_observe::redact::Redactor,
    ) -> Self {
        let raw = match files {
            Some(files) if !redactor.is_empty() => files.root().join(name),
            _ => {
                return Self {
                    path: log.to_path_buf(),
                    pump: None,
                }
            }
        };
        // Readable by root alone, whatever the directory's mode.
        {
            use std::os::unix::fs::OpenOptionsExt;
            let _ = std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(&raw);
        }
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let (done, raw, log) = (done.clone(), raw.clone(), log.to_path_buf());
            std::thread::spawn(move || redact_lines(&raw, &log, &redactor, &done))
        };
        Self {
            path: raw,
            pump: Some((done, thread)),
        }
    }

    /// Where the output is to be written.
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Copies what is left, then removes the raw file.
    pub(crate) fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some((done, thread)) = self.pump.take() {
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = thread.join();
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for RedactedOutput {
    /// A caller gone before the end (a cancelled deploy) leaves no pump or raw file behind.
    fn drop(&mut self) {
        self.stop();
    }
}

/// Copies complete lines from `raw` to `log`, redacted, until `done` is set and `raw` is
/// read to its end.
fn redact_lines(
    raw: &std::path::Path,
    log: &std::path::Path,
    redactor: &berth_observe::redact::Redactor,
    done: &std::sync::atomic::AtomicBool,
) {
    use std::io::{BufRead, Seek, Write};
    let mut offset = 0u64;
    let mut pending = Vec::new();
    // A line longer than this is passed on in pieces (a value split across two is not
    // redacted whole).
    const LONGEST_LINE: usize = 1 << 20;
    loop {
        let finished = done.load(std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut f) = std::fs::OpenOptions::new().read(true).write(true).open(raw) {
            if f.seek(std::io::SeekFrom::Start(offset)).is_ok() {
                let mut reader = std::io::BufReader::new(f);
                let mut out = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .ok();
                loop {
                    let mut buf = Vec::new();
                    match std::io::Read::take(&mut reader, LONGEST_LINE as u64)
                        .read_until(b'\n', &mut buf)
                    {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            offset += n as u64;
                            pending.extend_from_slice(&buf);
                            if pending.ends_with(b"\n") || finished || pending.len() > LONGEST_LINE
                            {
                                let line = String::from_utf8_lossy(&pending).to_string();
                                pending.clear();
                                if let Some(o) = out.as_mut() {
                                    let _ = o.write_all(redactor.apply(&line).as_bytes());
                                }
                            }
                        }
                    }
                }
                // What is copied no longer takes room in RAM.
                berth_observe::ingest::punch_hole(reader.get_ref(), 0, offset);
            }
        }
        if finished {
            if !pending.is_empty() {
                if let Ok(mut o) = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                {
                    let _ = writeln!(o, "{}", redactor.apply(&String::from_utf8_lossy(&pending)));
                }
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
