//! Containment under attack: a hostile app, deployed next to a neighbour, tries to reach
//! other apps, cloud metadata, SMTP, the host and berth itself; to read and write files it
//! must not; to escape through system calls; to fork-bomb, burn CPU and exhaust memory.
//! Every attempt must fail while the neighbour and berth's API keep answering.
//!
//! No packet leaves the machine: berth runs inside a network namespace the test creates
//! ("lab host"), whose default route leads to a second namespace ("world") whose loopback
//! interface holds the cloud metadata addresses and a documentation address (203.0.113.25)
//! with listeners on them. The test first proves those listeners answer from the lab host
//! (no berth policy in the way), then that berth's policy stops the app reaching them.
use crate::common;

use common::{examples, Platform};
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

const OUTSIDE: &str = "203.0.113.25";
const METADATA: &[&str] = &["169.254.169.254", "169.254.170.2", "100.100.100.200"];

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces: the lab host berth runs in, and the "world" behind its default route.
struct Lab {
    host: String,
    world: String,
    listener: Option<Child>,
}

impl Lab {
    fn new() -> Self {
        static LABS: AtomicU32 = AtomicU32::new(0);
        let tag = (std::process::id() % 10_000) * 10 + LABS.fetch_add(1, Ordering::SeqCst);
        let mut lab = Lab {
            host: format!("bl-host-{tag}"),
            world: format!("bl-world-{tag}"),
            listener: None,
        };
        let (h, w) = (lab.host.clone(), lab.world.clone());
        let (h, w) = (h.as_str(), w.as_str());
        let (lh, lw) = (format!("blh{tag}"), format!("blw{tag}"));
        ip(&["netns", "add", h]);
        ip(&["netns", "add", w]);
        ip(&["link", "add", &lh, "type", "veth", "peer", "name", &lw]);
        ip(&["link", "set", &lh, "netns", h]);
        ip(&["link", "set", &lw, "netns", w]);
        ip(&["-n", h, "addr", "add", "198.51.100.1/24", "dev", &lh]);
        ip(&["-n", h, "link", "set", &lh, "up"]);
        ip(&["-n", h, "link", "set", "lo", "up"]);
        ip(&["-n", h, "route", "add", "default", "via", "198.51.100.2"]);
        ip(&["-n", w, "addr", "add", "198.51.100.2/24", "dev", &lw]);
        ip(&["-n", w, "link", "set", &lw, "up"]);
        ip(&["-n", w, "link", "set", "lo", "up"]);
        // This kernel has no dummy interfaces: the world's loopback holds the addresses.
        for addr in METADATA.iter().chain([&OUTSIDE]) {
            ip(&["-n", w, "addr", "add", &format!("{addr}/32"), "dev", "lo"]);
        }
        let script = "import socket,threading\n\
            def serve(port):\n  s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n  s.bind(('0.0.0.0',port)); s.listen(64)\n  while True:\n    c,_=s.accept(); c.sendall(b'world\\n'); c.close()\n\
            for p in (80,25,587):\n  threading.Thread(target=serve,args=(p,),daemon=True).start()\n\
            threading.Event().wait()\n";
        let child = Command::new("ip")
            .args(["netns", "exec", w, "python3", "-c", script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("world listener");
        lab.listener = Some(child);
        lab
    }

    /// Connects from the lab host itself (no berth policy involved).
    fn reachable_from_host(&self, addr: &str, port: u16) -> bool {
        let script = "import socket,sys\ntry:\n  s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=3); print(s.recv(16).decode().strip())\nexcept OSError as e:\n  print('no', e)\n";
        for _ in 0..50 {
            let out = Command::new("ip")
                .args(["netns", "exec", &self.host, "python3", "-c", script, addr])
                .arg(port.to_string())
                .output()
                .expect("python3");
            if String::from_utf8_lossy(&out.stdout).trim() == "world" {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut c) = self.listener.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.host])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.world])
            .status();
    }
}

fn app_copy(dir: &std::path::Path, from: &std::path::Path, name: &str, toml_extra: &str) {
    common::copy_dir(from, dir);
    let base = std::fs::read_to_string(from.join("berth.toml")).unwrap_or_default();
    let body: String = base
        .lines()
        .filter(|l| !l.starts_with("name =") && !l.starts_with("isolation ="))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(
        dir.join("berth.toml"),
        format!("name = \"{name}\"\n{toml_extra}\n{body}\n"),
    )
    .expect("berth.toml");
}

