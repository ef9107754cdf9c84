//! Cold start and idle memory of one instance, berth against the bare runtimes.
//!
//! Run through `bench/cold-start.sh`, which builds the app (a tiny static HTTP server) and
//! passes its path. For each of four ways to start it — a bare `crun run` of a hand-made
//! bundle, berth trusted, a bare `runsc run`, berth sandboxed — it measures, 20 times, the
//! time from "start the instance" to the first HTTP 200 from the instance's address, and
//! reports the median. Then it starts one idle instance of each berth level and reports the
//! RSS and PSS of every host process that instance costs.
//!
//! Traffic goes only to addresses on a bridge this program creates (10.79.0.0/24).

use berth_control::launcher::Launcher;
use berth_control::store::InstanceRow;
use berth_control::PlatformConfig;
use berth_core::api::ReleaseView;
use berth_core::limits::Limits;
use berth_core::model::{InstanceState, ProcessSpec, ReleaseConfig, ReleaseStatus};
use berth_core::policy::Isolation;
use berth_factory::builder::{BuildRequest, Factory, FactoryPaths};
use berth_factory::image::ImageStore;
use berth_observe::LogStore;
use berth_runtime::crun::Crun;
use berth_runtime::network::Network;
use berth_runtime::runsc::Runsc;
use berth_runtime::select::ByIsolation;
use berth_runtime::Runtime;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const RUNS: usize = 20;
const PORT: u16 = 8000;
const BRIDGE: &str = "bcold0";
const SUBNET: &str = "10.79.0.0/24";

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let server = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map(PathBuf::from)
        .ok_or("usage: cold_start PATH-TO-STATIC-SERVER (see bench/cold-start.sh)")?;
    let data = tempfile::Builder::new().prefix("berth-cold").tempdir()?;
    let mut cfg = PlatformConfig::new(data.path().to_path_buf());
    cfg.bridge = BRIDGE.into();
    cfg.subnet = SUBNET.parse()?;
    cfg.berth_binary = find_berth_binary()?;
    let network = Network {
        bridge: BRIDGE.into(),
        subnet: cfg.subnet,
    };
    network.ensure_bridge()?;
    let result = run(&cfg, &network, &server);
    network.remove_bridge();
    result
}

