//! From berth's container description to an OCI runtime bundle (`config.json`).

use crate::RuntimeError;
use oci_spec::runtime::{
    LinuxBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxResourcesBuilder, Mount, MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder,
    UserBuilder,
};
use std::path::{Path, PathBuf};

/// A host path made visible inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// Host path.
    pub source: PathBuf,
    /// Path inside the container.
    pub destination: PathBuf,
    /// Mounted read-only.
    pub readonly: bool,
}

impl BindMount {
    /// A read-only bind of the same path inside and outside.
    pub fn ro_same(path: impl Into<PathBuf>) -> Self {
        let p = path.into();
        Self {
            source: p.clone(),
            destination: p,
            readonly: true,
        }
    }
}

/// Which network the container sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkMode {
    /// The host's network namespace (builds, which must reach the package registries).
    Host,
    /// A prepared namespace, by path (`/var/run/netns/NAME`).
    Namespace(PathBuf),
}

/// berth's description of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    /// Container id (unique under the runtime's state root).
    pub id: String,
    /// Directory that receives `config.json`.
    pub bundle_dir: PathBuf,
    /// Root filesystem (absolute).
    pub rootfs: PathBuf,
    /// Whether the root filesystem is mounted read-only (a tmpfs `/tmp` is always writable).
    pub readonly_rootfs: bool,
    /// argv of the container's first process.
    pub args: Vec<String>,
    /// `KEY=VALUE` pairs.
    pub env: Vec<String>,
    /// Working directory inside the container.
    pub cwd: String,
    /// Host name inside the container.
    pub hostname: String,
    /// Bind mounts besides the standard ones.
    pub mounts: Vec<BindMount>,
    /// Network namespace.
    pub network: NetworkMode,
    /// File that receives stdout and stderr, appended.
    pub log_file: PathBuf,
    /// Memory limit in bytes.
    pub memory_limit: Option<i64>,
}

/// Renders the OCI runtime spec for `c`.
pub fn render(c: &ContainerSpec) -> Result<Spec, RuntimeError> {
    let err = |e: oci_spec::OciSpecError| RuntimeError::Bundle {
        id: c.id.clone(),
        message: e.to_string(),
    };
    let mut namespaces = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ]
    .into_iter()
    .map(|t| LinuxNamespaceBuilder::default().typ(t).build())
    .collect::<Result<Vec<_>, _>>()
    .map_err(err)?;
    if let NetworkMode::Namespace(path) = &c.network {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .path(path.clone())
                .build()
                .map_err(err)?,
        );
    }

    let mut mounts = standard_mounts(&c.network).map_err(err)?;
    for m in &c.mounts {
        let mut options = vec!["rbind".to_string(), "nosuid".into(), "nodev".into()];
        if m.readonly {
            options.push("ro".into());
        }
        mounts.push(
            MountBuilder::default()
                .destination(m.destination.clone())
                .typ("bind")
                .source(m.source.clone())
                .options(options)
                .build()
                .map_err(err)?,
        );
    }

    let mut resources = LinuxResourcesBuilder::default();
    if let Some(limit) = c.memory_limit {
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(limit)
                .swap(limit)
                .build()
                .map_err(err)?,
        );
    }

    let process = ProcessBuilder::default()
        .terminal(false)
        .user(
            UserBuilder::default()
                .uid(0u32)
                .gid(0u32)
                .build()
                .map_err(err)?,
        )
        .args(c.args.clone())
        .env(c.env.clone())
        .cwd(c.cwd.clone())
        .no_new_privileges(true)
        .build()
        .map_err(err)?;

    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources.build().map_err(err)?)
        .masked_paths(
            [
                "/proc/acpi",
                "/proc/kcore",
                "/proc/keys",
                "/proc/latency_stats",
                "/proc/timer_list",
                "/proc/timer_stats",
                "/proc/sched_debug",
                "/proc/scsi",
                "/sys/firmware",
            ]
            .map(String::from)
            .to_vec(),
        )
        .readonly_paths(
            [
                "/proc/asound",
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger",
            ]
            .map(String::from)
            .to_vec(),
        )
        .build()
        .map_err(err)?;

    SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(c.rootfs.clone())
                .readonly(c.readonly_rootfs)
                .build()
                .map_err(err)?,
        )
        .hostname(c.hostname.clone())
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()
        .map_err(err)
}