/// CPU seconds the host has given container `id` (its cgroup, v1 or v2).
fn cgroup_cpu_seconds(id: &str) -> Option<f64> {
    if let Ok(ns) =
        std::fs::read_to_string(format!("/sys/fs/cgroup/cpuacct/berth/{id}/cpuacct.usage"))
    {
        return ns.trim().parse::<f64>().ok().map(|n| n / 1e9);
    }
    let stat = std::fs::read_to_string(format!("/sys/fs/cgroup/berth/{id}/cpu.stat")).ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|n| n.trim().parse::<f64>().ok())
        .map(|us| us / 1e6)
}

/// A connection attempt the policy denied: refused at once (a TCP reset from the firewall),
/// not left to time out.
fn refused(v: &Value) {
    assert_eq!(v["ok"], false, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or("")
            .contains("Connection refused"),
        "denied connections fail at once: {v}"
    );
}

fn ask(p: &Platform, path: &str) -> Value {
    let (status, body) = p.get("hostile", path);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

fn address(p: &Platform, app: &str) -> String {
    let ps = p.json(&["ps", app]);
    let addr = ps[0]["address"].as_str().expect("address").to_string();
    addr.split(':').next().expect("ip").to_string()
}

fn neighbour_answers(p: &Platform) -> bool {
    let (status, body) = p.get("neighbor", "/");
    if status != 200 {
        eprintln!("neighbour answered {status}: {body}");
    }
    status == 200
}

fn contained(isolation: &str) {
    // One lab at a time: CPU and memory measurements must not compete with another lab's.
    static ONE_LAB: Mutex<()> = Mutex::new(());
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::new();
    // The outside world answers when berth's policy is not in the way.
    for addr in METADATA.iter().chain([&OUTSIDE]) {
        assert!(
            lab.reachable_from_host(addr, 80),
            "{addr}:80 from the lab host"
        );
    }
    assert!(
        lab.reachable_from_host(OUTSIDE, 25),
        "SMTP from the lab host"
    );

    let p = Platform::start_in(Some(&lab.host), &[]);
    let tmp = tempfile::tempdir().expect("tmp");
    for name in ["friend", "neighbor"] {
        let dir = tmp.path().join(name);
        app_copy(&dir, &examples().join("hello"), name, "");
        p.ok(&["deploy", dir.to_str().expect("path")]);
    }
    // An app of another project, which accepts hostile (named with its project).
    p.ok(&["projects", "create", "elsewhere"]);
    let stranger_dir = tmp.path().join("stranger");
    app_copy(
        &stranger_dir,
        &examples().join("hello"),
        "stranger",
        "[network]\naccept_from = [\"default/hostile\"]",
    );
    p.ok(&[
        "deploy",
        stranger_dir.to_str().expect("path"),
        "--project",
        "elsewhere",
    ]);
    let hostile = tmp.path().join("hostile");
    let fixture =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile");
    app_copy(
        &hostile,
        &fixture,
        "hostile",
        &format!("isolation = \"{isolation}\""),
    );
    // Its release command acts for it: it reaches the app it may reach, and nothing else.
    let friend = address(&p, "friend");
    let neighbor = address(&p, "neighbor");
    let mut toml = std::fs::read_to_string(hostile.join("berth.toml"))
        .expect("berth.toml")
        .replace("allow = [\"friend\"]", "allow = [\"friend\", \"stranger\"]");
    toml.push_str(&format!(
        "\n[env]\nPROBE = \"{friend}:8000 {neighbor}:8000 {}:80 {OUTSIDE}:25\"\n",
        METADATA[0]
    ));
    std::fs::write(hostile.join("berth.toml"), toml).expect("berth.toml");
    p.ok(&["deploy", hostile.to_str().expect("path")]);
    let said = p.ok(&["logs", "hostile", "--build"]);
    let release_said = |target: String, outcome: &str| {
        let line = format!("release probe {target}: {outcome}");
        assert!(said.contains(&line), "{line}\n{said}");
        line
    };
    // A build's install script tries the same from the build's own namespace: nothing
    // but the build proxy answers, and the proxy tunnels to no address given by number,
    // no loopback, no SMTP.
    let gateway_ip = {
        let mut parts: Vec<&str> = friend.split('.').collect();
        parts[3] = "1";
        parts.join(".")
    };
    let builder = tmp.path().join("builder");
    common::copy_dir(
        &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile-build"),
        &builder,
    );
    std::fs::write(
        builder.join("berth.toml"),
        format!(
            "name = \"builder\"\nisolation = \"{isolation}\"\n[env]\nPROBE = \"{friend}:8000 {gateway_ip}:{edge} {}:80 {OUTSIDE}:80\"\nVIA_PROXY = \"{OUTSIDE}:80 localhost:{edge} [::1]:{edge} registry.example.com:25\"\n",
            METADATA[0],
            edge = p.edge_port,
        ),
    )
    .expect("berth.toml");
    p.ok(&["deploy", builder.to_str().expect("path")]);
    let mut built = String::new();
    assert!(
        common::eventually(Duration::from_secs(60), || {
            let (status, body) = p.get("builder", "/");
            built = body;
            status == 200
        }),
        "the builder never answered: {built}"
    );
    for target in [
        format!("{friend}:8000"),
        format!("{gateway_ip}:{}", p.edge_port),
        format!("{}:80", METADATA[0]),
        format!("{OUTSIDE}:80"),
    ] {
        let line = format!("build probe {target}: blocked");
        assert!(built.contains(&line), "{line}\n{built}");
    }
    for target in [
        format!("{OUTSIDE}:80"),
        format!("localhost:{}", p.edge_port),
        format!("[::1]:{}", p.edge_port),
        "registry.example.com:25".to_string(),
    ] {
        let line = format!("build proxy {target}: HTTP/1.1 403");
        assert!(built.contains(&line), "{line}\n{built}");
    }
    let log = p.ok(&["logs", "builder", "--build"]);
    assert!(log.contains("out through the build proxy"), "{log}");

    let mut release_lines = vec![
        release_said(format!("{friend}:8000"), "reached"),
        release_said(format!("{neighbor}:8000"), "blocked"),
        release_said(format!("{}:80", METADATA[0]), "blocked"),
        release_said(format!("{OUTSIDE}:25"), "blocked"),
    ];
    assert!(neighbour_answers(&p));

    let mut table: Vec<(String, String)> = Vec::new();
    for line in release_lines.drain(..) {
        table.push(("release command".into(), line));
    }
    let mut record = |what: &str, v: &Value| {
        table.push((what.to_string(), v.to_string()));
    };

    // Network.
    let gateway = {
        let a = address(&p, "neighbor");
        let mut parts: Vec<&str> = a.split('.').collect();
        parts[3] = "1";
        parts.join(".")
    };
    let v = ask(&p, &format!("/connect?host={friend}&port=8000"));
    record("connect to an allowed app (friend)", &v);
    assert_eq!(v["ok"], true, "allowed app must be reachable: {v}");
    let v = ask(&p, &format!("/connect?host={neighbor}&port=8000"));
    record("connect to another app (neighbor)", &v);
    refused(&v);
    let stranger = address(&p, "stranger");
    let v = ask(&p, &format!("/connect?host={stranger}&port=8000"));
    record(
        "connect to an allowed app of another project that accepts it (stranger)",
        &v,
    );
    assert_eq!(v["ok"], true, "an accepting app must be reachable: {v}");
    // It stops accepting: its next release closes the way, though hostile's allow is
    // unchanged.
    app_copy(&stranger_dir, &examples().join("hello"), "stranger", "");
    p.ok(&["deploy", stranger_dir.to_str().expect("path")]);
    let stranger = address(&p, "stranger");
    let v = ask(&p, &format!("/connect?host={stranger}&port=8000"));
    record(
        "connect to an allowed app of another project that no longer accepts it",
        &v,
    );
    refused(&v);
    for addr in METADATA {
        let v = ask(&p, &format!("/connect?host={addr}&port=80"));
        record(&format!("connect to metadata {addr}:80"), &v);
        refused(&v);
    }
    for port in [25, 587] {
        let v = ask(&p, &format!("/connect?host={OUTSIDE}&port={port}"));
        record(&format!("connect to SMTP {OUTSIDE}:{port}"), &v);
        refused(&v);
    }
    let v = ask(&p, &format!("/connect?host={OUTSIDE}&port=80"));
    record(&format!("connect to {OUTSIDE}:80 (open egress)"), &v);
    assert_eq!(v["ok"], true, "ordinary egress is allowed: {v}");
    assert_eq!(v["data"], "world\n");
    for (what, port) in [("berth API", p.api_port), ("edge", p.edge_port)] {
        let v = ask(&p, &format!("/connect?host={gateway}&port={port}"));
        record(
            &format!("connect to the host's {what} ({gateway}:{port})"),
            &v,
        );
        refused(&v);
    }
    let v = ask(&p, "/connect?host=198.51.100.1&port=8080");
    record("connect to the host's other address", &v);
    refused(&v);

    // Files.
    let data_dir = p.data.path().join("berth.db");
    for path in [
        "/etc/shadow",
        data_dir.to_str().expect("path"),
        "/proc/kcore",
    ] {
        let v = ask(&p, &format!("/read?path={path}"));
        record(&format!("read {path}"), &v);
        assert_eq!(v["ok"], false, "{v}");
    }
    let v = ask(&p, "/read?path=/app/../../proc/1/root/etc/shadow");
    record("read /etc/shadow through /proc/1/root", &v);
    assert_eq!(v["ok"], false, "{v}");
    for path in ["/app/pwned", "/pwned", "/usr/pwned"] {
        let v = ask(&p, &format!("/write?path={path}"));
        record(&format!("write {path}"), &v);
        assert_eq!(v["ok"], false, "{v}");
    }
    let v = ask(&p, "/write?path=/tmp/scratch");
    assert_eq!(v["ok"], true, "/tmp stays writable: {v}");

    // Privileges and system calls.
    let v = ask(&p, "/whoami");
    record("identity", &v);
    assert_ne!(v["uid"], 0, "{v}");
    assert_eq!(v["cap_eff"], "0000000000000000", "{v}");
    assert_eq!(v["no_new_privs"], "1", "{v}");
    for call in ["unshare_user", "unshare_net", "mount", "ptrace"] {
        let v = ask(&p, &format!("/syscall?name={call}"));
        record(&format!("syscall {call}"), &v);
        assert_eq!(v["ok"], false, "{v}");
    }

    // Resources.
    let restarts = |p: &Platform| p.json(&["ps", "hostile"])[0]["restarts"].as_u64();
    let before = restarts(&p);
    let (status, body) = p.get("hostile", "/forkbomb?limit=2000");
    if status == 200 {
        let v: Value = serde_json::from_str(&body).expect("forkbomb answer");
        record("fork bomb (pids = 64)", &v);
        assert_eq!(v["ok"], false, "{v}");
        assert!(v["forked"].as_u64().unwrap_or(u64::MAX) < 64, "{v}");
    } else {
        // Under gVisor each app process also costs the sandbox host threads and kernel
        // memory inside the app's memory limit; a bomb may exhaust that before the
        // process limit. Then the sandbox ends and is restarted like a crash.
        assert_eq!(isolation, "sandbox", "fork bomb: HTTP {status}: {body}");
        assert!(
            common::eventually(Duration::from_secs(30), || {
                restarts(&p) > before && p.get("hostile", "/").0 == 200
            }),
            "a sandbox ended by a fork bomb is restarted: {}",
            p.json(&["ps", "hostile"])
        );
        record(
            "fork bomb (pids = 64)",
            &Value::String(format!(
                "sandbox ended (last exit reason {}) and was restarted",
                p.json(&["ps", "hostile"])[0]["last_exit_reason"]
            )),
        );
    }
    assert!(
        neighbour_answers(&p),
        "neighbour answers after the fork bomb"
    );
    // The host's own count (the instance's cgroup) is what the limit is about; the app's
    // view is recorded too (gVisor's kernel keeps its own accounts).
    let id = p.json(&["ps", "hostile"])[0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let cpu_before = cgroup_cpu_seconds(&id).expect("the instance's CPU account");
    let wall = std::time::Instant::now();
    let v = ask(&p, "/burn?seconds=2&threads=2");
    let host_cpus =
        (cgroup_cpu_seconds(&id).expect("CPU account") - cpu_before) / wall.elapsed().as_secs_f64();
    record("burn CPU with 2 threads (cpus = 0.5)", &v);
    record(
        "  ... CPUs the host gave it meanwhile",
        &Value::from(format!("{host_cpus:.2}")),
    );
    assert!(host_cpus < 0.7, "host-side CPUs {host_cpus}: {v}");
    assert!(
        neighbour_answers(&p),
        "neighbour answers while CPU was burnt"
    );

    let before = restarts(&p);
    let (status, body) = p.get("hostile", "/alloc?mb=400");
    table.push((
        "allocate 400 MiB (memory = 96M)".into(),
        format!("HTTP {status}"),
    ));
    assert_ne!(status, 200, "{body}");
    assert!(
        common::eventually(Duration::from_secs(20), || {
            let ps = p.json(&["ps", "hostile"]);
            ps[0]["last_exit_reason"] == "oom_killed" && ps[0]["restarts"].as_u64() > before
        }),
        "ps reports the OOM kill: {}",
        p.json(&["ps", "hostile"])
    );
    let ps = p.ok(&["ps", "hostile"]);
    assert!(ps.contains("OOMKilled"), "{ps}");
    let logs = p.ok(&["logs", "hostile"]);
    assert!(logs.contains("OOMKilled"), "{logs}");
    assert!(
        neighbour_answers(&p),
        "neighbour answers after the OOM kill"
    );
    assert!(
        common::eventually(Duration::from_secs(20), || p.get("hostile", "/").0 == 200),
        "the hostile app is restarted"
    );
    assert!(p.berth(&["apps"]).status.success(), "berth's API answers");

    eprintln!("\n| attempt ({isolation}) | outcome |\n|---|---|");
    for (what, outcome) in table {
        eprintln!("| {what} | {outcome} |");
    }
}

#[test]
fn a_hostile_trusted_app_is_contained() {
    contained("trusted");
}

#[test]
fn a_hostile_sandboxed_app_is_contained() {
    contained("sandbox");
}
