//! End-to-end: `Idempotency-Key` on changes. A retried change gets the first answer again
//! and changes nothing more; the key reused for another request is refused and changes
//! nothing; a client that drops its connection mid-deploy retries with the same key and
//! gets that deploy's result — one build, one release.

use crate::common;

use common::{admin_token, copy_dir, curl, Platform};

/// The body of a `curl -i` answer.
fn body(answer: &str) -> &str {
    answer.split("\r\n\r\n").nth(1).unwrap_or_default()
}

#[test]
fn retried_changes_happen_once_and_a_reused_key_changes_nothing() {
    let p = Platform::start();
    let token = admin_token(&p);
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("idem");
    copy_dir(&common::fixture("stateful"), &dir);
    p.ok(&["deploy", &dir.display().to_string()]);

    let env = |key: &str, word: &str| {
        curl(
            &p,
            &token,
            "POST",
            "/v1/apps/idem/env",
            &[
                "-H",
                &format!("Idempotency-Key: {key}"),
                "-H",
                "Content-Type: application/json",
                "-d",
                &format!("{{\"set\":{{\"WORD\":\"{word}\"}}}}"),
            ],
        )
    };
    let (status, first) = env("change-1", "one");
    assert_eq!(status, 200, "{first}");
    assert!(body(&first).contains("\"release\":2"), "{first}");
    let (status, again) = env("change-1", "one");
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        body(&again),
        body(&first),
        "the retry gets the first answer"
    );
    assert!(
        again
            .to_ascii_lowercase()
            .contains("idempotent-replayed: true"),
        "{again}"
    );
    assert_eq!(p.releases("idem").len(), 2, "the retry made no release");

    // The same key for another request: refused, nothing changes.
    let (status, other) = env("change-1", "two");
    assert_eq!(status, 409, "{other}");
    assert!(other.contains("idempotency_key_reused"), "{other}");
    assert_eq!(p.releases("idem").len(), 2);
    assert_eq!(p.answer("idem", "/env?name=WORD"), "one");
    let (status, bad) = env(&"k".repeat(300), "three");
    assert_eq!(status, 400, "{bad}");
    assert!(bad.contains("invalid_idempotency_key"), "{bad}");
    assert_eq!(p.releases("idem").len(), 2);

    // A deploy whose client gives up after a second (its release command takes three),
    // then retries with the same key.
    std::fs::write(
        dir.join("Procfile"),
        "web: python3 app.py\nrelease: echo migrating; sleep 3\n",
    )
    .expect("Procfile");
    let archive = work.path().join("idem.tar.gz");
    common::tar_gz(&dir, &archive);
    let deploy = |extra: &[&str]| {
        let mut args = vec![
            "-H",
            "Idempotency-Key: deploy-7",
            "-H",
            "Content-Type: application/gzip",
            "--data-binary",
        ];
        let at = format!("@{}", archive.display());
        args.push(&at);
        args.extend_from_slice(extra);
        curl(&p, &token, "POST", "/v1/apps/idem/deploys", &args)
    };
    let (_, gave_up) = deploy(&["--max-time", "1"]);
    assert!(
        !gave_up.contains("\"done\""),
        "the first attempt was not cut short: {gave_up}"
    );
    let (status, result) = deploy(&[]);
    assert_eq!(status, 200, "{result}");
    assert!(body(&result).contains("\"release\":3"), "{result}");
    assert!(
        result
            .to_ascii_lowercase()
            .contains("idempotent-replayed: true")
            && body(&result).contains("\"step\":\"release_command\""),
        "the retry waited for the first attempt and got its whole answer: {result}"
    );
    let (_, once_more) = deploy(&[]);
    assert_eq!(body(&once_more), body(&result));
    assert_eq!(
        p.releases("idem").len(),
        3,
        "one deploy, one release: {}",
        p.ok(&["releases", "idem"])
    );

    // The audit log tells retries apart.
    let audit = p.json(&["audit", "--app", "idem"]);
    assert!(
        audit
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["detail"]
                .as_str()
                .is_some_and(|d| d.contains("Idempotency-Key"))),
        "{audit:#}"
    );
}
