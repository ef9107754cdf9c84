//! Build egress: the forwarding proxy through which builds reach the internet.
//!
//! Every build step (a language provider's install step, a Dockerfile `RUN`) runs in its own
//! network namespace on berth's bridge whose only route is TCP to this proxy on the bridge's
//! gateway address. The build is given `HTTPS_PROXY`/`HTTP_PROXY=http://<gateway>:<port>`,
//! so pip, npm, cargo and git send `CONNECT host:port` and tunnel TLS through here. Nothing
//! else is served: a plain-HTTP request is answered `405`.
//!
//! The design, and why:
//!
//! - **Grants, not open doors.** A connection is served only while its peer address holds a
//!   grant ([`BuildEgress::grant`]) — a running build. Any other peer's connection is closed
//!   at once without reading a byte. Dropping the [`GrantGuard`] ends the grant and every
//!   tunnel it opened.
//! - **Host names only.** The proxy decides by what a name resolves to, so it refuses every
//!   address given by number — dotted IPv4, IPv6 bracketed or bare, and the legacy forms the
//!   system resolver still accepts (`2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1`): a name
//!   whose last label is all digits or starts with `0x` is a number too. A name must be
//!   letters, digits and hyphens in dot-separated labels.
//! - **What a name resolves to is checked, every address.** Loopback, unspecified,
//!   multicast, broadcast, reserved, link-local and cloud metadata addresses are dropped, and
//!   so is everything in [`EgressConfig::blocked`] (the bridge subnet — other instances —
//!   the host's own addresses and the operator's `--egress-block` ranges). A name left with
//!   no address is refused. Mail ports (25, 465, 587) are refused whatever the name.
//! - **Loopback is special.** A build may not reach services on the host (berth's API, a
//!   database bound to 127.0.0.1) by finding a name that resolves there. Some machines do
//!   run their package registry mirror on the host's loopback, though; such a registry is
//!   allowed as an exact (name, port) pair in [`EgressConfig::loopback_registries`], and
//!   only to its loopback addresses.
//! - **Resolved once.** The proxy connects to the very addresses it checked and never
//!   resolves the name again, so a name that answers a safe address to the check and a
//!   private one to the connect (DNS rebinding) gains nothing.
//! - **Bounded.** The request head is capped in size and time; connections at once are
//!   capped ([`EgressConfig::max_connections`], then `503`); connecting and resolving have a
//!   timeout, and an idle tunnel is closed.
//!
//! Every refusal and every tunnel made is a `tracing` event and, when the grant names a build
//! log, a line appended to it (`berth: egress: pypi.org:443 (203.0.113.80)`, `berth: egress
//! refused: 127.0.0.1:7070 (…)`), so a build that fails for want of a registry says why.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

pub use berth_edge::policy::Cidr;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;

/// The largest request head read (request line and headers), in bytes.
pub const MAX_HEAD: usize = 8 * 1024;
/// How long a client has to send its whole request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once by default ([`EgressConfig::new`]).
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Ports refused whatever the name: none, and mail submission/relay.
const REFUSED_PORTS: [u16; 4] = [0, 25, 465, 587];
/// Addresses tried per name before giving up.
const MAX_ATTEMPTS: usize = 6;
/// How long a refused client's further bytes are read and discarded before closing, so the
/// answer is not lost to a reset.
const LINGER: Duration = Duration::from_secs(1);
/// At most this much is discarded while lingering.
const LINGER_BYTES: usize = 64 * 1024;
/// A refused target is printed at most this long.
const MAX_PRINTED: usize = 300;
/// The answer to anything but CONNECT.
const HTTPS_ONLY: &str = "berth's build proxy tunnels HTTPS only (CONNECT)";
/// The reason an address given by number is refused.
const BY_NUMBER: &str =
    "an address given by number; berth's build proxy connects to host names only";
/// Cloud metadata services: AWS/GCP/Azure/OpenStack, AWS over IPv6, Alibaba, Azure's
/// WireServer.
const METADATA: [IpAddr; 4] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    IpAddr::V4(Ipv4Addr::new(168, 63, 129, 16)),
];

/// How the build egress proxy listens and what it refuses.
#[derive(Debug, Clone)]
pub struct EgressConfig {
    /// Where to listen: the bridge's gateway address and a port (port 0: any free port, see
    /// [`BuildEgress::addr`]).
    pub listen: SocketAddr,
    /// Ranges never connected to: the bridge subnet (other instances), the host's own
    /// addresses, the platform's `--egress-block` ranges. Loopback, link-local, metadata,
    /// multicast and the like are refused without being listed here.
    pub blocked: Vec<Cidr>,
    /// Exact (host name, port) pairs allowed to resolve to the host's loopback: package
    /// registries (or their mirrors) served on this machine. Names are compared in lower
    /// case without a trailing dot.
    pub loopback_registries: Vec<(String, u16)>,
    /// How long resolving a name, and then connecting to each of its addresses, may take.
    pub connect_timeout: Duration,
    /// A tunnel with no bytes either way for this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once, over all builds; more are answered `503`.
    pub max_connections: usize,
}

