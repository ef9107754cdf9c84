//! Shared helpers for berth's end-to-end tests: a real `berth up` per test (its own data
//! directory, ports, bridge and subnet, so tests run side by side), the real `berth` CLI,
//! and a tiny HTTP client that talks to the edge on loopback.
#![allow(dead_code)]

pub mod kube_lab;
pub mod registry;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The berth binary under test.
pub fn berth_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_berth"))
}

/// The repository's examples directory.
pub fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// Ports handed out below the kernel's ephemeral range (32768–60999 by default), so no
/// socket the system numbers itself — an outgoing connection, anything bound to port 0 —
/// can take one between the choice and the server binding it; a process-wide counter so
/// that tests running side by side never get the same port twice.
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// `n` distinct free TCP ports, free on every address (the edge listens on 0.0.0.0).
pub fn free_ports(n: usize) -> Vec<u16> {
    (0..n).map(|_| free_port()).collect()
}

/// A free TCP port, free on every address.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = u32::from(PORTS.end - PORTS.start);
    // Each test binary starts elsewhere in the range; the ones before it may still hold
    // ports (checked below all the same).
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = PORTS.start + u16::try_from(offset).expect("offset within the range");
        if TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
    panic!("no free TCP port in {PORTS:?}")
}

/// A running platform.
pub struct Platform {
    pub data: tempfile::TempDir,
    pub api_port: u16,
    pub edge_port: u16,
    pub tls_port: u16,
    pub bridge: String,
    pub subnet: String,
    pub extra: Vec<String>,
    /// Network namespace (made by the test) that berth and the CLI run in, if any.
    pub netns: Option<String>,
    /// Environment of `berth up` besides the test's own.
    pub up_env: Vec<(String, String)>,
    /// The berth binary `berth up` runs (default: the one under test).
    pub binary: Option<PathBuf>,
    up: Option<Child>,
}