fn standard_mounts(network: &NetworkMode) -> Result<Vec<Mount>, oci_spec::OciSpecError> {
    let m = |dest: &str, typ: &str, source: &str, opts: &[&str]| {
        MountBuilder::default()
            .destination(dest)
            .typ(typ)
            .source(source)
            .options(opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .build()
    };
    let sys = match network {
        // sysfs can only be mounted by the owner of the network namespace.
        NetworkMode::Namespace(_) => m(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        NetworkMode::Host => m(
            "/sys",
            "bind",
            "/sys",
            &["rbind", "nosuid", "noexec", "nodev", "ro"],
        )?,
    };
    Ok(vec![
        m("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        m(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        m(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
            ],
        )?,
        m(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        m(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        sys,
        m(
            "/tmp",
            "tmpfs",
            "tmpfs",
            &["nosuid", "nodev", "mode=1777", "size=262144k"],
        )?,
    ])
}

/// Writes `config.json` for `c` into its bundle directory.
pub fn write(c: &ContainerSpec) -> Result<(), RuntimeError> {
    let spec = render(c)?;
    std::fs::create_dir_all(&c.bundle_dir).map_err(RuntimeError::io(format!(
        "creating {}",
        c.bundle_dir.display()
    )))?;
    let path = c.bundle_dir.join("config.json");
    spec.save(&path).map_err(|e| RuntimeError::Bundle {
        id: c.id.clone(),
        message: format!("writing {}: {e}", path.display()),
    })
}

/// Prepares an empty root filesystem skeleton with the host's `/usr` merged layout:
/// `bin`, `lib`, `lib64`, `sbin` as symlinks into `/usr`, which the caller bind-mounts.
pub fn host_stack_skeleton(rootfs: &Path) -> Result<(), RuntimeError> {
    for dir in ["usr", "proc", "dev", "sys", "tmp", "etc", "run", "var/tmp"] {
        let p = rootfs.join(dir);
        std::fs::create_dir_all(&p)
            .map_err(RuntimeError::io(format!("creating {}", p.display())))?;
    }
    for link in ["bin", "lib", "lib64", "sbin"] {
        let p = rootfs.join(link);
        if p.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(format!("usr/{link}"), &p)
                .map_err(RuntimeError::io(format!("linking {}", p.display())))?;
        }
    }
    Ok(())
}

/// The host directories every container sees read-only: the toolchains and libraries of the
/// host ("host stack").
pub fn host_stack_mounts() -> Vec<BindMount> {
    vec![BindMount::ro_same("/usr")]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(network: NetworkMode) -> ContainerSpec {
        ContainerSpec {
            id: "hello-v1-web-0-abc".into(),
            bundle_dir: "/tmp/b".into(),
            rootfs: "/tmp/b/rootfs".into(),
            readonly_rootfs: true,
            args: vec!["/.berth/berth".into(), "init".into()],
            env: vec!["PORT=8000".into()],
            cwd: "/app".into(),
            hostname: "hello".into(),
            mounts: host_stack_mounts(),
            network,
            log_file: "/tmp/b/log".into(),
            memory_limit: Some(256 << 20),
        }
    }

    #[test]
    fn app_containers_join_their_namespace_and_stay_quiet_on_the_terminal() {
        let s = render(&spec(NetworkMode::Namespace("/var/run/netns/x".into()))).unwrap();
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["process"]["terminal"], false);
        assert_eq!(json["root"]["readonly"], true);
        let ns = json["linux"]["namespaces"].as_array().unwrap();
        assert!(ns
            .iter()
            .any(|n| n["type"] == "network" && n["path"] == "/var/run/netns/x"));
        assert_eq!(json["linux"]["resources"]["memory"]["limit"], 256 << 20);
        let usr = json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/usr")
            .unwrap();
        assert!(usr["options"].as_array().unwrap().contains(&"ro".into()));
    }

    #[test]
    fn builds_share_the_host_network() {
        let s = render(&spec(NetworkMode::Host)).unwrap();
        let json = serde_json::to_value(&s).unwrap();
        let ns = json["linux"]["namespaces"].as_array().unwrap();
        assert!(!ns.iter().any(|n| n["type"] == "network"));
        let sys = json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/sys")
            .unwrap();
        assert_eq!(sys["type"], "bind");
    }
}