impl EgressConfig {
    /// Listen on `listen` with nothing blocked beyond the built-in refusals, no loopback
    /// registry, a 10 s connect timeout, a 5 min idle timeout and
    /// [`DEFAULT_MAX_CONNECTIONS`].
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            blocked: Vec::new(),
            loopback_registries: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// What a build's connections are logged as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    /// The build's id, for tracing events.
    pub build: String,
    /// The build's log: one line is appended per refused or made connection. Write errors
    /// are ignored.
    pub log: Option<PathBuf>,
}

/// Errors starting the build egress proxy.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// The listening socket could not be bound.
    #[error("cannot listen for builds' egress on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why not.
        #[source]
        source: io::Error,
    },
    /// The bound socket's address could not be read.
    #[error("cannot read the address the build egress proxy listens on: {0}")]
    LocalAddr(#[source] io::Error),
    /// A loopback registry that is not a host name the proxy would ever connect to.
    #[error("loopback registry {name:?} (port {port}) is not a host name berth's build proxy accepts: {reason}")]
    InvalidRegistry {
        /// The name given.
        name: String,
        /// The port given.
        port: u16,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `max_connections` is 0.
    #[error(
        "the build egress proxy needs room for at least one connection (max_connections is 0)"
    )]
    NoConnections,
}

/// The running build egress proxy. Cheap to clone; it serves until the `shutdown` token
/// given to [`BuildEgress::start`] is cancelled.
#[derive(Clone)]
pub struct BuildEgress {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BuildEgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildEgress")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

/// Keeps a peer's grant: connections from the peer are served until this drops; dropping it
/// also closes the tunnels the grant opened.
#[must_use = "the grant ends when the guard is dropped"]
pub struct GrantGuard {
    inner: Arc<Inner>,
    peer: IpAddr,
    id: u64,
    revoked: CancellationToken,
}

impl std::fmt::Debug for GrantGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantGuard")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl Drop for GrantGuard {
    fn drop(&mut self) {
        let mut grants = self.inner.grants();
        if grants.get(&self.peer).is_some_and(|a| a.id == self.id) {
            grants.remove(&self.peer);
        }
        drop(grants);
        self.revoked.cancel();
    }
}

struct Inner {
    addr: SocketAddr,
    blocked: Vec<Cidr>,
    loopback_registries: Vec<(String, u16)>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    grants: Mutex<HashMap<IpAddr, Arc<Active>>>,
    next_grant: AtomicU64,
    slots: Arc<Semaphore>,
    shutdown: CancellationToken,
}

impl Inner {
    fn grants(&self) -> MutexGuard<'_, HashMap<IpAddr, Arc<Active>>> {
        self.grants.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A grant in force.
struct Active {
    id: u64,
    grant: Grant,
    /// Cancelled when the guard drops or the proxy shuts down.
    revoked: CancellationToken,
}

impl BuildEgress {
    /// Binds `cfg.listen` and serves builds' CONNECT requests until `shutdown` is cancelled.
    pub async fn start(
        cfg: EgressConfig,
        shutdown: CancellationToken,
    ) -> Result<Self, EgressError> {
        if cfg.max_connections == 0 {
            return Err(EgressError::NoConnections);
        }
        let mut registries = Vec::with_capacity(cfg.loopback_registries.len());
        for (name, port) in cfg.loopback_registries {
            let normal = normalize_name(&name);
            if let Err(reason) = check_name(&normal) {
                return Err(EgressError::InvalidRegistry { name, port, reason });
            }
            registries.push((normal, port));
        }
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| EgressError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(EgressError::LocalAddr)?;
        let inner = Arc::new(Inner {
            addr,
            blocked: cfg.blocked,
            loopback_registries: registries,
            connect_timeout: cfg.connect_timeout,
            idle_timeout: cfg.idle_timeout,
            grants: Mutex::new(HashMap::new()),
            next_grant: AtomicU64::new(0),
            slots: Arc::new(Semaphore::new(cfg.max_connections)),
            shutdown,
        });
        tracing::info!(%addr, "build egress proxy listening");
        tokio::spawn(accept_loop(listener, Arc::clone(&inner)));
        Ok(Self { inner })
    }

