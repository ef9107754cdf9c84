//! End-to-end: disk hygiene. An app with twelve releases of twelve images keeps the newest
//! ten; `berth gc --dry-run` says what would go and removes nothing, `berth gc` frees it,
//! a rollback to a collected release is refused with the reason, a kept one still works.
//! A platform whose disk is nearly full refuses builds before they start. Over fifty deploys
//! (with `berth gc` after every tenth) the disk used stops growing once the retention is full.

use crate::common;

use common::{copy_dir, Platform};

fn images(p: &Platform, app: &str) -> usize {
    p.json(&["images", app]).as_array().expect("images").len()
}

#[test]
fn old_releases_images_are_collected_and_the_rest_stays() {
    let p = Platform::start();
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("gcapp");
    copy_dir(&common::fixture("stateful"), &dir);
    for n in 1..=12 {
        // Another source each time: another image.
        std::fs::write(dir.join("version.txt"), format!("{n}\n")).expect("version");
        p.ok(&["deploy", &dir.display().to_string()]);
    }
    assert_eq!(images(&p, "gcapp"), 12);

    let dry = p.json(&["gc", "--dry-run"]);
    let collected = |report: &serde_json::Value, kind: &str| {
        report["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|i| i["kind"] == kind)
            .count()
    };
    assert_eq!(collected(&dry, "image"), 2, "{dry}");
    assert!(dry["freed_bytes"].as_u64().unwrap_or(0) > 0, "{dry}");
    assert_eq!(images(&p, "gcapp"), 12, "a dry run removes nothing");

    let done = p.json(&["gc"]);
    assert_eq!(collected(&done, "image"), 2, "{done}");
    assert_eq!(images(&p, "gcapp"), 10);
    assert!(p.up_log().contains("gc: collected what no release needs"));

    // v1's image is gone: a rollback to it says so and changes nothing.
    let err = p.fails(&["rollback", "gcapp", "--to", "1"]);
    assert!(err.contains("v1's image was garbage-collected"), "{err}");
    assert_eq!(p.answer("gcapp", "/env?name=BERTH_RELEASE"), "12");
    // v3's is kept: the rollback works.
    p.ok(&["rollback", "gcapp", "--to", "3"]);
    assert_eq!(p.answer("gcapp", "/env?name=BERTH_RELEASE"), "13");
    let again = p.json(&["gc"]);
    assert_eq!(collected(&again, "image"), 0, "{again}");
    assert_eq!(p.ok(&["gc"]).trim(), "nothing to collect");
}

#[test]
fn a_nearly_full_disk_refuses_builds_before_they_start() {
    let p = Platform::start_with(&["--min-free-disk", "1000000G"]);
    let err = p.fails(&[
        "deploy",
        &common::fixture("stateful").display().to_string(),
        "--app",
        "full",
    ]);
    assert!(
        err.contains("free on the data directory's disk; a build needs at least"),
        "{err}"
    );
    assert!(
        err.contains("berth gc"),
        "the hint names the way out: {err}"
    );
    assert!(p.json(&["apps"]).as_array().expect("apps").is_empty());
}

/// Bytes under `dir` (files only; what `du --apparent-size` counts).
fn bytes_under(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => bytes_under(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

#[test]
fn the_disk_stays_bounded_over_fifty_deploys() {
    let p = Platform::start();
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("churn");
    copy_dir(&common::fixture("stateful"), &dir);
    // What deploys leave on disk: images, unpacked roots, build directories and caches,
    // instance directories (logs have their own retention).
    let footprint = || -> u64 {
        ["images", "rootfs", "builds", "cache", "instances"]
            .iter()
            .map(|d| bytes_under(&p.data.path().join(d)))
            .sum()
    };
    let mut after = Vec::new();
    for n in 1..=50 {
        std::fs::write(dir.join("version.txt"), format!("{n}\n")).expect("version");
        p.ok(&["deploy", &dir.display().to_string()]);
        if n % 10 == 0 {
            p.ok(&["gc"]);
            after.push(footprint());
        }
    }
    eprintln!("footprint after 10, 20, …, 50 deploys (bytes): {after:?}");
    assert_eq!(images(&p, "churn"), 10);
    assert_eq!(p.answer("churn", "/env?name=BERTH_RELEASE"), "50");
    // Once the retention is full (after 20 deploys), the footprint stops growing.
    let (at20, at50) = (after[1], after[4]);
    assert!(
        at50 <= at20 + at20 / 20,
        "the footprint grew from {at20} bytes after 20 deploys to {at50} after 50: {after:?}"
    );
}
