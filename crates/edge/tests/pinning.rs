//! The edge's workers and their cores: under kept-alive connections each worker is kept on
//! a core of its own; when those connections are gone, or when every request comes on a new
//! connection, the workers may run on any core again. One edge per test binary: its worker
//! threads are found by name in this process.

use berth_edge::listen::Listeners;
use berth_edge::routes::{Route, RouteSnapshot};
use berth_edge::server::{run, workers, EdgeConfig};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// An instance answering every request on a kept-alive connection.
async fn instance() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut n = 0;
                loop {
                    match s.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(m) => n += m,
                    }
                    while let Some(end) = buf[..n].windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.copy_within(end + 4..n, 0);
                        n -= end + 4;
                        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n";
                        if s.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// One request on `s`, its answer read whole.
async fn request(s: &mut TcpStream, close: bool) {
    let connection = if close { "close" } else { "keep-alive" };
    let head = format!("GET / HTTP/1.1\r\nHost: app.localhost\r\nConnection: {connection}\r\n\r\n");
    s.write_all(head.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"ok\n") {
        let n = s.read(&mut buf).await.expect("read");
        assert!(n > 0, "the edge closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
}

/// The cores each of the edge's worker threads may run on, by worker.
fn worker_cores() -> Vec<Vec<usize>> {
    let mut found = Vec::new();
    for task in std::fs::read_dir("/proc/self/task")
        .expect("tasks")
        .flatten()
    {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let Some(index) = name.trim().strip_prefix("edge-worker-") else {
            continue;
        };
        let status = std::fs::read_to_string(task.path().join("status")).expect("status");
        let list = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .expect("Cpus_allowed_list")
            .trim()
            .to_string();
        found.push((index.parse::<usize>().expect("index"), cores(&list)));
    }
    found.sort();
    found.into_iter().map(|(_, c)| c).collect()
}

/// "0-2,5" → [0, 1, 2, 5].
fn cores(list: &str) -> Vec<usize> {
    list.split(',')
        .flat_map(|part| {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let (a, b): (usize, usize) = (a.parse().expect("core"), b.parse().expect("core"));
            a..=b
        })
        .collect()
}

fn own_cores() -> Vec<usize> {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    cores(
        status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .expect("Cpus_allowed_list")
            .trim(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_stay_on_their_cores_only_while_serving_kept_alive_connections() {
    let dir = tempfile::tempdir().expect("tmp");
    let listener = Listeners::bind("127.0.0.1:0".parse().expect("addr"), workers()).expect("bind");
    let addr = listener.local_addr();
    let cfg = EdgeConfig {
        listen: addr,
        routes_file: dir.path().join("routes.json"),
        applied_file: dir.path().join("applied"),
        tls: None,
        metrics_file: None,
        access_log: None,
        handover: None,
        io_uring: true,
        trusted_proxies: Default::default(),
    };
    let upstreams = vec![instance().await];
    let route = Route {
        app: "app".into(),
        release: 1,
        upstreams,
        https_redirect: false,
        canary: None,
        sleeping: false,
    };
    RouteSnapshot {
        generation: 1,
        routes: BTreeMap::from([("app.localhost".to_string(), route)]),
        acme_challenges: BTreeMap::new(),
    }
    .save(&cfg.routes_file)
    .expect("routes");
    let stop = CancellationToken::new();
    tokio::spawn(run(cfg, listener, None, stop.clone()));
    let all = own_cores();
    let workers = workers();
    // One worker per core: the condition for pinning (a restricted cpuset gives fewer).
    let pinnable = workers >= 2 && all.len() == workers;

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut conns = Vec::new();
    while conns.len() < 32 {
        match TcpStream::connect(addr).await {
            Ok(mut s) => {
                request(&mut s, false).await;
                conns.push(s);
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("the edge never listened: {e}"),
        }
    }
    assert_eq!(worker_cores().len(), workers, "one thread per worker");
    // Requests go on over the kept-alive connections (on the ring after their first).
    let pinned_by = Instant::now() + Duration::from_secs(5);
    let mut seen = worker_cores();
    while Instant::now() < pinned_by {
        for s in &mut conns {
            request(s, false).await;
        }
        seen = worker_cores();
        if pinnable && seen.iter().all(|c| c.len() == 1) {
            break;
        }
    }
    if pinnable {
        let mut held: Vec<usize> = seen.iter().flatten().copied().collect();
        held.sort();
        assert_eq!(held, all, "each worker on a core of its own: {seen:?}");
    } else {
        assert!(
            seen.iter().all(|c| *c == all),
            "never pinned with {workers} workers on {all:?}: {seen:?}"
        );
    }

    // The kept-alive connections gone, the workers are let go.
    drop(conns);
    let free_by = Instant::now() + Duration::from_secs(5);
    while worker_cores().iter().any(|c| *c != all) && Instant::now() < free_by {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        worker_cores().iter().all(|c| *c == all),
        "let go: {:?}",
        worker_cores()
    );

    // A new connection for every request: the workers stay free.
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        request(&mut s, true).await;
        let cores = worker_cores();
        assert!(
            cores.iter().all(|c| *c == all),
            "new connections only: {cores:?}"
        );
    }
    stop.cancel();
}