    /// The address the proxy is bound to (the actual port when `listen` asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The value for a build's `HTTPS_PROXY`/`HTTP_PROXY`: `http://<addr>`.
    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// Lets connections from `peer` (a build's address) through until the returned guard
    /// drops. A second grant for the same peer replaces the first for new connections.
    pub fn grant(&self, peer: IpAddr, grant: Grant) -> GrantGuard {
        let peer = peer.to_canonical();
        let id = self.inner.next_grant.fetch_add(1, Ordering::Relaxed);
        let revoked = self.inner.shutdown.child_token();
        tracing::debug!(%peer, build = %grant.build, "build egress granted");
        let active = Arc::new(Active {
            id,
            grant,
            revoked: revoked.clone(),
        });
        if let Some(old) = self.inner.grants().insert(peer, active) {
            tracing::warn!(%peer, old = %old.grant.build, "build egress grant replaced by a newer one");
        }
        GrantGuard {
            inner: Arc::clone(&self.inner),
            peer,
            id,
            revoked,
        }
    }
}

async fn accept_loop(listener: TcpListener, inner: Arc<Inner>) {
    loop {
        let accepted = tokio::select! {
            () = inner.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors and the like: do not spin.
                tracing::warn!(%error, "build egress: accept failed");
                tokio::select! {
                    () = inner.shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let active = inner.grants().get(&peer.ip().to_canonical()).cloned();
        let Some(active) = active else {
            tracing::debug!(%peer, "build egress: closed a connection from a peer without a grant");
            drop(stream);
            continue;
        };
        let Ok(permit) = Arc::clone(&inner.slots).try_acquire_owned() else {
            busy(stream, peer, &active);
            continue;
        };
        tokio::spawn(serve(stream, peer, active, Arc::clone(&inner), permit));
    }
    tracing::debug!("build egress proxy stopped");
}

/// Answers `503` without reading or waiting (the answer fits a fresh socket's buffer).
fn busy(stream: TcpStream, peer: SocketAddr, active: &Active) {
    let refusal = Refusal {
        status: 503,
        target: "a connection".to_string(),
        reason: "too many connections through berth's build proxy at once; try again".into(),
    };
    let _ = stream.try_write(refusal.response().as_bytes());
    refusal.trace(peer, active);
    if let Some(path) = active.grant.log.clone() {
        let line = refusal.log_line();
        tokio::spawn(async move { append_log(&path, &line).await });
    }
}

async fn serve(
    mut client: TcpStream,
    peer: SocketAddr,
    active: Arc<Active>,
    inner: Arc<Inner>,
    _permit: OwnedSemaphorePermit,
) {
    let _ = client.set_nodelay(true);
    tokio::select! {
        () = active.revoked.cancelled() => {
            tracing::debug!(%peer, build = %active.grant.build, "build egress: grant ended, connection closed");
        }
        () = handle(&mut client, peer, &active, &inner) => {}
    }
}

/// Why a request is refused, and the answer's status.
#[derive(Debug)]
struct Refusal {
    status: u16,
    /// What was asked for, printable.
    target: String,
    reason: String,
}

impl Refusal {
    fn new(status: u16, target: &str, reason: impl Into<String>) -> Self {
        Self {
            status,
            target: printable(target),
            reason: reason.into(),
        }
    }

    fn log_line(&self) -> String {
        format!("berth: egress refused: {} ({})", self.target, self.reason)
    }

    fn response(&self) -> String {
        let phrase = match self.status {
            400 => "Bad Request",
            403 => "Forbidden",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            _ => "Error",
        };
        let allow = if self.status == 405 {
            "Allow: CONNECT\r\n"
        } else {
            ""
        };
        let body = format!("{}\n", self.log_line());
        format!(
            "HTTP/1.1 {} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n{body}",
            self.status,
            body.len()
        )
    }

    fn trace(&self, peer: SocketAddr, active: &Active) {
        tracing::info!(
            %peer,
            build = %active.grant.build,
            target = %self.target,
            status = self.status,
            reason = %self.reason,
            "build egress refused"
        );
    }
}

/// The parts of a request head the proxy uses.
struct Head {
    method: String,
    target: String,
    /// Its length in bytes: what follows in the buffer is tunnel data.
    len: usize,
}

async fn handle(client: &mut TcpStream, peer: SocketAddr, active: &Active, inner: &Inner) {
    let mut buf = Vec::with_capacity(1024);
    let head = match timeout(HEAD_TIMEOUT, read_head(client, &mut buf)).await {
        Ok(Ok(head)) => head,
        Ok(Err(Some(refusal))) => return refuse(client, peer, active, refusal).await,
        Ok(Err(None)) => {
            tracing::debug!(%peer, "build egress: the client left before its request");
            return;
        }
        Err(_) => {
            let reason = format!("its head did not arrive within {HEAD_TIMEOUT:?}");
            let refusal = Refusal::new(408, "a request", reason);
            return refuse(client, peer, active, refusal).await;
        }
    };
    let (mut upstream, name, port, ip) = match open(&head, inner).await {
        Ok(opened) => opened,
        Err(refusal) => return refuse(client, peer, active, refusal).await,
    };
    tracing::info!(%peer, build = %active.grant.build, target = %format!("{name}:{port}"), %ip, "build egress tunnel");
    if let Some(path) = &active.grant.log {
        append_log(path, &format!("berth: egress: {name}:{port} ({ip})")).await;
    }
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    let _ = upstream.set_nodelay(true);
    let early = &buf[head.len..];
    if !early.is_empty() && upstream.write_all(early).await.is_err() {
        return;
    }
    match tunnel(client, upstream, inner.idle_timeout).await {
        Ok((up, down)) => {
            tracing::debug!(%peer, target = %format!("{name}:{port}"), up, down, "build egress tunnel closed")
        }
        Err(end) => {
            tracing::debug!(%peer, target = %format!("{name}:{port}"), %end, "build egress tunnel ended")
        }
    }
}

/// Reads a request head into `buf`; `Err(None)` when the client left or failed first.
async fn read_head(client: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Head, Option<Refusal>> {
    const CHUNK: usize = 2048;
    let mut chunk = [0u8; CHUNK];
    loop {
        let room = MAX_HEAD - buf.len();
        if room == 0 {
            let reason = format!("its head is larger than {} KiB", MAX_HEAD / 1024);
            return Err(Some(Refusal::new(431, "a request", reason)));
        }
        let n = match client.read(&mut chunk[..room.min(CHUNK)]).await {
            Ok(0) | Err(_) => return Err(None),
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(buf) {
            Ok(httparse::Status::Complete(len)) => {
                return Ok(Head {
                    method: request.method.unwrap_or_default().to_string(),
                    target: request.path.unwrap_or_default().to_string(),
                    len,
                })
            }
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => {
                let refusal = Refusal::new(431, "a request", "it has more than 64 headers");
                return Err(Some(refusal));
            }
            Err(error) => {
                let reason = format!("not an HTTP/1 request: {error}");
                return Err(Some(Refusal::new(400, "a request", reason)));
            }
        }
    }
}

/// Checks a CONNECT request, resolves its name once and connects to the first address
/// allowed that answers.
async fn open(head: &Head, inner: &Inner) -> Result<(TcpStream, String, u16, IpAddr), Refusal> {
    if head.method != "CONNECT" {
        let what = format!("{} {}", head.method, head.target);
        return Err(Refusal::new(405, &what, HTTPS_ONLY));
    }
    let (name, port) = parse_target(&head.target)?;
    let target = format!("{name}:{port}");
    let loopback_ok = inner
        .loopback_registries
        .iter()
        .any(|(n, p)| *n == name && *p == port);
    let wait = inner.connect_timeout;
    let resolved: Vec<SocketAddr> =
        match timeout(wait, tokio::net::lookup_host((name.as_str(), port))).await {
            Ok(Ok(addrs)) => addrs.collect(),
            Ok(Err(error)) => {
                let reason = format!("the name does not resolve: {error}");
                return Err(Refusal::new(502, &target, reason));
            }
            Err(_) => {
                let reason = format!("resolving the name took longer than {wait:?}");
                return Err(Refusal::new(502, &target, reason));
            }
        };
    let mut allowed: Vec<IpAddr> = Vec::new();
    let mut dropped: Vec<String> = Vec::new();
    for addr in resolved {
        let ip = addr.ip().to_canonical();
        match address_refusal(ip, loopback_ok, &inner.blocked) {
            None if !allowed.contains(&ip) => allowed.push(ip),
            None => {}
            Some(why) => {
                let line = format!("{ip} is {why}");
                if !dropped.contains(&line) {
                    dropped.push(line);
                }
            }
        }
    }
    if allowed.is_empty() {
        return Err(if dropped.is_empty() {
            Refusal::new(502, &target, "the name resolves to no address")
        } else {
            let reason = format!("resolves only to blocked addresses: {}", dropped.join(", "));
            Refusal::new(403, &target, reason)
        });
    }
    let mut failures = Vec::new();
    for ip in allowed.into_iter().take(MAX_ATTEMPTS) {
        // The address checked is the address connected to: never resolved again.
        match timeout(wait, TcpStream::connect(SocketAddr::new(ip, port))).await {
            Ok(Ok(stream)) => return Ok((stream, name, port, ip)),
            Ok(Err(error)) => failures.push(format!("{ip}: {error}")),
            Err(_) => failures.push(format!("{ip}: no answer within {wait:?}")),
        }
    }
    let reason = format!("could not connect: {}", failures.join("; "));
    Err(Refusal::new(502, &target, reason))
}

/// Logs a refusal, answers it, and closes after discarding what the client still sends
/// (briefly), so that the answer is read rather than lost to a reset.
async fn refuse(client: &mut TcpStream, peer: SocketAddr, active: &Active, refusal: Refusal) {
    refusal.trace(peer, active);
    if let Some(path) = &active.grant.log {
        append_log(path, &refusal.log_line()).await;
    }
    let answered = timeout(HEAD_TIMEOUT, async {
        client.write_all(refusal.response().as_bytes()).await?;
        client.shutdown().await
    })
    .await;
    if !matches!(answered, Ok(Ok(()))) {
        return;
    }
    let _ = timeout(LINGER, async {
        let mut sink = [0u8; 4096];
        let mut discarded = 0;
        while discarded < LINGER_BYTES {
            match client.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => discarded += n,
            }
        }
    })
    .await;
}

/// Appends `line` to a build log, ignoring failures (a log must never fail a build).
async fn append_log(path: &Path, line: &str) {
    let path = path.to_path_buf();
    let line = format!("{line}\n");
    let _ = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)?;
        file.write_all(line.as_bytes())
    })
    .await;
}

/// `text` made safe to print on one line, and short.
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_PRINTED));
    for c in text.chars() {
        if out.len() >= MAX_PRINTED {
            out.push('…');
            break;
        }
        if c.is_ascii_graphic() || c == ' ' {
            out.push(c);
        } else {
            out.extend(c.escape_default());
        }
    }
    out
}