impl Platform {
    /// Starts `berth up` with its own resources.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts `berth up` with extra flags.
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_in(None, extra)
    }

    /// Starts `berth up` inside network namespace `netns` (which the test created).
    pub fn start_in(netns: Option<&str>, extra: &[&str]) -> Self {
        Self::start_env(netns, extra, &[])
    }

    /// Starts `berth up` with extra environment variables.
    pub fn start_env(netns: Option<&str>, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut p = Self::unstarted(netns, extra, env);
        p.up();
        p
    }

    /// A platform with its own resources chosen, not started yet (start it with `up`).
    pub fn unstarted(netns: Option<&str>, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let ports = free_ports(3);
        let tag = (std::process::id() % 5000) * 10 + n;
        Self {
            data: tempfile::Builder::new()
                .prefix("berth-e2e")
                .tempdir()
                .expect("tempdir"),
            api_port: ports[0],
            edge_port: ports[1],
            tls_port: ports[2],
            bridge: format!("bt{tag}"),
            subnet: format!("10.{}.{}.0/24", 100 + (tag / 250) % 100, tag % 250),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            netns: netns.map(str::to_string),
            up_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            binary: None,
            up: None,
        }
    }

    /// Arguments of `berth up` for this platform.
    pub fn up_args(&self) -> Vec<String> {
        let mut v: Vec<String> = vec![
            "up".into(),
            "--data-dir".into(),
            self.data.path().display().to_string(),
            "--api-port".into(),
            self.api_port.to_string(),
            "--edge-port".into(),
            self.edge_port.to_string(),
            "--edge-tls-port".into(),
            self.tls_port.to_string(),
            "--bridge".into(),
            self.bridge.clone(),
            "--subnet".into(),
            self.subnet.clone(),
            "--drain-grace".into(),
            "1s".into(),
        ];
        v.extend(self.extra.iter().cloned());
        v
    }

    /// (Re)starts `berth up` and waits for its API.
    pub fn up(&mut self) {
        let _ = std::fs::remove_file(self.data.path().join("api.json"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.path().join("up.log"))
            .expect("up.log");
        let child = self
            .command(self.binary.clone().unwrap_or_else(berth_bin))
            .args(self.up_args())
            // Probes count as requests at the edge: only the tests that look for them get
            // them (with --probe-interval).
            .env("BERTH_PROBE_INTERVAL", "1h")
            .envs(self.up_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn berth up");
        self.up = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let api_up = match &self.netns {
                None => TcpStream::connect(("127.0.0.1", self.api_port)).is_ok(),
                Some(_) => self.berth(&["apps"]).status.success(),
            };
            if self.data.path().join("api.json").exists() && api_up {
                return;
            }
            if let Some(c) = self.up.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("berth up exited with {status}:\n{}", self.up_log());
                }
            }
            assert!(
                Instant::now() < deadline,
                "berth up did not start:\n{}",
                self.up_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A command for `program`, run inside the platform's network namespace if it has one.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match &self.netns {
            None => Command::new(program),
            Some(ns) => {
                // Only the network namespace changes (`ip netns exec` would also remount
                // /sys, hiding the cgroup hierarchies the runtime needs).
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/var/run/netns/{ns}")).arg(program);
                c
            }
        }
    }

    /// What `berth up` printed.
    pub fn up_log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("up.log")).unwrap_or_default()
    }

    /// What the edge logged (for a failing test's message).
    pub fn edge_log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("edge/edge.log")).unwrap_or_default()
    }

    /// Whether the `berth up` this harness started has exited.
    pub fn up_exited(&mut self) -> bool {
        self.up
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// SIGKILLs `berth up` (apps and edge must survive).
    pub fn kill_control_plane(&mut self) {
        if let Some(mut c) = self.up.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs the CLI against this platform.
    pub fn berth(&self, args: &[&str]) -> Output {
        self.berth_env(args, &[])
    }

    /// Runs the CLI with extra environment.
    pub fn berth_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.berth_command(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run berth")
    }

    /// The CLI against this platform, ready to run (e.g. on another thread).
    pub fn berth_command(&self, args: &[&str]) -> Command {
        let mut cmd = self.command(berth_bin());
        cmd.arg("--data-dir")
            .arg(self.data.path())
            .args(args)
            .stdin(Stdio::null());
        cmd.env_remove("BERTH_API_URL").env_remove("BERTH_TOKEN");
        // Sign-ins (`berth login`) of this platform's tests only.
        cmd.env("XDG_CONFIG_HOME", self.data.path().join("config"));
        cmd
    }

    /// Runs the CLI and requires success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.berth(args);
        assert!(
            out.status.success(),
            "berth {args:?} failed ({}):\nstdout: {}\nstderr: {}\nberth up:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.up_log()
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Runs the CLI and requires failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.berth(args);
        assert!(
            !out.status.success(),
            "berth {args:?} should have failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).to_string()
    }

    /// `--json` output parsed.
    /// The app's releases, newest first (none when it has none).
    pub fn releases(&self, app: &str) -> Vec<serde_json::Value> {
        self.json(&["releases", app])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// `berth ARGS` with another token.
    pub fn as_token(&self, token: &str, args: &[&str]) -> Output {
        self.berth_env(args, &[("BERTH_TOKEN", token)])
    }

    /// `berth ARGS` with another token: whether it succeeded, and what it said.
    pub fn try_as(&self, token: &str, args: &[&str]) -> (bool, String) {
        let o = self.as_token(token, args);
        (o.status.success(), said(&o))
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(&a)).expect("json output")
    }

    /// GET through the edge with `Host: <app>.localhost`.
    pub fn get(&self, app: &str, path: &str) -> (u16, String) {
        if self.netns.is_none() {
            return http_get(self.edge_port, &format!("{app}.localhost"), path)
                .unwrap_or((0, String::new()));
        }
        // Inside the namespace: a one-shot client there.
        let script = "import sys,urllib.request,urllib.error\n\
            r=urllib.request.Request(sys.argv[1],headers={'Host':sys.argv[2]})\n\
            try:\n  resp=urllib.request.urlopen(r,timeout=20); print(resp.status); print(resp.read().decode())\n\
            except urllib.error.HTTPError as e:\n  print(e.code); print(e.read().decode())\n\
            except Exception as e:\n  print(0); print(e)\n";
        let out = self
            .command("python3")
            .args([
                "-c",
                script,
                &format!("http://127.0.0.1:{}{path}", self.edge_port),
                &format!("{app}.localhost"),
            ])
            .output()
            .expect("python3");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (status, body) = text.split_once('\n').unwrap_or((&text, ""));
        (status.trim().parse().unwrap_or(0), body.to_string())
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        self.kill_control_plane();
        let _ = self
            .command(berth_bin())
            .arg("--data-dir")
            .arg(self.data.path())
            .arg("down")
            .output();
    }
}

/// One HTTP/1.1 GET on a fresh connection; returns status and body.
pub fn http_get(port: u16, host: &str, path: &str) -> std::io::Result<(u16, String)> {
    http_get_at(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        host,
        path,
    )
}

/// [`http_get`] to `addr`.
pub fn http_get_at(
    addr: std::net::SocketAddr,
    host: &str,
    path: &str,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    // Generous: several platforms share the machine, and some routes write to disk.
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// A test fixture app under `tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

impl Platform {
    /// GET of an idempotent route through the edge, asked again while the app is too busy
    /// to answer 200 (the machine runs several platforms side by side); the first body.
    pub fn answer(&self, app: &str, path: &str) -> String {
        let mut answer = None;
        eventually(Duration::from_secs(60), || {
            match http_get(self.edge_port, &format!("{app}.localhost"), path) {
                Ok((200, body)) => answer = Some(body),
                other => eprintln!("GET {path}: {other:?}"),
            }
            answer.is_some()
        });
        answer.unwrap_or_else(|| panic!("GET {path} never answered\n{}", self.up_log()))
    }
}

/// The files under `dir` holding `needle` (bytes, binary files included), one per line.
pub fn files_holding(dir: &Path, needle: &str) -> String {
    let out = Command::new("grep")
        .args(["-r", "-a", "-l", "-F", needle])
        .arg(dir)
        .output()
        .expect("grep");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// What a command wrote, its standard output then its standard error.
pub fn said(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).expect("copy");
        }
    }
}

/// One HTTP request a [`receiver`] got: its path, headers (lowercase names) and body.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: std::collections::HashMap<String, String>,
    pub body: String,
    pub raw: Vec<u8>,
    /// Answered 503.
    pub refused: bool,
}

