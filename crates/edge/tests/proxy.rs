//! The edge in-process, against real upstream servers on loopback: routing by host,
//! forwarded headers, WebSocket-style upgrades, error pages, and route swaps that do not drop
//! requests in flight; HTTPS with SNI and ALPN, certificate swaps, HTTP→HTTPS redirects and
//! ACME HTTP-01 answers.

use berth_edge::certs::{CertEntry, CertSnapshot};
use berth_edge::listen::Listeners;
use berth_edge::local_ca::LocalCa;
use berth_edge::routes::{Route, RouteSnapshot};
use berth_edge::server::{run, EdgeConfig, TlsSettings};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// An upstream that answers every request with its name and the request head it saw, after
/// `delay`; an `Upgrade: echo` request is switched to a byte echo.
async fn upstream(name: &'static str, delay: Duration) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut n = 0;
                while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(m) => n += m,
                    }
                }
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                if head.to_ascii_lowercase().contains("upgrade: echo") {
                    let _ = s
                        .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
                        .await;
                    let mut b = [0u8; 1024];
                    while let Ok(m) = s.read(&mut b).await {
                        if m == 0 || s.write_all(&b[..m]).await.is_err() {
                            return;
                        }
                    }
                    return;
                }
                tokio::time::sleep(delay).await;
                let body = format!("{name}\n{head}");
                let _ = s
                    .write_all(
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                            .as_bytes(),
                    )
                    .await;
            });
        }
    });
    addr
}

fn write_routes(path: &Path, generation: u64, host: &str, upstreams: Vec<SocketAddr>) {
    write_table(path, generation, &[(host, upstreams, false)], &[]);
}

/// A table whose one route serves `release` (a later generation of the same release is a
/// restart, not a new deploy).
fn write_release(
    path: &Path,
    generation: u64,
    release: u32,
    host: &str,
    upstreams: Vec<SocketAddr>,
) {
    let mut routes = BTreeMap::new();
    routes.insert(
        host.to_string(),
        Route {
            app: "app".into(),
            release,
            upstreams,
            https_redirect: false,
            canary: None,
            sleeping: false,
        },
    );
    RouteSnapshot {
        generation,
        routes,
        acme_challenges: BTreeMap::new(),
    }
    .save(path)
    .expect("save routes");
}

fn write_table(
    path: &Path,
    generation: u64,
    hosts: &[(&str, Vec<SocketAddr>, bool)],
    challenges: &[(&str, &str)],
) {
    let mut routes = BTreeMap::new();
    for (host, upstreams, https_redirect) in hosts {
        routes.insert(
            host.to_string(),
            Route {
                app: "app".into(),
                release: generation as u32,
                upstreams: upstreams.clone(),
                https_redirect: *https_redirect,
                canary: None,
                sleeping: false,
            },
        );
    }
    RouteSnapshot {
        generation,
        routes,
        acme_challenges: challenges
            .iter()
            .map(|(t, a)| (t.to_string(), a.to_string()))
            .collect(),
    }
    .save(path)
    .expect("save routes");
}

struct Edge {
    addr: SocketAddr,
    tls_addr: SocketAddr,
    dir: tempfile::TempDir,
    stop: CancellationToken,
    io_uring: bool,
}

impl Edge {
    async fn start() -> Self {
        Self::start_with(true, &[]).await
    }

    /// An edge serving plain HTTP on epoll (as where io_uring is unavailable).
    async fn start_on_epoll() -> Self {
        Self::start_with(false, &[]).await
    }

    /// An edge that keeps the forwarding headers of peers in `trusted` (`--trusted-proxy`).
    async fn start_trusting(trusted: &[&str]) -> Self {
        Self::start_with(true, trusted).await
    }

    async fn start_with(io_uring: bool, trusted: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        // Two sockets each, as an edge on two cores has.
        let listener = Listeners::bind("127.0.0.1:0".parse().expect("addr"), 2).expect("bind");
        let tls_listener = Listeners::bind("127.0.0.1:0".parse().expect("addr"), 2).expect("bind");
        let addr = listener.local_addr();
        let tls_addr = tls_listener.local_addr();
        let cfg = EdgeConfig {
            listen: addr,
            routes_file: dir.path().join("routes.json"),
            applied_file: dir.path().join("applied"),
            tls: Some(TlsSettings {
                listen: tls_addr,
                certs_file: dir.path().join("certs.json"),
            }),
            metrics_file: Some(dir.path().join("metrics.json")),
            access_log: Some(dir.path().join("access.log")),
            handover: None,
            io_uring,
            trusted_proxies: berth_edge::policy::TrustedProxies::new(
                trusted.iter().map(|c| c.parse().expect("cidr")).collect(),
            ),
        };
        let stop = CancellationToken::new();
        tokio::spawn(run(cfg, listener, Some(tls_listener), stop.clone()));
        Self {
            addr,
            tls_addr,
            dir,
            stop,
            io_uring,
        }
    }

    fn certs(&self) -> std::path::PathBuf {
        self.dir.path().join("certs.json")
    }

    fn routes(&self) -> std::path::PathBuf {
        self.dir.path().join("routes.json")
    }

