//! End-to-end: a graceful upgrade of the edge. `berth up` from another berth binary finds
//! the edge of the previous one running, starts a new edge that takes its listening
//! sockets over, and the old edge drains: under a bounded load no request fails, a request
//! in flight finishes, and the request counts carry on.

use crate::common;

use common::{http_get, Platform};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn edge_pid(p: &Platform) -> u32 {
    let text = std::fs::read_to_string(p.data.path().join("edge/edge.pid")).expect("edge.pid");
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("pid")
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// The edge's request count for `app` and the start its counting carries on from, as the
/// edge last wrote them (once a second); `None` before it has written any.
fn counted(p: &Platform, app: &str) -> Option<(i64, u64)> {
    let text = std::fs::read_to_string(p.data.path().join("edge/metrics.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    let n = v["series"]
        .as_array()
        .expect("series")
        .iter()
        .filter(|s| s["app"] == app)
        .map(|s| {
            s["responses"]
                .as_array()
                .expect("responses")
                .iter()
                .map(|c| c.as_u64().unwrap_or(0))
                .sum::<u64>()
        })
        .sum();
    Some((v["started_at"].as_i64().expect("started_at"), n))
}

#[test]
fn a_new_berth_binary_replaces_the_edge_without_failing_a_request() {
    let mut p = Platform::start();
    let dir = common::fixture("stateful");
    p.ok(&["deploy", &dir.display().to_string(), "--app", "shop"]);
    assert_eq!(p.answer("shop", "/env?name=BERTH_APP"), "shop");
    let old_edge = edge_pid(&p);

    // A bounded load: four clients, each a new connection per request.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(Mutex::new(Vec::new()));
    let port = p.edge_port;
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, done, failed) = (stop.clone(), done.clone(), failed.clone());
            std::thread::spawn(move || {
                let started = Instant::now();
                for _ in 0..5000 {
                    if stop.load(Ordering::SeqCst) || started.elapsed() > Duration::from_secs(90) {
                        break;
                    }
                    match http_get(port, "shop.localhost", "/env?name=BERTH_APP") {
                        Ok((200, body)) if body == "shop" => {
                            done.fetch_add(1, Ordering::SeqCst);
                        }
                        other => failed.lock().expect("lock").push(format!("{other:?}")),
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // The edge's count first, then the clients': what the clients have had answered since
    // is counted on top, but for at most one request per client that the edge had counted
    // (it counts at the response's head) and the client had not yet read.
    assert!(
        common::eventually(Duration::from_secs(10), || counted(&p, "shop")
            .is_some_and(|(_, n)| n > 0)),
        "the edge writes its counts"
    );
    let (started_at, before) = counted(&p, "shop").expect("counts");
    let done_before = done.load(Ordering::SeqCst) as u64;
    let in_flight_at_count = clients.len() as u64;
    // A request the old edge holds while it is replaced.
    let in_flight = std::thread::spawn(move || http_get(port, "shop.localhost", "/slow?ms=3000"));
    std::thread::sleep(Duration::from_millis(300));

    // The upgrade: the control plane stops, and a berth binary at another path (another
    // file, as after an upgrade) starts on the same data directory.
    p.kill_control_plane();
    let next = p.data.path().join("next");
    std::fs::create_dir_all(&next).expect("dir");
    let binary = next.join("berth");
    std::fs::copy(common::berth_bin(), &binary).expect("copy berth");
    p.binary = Some(binary);
    p.up();
    let new_edge = edge_pid(&p);
    assert_ne!(new_edge, old_edge, "{}", p.up_log());
    assert!(
        p.up_log().contains("replacing the running edge"),
        "{}",
        p.up_log()
    );
    let (code, body) = in_flight.join().expect("thread").expect("in-flight GET");
    assert_eq!(code, 200, "{body}");
    assert!(
        common::eventually(Duration::from_secs(20), || !alive(old_edge)),
        "the old edge drained and exited"
    );
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().expect("client");
    }
    let failed = failed.lock().expect("lock").clone();
    assert!(
        failed.is_empty(),
        "{} failed of {}: {failed:?}",
        failed.len(),
        done.load(Ordering::SeqCst)
    );
    assert!(done.load(Ordering::SeqCst) > 100);

    // The counts carried on: same start, every answered request counted.
    let answered = done.load(Ordering::SeqCst) as u64 - done_before;
    assert!(
        common::eventually(Duration::from_secs(10), || {
            counted(&p, "shop").is_some_and(|(s, n)| {
                s == started_at && n + in_flight_at_count >= before + answered
            })
        }),
        "{:?} vs {started_at} and {before} + {answered}\n{}",
        counted(&p, "shop"),
        p.edge_log()
    );
    assert!(alive(new_edge));

    // The same binary again adopts the edge as it is.
    p.kill_control_plane();
    p.up();
    assert_eq!(edge_pid(&p), new_edge);
    assert_eq!(p.answer("shop", "/env?name=BERTH_APP"), "shop");
}