/// An HTTP receiver on loopback (webhooks, Loki's push API, OTLP) that answers 503 to its
/// first `refuse` requests and 200 after, keeping every request.
#[allow(dead_code)]
pub fn receiver(refuse: usize) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let got: std::sync::Arc<std::sync::Mutex<Vec<Received>>> = Default::default();
    let seen = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten().take(2000) {
            let mut stream = stream;
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 16384];
            let (head, mut body) = loop {
                let Ok(n) = stream.read(&mut chunk) else {
                    break (String::new(), Vec::new());
                };
                if n == 0 {
                    break (String::new(), Vec::new());
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break (
                        String::from_utf8_lossy(&buf[..i]).to_string(),
                        buf[i + 4..].to_vec(),
                    );
                }
            };
            let path = head
                .lines()
                .next()
                .and_then(|l| l.split(' ').nth(1))
                .unwrap_or_default()
                .to_string();
            let headers: std::collections::HashMap<String, String> = head
                .lines()
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            let len: usize = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while body.len() < len {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => body.extend_from_slice(&chunk[..n]),
                }
            }
            let refused = {
                let mut g = seen.lock().expect("lock");
                let refused = g.len() < refuse;
                g.push(Received {
                    path,
                    headers,
                    body: String::from_utf8_lossy(&body).to_string(),
                    raw: body,
                    refused,
                });
                refused
            };
            let status = if refused {
                "503 Service Unavailable"
            } else {
                "200 OK"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (port, got)
}

/// Makes `dir` a git repository with everything in one commit; returns the commit's sha.
#[allow(dead_code)]
pub fn git_commit_all(dir: &Path) -> String {
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@localhost"])
            .args(args)
            .current_dir(dir)
            .output()
            .expect("git");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "deploy me"]);
    git(&["rev-parse", "HEAD"])
}

