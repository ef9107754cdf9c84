//! From berth's container description to an OCI runtime bundle (`config.json`).

use crate::RuntimeError;
pub use berth_core::policy::Isolation;
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxMemoryBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, Mount,
    MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder,
};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The user app processes run as: not root, and owning nothing on the host.
pub const APP_UID: u32 = 10_001;
/// The group app processes run as.
pub const APP_GID: u32 = 10_001;
/// CFS period the CPU quota is expressed in.
const CPU_PERIOD_US: u64 = 100_000;

/// Resource limits of one container; `None` leaves a resource unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resources {
    /// Memory (and memory + swap), bytes.
    pub memory_bytes: Option<u64>,
    /// CPU time per second, in thousandths of a CPU.
    pub cpu_millis: Option<u32>,
    /// Most processes and threads.
    pub pids: Option<u32>,
}

/// What the container's processes may do beyond an ordinary unprivileged user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Privileges {
    /// uid and gid of the first process.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Capabilities kept (`CAP_…` names); all others are dropped.
    pub capabilities: Vec<String>,
    /// Whether the seccomp filter of [`crate::seccomp`] applies.
    pub seccomp: bool,
}

impl Privileges {
    /// An app: unprivileged user, no capabilities, seccomp on.
    pub fn app(capabilities: Vec<String>) -> Self {
        Self {
            uid: APP_UID,
            gid: APP_GID,
            capabilities,
            seccomp: true,
        }
    }
}

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
    /// Resource limits.
    pub resources: Resources,
    /// User, capabilities and system-call filter.
    pub privileges: Privileges,
    /// cgroup path, relative to the hierarchy roots (`/berth/<id>`).
    pub cgroup_path: Option<String>,
    /// Which runtime runs it: crun (`trusted`) or gVisor's runsc (`sandbox`).
    pub isolation: Isolation,
}

/// Host threads a gVisor sandbox itself needs: its kernel and file proxy start with about
/// 100 between them.
const SANDBOX_BASE_THREADS: i64 = 512;
/// Host threads per app process under gVisor's ptrace platform: each address space is a
/// stub process that grows a thread for every kernel thread that ran it (seen: 500 for a
/// few dozen processes). A sandbox that cannot create one crashes, so be generous: the
/// app's own process count is enforced inside the sandbox.
const SANDBOX_THREADS_PER_PROCESS: i64 = 32;
/// Upper bound of a sandbox's host threads, whatever its app's limit.
const SANDBOX_MAX_THREADS: i64 = 65_536;

/// The host pids limit of a sandbox whose app may run `pids` processes.
pub fn sandbox_host_pids(pids: u32) -> i64 {
    (SANDBOX_BASE_THREADS + SANDBOX_THREADS_PER_PROCESS * i64::from(pids)).min(SANDBOX_MAX_THREADS)
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
    if let Some(limit) = c.resources.memory_bytes {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(limit)
                .swap(limit)
                .build()
                .map_err(err)?,
        );
    }
    if let Some(millis) = c.resources.cpu_millis {
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .quota(i64::from(millis) * CPU_PERIOD_US as i64 / 1000)
                .period(CPU_PERIOD_US)
                .build()
                .map_err(err)?,
        );
    }
    let mut rlimits = Vec::new();
    if let Some(pids) = c.resources.pids {
        let host_limit = match c.isolation {
            Isolation::Trusted => i64::from(pids),
            // Under gVisor the cgroup holds the sandbox's own threads too (its kernel, its
            // file proxy, a stub per address space), which a limit sized for the app would
            // starve. gVisor's kernel counts the app's processes itself and enforces
            // RLIMIT_NPROC (per sandbox, unlike the host kernel's per-user count); the host
            // limit only bounds the sandbox as a whole.
            Isolation::Sandbox => {
                rlimits.push(
                    PosixRlimitBuilder::default()
                        .typ(PosixRlimitType::RlimitNproc)
                        .soft(u64::from(pids))
                        .hard(u64::from(pids))
                        .build()
                        .map_err(err)?,
                );
                sandbox_host_pids(pids)
            }
        };
        resources = resources.pids(
            LinuxPidsBuilder::default()
                .limit(host_limit)
                .build()
                .map_err(err)?,
        );
    }

    let mut caps: HashSet<Capability> = HashSet::new();
    for name in &c.privileges.capabilities {
        let short = name.trim_start_matches("CAP_");
        let cap = Capability::from_str(short).map_err(|_| RuntimeError::Bundle {
            id: c.id.clone(),
            message: format!("unknown capability {name}"),
        })?;
        caps.insert(cap);
    }
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps.clone())
        .inheritable(caps.clone())
        .ambient(caps)
        .build()
        .map_err(err)?;

    let process = ProcessBuilder::default()
        .terminal(false)
        .user(
            UserBuilder::default()
                .uid(c.privileges.uid)
                .gid(c.privileges.gid)
                .build()
                .map_err(err)?,
        )
        .args(c.args.clone())
        .env(c.env.clone())
        .cwd(c.cwd.clone())
        .no_new_privileges(true)
        .capabilities(capabilities)
        .rlimits(rlimits)
        .build()
        .map_err(err)?;

    let mut linux = LinuxBuilder::default();
    if c.privileges.seccomp {
        linux = linux.seccomp(crate::seccomp::profile(c.isolation).map_err(err)?);
    }
    if let Some(path) = &c.cgroup_path {
        linux = linux.cgroups_path(PathBuf::from(path));
    }
    let linux = linux
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
                "/sys/devices/virtual/powercap",
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

