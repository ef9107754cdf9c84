//! Runs a [`BuildPlan`] in a build container and stores the result as an OCI image.
//!
//! The build container runs on the same [`Runtime`] as apps, but shares the host's network
//! namespace (the package registries are reached through the host's `/etc/hosts`, CA bundle
//! and package-manager config, as `docker build --network=host` would) and sees the host's
//! `/usr` and `/etc` read-only, plus the host's Rust toolchain when there is one. It writes
//! only to `/app` (the unpacked source) and `/cache` (this app's build cache).

use crate::build_user::BuildIdentity;
use crate::image::{ImageError, ImageMeta, ImageStore};
use crate::plan::BuildPlan;
use crate::providers::{self, DetectError};
use crate::source::{self, SourceError};
use berth_core::model::ImageRef;
use berth_core::spec::BerthToml;
use berth_runtime::bundle::{host_stack_skeleton, BindMount};
use berth_runtime::ownership::{chown_tree, private_dir};
use berth_runtime::{
    ContainerSpec, Isolation, NetworkMode, Privileges, Resources, Runtime, RuntimeError,
};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// Host environment variables a build inherits: CA bundles, proxies and registry settings the
/// host's package managers rely on.
/// Memory limit of a build container.
const BUILD_MEMORY_BYTES: u64 = 4 << 30;
/// Most processes and threads in a build container.
const BUILD_PIDS: u32 = 4096;

const PASSTHROUGH_ENV: &[&str] = &[
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "PIP_CERT",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_DEFAULT_TIMEOUT",
    "PIP_DISABLE_PIP_VERSION_CHECK",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
    "npm_config_registry",
    "RUSTUP_TOOLCHAIN",
];

/// The users and groups of an image that runs on its own: berth's app user.
const APP_PASSWD: &[u8] = b"root:x:0:0:root:/root:/usr/sbin/nologin\napp:x:10001:10001:app:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
const APP_GROUP: &[u8] = b"root:x:0:\napp:x:10001:\nnogroup:x:65534:\n";

/// Errors of a build.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Detect(#[from] DetectError),
    #[error("the build command failed with exit code {code}")]
    Failed { code: i32 },
    #[error("the build did not finish within {0} seconds and was stopped")]
    TimedOut(u64),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Dockerfile: {0}")]
    Dockerfile(String),
    #[error("Dockerfile: {0}")]
    Privileged(String),
    #[error("Dockerfile: FROM {image}: {reason}")]
    Base { image: String, reason: String },
    #[error("preparing the build user: {0}")]
    BuildUser(String),
    #[error("{0} is not installed ({1})")]
    MissingTool(&'static str, &'static str),
    #[error("{0}")]
    BadReference(String),
    #[error("the image is for {image}, and this machine runs {host}")]
    WrongPlatform { image: String, host: String },
    #[error("the image says no command to run (no Entrypoint or Cmd); give one as [processes.web] command in berth.toml")]
    NoCommand,
    #[error("the image exposes ports {0:?}: say which one the web process listens on with port = N in berth.toml")]
    Ports(Vec<u16>),
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    #[error("signing the image: {0}")]
    Signing(String),
    #[error("making the image run away from this machine: {0}")]
    Stack(#[from] crate::stack::StackError),
    #[error("{}", vulnerable_message(*.threshold, .found))]
    Vulnerable {
        threshold: crate::vulns::Severity,
        found: Vec<String>,
    },
    #[error("the vulnerability database: {0}")]
    VulnDb(String),
}

fn vulnerable_message(threshold: crate::vulns::Severity, found: &[String]) -> String {
    format!(
        "the image has {} known {} vulnerabilities (the gate is {threshold}): {}",
        found.len(),
        if threshold == crate::vulns::Severity::Critical {
            "critical".to_string()
        } else {
            format!("{threshold} or worse")
        },
        found.join("; ")
    )
}

/// Media type of an SPDX JSON document.
pub const SPDX_MEDIA_TYPE: &str = "application/spdx+json";

/// The tag of an image's SBOM (as `cosign attach sbom` names it).
pub fn sbom_tag(digest: &str) -> String {
    format!("{}.sbom", digest.replace(':', "-"))
}

/// Where builds happen on the host.
#[derive(Debug, Clone)]
pub struct FactoryPaths {
    /// Scratch space: one directory per build, removed afterwards.
    pub work_root: PathBuf,
    /// Build caches: one directory per app.
    pub cache_root: PathBuf,
    /// Dockerfile builds' scratch space and layer caches, which the build user can reach
    /// (each directory on the way is traversable, no more).
    pub build_user_root: PathBuf,
}

