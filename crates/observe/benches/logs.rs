//! The log store under load, run through `bench/logs.sh`:
//!
//! 1. **ingest**: raw container output (realistic lines) written to an instance's raw file,
//!    then ingested (split, labelled, stored, the raw bytes freed) — MB/s of raw input;
//! 2. **grep**: a regular-expression query over every stored line of an app — seconds;
//! 3. **time-bounded**: the last 5 minutes of the same log — milliseconds.
//!
//! Usage: `logs WORK_DIR RAW_MIB` (the script compares with `cat` and `rg` on the same text).

use berth_observe::ingest::Ingester;
use berth_observe::{LogFilter, LogRecord, LogStore};
use std::io::Write;
use std::time::Instant;

const WORDS: &[&str] = &[
    "GET",
    "POST",
    "/api/orders",
    "/health",
    "user",
    "id",
    "status",
    "cache",
    "miss",
    "hit",
    "latency_ms",
    "db",
    "query",
    "rows",
    "took",
    "retry",
    "upstream",
    "request",
    "done",
];

fn line(i: u64) -> String {
    let mut out = format!("2026-11-29T10:{:02}:{:02}Z INFO ", (i / 60) % 60, i % 60);
    let mut x = i
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    for _ in 0..14 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        out.push_str(WORDS[(x >> 33) as usize % WORDS.len()]);
        out.push('=');
        out.push_str(&((x >> 20) % 10_000).to_string());
        out.push(' ');
    }
    if i % 1000 == 7 {
        out.push_str("ERROR connection reset by peer");
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let work = std::path::PathBuf::from(args.get(1).expect("WORK_DIR"));
    let mib: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1024);
    let store = LogStore::open(work.join("store")).expect("store");

    // The raw text, also kept as a plain file for cat and rg.
    let plain = work.join("plain.log");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&plain).expect("plain"));
    let mut written = 0u64;
    let mut i = 0u64;
    while written < mib << 20 {
        let l = line(i);
        writeln!(f, "{l}").expect("write");
        written += l.len() as u64 + 1;
        i += 1;
    }
    f.flush().expect("flush");
    drop(f);
    let lines = i;

    // 1. Ingest: the raw file is the container's output.
    let id = "bench-v1-web-0-x";
    std::fs::copy(&plain, store.raw_path(id)).expect("raw");
    let mut ing = Ingester::open(store.clone());
    ing.add(
        id,
        berth_observe::ingest::Labels {
            project: "default".into(),
            app: "bench".into(),
            release: 1,
            process: "web".into(),
            index: 0,
            commit: Some("4f2a9c1e".into()),
        },
    );
    let t = Instant::now();
    let mut n = 0;
    loop {
        let got = ing.poll_instance(id);
        if got == 0 {
            break;
        }
        n += got;
    }
    let ingest = t.elapsed().as_secs_f64();
    assert_eq!(n as u64, lines, "every line ingested once");
    println!(
        "ingest {:.0} MiB/s ({} lines, {:.2} s)",
        mib as f64 / ingest,
        lines,
        ingest
    );

    // Spread over hours, as a real log is: re-store the same lines with timestamps across
    // 10 hours ending now (the ingest above stamped them all "now").
    let spread = LogStore::open(work.join("spread")).expect("store");
    let now = berth_observe::now_millis();
    let span = 10 * 3_600_000i64;
    let (recs, _) = store.tail("bench", usize::MAX).expect("read");
    let total = recs.len() as i64;
    // Lines arrive in runs (what one pass of the ingester reads) of 50 sharing a time.
    for chunk in recs
        .into_iter()
        .enumerate()
        .map(|(k, mut r): (usize, LogRecord)| {
            r.ts = now - span + span * (k as i64 / 50 * 50) / total;
            r
        })
        .collect::<Vec<_>>()
        .chunks(50_000)
    {
        spread.append(chunk).expect("append");
    }

    // 2. grep over everything.
    let grep = LogFilter {
        grep: Some(regex::Regex::new("ERROR connection reset").expect("regex")),
        ..Default::default()
    };
    let t = Instant::now();
    let found = spread.query("bench", &grep, usize::MAX).expect("query");
    println!(
        "grep {:.2} s ({} matches)",
        t.elapsed().as_secs_f64(),
        found.len()
    );

    // 3. The last five minutes.
    let recent = LogFilter {
        since: Some(now - 5 * 60_000),
        ..Default::default()
    };
    let t = Instant::now();
    let got = spread.query("bench", &recent, usize::MAX).expect("query");
    println!(
        "last-5-minutes {:.1} ms ({} lines)",
        t.elapsed().as_secs_f64() * 1000.0,
        got.len()
    );
}