/// A typical app container, for tests.
#[cfg(test)]
pub(crate) fn sample_spec(id: &str, network: NetworkMode) -> ContainerSpec {
    ContainerSpec {
        id: id.into(),
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
        resources: Resources {
            memory_bytes: Some(256 << 20),
            cpu_millis: Some(500),
            pids: Some(64),
        },
        privileges: Privileges::app(vec![]),
        cgroup_path: Some(format!("/berth/{id}")),
        isolation: Isolation::Trusted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(network: NetworkMode) -> ContainerSpec {
        sample_spec("hello-v1-web-0-abc", network)
    }

    #[test]
    fn sandboxes_count_app_processes_inside_and_leave_gvisor_room_on_the_host() {
        let mut c = spec(NetworkMode::Namespace("/var/run/netns/x".into()));
        let trusted = serde_json::to_value(render(&c).unwrap()).unwrap();
        assert_eq!(trusted["linux"]["resources"]["pids"]["limit"], 64);
        assert!(trusted["process"]["rlimits"]
            .as_array()
            .is_none_or(|r| r.is_empty()));
        c.isolation = Isolation::Sandbox;
        let sandbox = serde_json::to_value(render(&c).unwrap()).unwrap();
        let nproc = &sandbox["process"]["rlimits"][0];
        assert_eq!(nproc["type"], "RLIMIT_NPROC");
        assert_eq!(nproc["hard"], 64);
        assert_eq!(
            sandbox["linux"]["resources"]["pids"]["limit"],
            sandbox_host_pids(64)
        );
        assert!(sandbox_host_pids(64) > 64 * 5 + 100);
        assert_eq!(sandbox_host_pids(32_768), 65_536);
        assert!(!sandbox["linux"]["seccomp"]["syscalls"]
            .to_string()
            .contains("clone3"));
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
        assert_eq!(json["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(json["linux"]["resources"]["pids"]["limit"], 64);
        assert_eq!(json["linux"]["cgroupsPath"], "/berth/hello-v1-web-0-abc");
        let usr = json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/usr")
            .unwrap();
        assert!(usr["options"].as_array().unwrap().contains(&"ro".into()));
    }

    #[test]
    fn apps_run_unprivileged_with_no_capabilities_and_a_syscall_filter() {
        let s = render(&spec(NetworkMode::Namespace("/var/run/netns/x".into()))).unwrap();
        let json = serde_json::to_value(&s).unwrap();
        let p = &json["process"];
        assert_eq!(p["user"]["uid"], APP_UID);
        assert_eq!(p["noNewPrivileges"], true);
        for set in [
            "bounding",
            "effective",
            "permitted",
            "inheritable",
            "ambient",
        ] {
            assert_eq!(p["capabilities"][set], serde_json::json!([]), "{set}");
        }
        assert_eq!(json["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
        let masked = json["linux"]["maskedPaths"].as_array().unwrap();
        assert!(masked.contains(&"/proc/kcore".into()));
        let tmp = json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/tmp")
            .unwrap();
        assert_eq!(tmp["type"], "tmpfs");
    }

    #[test]
    fn granted_capabilities_land_in_every_set() {
        let mut c = spec(NetworkMode::Namespace("/var/run/netns/x".into()));
        c.privileges.capabilities = vec!["CAP_NET_BIND_SERVICE".into()];
        let json = serde_json::to_value(render(&c).unwrap()).unwrap();
        assert_eq!(
            json["process"]["capabilities"]["ambient"],
            serde_json::json!(["CAP_NET_BIND_SERVICE"])
        );
        c.privileges.capabilities = vec!["CAP_NOT_A_THING".into()];
        assert!(render(&c).is_err());
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