/// One build to run.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// App (image repository) name.
    pub app: String,
    /// Unique id of this build (container id, scratch dir name).
    pub build_id: String,
    /// Immutable image tag: git commit sha or content id.
    pub tag: String,
    /// App configuration from `berth.toml`.
    pub toml: BerthToml,
    /// File the build log is appended to.
    pub log_file: PathBuf,
    /// Longest a build may run.
    pub timeout: Duration,
    /// Isolation of the build container: a sandboxed app is built in gVisor too.
    pub isolation: Isolation,
    /// How registries are reached (image deploys, Dockerfile bases).
    pub access: crate::registry::Access,
    /// The image must run on its own, away from this machine (a Kubernetes node): a build
    /// on the host's stack gets the host files it needs ([`crate::stack`]).
    pub self_contained: bool,
    /// The network the build steps run in: a namespace of their own whose only way out is
    /// the build proxy. None: the host's (only where no bridge exists, e.g. unit tests).
    pub network: Option<BuildNetwork>,
    /// The app's own build identity: its build steps run as nobody else.
    pub identity: BuildIdentity,
    /// The app's build secrets, present only while the build runs.
    pub secrets: BuildSecrets,
}

/// An app's build secrets (`berth secrets set APP NAME=… --build`): the build steps see
/// them as environment variables (language providers) and as files under `/run/secrets`
/// (providers, and Dockerfile `RUN --mount=type=secret,id=NAME`); no image holds them,
/// and the control plane redacts their values from the build's log.
#[derive(Clone, Default)]
pub struct BuildSecrets {
    /// NAME and value of each.
    pub env: Vec<(String, zeroize::Zeroizing<String>)>,
    /// A RAM-backed directory of one file per secret, readable by the build identity only
    /// (mounted at `/run/secrets` in a provider's build; buildah gets the values in its
    /// environment).
    pub files_dir: Option<PathBuf>,
}

impl std::fmt::Debug for BuildSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildSecrets")
            .field(
                "names",
                &self.env.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("files_dir", &self.files_dir)
            .finish()
    }
}

impl BuildSecrets {
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.env.is_empty()
    }
}

/// A build's own network namespace and how it leaves it.
#[derive(Debug, Clone)]
pub struct BuildNetwork {
    /// The namespace (`/var/run/netns/…`), attached to berth's bridge.
    pub netns: PathBuf,
    /// `http://GATEWAY:PORT` of the build proxy; None for `[build] egress = "none"`.
    pub proxy: Option<String>,
}

impl BuildNetwork {
    /// The environment that sends package managers through the proxy (and nowhere else:
    /// no host that skips it).
    pub fn env(&self) -> Vec<(String, String)> {
        let Some(proxy) = &self.proxy else {
            return Vec::new();
        };
        [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "http_proxy",
            "https_proxy",
            "npm_config_proxy",
            "npm_config_https_proxy",
            "CARGO_HTTP_PROXY",
        ]
        .iter()
        .map(|k| ((*k).to_string(), proxy.clone()))
        .collect()
    }
}

/// What berth sets in every build's environment: no build secret may take these names.
const BUILD_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "PIP_CACHE_DIR",
    "npm_config_cache",
    "XDG_CACHE_HOME",
    "CI",
    "RUSTUP_HOME",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "npm_config_proxy",
    "npm_config_https_proxy",
    "CARGO_HTTP_PROXY",
];

/// Whether berth sets `name` for builds itself (a build secret needs a name of its own).
pub fn is_build_env(name: &str) -> bool {
    name.starts_with("BERTH_") || BUILD_ENV.contains(&name)
}

/// The host's proxy settings: passed to a build only in the host's network; a build in its
/// own namespace leaves through the build proxy and nothing else.
const HOST_PROXY_ENV: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildOutput {
    /// The image.
    pub image: ImageRef,
    /// Process commands, release command and environment baked into it.
    pub meta: ImageMeta,
    /// True when an image with this tag existed and nothing was built.
    pub reused: bool,
}

/// The factory: builds sources into images.
pub struct Factory {
    paths: FactoryPaths,
    images: ImageStore,
    runtime: Arc<dyn Runtime>,
    signer: Option<crate::signing::Signer>,
    gate: Option<VulnGate>,
}