    async fn wait_applied(&self, generation: u64) {
        for _ in 0..200 {
            let g = std::fs::read_to_string(self.dir.path().join("applied")).unwrap_or_default();
            if g.trim().parse::<u64>().is_ok_and(|g| g >= generation) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("edge never applied generation {generation}");
    }

    async fn get(&self, host: &str) -> (u16, String) {
        self.get_path(host, "/p?q=1").await
    }

    async fn get_path(&self, host: &str, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(self.addr).await.expect("connect");
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.expect("read");
        let text = String::from_utf8_lossy(&out).to_string();
        let status = text[9..12].parse().expect("status");
        (
            status,
            text.split_once("\r\n\r\n")
                .map(|x| x.1.to_string())
                .unwrap_or_default(),
        )
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[tokio::test]
async fn routes_by_host_and_forwards_client_details() {
    routes_by_host_and_forwards_client_details_on(Edge::start().await).await;
}

/// The same where plain HTTP is served on epoll (io_uring unavailable).
#[tokio::test]
async fn routes_by_host_and_forwards_client_details_on_epoll() {
    routes_by_host_and_forwards_client_details_on(Edge::start_on_epoll().await).await;
}

async fn routes_by_host_and_forwards_client_details_on(edge: Edge) {
    let a = upstream("alpha", Duration::ZERO).await;
    write_routes(&edge.routes(), 10, "alpha.localhost", vec![a]);
    edge.wait_applied(10).await;
    let (status, body) = edge.get("Alpha.localhost:8080").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("alpha\nGET /p?q=1 HTTP/1.1"), "{body}");
    let lower = body.to_ascii_lowercase();
    assert!(lower.contains("x-forwarded-for: 127.0.0.1"), "{body}");
    assert!(
        lower.contains("x-forwarded-host: alpha.localhost:8080"),
        "{body}"
    );
    assert!(lower.contains("x-forwarded-proto: http"), "{body}");

    let (status, body) = edge.get("unknown.localhost").await;
    assert_eq!(status, 404);
    assert!(body.contains("unknown.localhost"), "{body}");
    // Not a host name at all: refused, and not echoed.
    let (status, body) = edge.get("<b>unknown</b>.localhost").await;
    assert_eq!(status, 400);
    assert!(!body.contains("<b>"), "{body}");
}

#[tokio::test]
async fn dead_upstreams_get_a_502_that_leaks_nothing() {
    let edge = Edge::start().await;
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    write_routes(&edge.routes(), 1, "gone.localhost", vec![dead]);
    edge.wait_applied(1).await;
    let (status, body) = edge.get("gone.localhost").await;
    assert_eq!(status, 502);
    assert!(
        !body.contains(&dead.port().to_string()) && !body.contains("127.0.0.1"),
        "{body}"
    );
    write_routes(&edge.routes(), 2, "gone.localhost", vec![]);
    edge.wait_applied(2).await;
    assert_eq!(edge.get("gone.localhost").await.0, 503);
}

#[tokio::test]
async fn a_get_caught_between_two_instances_waits_for_the_new_one_instead_of_failing() {
    let edge = Edge::start().await;
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    write_routes(&edge.routes(), 1, "moving.localhost", vec![dead]);
    edge.wait_applied(1).await;
    // The instance is gone; its replacement is routed a moment after the request arrives.
    let routes = edge.routes();
    let replace = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let new = upstream("replacement", Duration::ZERO).await;
        write_routes(&routes, 2, "moving.localhost", vec![new]);
    });
    let (status, body) = edge.get("moving.localhost").await;
    replace.await.expect("replace");
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("replacement\n"), "{body}");
}

/// An instance that reads each request, counts it and drops the connection unanswered
/// (as an app that crashes on it).
async fn dropping_upstream() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut n = 0;
                while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(m) => n += m,
                    }
                }
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn a_get_an_instance_dropped_goes_only_to_another_instance() {
    use std::sync::atomic::Ordering;
    let edge = Edge::start().await;
    // The instance stays: the request is not sent to it again and again.
    let (a, seen_a) = dropping_upstream().await;
    write_routes(&edge.routes(), 1, "drop.localhost", vec![a]);
    edge.wait_applied(1).await;
    assert_eq!(edge.get("drop.localhost").await.0, 502);
    let first = seen_a.load(Ordering::SeqCst);
    assert!((1..=2).contains(&first), "sent {first} times");
    // The app is replaced while the request waits: the new instance answers it.
    let routes = edge.routes();
    let replace = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let b = upstream("replacement", Duration::ZERO).await;
        write_routes(&routes, 2, "drop.localhost", vec![b]);
    });
    let (status, body) = edge.get("drop.localhost").await;
    replace.await.expect("replace");
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("replacement\n"), "{body}");
    let second = seen_a.load(Ordering::SeqCst) - first;
    assert!(
        (1..=2).contains(&second),
        "sent {second} times to the dropping instance"
    );

    // Restarted (same release) at another address: the request it may have crashed on is
    // not sent to it again.
    let (c, seen_c) = dropping_upstream().await;
    write_release(&edge.routes(), 3, 7, "drop.localhost", vec![c]);
    edge.wait_applied(3).await;
    let routes = edge.routes();
    let restart = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (d, seen_d) = dropping_upstream().await;
        write_release(&routes, 4, 7, "drop.localhost", vec![d]);
        seen_d
    });
    assert_eq!(edge.get("drop.localhost").await.0, 502);
    let seen_d = restart.await.expect("restart");
    assert!((1..=2).contains(&seen_c.load(Ordering::SeqCst)));
    assert_eq!(
        seen_d.load(Ordering::SeqCst),
        0,
        "sent again after a restart"
    );
}

#[tokio::test]
async fn upgrades_are_tunnelled_both_ways_and_outlive_route_changes() {
    upgrades_are_tunnelled_both_ways_and_outlive_route_changes_on(Edge::start().await).await;
}

/// The same where plain HTTP is served on epoll (io_uring unavailable).
#[tokio::test]
async fn upgrades_are_tunnelled_both_ways_and_outlive_route_changes_on_epoll() {
    upgrades_are_tunnelled_both_ways_and_outlive_route_changes_on(Edge::start_on_epoll().await)
        .await;
}