/// A raw API call with curl: (status, headers and body).
#[allow(dead_code)]
pub fn curl(p: &Platform, token: &str, method: &str, path: &str, extra: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-i", "-X", method, "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .args(extra)
        .arg(format!("http://127.0.0.1:{}{path}", p.api_port))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// The bootstrap admin token of a platform.
#[allow(dead_code)]
pub fn admin_token(p: &Platform) -> String {
    std::fs::read_to_string(p.data.path().join("api-token"))
        .expect("token")
        .trim()
        .to_string()
}

/// Packs `dir` as a gzip-compressed tar archive at `out` (what the API takes as an upload).
#[allow(dead_code)]
pub fn tar_gz(dir: &Path, out: &Path) {
    let status = Command::new("tar")
        .arg("czf")
        .arg(out)
        .arg("-C")
        .arg(dir)
        .arg(".")
        .status()
        .expect("tar");
    assert!(status.success(), "tar of {}", dir.display());
}

/// A git daemon serving the bare repositories under a directory (git://), on loopback.
#[allow(dead_code)]
pub struct GitDaemon {
    child: Child,
    pub port: u16,
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `git-daemon` itself (`git daemon` would leave it running when killed) for the
/// repositories under `base`.
#[allow(dead_code)]
pub fn git_daemon(base: &Path) -> GitDaemon {
    let exec_path = Command::new("git")
        .arg("--exec-path")
        .output()
        .expect("git");
    let exec_path = String::from_utf8_lossy(&exec_path.stdout)
        .trim()
        .to_string();
    let port = free_port();
    let child = Command::new(PathBuf::from(exec_path).join("git-daemon"))
        .args(["--reuseaddr", "--listen=127.0.0.1", "--export-all"])
        .arg(format!("--port={port}"))
        .arg(format!("--base-path={}", base.display()))
        .arg(base)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("git daemon");
    let d = GitDaemon { child, port };
    assert!(
        eventually(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        }),
        "git daemon did not listen"
    );
    d
}

/// Runs git in `dir` (as a test author) and requires success; its standard output.
#[allow(dead_code)]
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=dev", "-c", "user.email=dev@localhost"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs git in `dir` as a client of berth's repositories, which may be refused: never
/// asking a person for a password, and trusting the remote's own CA setting (a CA bundle
/// named in the environment would override it).
#[allow(dead_code)]
pub fn git_client(dir: &Path, args: &[&str]) -> Output {
    Command::new("git")
        .args(["-c", "user.name=dev", "-c", "user.email=dev@localhost"])
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "/bin/false")
        .env_remove("GIT_SSL_CAINFO")
        .output()
        .expect("git")
}

/// [`git_client`], requiring success; its standard output.
#[allow(dead_code)]
pub fn git_client_ok(dir: &Path, args: &[&str]) -> String {
    let out = git_client(dir, args);
    assert!(
        out.status.success(),
        "git {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// An OpenSSH server on loopback with its own host key and authorized keys (none at
/// first): git over ssh, as a private repository's host serves it.
#[allow(dead_code)]
pub struct Sshd {
    child: Child,
    pub port: u16,
    /// The user it lets in (the one running the tests).
    pub user: String,
    dir: tempfile::TempDir,
}

#[allow(dead_code)]
impl Sshd {
    pub fn start() -> Sshd {
        let dir = tempfile::tempdir().expect("tempdir");
        let host_key = dir.path().join("host_ed25519");
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&host_key)
            .status()
            .expect("ssh-keygen");
        assert!(made.success());
        let keys = dir.path().join("authorized_keys");
        std::fs::write(&keys, "").expect("authorized_keys");
        let user =
            String::from_utf8_lossy(&Command::new("id").arg("-un").output().expect("id").stdout)
                .trim()
                .to_string();
        let port = free_port();
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PidFile {}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 PermitRootLogin prohibit-password\nAllowUsers {user}\n",
                host_key.display(),
                keys.display(),
                dir.path().join("sshd.pid").display()
            ),
        )
        .expect("sshd_config");
        // Its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd (the openssh-server package)");
        let d = Sshd {
            child,
            port,
            user,
            dir,
        };
        assert!(
            eventually(Duration::from_secs(20), || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            }),
            "sshd did not listen"
        );
        d
    }

    /// Lets `public_key` in.
    pub fn authorize(&self, public_key: &str) {
        std::fs::write(
            self.dir.path().join("authorized_keys"),
            format!("{public_key}\n"),
        )
        .expect("authorized_keys");
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