/// The vulnerability gate: an OSV database and the least severity that fails a deploy.
#[derive(Debug, Clone)]
pub struct VulnGate {
    /// A directory of OSV JSON records.
    pub db: PathBuf,
    /// Findings at or above this fail the deploy.
    pub threshold: crate::vulns::Severity,
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BuildError {
    let context = context.into();
    move |source| BuildError::Io { context, source }
}

/// Appends a berth step line (`-----> …`) to a build log.
pub fn log_step(log_file: &Path, line: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_file)
    {
        let _ = writeln!(f, "-----> {line}");
    }
}

/// The host's Rust toolchain directories, if rustup is installed.
fn host_rust_toolchain() -> Option<(PathBuf, PathBuf)> {
    let home = std::env::var_os("HOME").map(PathBuf::from)?;
    let rustup = std::env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".rustup"));
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".cargo"))
        .join("bin");
    (rustup.is_dir() && cargo_bin.is_dir()).then_some((rustup, cargo_bin))
}

impl Factory {
    /// A factory writing images to `images` and running builds on `runtime`.
    pub fn new(paths: FactoryPaths, images: ImageStore, runtime: Arc<dyn Runtime>) -> Self {
        Self {
            paths,
            images,
            runtime,
            signer: None,
            gate: None,
        }
    }

    /// Checks every image against `gate` before it may run.
    pub fn with_vuln_gate(mut self, gate: VulnGate) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Signs every image it builds or pulls with `signer`.
    pub fn with_signer(mut self, signer: crate::signing::Signer) -> Self {
        self.signer = Some(signer);
        self
    }

    /// Checks `image`'s signature against the platform's key.
    pub fn verify(
        &self,
        image: &ImageRef,
    ) -> Result<crate::signing::Verdict, crate::signing::SigningError> {
        match &self.signer {
            Some(s) => crate::signing::verify(&self.images, image, s.public_pem()),
            None => Ok(crate::signing::Verdict::Unsigned),
        }
    }

    /// Writes the image's SBOM and signature beside it, once.
    fn attest(&self, req: &BuildRequest, image: &ImageRef) -> Result<(), BuildError> {
        let sbom_tag = sbom_tag(&image.digest);
        if self.images.find(&image.repository, &sbom_tag)?.is_none() {
            let inventory = self.images.inventory(image)?;
            let created = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
            let doc = inventory.spdx(&image.repository, &image.digest, &created.to_string());
            let bytes = serde_json::to_vec(&doc).map_err(|e| BuildError::Io {
                context: "writing the SBOM".into(),
                source: std::io::Error::other(e),
            })?;
            self.images.write_artifact(
                &image.repository,
                &sbom_tag,
                SPDX_MEDIA_TYPE,
                &bytes,
                &[],
            )?;
            log_step(
                &req.log_file,
                &format!("SBOM: {} packages (SPDX 2.3)", inventory.packages.len()),
            );
        }
        if let Some(gate) = &self.gate {
            self.check_vulnerabilities(req, image, gate)?;
        }
        if let Some(signer) = &self.signer {
            if self.verify(image).ok() != Some(crate::signing::Verdict::Verified) {
                signer
                    .sign(&self.images, image, &image.repository)
                    .map_err(|e| BuildError::Signing(e.to_string()))?;
                log_step(&req.log_file, &format!("Signed {}", image.digest));
            }
        }
        Ok(())
    }

    /// Scans the image's packages against the gate's database; findings at or above its
    /// threshold, unless berth.toml accepts them, fail the build.
    fn check_vulnerabilities(
        &self,
        req: &BuildRequest,
        image: &ImageRef,
        gate: &VulnGate,
    ) -> Result<(), BuildError> {
        let db =
            crate::vulns::VulnDb::load(&gate.db).map_err(|e| BuildError::VulnDb(e.to_string()))?;
        let inventory = self.images.inventory(image)?;
        let found = db.scan(&inventory);
        let accepted = &req.toml.security.accept_vulnerabilities;
        let mut blocking = Vec::new();
        for f in &found {
            let note = if f.accepted(accepted) {
                " (accepted in berth.toml)"
            } else if f.severity >= gate.threshold {
                blocking.push(f.to_string());
                ""
            } else {
                " (below the gate)"
            };
            log_step(&req.log_file, &format!("Vulnerability: {f}{note}"));
        }
        log_step(
            &req.log_file,
            &format!(
                "Vulnerability scan: {} packages against {} OSV records, {} found, {} at or above {}",
                inventory.packages.len(),
                db.len(),
                found.len(),
                blocking.len(),
                gate.threshold
            ),
        );
        if blocking.is_empty() {
            Ok(())
        } else {
            Err(BuildError::Vulnerable {
                threshold: gate.threshold,
                found: blocking,
            })
        }
    }