/// berth's own binary (the in-container init), next to this bench's target directory.
fn find_berth_binary() -> Res<PathBuf> {
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(3) {
        let candidate = dir.join("berth");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err("build berth first: cargo build --release --bin berth".into())
}

fn run(cfg: &PlatformConfig, network: &Network, server: &Path) -> Res<()> {
    let addresses: Vec<_> = cfg.subnet.instance_addresses().collect();
    let addr = |i: usize| addresses[i % addresses.len()];

    // The floor: the runtimes alone, on a bundle with nothing but the server.
    let bare_root = cfg.data_dir.join("bare");
    let rootfs = bare_root.join("rootfs");
    for dir in ["proc", "dev"] {
        std::fs::create_dir_all(rootfs.join(dir))?;
    }
    std::fs::copy(server, rootfs.join("server"))?;
    let runtimes = Arc::new(ByIsolation::new(
        Arc::new(Crun::new(cfg.runtime_state_dir())),
        Arc::new(Runsc::new(cfg.sandbox_state_dir())),
    ));
    runtimes.preflight()?;
    runtimes.runtime_for(Isolation::Sandbox).preflight()?;
    let images = ImageStore::new(cfg.images_dir());
    let logs = LogStore::open(cfg.logs_dir())?;
    let release = release_of(cfg, server, &images, runtimes.clone())?;
    let launcher = Launcher::new(cfg.clone(), runtimes, network.clone(), images, logs);

    // The four ways take turns, so that drift in the machine's load hits each alike. Run 0
    // of each warms caches and is not counted.
    let mut times: [Vec<Duration>; 4] = Default::default();
    for i in 0..=RUNS {
        for (slot, runtime) in [(0, "crun"), (2, "runsc")] {
            // The floor: the runtime alone, on a bundle with nothing but the server, in a
            // namespace prepared beforehand.
            let id = format!("cold-{runtime}-{i}");
            let ip = addr(slot + 4 * i);
            let netns = network.attach(&id, ip)?;
            let bundle = bare_root.join(&id);
            std::fs::create_dir_all(&bundle)?;
            std::fs::write(
                bundle.join("config.json"),
                bare_config(&rootfs, &netns, runtime)?,
            )?;
            let root = cfg.data_dir.join(format!("run-{runtime}"));
            let started = Instant::now();
            bare_start(runtime, &root, &bundle, &id)?;
            first_answer(SocketAddr::from((ip, PORT)))?;
            let elapsed = started.elapsed();
            if i > 0 {
                times[slot].push(elapsed);
            }
            bare_delete(runtime, &root, &id);
            network.detach(&id);

            // berth: the launcher starts an instance of a release of the same server
            // (network namespace included).
            let (slot, isolation) = match runtime {
                "crun" => (1, Isolation::Trusted),
                _ => (3, Isolation::Sandbox),
            };
            let mut rel = release.clone();
            rel.config.isolation = isolation;
            let ip = addr(slot + 4 * i);
            let inst = instance(&format!("cold-{}-{i}", isolation.as_str()), ip);
            let started = Instant::now();
            launcher.start(&inst, &rel, &Default::default())?;
            first_answer(SocketAddr::from((ip, PORT)))?;
            let elapsed = started.elapsed();
            if i > 0 {
                times[slot].push(elapsed);
            }
            launcher.stop(&inst.id, Duration::ZERO);
        }
    }
    let [crun, berth_trusted, runsc, berth_sandbox] = times.map(|mut t| median(&mut t));
    println!("cold start to first HTTP 200, median of {RUNS} (ms):");
    println!("  bare crun        {:>8.1}", ms(crun));
    println!(
        "  berth trusted    {:>8.1}   ({:.2}x bare crun; target <= 1.5x)",
        ms(berth_trusted),
        ms(berth_trusted) / ms(crun)
    );
    println!("  bare runsc       {:>8.1}", ms(runsc));
    println!(
        "  berth sandbox    {:>8.1}   ({:.2}x bare runsc; target <= 2x)",
        ms(berth_sandbox),
        ms(berth_sandbox) / ms(runsc)
    );

    // Idle memory: one instance of each level, left alone for a moment.
    println!("idle memory per instance (host processes it costs, KiB):");
    for isolation in [Isolation::Trusted, Isolation::Sandbox] {
        let mut rel = release.clone();
        rel.config.isolation = isolation;
        let inst = instance(&format!("idle-{}", isolation.as_str()), addr(250));
        launcher.start(&inst, &rel, &Default::default())?;
        first_answer(SocketAddr::from((addr(250), PORT)))?;
        std::thread::sleep(Duration::from_secs(2));
        let pids = cgroup_pids(&berth_control::launcher::cgroup_path(&inst.id));
        let (mut rss, mut pss) = (0, 0);
        let mut names = Vec::new();
        for pid in &pids {
            let (r, p) = rollup(*pid);
            rss += r;
            pss += p;
            names.push(
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            );
        }
        names.sort();
        names.dedup();
        println!(
            "  {:<8} RSS {rss:>7}  PSS {pss:>7}  ({} processes: {})",
            isolation.as_str(),
            pids.len(),
            names.join(", ")
        );
        launcher.stop(&inst.id, Duration::ZERO);
    }
    println!("  (berth's own processes are shared by every instance: see bench/cold-start.sh)");
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    let n = times.len();
    if n == 0 {
        return Duration::ZERO;
    }
    (times[(n - 1) / 2] + times[n / 2]) / 2
}

/// Polls `addr` with a GET until it answers 200 (bounded: 30 s).
fn first_answer(addr: SocketAddr) -> Res<()> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            if s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_ok() {
                let mut buf = [0u8; 64];
                if let Ok(n) = s.read(&mut buf) {
                    if buf[..n].starts_with(b"HTTP/1.0 200") {
                        return Ok(());
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Err(format!("{addr} never answered").into())
}

fn bare_config(rootfs: &Path, netns: &Path, runtime: &str) -> Res<String> {
    let mut spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 10001, "gid": 10001},
            "args": ["/server"],
            "env": [format!("PORT={PORT}")],
            "cwd": "/",
            "noNewPrivileges": true
        },
        "root": {"path": rootfs, "readonly": true},
        "hostname": "cold",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]}
        ],
        "linux": {
            "namespaces": [
                {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
                {"type": "network", "path": netns}
            ]
        }
    });
    if runtime == "crun" {
        spec["linux"]["cgroupsPath"] = serde_json::json!("/berth-bench");
    }
    Ok(serde_json::to_string_pretty(&spec)?)
}

