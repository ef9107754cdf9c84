//! The edge in-process, against real upstream servers on loopback: routing by host,
//! forwarded headers, WebSocket-style upgrades, error pages, and route swaps that do not drop
//! requests in flight.

use berth_edge::routes::{Route, RouteSnapshot};
use berth_edge::server::{bind, run, EdgeConfig};
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
    let mut routes = BTreeMap::new();
    routes.insert(
        host.to_string(),
        Route {
            app: "app".into(),
            release: generation as u32,
            upstreams,
        },
    );
    RouteSnapshot { generation, routes }
        .save(path)
        .expect("save routes");
}

struct Edge {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    stop: CancellationToken,
}

impl Edge {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let listener = bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let cfg = EdgeConfig {
            listen: addr,
            routes_file: dir.path().join("routes.json"),
            applied_file: dir.path().join("applied"),
        };
        let stop = CancellationToken::new();
        tokio::spawn(run(cfg, listener, stop.clone()));
        Self { addr, dir, stop }
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
        let mut s = TcpStream::connect(self.addr).await.expect("connect");
        s.write_all(
            format!("GET /p?q=1 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
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
    let edge = Edge::start().await;
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

    let (status, body) = edge.get("<b>unknown</b>.localhost").await;
    assert_eq!(status, 404);
    assert!(body.contains("&lt;b&gt;unknown"), "host is escaped: {body}");
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
async fn upgrades_are_tunnelled_both_ways() {
    let edge = Edge::start().await;
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