    /// The SPDX document of an image, if it has one.
    pub fn sbom(&self, image: &ImageRef) -> Result<Option<serde_json::Value>, BuildError> {
        Ok(self
            .images
            .read_artifact(&image.repository, &sbom_tag(&image.digest))?
            .and_then(|(bytes, _)| serde_json::from_slice(&bytes).ok()))
    }

    /// The image store the factory writes to.
    pub fn images(&self) -> &ImageStore {
        &self.images
    }

    /// Builds `archive` (a packed source) into an image, or reuses the image already built
    /// from the same source.
    pub fn build(&self, req: &BuildRequest, archive: &[u8]) -> Result<BuildOutput, BuildError> {
        let mut out = self.build_or_pull(req, archive)?;
        if req.self_contained && out.meta.own_root.is_none() {
            out = self.self_contained(req, out)?;
        }
        self.attest(req, &out.image)?;
        Ok(out)
    }

    /// A build on the host's stack as an image that runs on its own (tagged `TAG-stack`;
    /// made once per source).
    fn self_contained(
        &self,
        req: &BuildRequest,
        out: BuildOutput,
    ) -> Result<BuildOutput, BuildError> {
        let tag = format!("{}-stack", out.image.tag);
        if let Some(image) = self.images.find(&req.app, &tag)? {
            let meta = self.images.meta(&image)?;
            return Ok(BuildOutput { image, meta, ..out });
        }
        log_step(
            &req.log_file,
            "Adding the files of this machine's stack it runs on (an image that runs on its own)",
        );
        let unpacked = self.paths.work_root.join(format!("{}-stack", req.build_id));
        let _ = std::fs::remove_dir_all(&unpacked);
        let files = self
            .images
            .unpack(&out.image, &unpacked)
            .map_err(BuildError::from)
            .and_then(|()| {
                Ok(crate::stack::needed_files(
                    &unpacked.join("app"),
                    &out.meta,
                )?)
            });
        let _ = std::fs::remove_dir_all(&unpacked);
        let files = files?;
        let bytes: u64 = files
            .iter()
            .filter_map(|(_, host)| std::fs::symlink_metadata(host).ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum();
        let image = self.images.with_stack(
            &out.image,
            &tag,
            &files,
            &[("/etc/passwd", APP_PASSWD), ("/etc/group", APP_GROUP)],
        )?;
        log_step(
            &req.log_file,
            &format!(
                "Image {}:{tag} ({}): {} files of this machine's stack, {} MiB",
                req.app,
                image.digest,
                files.len(),
                bytes >> 20
            ),
        );
        let meta = self.images.meta(&image)?;
        Ok(BuildOutput { image, meta, ..out })
    }

    fn build_or_pull(&self, req: &BuildRequest, archive: &[u8]) -> Result<BuildOutput, BuildError> {
        if let Some(reference) = &req.toml.image {
            // An image from a registry: nothing is built, and a tag may have moved since.
            let work = self.paths.work_root.join(&req.build_id);
            let result = crate::foreign::pull(&self.images, req, reference, &work);
            let _ = std::fs::remove_dir_all(&work);
            return result;
        }
        if let Some(image) = self.images.find(&req.app, &req.tag)? {
            log_step(
                &req.log_file,
                &format!(
                    "Source {} was built before; reusing image {}",
                    req.tag, image.digest
                ),
            );
            let meta = self.images.meta(&image)?;
            if meta.own_root.is_some() {
                return crate::foreign::adopt(&self.images, req, image, true);
            }
            return Ok(BuildOutput {
                image,
                meta,
                reused: true,
            });
        }
        let dockerfile_build = req.toml.build.dockerfile.is_some()
            || ["Dockerfile", "Containerfile"]
                .iter()
                .any(|f| matches!(source::read_file(archive, f), Ok(Some(_))));
        let work = if dockerfile_build {
            crate::dockerfile::traversable(&self.paths.build_user_root.join("work"))?;
            self.paths.build_user_root.join("work").join(&req.build_id)
        } else {
            self.paths.work_root.join(&req.build_id)
        };
        let result = self.build_in(req, archive, &work);
        let _ = std::fs::remove_dir_all(&work);
        result
    }

    fn build_in(
        &self,
        req: &BuildRequest,
        archive: &[u8],
        work: &Path,
    ) -> Result<BuildOutput, BuildError> {
        let app_dir = work.join("app");
        source::unpack(archive, &app_dir)?;
        if let Some(dockerfile) = crate::dockerfile::dockerfile_of(&app_dir, &req.toml) {
            // A regular file inside the source, or refused by name before anything runs.
            crate::dockerfile::read_dockerfile(&app_dir, &dockerfile)?;
            let mut out = crate::dockerfile::build(
                &self.images,
                &self.paths.build_user_root.join("cache"),
                req,
                &app_dir,
                &dockerfile,
                work,
            )?;
            // The source tag, so that the same source is not built twice.
            out.image = self.images.tag(&out.image, &req.tag)?;
            return Ok(out);
        }
        let plan = providers::detect(&app_dir, &req.toml)?;
        log_step(&req.log_file, &format!("Detected a {} app", plan.provider));
        for (kind, cmd) in &plan.processes {
            log_step(&req.log_file, &format!("Process {kind}: {cmd}"));
        }
        if !plan.build_commands.is_empty() {
            self.run_build_container(req, &plan, work, &app_dir)?;
        }
        log_step(&req.log_file, "Writing OCI image");
        let mut env: BTreeMap<String, String> = plan.env.clone();
        for (k, v) in &req.toml.env {
            env.insert(k.clone(), v.clone());
        }
        let meta = ImageMeta::host_stack(
            plan.processes.clone(),
            plan.release_command.clone(),
            plan.test_command.clone(),
            env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        );
        let image = self.images.write(&req.app, &req.tag, &app_dir, &meta)?;
        log_step(
            &req.log_file,
            &format!("Image {}:{} ({})", req.app, req.tag, image.digest),
        );
        Ok(BuildOutput {
            image,
            meta,
            reused: false,
        })
    }

    fn run_build_container(
        &self,
        req: &BuildRequest,
        plan: &BuildPlan,
        work: &Path,
        app_dir: &Path,
    ) -> Result<(), BuildError> {
        let rootfs = work.join("rootfs");
        host_stack_skeleton(&rootfs)?;
        for d in ["app", "cache", "etc", "run/secrets"] {
            std::fs::create_dir_all(rootfs.join(d)).map_err(io("preparing the build root"))?;
        }
        let cache = self.paths.cache_root.join(&req.app);
        // The build's home is its own: nothing of the host user's (their package managers'
        // credentials among it) is copied in. Copies earlier versions made are removed.
        let home = cache.join("home");
        std::fs::create_dir_all(&home).map_err(io(format!("creating {}", home.display())))?;
        // The cache is the build identity's: only through directories, never links it put
        // there.
        let real_dir = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
        for rel in [".npmrc", ".config/pip/pip.conf", ".pip/pip.conf"] {
            let file = home.join(rel);
            let within = real_dir(&home)
                && Path::new(rel)
                    .ancestors()
                    .skip(1)
                    .filter(|a| !a.as_os_str().is_empty())
                    .all(|a| real_dir(&home.join(a)));
            if within {
                let _ = std::fs::remove_file(file);
            }
        }

        let mut mounts = vec![
            BindMount::ro_same("/usr"),
            BindMount::ro_same("/etc"),
            BindMount {
                source: app_dir.to_path_buf(),
                destination: "/app".into(),
                readonly: false,
            },
            BindMount {
                source: cache.clone(),
                destination: "/cache".into(),
                readonly: false,
            },
        ];
        if let Some(dir) = &req.secrets.files_dir {
            mounts.push(BindMount {
                source: dir.clone(),
                destination: "/run/secrets".into(),
                readonly: true,
            });
        }
        let mut path = String::from(
            "/app/.venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        if let Some((rustup, cargo_bin)) = host_rust_toolchain() {
            for p in [&rustup, &cargo_bin] {
                std::fs::create_dir_all(rootfs.join(p.strip_prefix("/").unwrap_or(p)))
                    .map_err(io("preparing the build root"))?;
                mounts.push(BindMount::ro_same(p.clone()));
            }
            path = format!("{}:{path}", cargo_bin.display());
            env.insert("RUSTUP_HOME".into(), rustup.display().to_string());
        }
        for key in PASSTHROUGH_ENV {
            if let Ok(v) = std::env::var(key) {
                env.insert((*key).to_string(), v);
            }
        }
        match &req.network {
            Some(net) => env.extend(net.env()),
            None => {
                for key in HOST_PROXY_ENV {
                    if let Ok(v) = std::env::var(key) {
                        env.insert((*key).to_string(), v);
                    }
                }
            }
        }
        env.insert("PATH".into(), path);
        env.insert("HOME".into(), "/cache/home".into());
        env.insert("PIP_CACHE_DIR".into(), "/cache/pip".into());
        env.insert("npm_config_cache".into(), "/cache/npm".into());
        env.insert("XDG_CACHE_HOME".into(), "/cache/xdg".into());
        env.insert("CI".into(), "true".into());
        for (k, v) in plan.env.iter().chain(req.toml.env.iter()) {
            if k != "PATH" {
                env.insert(k.clone(), v.clone());
            }
        }

        // Build secrets become variables from their files as the script starts: never in
        // the container's spec, which is written to disk.
        let exports = match &req.secrets.files_dir {
            Some(_) => req
                .secrets
                .env
                .iter()
                .map(|(name, _)| format!("export {name}=\"$(cat /run/secrets/{name})\""))
                .collect(),
            None => Vec::new(),
        };
        let script = std::iter::once("set -e".to_string())
            .chain(exports)
            .chain(
                plan.build_commands
                    .iter()
                    .map(|c| format!("echo '-----> Running: {}'\n{c}", c.replace('\'', ""))),
            )
            .collect::<Vec<_>>()
            .join("\n");
        let spec = ContainerSpec {
            id: format!("build-{}", req.build_id),
            bundle_dir: work.join("bundle"),
            rootfs,
            readonly_rootfs: false,
            args: vec!["/bin/sh".into(), "-c".into(), script],
            env: env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            cwd: "/app".into(),
            hostname: format!("build-{}", req.app),
            mounts,
            network: match &req.network {
                Some(net) => NetworkMode::Namespace(net.netns.clone()),
                None => NetworkMode::Host,
            },
            log_file: req.log_file.clone(),
            resources: Resources {
                memory_bytes: Some(BUILD_MEMORY_BYTES),
                cpu_millis: None,
                pids: Some(BUILD_PIDS),
            },
            privileges: Privileges {
                uid: req.identity.uid(),
                gid: req.identity.gid(),
                ..Privileges::app(Vec::new())
            },
            cgroup_path: Some(format!("/berth/build-{}", req.build_id)),
            isolation: req.isolation,
        };
        // The build runs as the app's own build identity: it owns its work tree and cache,
        // and nothing else (the host's /etc it sees is read-only and its secrets
        // unreadable); no other app's build can enter its cache.
        for dir in [app_dir, cache.as_path()] {
            chown_tree(dir, req.identity.uid(), req.identity.gid())?;
        }
        private_dir(&cache, req.identity.uid(), req.identity.gid())?;
        log_step(&req.log_file, &req.identity.describe());
        let network = match &req.network {
            Some(BuildNetwork { proxy: Some(_), .. }) => "own network, out through the build proxy",
            Some(BuildNetwork { proxy: None, .. }) => "own network, no egress",
            None => "host network",
        };
        log_step(
            &req.log_file,
            &match req.isolation {
                Isolation::Trusted => {
                    format!("Building in a container ({network}, host toolchains)")
                }
                Isolation::Sandbox => {
                    format!("Building in a gVisor sandbox ({network}, host toolchains)")
                }
            },
        );

        // Watchdog: stop the build container if it runs past the timeout.
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let runtime = Arc::clone(&self.runtime);
        let id = spec.id.clone();
        let timeout = req.timeout;
        let watchdog = std::thread::spawn(move || {
            if done_rx.recv_timeout(timeout).is_err() {
                let _ = runtime.kill(&id, "KILL");
                return true;
            }
            false
        });
        let result = self.runtime.run_to_exit(&spec);
        let _ = done_tx.send(());
        let timed_out = watchdog.join().unwrap_or(false);
        let code = result?;
        if timed_out {
            return Err(BuildError::TimedOut(req.timeout.as_secs()));
        }
        if code != 0 {
            return Err(BuildError::Failed { code });
        }
        Ok(())
    }
}