fn bare_start(runtime: &str, root: &Path, bundle: &Path, id: &str) -> Res<()> {
    let mut cmd = match runtime {
        // The same workaround berth applies for runsc's sandboxed network on this kernel.
        "runsc" => {
            let mut c = Command::new("unshare");
            c.args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg("mount -t tmpfs x /proc/sys/net && exec \"$0\" \"$@\"")
                .args(["runsc", "--platform=ptrace", "--network=sandbox"]);
            c
        }
        _ => Command::new("crun"),
    };
    let status = cmd
        .arg("--root")
        .arg(root)
        .args(["run", "--detach", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        return Err(format!("{runtime} run {id} failed").into());
    }
    Ok(())
}

fn bare_delete(runtime: &str, root: &Path, id: &str) {
    let _ = Command::new(runtime)
        .arg("--root")
        .arg(root)
        .args(["delete", "--force", id])
        .output();
}

/// An image and release of the server, built by berth's factory (a Procfile app: nothing
/// to compile, no build container).
fn release_of(
    cfg: &PlatformConfig,
    server: &Path,
    images: &ImageStore,
    runtime: Arc<ByIsolation>,
) -> Res<ReleaseView> {
    let src = cfg.data_dir.join("src");
    std::fs::create_dir_all(&src)?;
    std::fs::copy(server, src.join("server"))?;
    std::fs::write(src.join("Procfile"), "web: /app/server\n")?;
    let archive = berth_factory::source::pack(&src, 64 << 20)?;
    let factory = Factory::new(
        FactoryPaths {
            work_root: cfg.builds_dir(),
            cache_root: cfg.cache_dir(),
            build_user_root: cfg.build_user_dir(),
        },
        images.clone(),
        runtime,
    );
    let out = factory.build(
        &BuildRequest {
            app: "cold".into(),
            build_id: "cold-build".into(),
            tag: berth_factory::source::content_id(&archive),
            toml: Default::default(),
            log_file: cfg.data_dir.join("build.log"),
            timeout: Duration::from_secs(60),
            isolation: Isolation::Trusted,
            access: Default::default(),
            self_contained: false,
            network: None,
            identity: berth_factory::build_user::BuildIdentity::new(1)?,
            secrets: Default::default(),
        },
        &archive,
    )?;
    let mut processes = std::collections::BTreeMap::new();
    processes.insert(
        "web".to_string(),
        ProcessSpec {
            command: "/app/server".into(),
            instances: 1,
            limits: Limits::default(),
        },
    );
    Ok(ReleaseView {
        app: "cold".into(),
        version: 1,
        image: out.image,
        config: ReleaseConfig {
            processes,
            ..Default::default()
        },
        description: "cold start benchmark".into(),
        status: ReleaseStatus::Active,
        actor: "bench".into(),
        created_at: 0,
        failure: None,
    })
}

fn instance(id: &str, ip: std::net::Ipv4Addr) -> InstanceRow {
    InstanceRow {
        id: id.to_string(),
        app: "cold".into(),
        release: 1,
        process: "web".into(),
        index: 0,
        address: ip.to_string(),
        port: PORT,
        state: InstanceState::Starting,
        restarts: 0,
        last_exit: None,
        last_exit_reason: None,
        started_at: 0,
        pid: None,
    }
}

/// Host processes in a container's cgroup (v1 pids hierarchy, else v2).
fn cgroup_pids(path: &str) -> Vec<u32> {
    let rel = path.trim_start_matches('/');
    for base in [
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup",
    ] {
        if let Ok(text) = std::fs::read_to_string(Path::new(base).join(rel).join("cgroup.procs")) {
            return text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        }
    }
    Vec::new()
}

/// RSS and PSS of a process, KiB, from `/proc/PID/smaps_rollup`.
fn rollup(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (field("Rss:"), field("Pss:"))
}