/// A host name as compared: lower case, without one trailing dot.
fn normalize_name(name: &str) -> String {
    let name = name.strip_suffix('.').unwrap_or(name);
    name.to_ascii_lowercase()
}

/// Splits a CONNECT target (`host:port`) into a checked host name and port.
fn parse_target(target: &str) -> Result<(String, u16), Refusal> {
    if target.starts_with('[') {
        return Err(Refusal::new(403, target, BY_NUMBER));
    }
    let Some((host, port)) = target.rsplit_once(':') else {
        let reason = "not host:port (CONNECT needs a host name and a port)";
        return Err(Refusal::new(400, target, reason));
    };
    if host.contains('/') {
        // `http://host:port` and the like: not the authority form CONNECT takes.
        let reason = "not host:port (CONNECT needs a host name and a port)";
        return Err(Refusal::new(400, target, reason));
    }
    if host.contains(':') {
        // A bare IPv6 address.
        return Err(Refusal::new(403, target, BY_NUMBER));
    }
    // Digits only: `u16::from_str` would take a sign too.
    let digits = !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
    let port = match port.parse::<u16>() {
        Ok(port) if digits => port,
        _ => {
            let reason = "the port is not a number from 1 to 65535";
            return Err(Refusal::new(400, target, reason));
        }
    };
    let name = normalize_name(host);
    if let Err(reason) = check_name(&name) {
        return Err(Refusal::new(403, target, reason));
    }
    if REFUSED_PORTS.contains(&port) {
        let reason = if port == 0 {
            "port 0 is not a port".to_string()
        } else {
            format!("port {port} is a mail port, and builds do not send mail")
        };
        return Err(Refusal::new(403, target, reason));
    }
    Ok((name, port))
}