async fn upgrades_are_tunnelled_both_ways_and_outlive_route_changes_on(edge: Edge) {
    let a = upstream("ws", Duration::ZERO).await;
    write_routes(&edge.routes(), 5, "ws.localhost", vec![a]);
    edge.wait_applied(5).await;
    let mut s = TcpStream::connect(edge.addr).await.expect("connect");
    s.write_all(b"GET /socket HTTP/1.1\r\nHost: ws.localhost\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .expect("write");
    let mut head = vec![0u8; 1024];
    let n = s.read(&mut head).await.expect("read");
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    for msg in [&b"hello"[..], b"second message"] {
        s.write_all(msg).await.expect("write");
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).await.expect("echo");
        assert_eq!(back, msg);
    }
    // Other apps deploy (new tables, one without this app's old instances even): the
    // tunnel stays open.
    let other = upstream("other", Duration::ZERO).await;
    write_table(
        &edge.routes(),
        6,
        &[
            ("ws.localhost", vec![a], false),
            ("other.localhost", vec![other], false),
        ],
        &[],
    );
    edge.wait_applied(6).await;
    write_routes(&edge.routes(), 7, "other.localhost", vec![other]);
    edge.wait_applied(7).await;
    s.write_all(b"after the deploys").await.expect("write");
    let mut back = vec![0u8; 17];
    s.read_exact(&mut back)
        .await
        .expect("echo after route changes");
    assert_eq!(&back, b"after the deploys");
}

