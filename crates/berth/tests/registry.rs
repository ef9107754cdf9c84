//! End-to-end: every built image is pushed to the platform's registry — a real one, Debian's
//! `docker-registry` (CNCF Distribution) on loopback — tagged with its git commit and with
//! the very digest berth runs, as `skopeo inspect` shows. When the registry is gone, the
//! deploy fails naming it and the serving release stays.

mod common;

use common::{copy_dir, free_port, Platform};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct RegistryServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for RegistryServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn registry() -> RegistryServer {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        ),
    )
    .expect("config");
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry (scripts/install-deps installs it)");
    let r = RegistryServer {
        child,
        port,
        _dir: dir,
    };
    assert!(
        common::eventually(Duration::from_secs(30), || {
            Command::new("curl")
                .args(["-sf", &format!("http://127.0.0.1:{port}/v2/")])
                .status()
                .is_ok_and(|s| s.success())
        }),
        "the registry did not start"
    );
    r
}

#[test]
fn built_images_are_pushed_with_their_commit_and_digest() {
    let mut reg = registry();
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
