//! End-to-end: every built image is pushed to the platform's registry — a real one, Debian's
//! `docker-registry` (CNCF Distribution) on loopback — tagged with its git commit and with
//! the very digest berth runs, as `skopeo inspect` shows. When the registry is gone, the
//! deploy fails naming it and the serving release stays. A registry that wants a password
//! gets the one `berth registry login` kept sealed, which never shows again.

use crate::common;

use common::registry::{registry, PASSWORD, PUSHER};
use common::{copy_dir, Platform};
use std::process::Command;

#[test]
fn built_images_are_pushed_with_their_commit_and_digest() {
    let mut reg = registry(false);
    let p = Platform::start_with(&["--registry", &format!("http://127.0.0.1:{}/team", reg.port)]);
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("pushed");
    copy_dir(&common::fixture("stateful"), &dir);
    let sha = common::git_commit_all(&dir);
    let out = p.berth(&["deploy", &dir.display().to_string()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Pushed 127.0.0.1:"), "{text}");
    let releases = p.json(&["releases", "pushed"]);
    let digest = releases[0]["image"]["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    assert_eq!(releases[0]["image"]["tag"], sha.as_str(), "{releases}");

    let inspect = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://127.0.0.1:{}/team/pushed:{sha}", reg.port))
        .output()
        .expect("skopeo");
    assert!(inspect.status.success(), "{inspect:?}");
    let seen: serde_json::Value = serde_json::from_slice(&inspect.stdout).expect("inspect JSON");
    assert_eq!(seen["Digest"], digest.as_str(), "{seen}");
    // Its signature and SBOM went along, under the tags cosign looks for.
    for suffix in ["sig", "sbom"] {
        let tag = format!("{}.{suffix}", digest.replace(':', "-"));
        let out = Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://127.0.0.1:{}/team/pushed:{tag}", reg.port))
            .output()
            .expect("skopeo");
        assert!(out.status.success(), "{tag}: {out:?}");
    }

    // The registry goes away: the next deploy fails saying so; the release serving stays.
    let _ = reg.child.kill();
    let _ = reg.child.wait();
    std::fs::write(dir.join("NEWS"), "v2\n").expect("change");
    common::git_commit_all(&dir);
    let err = p.fails(&["deploy", &dir.display().to_string()]);
    assert!(
        err.contains("pushing 127.0.0.1:") && err.contains("failed"),
        "{err}"
    );
    let releases = p.json(&["releases", "pushed"]);
    assert_eq!(
        releases.as_array().expect("releases").len(),
        1,
        "{releases}"
    );
    assert_eq!(p.answer("pushed", "/env?name=BERTH_APP"), "pushed");
}

#[test]
fn a_registry_that_wants_a_password_gets_the_sealed_one() {
    let reg = registry(true);
    let p = Platform::start_with(&["--registry", &format!("http://127.0.0.1:{}", reg.port)]);
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("private");
    copy_dir(&common::fixture("stateful"), &dir);
    common::git_commit_all(&dir);

    // Without credentials the registry refuses the push, and the deploy with it.
    let err = p.fails(&["deploy", &dir.display().to_string()]);
    assert!(err.contains("pushing 127.0.0.1:"), "{err}");
    assert!(p.json(&["apps"]).as_array().expect("apps").is_empty());

    // Kept through the API, sealed; the next deploy pushes.
    let host = format!("127.0.0.1:{}", reg.port);
    let out = p.berth_env(
        &["registry", "login", &host, "--username", PUSHER],
        &[("BERTH_REGISTRY_PASSWORD", PASSWORD)],
    );
    assert!(out.status.success(), "{out:?}");
    p.ok(&["deploy", &dir.display().to_string()]);
    let listed = p.ok(&["--json", "registry", "list"]);
    assert!(
        listed.contains(PUSHER) && !listed.contains(PASSWORD),
        "{listed}"
    );
    // The password is nowhere in the data directory in the clear.
    let found = Command::new("grep")
        .args(["-rlaF", PASSWORD])
        .arg(p.data.path())
        .output()
        .expect("grep");
    assert!(
        found.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&found.stdout)
    );
    // A key rotation re-seals it; pushes go on working.
    let rotated = p.json(&["secrets", "rotate-key"]);
    assert_eq!(rotated["registry_credentials"], 1, "{rotated}");
    assert_eq!(rotated["signing_keys"], 1, "{rotated}");
    std::fs::write(dir.join("NEWS"), "v2\n").expect("change");
    common::git_commit_all(&dir);
    p.ok(&["deploy", &dir.display().to_string()]);
    // Forgotten: refused again.
    p.ok(&["registry", "logout", &host]);
    std::fs::write(dir.join("NEWS"), "v3\n").expect("change");
    common::git_commit_all(&dir);
    p.fails(&["deploy", &dir.display().to_string()]);
    let releases = p.json(&["releases", "private"]);
    assert_eq!(releases[0]["version"], 2, "{releases}");
    assert_eq!(releases[0]["status"], "active", "{releases}");
}