#[tokio::test]
async fn a_route_swap_does_not_drop_requests_in_flight() {
    let edge = Edge::start().await;
    let slow_old = upstream("old", Duration::from_millis(600)).await;
    let new = upstream("new", Duration::ZERO).await;
    write_routes(&edge.routes(), 1, "app.localhost", vec![slow_old]);
    edge.wait_applied(1).await;
    let edge = std::sync::Arc::new(edge);
    let in_flight = {
        let edge = edge.clone();
        tokio::spawn(async move { edge.get("app.localhost").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    write_routes(&edge.routes(), 2, "app.localhost", vec![new]);
    edge.wait_applied(2).await;
    let (status, body) = edge.get("app.localhost").await;
    assert_eq!((status, body.starts_with("new")), (200, true));
    let (status, body) = in_flight.await.expect("join");
    assert_eq!((status, body.starts_with("old")), (200, true), "{body}");
}

/// What one HTTPS request saw.
#[derive(Debug)]
struct HttpsAnswer {
    status: u16,
    body: String,
    version: hyper::Version,
    serial: String,
}

/// One request over a new TLS connection that trusts only `root_pem`, offering `alpn`.
async fn https_get(
    addr: SocketAddr,
    server_name: &str,
    root_pem: &str,
    alpn: &[&[u8]],
) -> Result<HttpsAnswer, String> {
    use http_body_util::BodyExt;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
        .map_err(|e| e.to_string())?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (_, conn) = tls.get_ref();
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no certificate")?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).map_err(|e| e.to_string())?;
    let serial = parsed.raw_serial_as_string();
    let h2 = conn.alpn_protocol() == Some(b"h2");
    let io = hyper_util::rt::TokioIo::new(tls);
    let uri = format!("https://{server_name}/p?q=1");
    let req = hyper::Request::get(&uri)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = if h2 {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(req).await.map_err(|e| e.to_string())?
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut req = req;
        *req.uri_mut() = "/p?q=1"
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| e.to_string())?;
        req.headers_mut().insert(
            hyper::header::HOST,
            server_name
                .parse()
                .map_err(|e: hyper::header::InvalidHeaderValue| e.to_string())?,
        );
        send.send_request(req).await.map_err(|e| e.to_string())?
    };
    let status = resp.status().as_u16();
    let version = resp.version();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(HttpsAnswer {
        status,
        body: String::from_utf8_lossy(&body).to_string(),
        version,
        serial,
    })
}

fn local_cert(ca: &LocalCa, names: &[&str]) -> CertEntry {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let issued = ca.issue(&names, Duration::from_secs(3600)).expect("issue");
    CertEntry {
        names,
        chain_pem: issued.chain_pem,
        key_pem: issued.key_pem.to_string(),
    }
}

/// Over HTTPS with HTTP/1.1, requests on one connection are answered in turn, each instance
/// told it came over HTTPS; a connection the client asks to close ends with TLS's own
/// close_notify, so the client knows the last response is whole.
#[tokio::test]
async fn https_http1_keeps_connections_alive_and_closes_them_cleanly() {
    let edge = Edge::start().await;
    let ca = LocalCa::generate("edge-test").expect("ca");
    let a = upstream("alpha", Duration::ZERO).await;
    CertSnapshot {
        generation: 1,
        fallback: None,
        certs: vec![local_cert(&ca, &["shop.test"])],
    }
    .save(&edge.certs())
    .expect("certs");
    write_routes(&edge.routes(), 1, "shop.test", vec![a]);
    edge.wait_applied(1).await;
    let mut tls = tls_http1(&edge, &ca, "shop.test").await;
    let mut pending = Vec::new();
    for path in ["/one", "/two"] {
        tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: shop.test\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let (head, body) = read_response(&mut tls, &mut pending, false).await;
        let body = String::from_utf8_lossy(&body).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(!head.contains("connection: close"), "kept alive: {head}");
        assert!(
            body.starts_with(&format!("alpha\nget {path} http/1.1")),
            "{body}"
        );
        assert!(body.contains("x-forwarded-proto: https"), "{body}");
        let port = edge.tls_addr.port();
        assert!(
            body.contains(&format!("x-forwarded-port: {port}\r\n")),
            "{body}"
        );
        assert!(
            body.contains("forwarded: for=127.0.0.1;host=shop.test;proto=https\r\n"),
            "{body}"
        );
    }
    tls.write_all(b"GET /three HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let (head, body) = read_response(&mut tls, &mut pending, false).await;
    assert!(head.contains("connection: close"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("GET /three"));
    // A TLS client reading on meets close_notify (a clean end), not a cut connection.
    let mut rest = Vec::new();
    let end = tls.read_to_end(&mut rest).await;
    assert!(end.is_ok() && rest.is_empty(), "{end:?} {rest:?}");
}

/// A TLS connection to the edge for `name`, trusting `ca`, speaking HTTP/1.1.
async fn tls_http1(
    edge: &Edge,
    ca: &LocalCa,
    name: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca.cert_pem().as_bytes()) {
        roots.add(c.expect("pem")).expect("root");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
    let name = rustls::pki_types::ServerName::try_from(name.to_string()).expect("name");
    for _ in 0..100 {
        let tcp = TcpStream::connect(edge.tls_addr).await.expect("connect");
        if let Ok(t) = connector.connect(name.clone(), tcp).await {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no TLS handshake with the edge");
}

/// Over HTTPS too: a repeated Host is refused, a client's forwarding headers replaced.
#[tokio::test]
async fn https_refuses_repeated_hosts_and_replaces_forwarding_headers() {
    let edge = Edge::start().await;
    let ca = LocalCa::generate("edge-test").expect("ca");
    let a = upstream("alpha", Duration::ZERO).await;
    CertSnapshot {
        generation: 1,
        fallback: None,
        certs: vec![local_cert(&ca, &["shop.test"])],
    }
    .save(&edge.certs())
    .expect("certs");
    write_routes(&edge.routes(), 1, "shop.test", vec![a]);
    edge.wait_applied(1).await;
    let mut tls = tls_http1(&edge, &ca, "shop.test").await;
    tls.write_all(
        b"GET / HTTP/1.1\r\nHost: shop.test\r\nHost: other.test\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("write");
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(!text.contains("alpha"), "{text}");

    let mut tls = tls_http1(&edge, &ca, "shop.test").await;
    tls.write_all(
        format!("GET / HTTP/1.1\r\nHost: shop.test\r\n{SPOOFED}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .expect("write");
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(
        !text.contains("6.6.6.6") && !text.contains("evil.test"),
        "{text}"
    );
    assert!(text.contains("x-forwarded-proto: https\r\n"), "{text}");
    assert!(text.contains("x-forwarded-for: 127.0.0.1\r\n"), "{text}");
}

#[tokio::test]
async fn https_picks_certificates_by_sni_and_speaks_h2_and_http1() {
    let edge = Edge::start().await;
    let ca = LocalCa::generate("edge-test").expect("ca");
    let a = upstream("alpha", Duration::ZERO).await;
    let b = upstream("beta", Duration::ZERO).await;
    CertSnapshot {
        generation: 1,
        fallback: Some(local_cert(&ca, &["localhost"])),
        certs: vec![
            local_cert(&ca, &["shop.test"]),
            local_cert(&ca, &["*.apps.test"]),
        ],
    }
    .save(&edge.certs())
    .expect("certs");
    write_table(
        &edge.routes(),
        1,
        &[
            ("alpha.apps.test", vec![a], false),
            ("shop.test", vec![b], false),
        ],
        &[],
    );
    edge.wait_applied(1).await;
    let mut answer = Err("not tried".to_string());
    for _ in 0..100 {
        answer = https_get(
            edge.tls_addr,
            "shop.test",
            ca.cert_pem(),
            &[b"h2", b"http/1.1"],
        )
        .await;
        if answer.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let h2 = answer.expect("https over h2");
    assert_eq!((h2.status, h2.version), (200, hyper::Version::HTTP_2));
    assert!(
        h2.body.starts_with("beta\nGET /p?q=1 HTTP/1.1"),
        "{}",
        h2.body
    );
    let lower = h2.body.to_ascii_lowercase();
    assert!(
        lower.contains("host: shop.test"),
        "instances get a Host header: {}",
        h2.body
    );
    assert!(lower.contains("x-forwarded-proto: https"), "{}", h2.body);
    assert!(
        lower.contains(&format!("x-forwarded-port: {}", edge.tls_addr.port())),
        "{}",
        h2.body
    );
    assert!(
        lower.contains("forwarded: for=127.0.0.1;host=shop.test;proto=https"),
        "{}",
        h2.body
    );

    let h1 = https_get(
        edge.tls_addr,
        "alpha.apps.test",
        ca.cert_pem(),
        &[b"http/1.1"],
    )
    .await
    .expect("https over http/1.1 via the wildcard");
    assert_eq!((h1.status, h1.version), (200, hyper::Version::HTTP_11));
    assert!(h1.body.starts_with("alpha"), "{}", h1.body);
    assert!(
        h1.body
            .to_ascii_lowercase()
            .contains("x-forwarded-proto: https"),
        "{}",
        h1.body
    );
    assert_ne!(h1.serial, h2.serial, "each name gets its own certificate");

    // A client trusting another CA refuses the edge: the certificate is really checked.
    let stranger = LocalCa::generate("stranger").expect("ca");
    let refused = https_get(edge.tls_addr, "shop.test", stranger.cert_pem(), &[b"h2"]).await;
    assert!(refused.is_err(), "{refused:?}");
    // An unknown name gets the fallback, which does not cover it.
    let unknown = https_get(edge.tls_addr, "unknown.example", ca.cert_pem(), &[b"h2"]).await;
    assert!(unknown.is_err(), "{unknown:?}");
}

#[tokio::test]
async fn a_certificate_swap_drops_no_request() {
    let edge = Edge::start().await;
    let ca = LocalCa::generate("edge-test").expect("ca");
    let a = upstream("alpha", Duration::ZERO).await;
    let first = local_cert(&ca, &["swap.test"]);
    CertSnapshot {
        generation: 1,
        fallback: None,
        certs: vec![first],
    }
    .save(&edge.certs())
    .expect("certs");
    write_table(&edge.routes(), 1, &[("swap.test", vec![a], false)], &[]);
    edge.wait_applied(1).await;
    let root = ca.cert_pem().to_string();
    let tls_addr = edge.tls_addr;
    let load = tokio::spawn(async move {
        let mut serials = Vec::new();
        let mut failures = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        for _ in 0..2000 {
            if tokio::time::Instant::now() > deadline {
                break;
            }
            match https_get(tls_addr, "swap.test", &root, &[b"h2", b"http/1.1"]).await {
                Ok(r) if r.status == 200 => serials.push(r.serial),
                Ok(r) => failures.push(format!("status {}", r.status)),
                Err(e) => failures.push(e),
            }
        }
        (serials, failures)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    for generation in 2..5 {
        CertSnapshot {
            generation,
            fallback: None,
            certs: vec![local_cert(&ca, &["swap.test"])],
        }
        .save(&edge.certs())
        .expect("certs");
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let (serials, failures) = load.await.expect("join");
    // The edge loads certificates before the routes that need them, so none fails.
    assert!(failures.is_empty(), "{failures:?}");
    let mut distinct = serials.clone();
    distinct.dedup();
    assert!(
        distinct.len() >= 3,
        "the edge served the new certificates: {distinct:?}"
    );
}

#[tokio::test]
async fn plain_http_redirects_to_https_per_domain_and_answers_acme_challenges() {
    let edge = Edge::start().await;
    let a = upstream("alpha", Duration::ZERO).await;
    write_table(
        &edge.routes(),
        1,
        &[
            ("secure.test", vec![a], true),
            ("plain.test", vec![a], false),
        ],
        &[("tok-1", "tok-1.thumbprint")],
    );
    edge.wait_applied(1).await;
    let (status, _) = edge.get_path("secure.test:80", "/a/b?c=d").await;
    assert_eq!(status, 308);
    let mut s = TcpStream::connect(edge.addr).await.expect("connect");
    s.write_all(b"GET /a/b?c=d HTTP/1.1\r\nHost: secure.test:80\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    let location = format!(
        "location: https://secure.test:{}/a/b?c=d",
        edge.tls_addr.port()
    );
    assert!(out.to_ascii_lowercase().contains(&location), "{out}");
    assert_eq!(
        edge.get("plain.test").await.0,
        200,
        "other domains stay on HTTP"
    );
    // The challenge answer comes before any redirect, for any host.
    let (status, body) = edge
        .get_path("secure.test", "/.well-known/acme-challenge/tok-1")
        .await;
    assert_eq!((status, body.as_str()), (200, "tok-1.thumbprint"));
    let (status, _) = edge
        .get_path("secure.test", "/.well-known/acme-challenge/forged")
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn oversized_heads_and_bodies_are_refused_before_any_app_sees_them() {
    let edge = Edge::start().await;
    let a = upstream("alpha", Duration::ZERO).await;
    write_routes(&edge.routes(), 1, "alpha.test", vec![a]);
    edge.wait_applied(1).await;

    // A head over the limit: 431.
    let mut s = TcpStream::connect(edge.addr).await.expect("connect");
    let big = "x".repeat(100 * 1024);
    let req =
        format!("GET / HTTP/1.1\r\nHost: alpha.test\r\nX-Big: {big}\r\nConnection: close\r\n\r\n");
    let _ = s.write_all(req.as_bytes()).await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");

    // A body declared over the limit: 413, nothing sent on.
    let mut s = TcpStream::connect(edge.addr).await.expect("connect");
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: alpha.test\r\nContent-Length: 209715200\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("larger than the 100 MiB"), "{text}");
    assert!(!text.contains("alpha"), "the app never answered: {text}");

    // The edge still serves.
    assert_eq!(edge.get("alpha.test").await.0, 200);
}

#[tokio::test]
async fn a_client_that_never_finishes_its_request_head_is_closed() {
    let edge = Edge::start().await;
    let a = upstream("alpha", Duration::ZERO).await;
    write_routes(&edge.routes(), 1, "alpha.test", vec![a]);
    edge.wait_applied(1).await;
    let mut s = TcpStream::connect(edge.addr).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: alph")
        .await
        .expect("write");
    // Nothing more: the edge closes the connection (after HEADER_READ_TIMEOUT) instead
    // of holding it open for as long as the client likes.
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut out)).await;
    assert!(
        closed.is_ok(),
        "the edge kept a slow client's connection open"
    );
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}

#[tokio::test]
async fn plain_http2_with_prior_knowledge_is_served() {
    let edge = Edge::start().await;
    let a = upstream("alpha", Duration::ZERO).await;
    write_routes(&edge.routes(), 1, "alpha.test", vec![a]);
    edge.wait_applied(1).await;
    let stream = TcpStream::connect(edge.addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2c handshake");
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .uri("http://alpha.test/h2c")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("h2c request");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    use http_body_util::BodyExt;
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(body.starts_with("alpha\nGET /h2c HTTP/1.1"), "{body}");
}

/// An instance that keeps its connection open and answers the requests on it in turn with
/// the canned responses (chunked with a trailer, sized, a large sized one, a HEAD, one with a
/// header named in `Connection`), then one delimited by closing; counts the connections it accepted.
async fn framing_upstream() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(m) => buf.extend_from_slice(&chunk[..m]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    buf.drain(..end);
                    let path = head.split(' ').nth(1).unwrap_or_default().to_string();
                    let large;
                    let answer: &[u8] = match path.as_str() {
                        "/large" => {
                            large = [
                                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", LARGE)
                                    .into_bytes(),
                                large_body(),
                            ]
                            .concat();
                            &large
                        }
                        "/chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-sum: 12\r\n\r\n",
                        "/sized" => b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\nX-App: yes\r\n\r\nsize",
                        "/head" => b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
                        "/named" => b"HTTP/1.1 200 OK\r\nConnection: x-hop\r\nX-Hop: secret\r\nContent-Length: 2\r\n\r\nok",
                        "/hints" => b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nafter",
                        "/both" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n2\r\nab\r\n0\r\nx-t: 1\r\n\r\n",
                        "/signed" => b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
                        "/twice" => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
                        "/bad-chunk" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nwhat\r\n0\r\n\r\n",
                        "/conn-length" => b"HTTP/1.1 200 OK\r\nConnection: content-length, transfer-encoding\r\nContent-Length: 2\r\n\r\nok",
                        // A body-less answer followed by bytes that look like the next one.
                        "/no-content" => b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nwrong",
                        "/late" => {
                            if s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await.is_err() {
                                return;
                            }
                            // The same, sent a moment after the response ended.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nwrong"
                        }
                        _ => {
                            let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil the end").await;
                            return;
                        }
                    };
                    if s.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// Length of the large body `framing_upstream` answers `/large` with.
const LARGE: usize = 3 << 20;

/// A body that shows any loss, repeat or reordering.
fn large_body() -> Vec<u8> {
    (0..LARGE)
        .map(|i| (i % 251) as u8 ^ (i >> 16) as u8)
        .collect()
}

/// Reads one response from `s` (bytes beyond it stay in `pending`): its head and body.
async fn read_response<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    pending: &mut Vec<u8>,
    head_request: bool,
) -> (String, Vec<u8>) {
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let m = s.read(&mut chunk).await.expect("read");
        assert!(
            m > 0,
            "closed before a response: {:?}",
            String::from_utf8_lossy(pending)
        );
        pending.extend_from_slice(&chunk[..m]);
    };
    let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
    pending.drain(..end);
    let body_end = if head_request {
        Some(0)
    } else if let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        Some(len)
    } else if head.contains("transfer-encoding: chunked") {
        loop {
            if let Some(i) = pending.windows(5).position(|w| w == b"0\r\nx-") {
                if let Some(j) = pending[i..].windows(4).position(|w| w == b"\r\n\r\n") {
                    break Some(i + j + 4);
                }
            }
            let m = s.read(&mut chunk).await.expect("read");
            assert!(m > 0, "chunked body cut");
            pending.extend_from_slice(&chunk[..m]);
        }
    } else {
        None
    };
    match body_end {
        Some(n) => {
            while pending.len() < n {
                let m = s.read(&mut chunk).await.expect("read");
                assert!(m > 0, "body cut");
                pending.extend_from_slice(&chunk[..m]);
            }
            let body = pending.drain(..n).collect();
            (head, body)
        }
        None => {
            s.read_to_end(pending).await.expect("read");
            (head, std::mem::take(pending))
        }
    }
}

#[tokio::test]
async fn responses_are_relayed_byte_for_byte_over_kept_alive_connections() {
    responses_are_relayed_byte_for_byte_over_kept_alive_connections_on(Edge::start().await).await;
}

/// The same where plain HTTP is served on epoll (io_uring unavailable).
#[tokio::test]
async fn responses_are_relayed_byte_for_byte_over_kept_alive_connections_on_epoll() {
    responses_are_relayed_byte_for_byte_over_kept_alive_connections_on(
        Edge::start_on_epoll().await,
    )
    .await;
}

async fn responses_are_relayed_byte_for_byte_over_kept_alive_connections_on(edge: Edge) {
    use std::sync::atomic::Ordering;
    let (a, accepted) = framing_upstream().await;
    write_routes(&edge.routes(), 1, "frames.localhost", vec![a]);
    edge.wait_applied(1).await;
    let mut s = TcpStream::connect(edge.addr).await.expect("connect");
    let mut pending = Vec::new();
    // Two requests written at once (pipelined), then one at a time, on one connection.
    s.write_all(b"GET /chunked HTTP/1.1\r\nHost: frames.localhost\r\n\r\nGET /sized HTTP/1.1\r\nHost: frames.localhost\r\n\r\n")
        .await
        .expect("write");
    let (head, body) = read_response(&mut s, &mut pending, false).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(
        body,
        b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-sum: 12\r\n\r\n"
    );
    let (head, body) = read_response(&mut s, &mut pending, false).await;
    assert!(
        head.starts_with("http/1.1 201") && head.contains("x-app: yes"),
        "{head}"
    );
    assert_eq!(body, b"size");
    // Large bodies (passed between the sockets inside the kernel), one to a client that
    // reads at once and one to a client that reads late, its socket full meanwhile; then a
    // small one after them on the same connections.
    for late in [false, true] {
        s.write_all(b"GET /large HTTP/1.1\r\nHost: frames.localhost\r\n\r\n")
            .await
            .expect("write");
        if late {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let (head, body) = read_response(&mut s, &mut pending, false).await;
        assert!(head.contains(&format!("content-length: {LARGE}")), "{head}");
        assert!(body == large_body(), "the large body arrived changed");
    }
    s.write_all(b"GET /sized HTTP/1.1\r\nHost: frames.localhost\r\n\r\n")
        .await
        .expect("write");
    let (_, body) = read_response(&mut s, &mut pending, false).await;
    assert_eq!(body, b"size");
    for _ in 0..3 {
        s.write_all(b"HEAD /head HTTP/1.1\r\nHost: frames.localhost\r\n\r\n")
            .await
            .expect("write");
        let (head, body) = read_response(&mut s, &mut pending, true).await;
        assert!(head.contains("content-length: 1000"), "{head}");
        assert!(body.is_empty());
    }
    s.write_all(b"GET /named HTTP/1.1\r\nHost: frames.localhost\r\n\r\n")
        .await
        .expect("write");
    let (head, body) = read_response(&mut s, &mut pending, false).await;
    assert!(
        !head.contains("x-hop") && !head.contains("connection: x-hop"),
        "{head}"
    );
    assert_eq!(body, b"ok");
    // An informational response that came with the final one: the final one is answered.
    s.write_all(b"GET /hints HTTP/1.1\r\nHost: frames.localhost\r\n\r\n")
        .await
        .expect("write");
    let (head, body) = read_response(&mut s, &mut pending, false).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, b"after");
    // Every one of those went over one pooled connection to the instance (with io_uring,
    // one for a connection's first request, on epoll, and one for the rest, on the ring).
    let pools = if edge.io_uring { 2 } else { 1 };
    assert!((1..=pools).contains(&accepted.load(Ordering::SeqCst)));
    // A body delimited by the instance closing reaches the client whole, and the edge
    // then closes the client's connection too (nothing else could tell where it ends).
    s.write_all(b"GET /until-close HTTP/1.1\r\nHost: frames.localhost\r\n\r\n")
        .await
        .expect("write");
    let (head, body) = read_response(&mut s, &mut pending, false).await;
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(body, b"until the end");
}

/// Sends `request` on a new connection and reads everything the edge answers until it
/// closes the connection.
async fn exchange_raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).to_string()
}

#[tokio::test]
async fn repeated_or_malformed_hosts_are_refused_on_both_paths() {
    repeated_or_malformed_hosts_are_refused_on(Edge::start().await).await;
}

/// The same where plain HTTP is served on epoll (io_uring unavailable).
#[tokio::test]
async fn repeated_or_malformed_hosts_are_refused_on_epoll() {
    repeated_or_malformed_hosts_are_refused_on(Edge::start_on_epoll().await).await;
}

async fn repeated_or_malformed_hosts_are_refused_on(edge: Edge) {
    let a = upstream("alpha", Duration::ZERO).await;
    write_table(
        &edge.routes(),
        1,
        &[("a.test", vec![a], false), ("b.test", vec![a], false)],
        &[],
    );
    edge.wait_applied(1).await;
    let refused: [&[u8]; 12] = [
        // The lean path's requests (no body).
        b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: a.test\r\nConnection: close\r\n\r\n",
        // A first Host that is not UTF-8 does not hide the second.
        b"GET / HTTP/1.1\r\nHost: \xffa.test\r\nHost: a.test\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test:abc\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test:99999\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test:\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: user@a.test\r\nConnection: close\r\n\r\n",
        // An absolute-form target that names another host than Host.
        b"GET http://b.test/ HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
        // The full proxy's (a body; an expectation).
        b"POST / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
        b"POST / HTTP/1.1\r\nHost: a.test:+80\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
        b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a.test:8080:1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    ];
    for request in refused {
        let answer = exchange_raw(edge.addr, request).await;
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "{:?}: {answer}",
            String::from_utf8_lossy(request)
        );
        assert!(
            !answer.contains("alpha"),
            "no instance saw {:?}",
            String::from_utf8_lossy(request)
        );
    }
    // Valid hosts still pass, with their port, on both paths.
    let answer = exchange_raw(
        edge.addr,
        b"GET / HTTP/1.1\r\nHost: A.test:8080\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let answer = exchange_raw(
        edge.addr,
        b"GET http://a.test/x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn a_connection_header_cannot_strip_host_or_forwarding_headers() {
    let edge = Edge::start().await;
    let a = upstream("alpha", Duration::ZERO).await;
    write_routes(&edge.routes(), 1, "hop.test", vec![a]);
    edge.wait_applied(1).await;
    let answer = exchange_raw(
        edge.addr,
        b"GET /x HTTP/1.1\r\nHost: hop.test\r\nConnection: close, Host, X-Forwarded-For, Forwarded, X-Secret\r\nX-Secret: 1\r\n\r\n",
    )
    .await;
    let lower = answer.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.1 200"), "{answer}");
    assert!(lower.contains("\r\nhost: hop.test\r\n"), "{answer}");
    assert!(lower.contains("x-forwarded-for: 127.0.0.1\r\n"), "{answer}");
    assert!(lower.contains("forwarded: for=127.0.0.1;"), "{answer}");
    assert!(
        !lower.contains("x-secret"),
        "named headers still go: {answer}"
    );
}

/// The client's own forwarding headers: every one should be replaced.
const SPOOFED: &str = "X-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nX-Forwarded-Host: evil.test\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Port: 1\r\n";

#[tokio::test]
async fn client_forwarding_headers_are_replaced_on_both_paths() {
    let edge = Edge::start().await;
    let a = upstream("alpha", Duration::ZERO).await;
    write_routes(&edge.routes(), 1, "fw.test", vec![a]);
    edge.wait_applied(1).await;
    let port = edge.addr.port();
    for request in [
        format!("GET /lean HTTP/1.1\r\nHost: fw.test\r\n{SPOOFED}Connection: close\r\n\r\n"),
        format!("POST /full HTTP/1.1\r\nHost: fw.test\r\n{SPOOFED}Content-Length: 2\r\nConnection: close\r\n\r\nhi"),
    ] {
        let answer = exchange_raw(edge.addr, request.as_bytes()).await;
        let lower = answer.to_ascii_lowercase();
        assert!(lower.starts_with("http/1.1 200"), "{answer}");
        assert!(!lower.contains("6.6.6.6"), "{answer}");
        assert!(!lower.contains("evil.test"), "{answer}");
        for expected in [
            "x-forwarded-for: 127.0.0.1\r\n".to_string(),
            "x-real-ip: 127.0.0.1\r\n".to_string(),
            "x-forwarded-host: fw.test\r\n".to_string(),
            "x-forwarded-proto: http\r\n".to_string(),
            format!("x-forwarded-port: {port}\r\n"),
            "forwarded: for=127.0.0.1;host=fw.test;proto=http\r\n".to_string(),
        ] {
            assert!(lower.contains(&expected), "{expected:?} in {answer}");
            let name = expected.split(':').next().unwrap_or_default();
            assert_eq!(
                lower.matches(&format!("\r\n{name}:")).count(),
                1,
                "one {name} in {answer}"
            );
        }
    }
}

#[tokio::test]
async fn a_trusted_proxy_s_forwarding_headers_are_kept_and_extended() {
    let edge = Edge::start_trusting(&["127.0.0.1/32"]).await;
    let a = upstream("alpha", Duration::ZERO).await;
    write_routes(&edge.routes(), 1, "fw.test", vec![a]);
    edge.wait_applied(1).await;
    for request in [
        format!("GET /lean HTTP/1.1\r\nHost: fw.test\r\n{SPOOFED}Connection: close\r\n\r\n"),
        format!("POST /full HTTP/1.1\r\nHost: fw.test\r\n{SPOOFED}Content-Length: 2\r\nConnection: close\r\n\r\nhi"),
    ] {
        let answer = exchange_raw(edge.addr, request.as_bytes()).await;
        let lower = answer.to_ascii_lowercase();
        assert!(lower.starts_with("http/1.1 200"), "{answer}");
        for expected in [
            "x-forwarded-for: 6.6.6.6, 127.0.0.1\r\n",
            "x-real-ip: 6.6.6.6\r\n",
            "x-forwarded-host: evil.test\r\n",
            "x-forwarded-proto: https\r\n",
            "x-forwarded-port: 1\r\n",
            "\r\nforwarded: for=6.6.6.6, for=127.0.0.1;host=fw.test;proto=http\r\n",
        ] {
            assert!(lower.contains(expected), "{expected:?} in {answer}");
        }
    }
}

#[tokio::test]
async fn ambiguous_or_malformed_upstream_framing_is_never_relayed_as_if_sound() {
    ambiguous_or_malformed_upstream_framing_on(Edge::start().await).await;
}

/// The same where plain HTTP is served on epoll (io_uring unavailable).
#[tokio::test]
async fn ambiguous_or_malformed_upstream_framing_is_never_relayed_as_if_sound_on_epoll() {
    ambiguous_or_malformed_upstream_framing_on(Edge::start_on_epoll().await).await;
}

async fn ambiguous_or_malformed_upstream_framing_on(edge: Edge) {
    let (a, _) = framing_upstream().await;
    write_routes(&edge.routes(), 1, "frames.localhost", vec![a]);
    edge.wait_applied(1).await;

    // Chunked and a length: relayed in its chunks without the length, and the client's
    // connection closes after it (nothing after it can be trusted), on both paths.
    // (The second request names a header in Connection: the full proxy's.)
    for (request, lean) in [
        (
            &b"GET /both HTTP/1.1\r\nHost: frames.localhost\r\n\r\n"[..],
            true,
        ),
        (
            b"GET /both HTTP/1.1\r\nHost: frames.localhost\r\nConnection: x-hop\r\n\r\n",
            false,
        ),
    ] {
        // Read to the end: the edge closes the connection after the response.
        let answer = exchange_raw(edge.addr, request).await;
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_default();
        let head = head.to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{answer}");
        assert!(!head.contains("content-length"), "{answer}");
        assert!(head.contains("connection: close"), "{answer}");
        if lean {
            assert_eq!(body, "2\r\nab\r\n0\r\nx-t: 1\r\n\r\n");
        } else {
            assert!(body.contains("ab"), "{answer}");
        }
    }

    // A signed or repeated length, a malformed first chunk: a 502, and the connection ends.
    for path in ["/signed", "/twice", "/bad-chunk"] {
        let answer = exchange_raw(
            edge.addr,
            format!("GET {path} HTTP/1.1\r\nHost: frames.localhost\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 502"), "{path}: {answer}");
        assert!(!answer.contains("what"), "{path}: {answer}");
    }

    // A Connection header cannot take the response's framing away.
    let mut s = TcpStream::connect(edge.addr).await.expect("connect");
    let mut pending = Vec::new();
    s.write_all(b"GET /conn-length HTTP/1.1\r\nHost: frames.localhost\r\n\r\n")
        .await
        .expect("write");
    let (head, body) = read_response(&mut s, &mut pending, false).await;
    assert!(head.contains("content-length: 2"), "{head}");
    assert_eq!(body, b"ok");

    // Bytes after a body-less response, with it or a moment later: that connection to the
    // instance is not used again, and the next request gets its own answer.
    for path in ["/no-content", "/late"] {
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: frames.localhost\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let (head, body) = read_response(&mut s, &mut pending, true).await;
        assert!(head.starts_with("http/1.1 204"), "{path}: {head}");
        assert!(body.is_empty());
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.write_all(b"GET /sized HTTP/1.1\r\nHost: frames.localhost\r\n\r\n")
            .await
            .expect("write");
        let (head, body) = read_response(&mut s, &mut pending, false).await;
        assert!(head.starts_with("http/1.1 201"), "after {path}: {head}");
        assert_eq!(body, b"size", "after {path}");
    }
}