/// Whether `name` (normalized) is a host name the proxy will resolve, or why not.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.parse::<IpAddr>().is_ok() {
        return Err(BY_NUMBER);
    }
    if name.is_empty() {
        return Err("no host name");
    }
    if name.len() > 253 {
        return Err("the host name is longer than 253 characters");
    }
    // What the system resolver reads as a number: `2130706433`, `127.1`, `0x7f000001`.
    let last = name.rsplit('.').next().unwrap_or_default();
    if (!last.is_empty() && last.bytes().all(|b| b.is_ascii_digit())) || last.starts_with("0x") {
        return Err(BY_NUMBER);
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("the host name has an empty label");
        }
        if label.len() > 63 {
            return Err("a label of the host name is longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err("the host name has characters other than letters, digits, '-' and '.'");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label of the host name begins or ends with '-'");
        }
    }
    Ok(())
}

/// Why the proxy will not connect to `ip`, or `None` when it will. `loopback_ok`: the name
/// asked for is a configured loopback registry.
fn address_refusal(ip: IpAddr, loopback_ok: bool, blocked: &[Cidr]) -> Option<String> {
    let ip = ip.to_canonical();
    if ip.is_loopback() {
        // A loopback registry is allowed exactly: the pair was configured on purpose.
        return (!loopback_ok).then(|| "loopback".to_string());
    }
    if METADATA.contains(&ip) {
        return Some("a cloud metadata address".into());
    }
    let builtin = match ip {
        IpAddr::V4(v4) => {
            let first = v4.octets()[0];
            if first == 0 {
                Some("unspecified (0.0.0.0/8)")
            } else if v4.is_broadcast() {
                Some("broadcast")
            } else if v4.is_multicast() {
                Some("multicast")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if first >= 240 {
                Some("reserved (240.0.0.0/4)")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if v6.segments()[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if u128::from(v6) >> 32 == 0 {
                Some("IPv4-compatible (::/96)")
            } else {
                None
            }
        }
    };
    if let Some(why) = builtin {
        return Some(why.to_string());
    }
    blocked
        .iter()
        .find(|range| range.contains(ip))
        .map(|range| format!("in the blocked range {range}"))
}

/// When a tunnel last moved a byte.
struct Activity {
    start: Instant,
    /// Milliseconds since `start`.
    last: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    /// Returns once nothing has moved for `idle`.
    async fn idle(&self, idle: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last.load(Ordering::Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A stream whose reads mark the tunnel active.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Copies both ways until both sides close, either fails, or nothing moves for `idle`.
/// Returns the bytes sent up and down.
async fn tunnel(
    client: &mut TcpStream,
    upstream: TcpStream,
    idle: Duration,
) -> Result<(u64, u64), String> {
    let activity = Arc::new(Activity::new());
    let mut client = Tracked {
        inner: client,
        activity: Arc::clone(&activity),
    };
    let mut upstream = Tracked {
        inner: upstream,
        activity: Arc::clone(&activity),
    };
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            copied.map_err(|e| e.to_string())
        }
        () = activity.idle(idle) => Err(format!("idle for {idle:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn config() -> EgressConfig {
        let mut cfg = EgressConfig::new(SocketAddr::new(LOCAL, 0));
        cfg.connect_timeout = Duration::from_secs(5);
        cfg
    }

    async fn start(cfg: EgressConfig) -> (BuildEgress, CancellationToken) {
        let shutdown = CancellationToken::new();
        let egress = BuildEgress::start(cfg, shutdown.clone()).await.unwrap();
        (egress, shutdown)
    }

    /// An echo server on 127.0.0.1; its port.
    async fn echo_server() -> u16 {
        let listener = TcpListener::bind((LOCAL, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        port
    }

    fn granted(log: Option<PathBuf>) -> Grant {
        Grant {
            build: "b-1".into(),
            log,
        }
    }

    /// Sends `request`, reads the answer's head; returns it and the bytes after it.
    async fn ask(egress: &BuildEgress, request: &[u8]) -> (TcpStream, String, Vec<u8>) {
        let mut stream = TcpStream::connect(egress.addr()).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            let n = timeout(Duration::from_secs(10), stream.read(&mut chunk))
                .await
                .unwrap()
                .unwrap();
            assert!(
                n > 0,
                "closed before an answer: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..at + 4]).into_owned();
                return (stream, head, buf[at + 4..].to_vec());
            }
        }
    }

    /// Sends `request` and reads the whole answer until the proxy closes.
    async fn refused(egress: &BuildEgress, request: &str) -> String {
        let (mut stream, head, mut rest) = ask(egress, request.as_bytes()).await;
        timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        format!("{head}{}", String::from_utf8_lossy(&rest))
    }

    fn connect(target: &str) -> String {
        format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n")
    }

    #[tokio::test]
    async fn a_loopback_registry_is_tunnelled_both_ways() {
        let port = echo_server().await;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("build.log");
        let mut cfg = config();
        cfg.loopback_registries = vec![("LocalHost.".into(), port)];
        let (egress, _shutdown) = start(cfg).await;
        let _grant = egress.grant(LOCAL, granted(Some(log.clone())));

        let mut request = connect(&format!("localhost:{port}")).into_bytes();
        request.extend_from_slice(b"early");
        let (mut stream, head, mut echoed) = ask(&egress, &request).await;
        assert_eq!(head, "HTTP/1.1 200 Connection established\r\n\r\n");
        while echoed.len() < 5 {
            let mut chunk = [0u8; 64];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            echoed.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(echoed, b"early");
        stream.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        stream.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping");

        let logged = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            logged,
            format!("berth: egress: localhost:{port} (127.0.0.1)\n")
        );
    }

    #[tokio::test]
    async fn loopback_is_blocked_without_the_exception() {
        let port = echo_server().await;
        let mut cfg = config();
        // The exception is for exactly this pair: another port does not count.
        cfg.loopback_registries = vec![("localhost".into(), port.wrapping_add(1).max(1))];
        let (egress, _shutdown) = start(cfg).await;
        let _grant = egress.grant(LOCAL, granted(None));
        let answer = refused(&egress, &connect(&format!("localhost:{port}"))).await;
        assert!(answer.starts_with("HTTP/1.1 403 "), "{answer}");
        assert!(
            answer.contains("resolves only to blocked addresses"),
            "{answer}"
        );
        assert!(answer.contains("127.0.0.1 is loopback"), "{answer}");
    }

    #[tokio::test]
    async fn addresses_given_by_number_are_refused() {
        let port = echo_server().await;
        let mut cfg = config();
        cfg.loopback_registries = vec![("localhost".into(), port)];
        let (egress, _shutdown) = start(cfg).await;
        let _grant = egress.grant(LOCAL, granted(None));
        for host in [
            "127.0.0.1",
            "[::1]",
            "::1",
            "[::ffff:127.0.0.1]",
            "2130706433",
            "0x7f.1",
            "0x7f000001",
            "0177.0.0.1",
            "127.1",
            "127.0.0.1.",
        ] {
            let answer = refused(&egress, &connect(&format!("{host}:{port}"))).await;
            assert!(answer.starts_with("HTTP/1.1 403 "), "{host}: {answer}");
            assert!(answer.contains("by number"), "{host}: {answer}");
        }
    }

    #[tokio::test]
    async fn mail_ports_bad_names_and_bad_ports_are_refused() {
        let (egress, _shutdown) = start(config()).await;
        let _grant = egress.grant(LOCAL, granted(None));
        for (target, status, words) in [
            ("localhost:25", "403", "mail port"),
            ("smtp.example.com:587", "403", "mail port"),
            ("example.com:465", "403", "mail port"),
            ("example.com:0", "403", "port 0"),
            ("example.com:+443", "400", "not a number"),
            ("example.com:65536", "400", "not a number"),
            ("example.com", "400", "host:port"),
            ("http://example.com:443", "400", "host:port"),
            ("exa_mple.com:443", "403", "characters"),
            ("example..com:443", "403", "empty label"),
            ("-example.com:443", "403", "'-'"),
        ] {
            let answer = refused(&egress, &connect(target)).await;
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {status} ")),
                "{target}: {answer}"
            );
            assert!(answer.contains(words), "{target}: {answer}");
        }
    }

    #[tokio::test]
    async fn only_connect_is_served() {
        let (egress, _shutdown) = start(config()).await;
        let _grant = egress.grant(LOCAL, granted(None));
        let answer = refused(&egress, "GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 405 "), "{answer}");
        assert!(answer.contains("Allow: CONNECT\r\n"), "{answer}");
        assert!(answer.contains(HTTPS_ONLY), "{answer}");
        let answer = refused(&egress, "hello\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    }

    #[tokio::test]
    async fn a_peer_without_a_grant_is_closed_without_an_answer() {
        let port = echo_server().await;
        let mut cfg = config();
        cfg.loopback_registries = vec![("localhost".into(), port)];
        let (egress, _shutdown) = start(cfg).await;
        drop(egress.grant(LOCAL, granted(None)));
        let mut stream = TcpStream::connect(egress.addr()).await.unwrap();
        let _ = stream
            .write_all(connect(&format!("localhost:{port}")).as_bytes())
            .await;
        let mut answer = Vec::new();
        let read = timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
            .await
            .unwrap();
        // Closed (or reset, the request being unread): either way, nothing answered.
        assert!(answer.is_empty(), "{read:?} {answer:?}");
    }

    #[tokio::test]
    async fn an_oversized_head_is_refused() {
        let (egress, _shutdown) = start(config()).await;
        let _grant = egress.grant(LOCAL, granted(None));
        let request = format!(
            "CONNECT example.com:443 HTTP/1.1\r\nX-Big: {}\r\n\r\n",
            "a".repeat(MAX_HEAD + 100)
        );
        let answer = refused(&egress, &request).await;
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        assert!(answer.contains("larger than 8 KiB"), "{answer}");
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_says_so() {
        let (egress, _shutdown) = start(config()).await;
        let _grant = egress.grant(LOCAL, granted(None));
        let answer = refused(&egress, &connect("nonexistent.invalid:443")).await;
        assert!(answer.starts_with("HTTP/1.1 502 "), "{answer}");
        assert!(answer.contains("nonexistent.invalid:443"), "{answer}");
        assert!(answer.contains("resol"), "{answer}");
    }

    #[tokio::test]
    async fn refusals_are_written_to_the_grants_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("build.log");
        let (egress, _shutdown) = start(config()).await;
        let _grant = egress.grant(LOCAL, granted(Some(log.clone())));
        refused(&egress, &connect("127.0.0.1:7070")).await;
        refused(&egress, &connect("localhost:7070")).await;
        refused(&egress, "GET http://x/ HTTP/1.1\r\n\r\n").await;
        let logged = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = logged.lines().collect();
        assert_eq!(
            lines,
            [
                format!("berth: egress refused: 127.0.0.1:7070 ({BY_NUMBER})"),
                "berth: egress refused: localhost:7070 (resolves only to blocked addresses: 127.0.0.1 is loopback)".to_string(),
                format!("berth: egress refused: GET http://x/ ({HTTPS_ONLY})"),
            ]
        );
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_are_answered_busy() {
        let port = echo_server().await;
        let mut cfg = config();
        cfg.loopback_registries = vec![("localhost".into(), port)];
        cfg.max_connections = 1;
        let (egress, _shutdown) = start(cfg).await;
        let _grant = egress.grant(LOCAL, granted(None));
        let (_first, head, _) =
            ask(&egress, connect(&format!("localhost:{port}")).as_bytes()).await;
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        let mut second = TcpStream::connect(egress.addr()).await.unwrap();
        let mut answer = Vec::new();
        timeout(Duration::from_secs(10), second.read_to_end(&mut answer))
            .await
            .unwrap()
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    }

    #[tokio::test]
    async fn an_idle_tunnel_is_closed() {
        let port = echo_server().await;
        let mut cfg = config();
        cfg.loopback_registries = vec![("localhost".into(), port)];
        cfg.idle_timeout = Duration::from_millis(200);
        let (egress, _shutdown) = start(cfg).await;
        let _grant = egress.grant(LOCAL, granted(None));
        let (mut stream, head, _) =
            ask(&egress, connect(&format!("localhost:{port}")).as_bytes()).await;
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        let mut rest = Vec::new();
        let started = std::time::Instant::now();
        timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert!(rest.is_empty());
        assert!(started.elapsed() >= Duration::from_millis(150));
    }

    #[tokio::test]
    async fn dropping_the_grant_closes_its_tunnels() {
        let port = echo_server().await;
        let mut cfg = config();
        cfg.loopback_registries = vec![("localhost".into(), port)];
        let (egress, _shutdown) = start(cfg).await;
        let grant = egress.grant(LOCAL, granted(None));
        let (mut stream, head, _) =
            ask(&egress, connect(&format!("localhost:{port}")).as_bytes()).await;
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        drop(grant);
        let mut rest = Vec::new();
        timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn shutdown_stops_listening() {
        let (egress, shutdown) = start(config()).await;
        shutdown.cancel();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let refused = TcpStream::connect(egress.addr()).await;
        assert!(refused.is_err(), "still listening");
    }

    #[tokio::test]
    async fn invalid_configurations_are_refused() {
        let mut cfg = config();
        cfg.loopback_registries = vec![("127.0.0.1".into(), 8080)];
        let error = BuildEgress::start(cfg, CancellationToken::new()).await;
        assert!(matches!(error, Err(EgressError::InvalidRegistry { .. })));
        let mut cfg = config();
        cfg.max_connections = 0;
        let error = BuildEgress::start(cfg, CancellationToken::new()).await;
        assert!(matches!(error, Err(EgressError::NoConnections)));
    }

    #[test]
    fn names() {
        for ok in [
            "pypi.org",
            "registry.npmjs.org",
            "localhost",
            "a-b.c9",
            "x.y1z",
        ] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for number in [
            "1.2.3.4",
            "::1",
            "10",
            "0x0a000001",
            "a.0x1",
            "host.123",
            "017700000001",
        ] {
            assert_eq!(check_name(number), Err(BY_NUMBER), "{number}");
        }
        let long = vec!["a".repeat(63); 4].join(".");
        assert!(check_name(&long).is_err(), "254 characters");
        assert!(check_name(&"a".repeat(64)).is_err());
        assert!(check_name("a.b%2e").is_err());
        assert!(check_name("").is_err());
        assert_eq!(normalize_name("PyPI.Org."), "pypi.org");
    }

    #[test]
    fn addresses() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let blocked: Vec<Cidr> = vec![
            "10.88.0.0/16".parse().unwrap(),
            "192.0.2.7".parse().unwrap(),
        ];
        // The documentation range the test machines' registries resolve to is allowed.
        for allowed in [
            "203.0.113.80",
            "2001:db8::1",
            "8.8.8.8",
            "10.89.0.1",
            "100.64.0.1",
        ] {
            assert_eq!(
                address_refusal(ip(allowed), false, &blocked),
                None,
                "{allowed}"
            );
        }
        for (refused, why) in [
            ("127.0.0.1", "loopback"),
            ("127.9.9.9", "loopback"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("::", "unspecified"),
            ("255.255.255.255", "broadcast"),
            ("224.0.0.1", "multicast"),
            ("ff02::1", "multicast"),
            ("169.254.1.1", "link-local"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("169.254.169.254", "metadata"),
            ("fd00:ec2::254", "metadata"),
            ("100.100.100.200", "metadata"),
            ("::ffff:169.254.169.254", "metadata"),
            ("240.0.0.1", "reserved"),
            ("::127.0.0.2", "IPv4-compatible"),
            ("10.88.3.4", "blocked range 10.88.0.0/16"),
            ("::ffff:10.88.3.4", "blocked range 10.88.0.0/16"),
            ("192.0.2.7", "blocked range 192.0.2.7/32"),
        ] {
            let got = address_refusal(ip(refused), false, &blocked);
            assert!(
                got.as_deref().is_some_and(|g| g.contains(why)),
                "{refused}: {got:?}"
            );
        }
        // The loopback exception is for loopback only.
        assert_eq!(address_refusal(ip("127.0.0.1"), true, &blocked), None);
        assert_eq!(address_refusal(ip("::1"), true, &blocked), None);
        assert!(address_refusal(ip("169.254.169.254"), true, &blocked).is_some());
        assert!(address_refusal(ip("10.88.0.1"), true, &blocked).is_some());
    }

    #[test]
    fn printable_targets() {
        assert_eq!(printable("a\nb"), "a\\nb");
        assert!(printable(&"x".repeat(1000)).chars().count() <= MAX_PRINTED + 1);
    }
}
