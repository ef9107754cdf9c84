//! Bad input gets a clear error naming the problem, a non-zero exit, and changes nothing.

use crate::common;

use common::{berth_bin, copy_dir, examples, Platform};
use std::process::Command;

fn write(dir: &std::path::Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write");
}

#[test]
fn bad_deploys_and_unknown_apps_are_refused_without_changing_state() {
    let p = Platform::start_with(&["--upload-limit", "64K"]);
    p.ok(&["deploy", examples().join("hello").to_str().expect("path")]);
    let apps = p.json(&["apps"]);
    let releases = p.json(&["releases", "hello"]);
    let tmp = tempfile::tempdir().expect("tmp");

    // Hostile or invalid app names.
    for bad in ["Bad;Name", "../etc", "a b", "$(id)", "x.y", &"a".repeat(64)] {
        let err = p.fails(&[
            "deploy",
            examples().join("hello").to_str().expect("path"),
            "--app",
            bad,
        ]);
        assert!(err.contains("app name"), "{bad}: {err}");
    }
    // Unknown apps.
    for args in [
        vec!["ps", "nope"],
        vec!["releases", "nope"],
        vec!["rollback", "nope"],
        vec!["logs", "nope"],
        vec!["env", "set", "nope", "A=1"],
        vec!["destroy", "nope"],
    ] {
        let err = p.fails(&args);
        assert!(
            err.contains("app \"nope\" does not exist"),
            "{args:?}: {err}"
        );
        assert!(err.contains("hint:"), "{args:?}: {err}");
    }
    // Nothing to build: the error says what berth looked for.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    write(&empty, "README.md", "nothing here");
    let err = p.fails(&["deploy", empty.to_str().expect("path")]);
    for looked_for in [
        "Procfile",
        "requirements.txt",
        "package.json",
        "Cargo.toml",
        "index.html",
    ] {
        assert!(err.contains(looked_for), "{err}");
    }
    // A build that fails: exit code and the compiler's own words.
    let broken = tmp.path().join("broken");
    std::fs::create_dir_all(broken.join("src")).expect("mkdir");
    write(
        &broken,
        "Cargo.toml",
        "[package]\nname = \"broken\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    );
    write(
        &broken.join("src"),
        "main.rs",
        "fn main() { let x: u32 = \"not a number\"; }\n",
    );
    let err = p.fails(&["deploy", broken.to_str().expect("path")]);
    assert!(
        err.contains("build command failed with exit code 101"),
        "{err}"
    );
    assert!(err.contains("mismatched types"), "{err}");
    // Malformed berth.toml: file, line and field.
    let bad_toml = tmp.path().join("bad-toml");
    copy_dir(&examples().join("hello"), &bad_toml);
    write(
        &bad_toml,
        "berth.toml",
        "name = \"hello\"\n[health]\npaht = \"/\"\n",
    );
    let err = p.fails(&["deploy", bad_toml.to_str().expect("path")]);
    assert!(
        err.contains("berth.toml") && err.contains("line 3") && err.contains("paht"),
        "{err}"
    );
    // Isolation, limits and network policy that are malformed, unsafe or name no app.
    for (toml, expect) in [
        (
            "isolation = \"vm\"\n",
            "isolation: unknown isolation level \"vm\"",
        ),
        (
            "[processes.web]\nmemory = \"1M\"\n",
            "processes.web.memory: 1M is below the minimum of 32M",
        ),
        ("[processes.web]\ncpus = 0.001\n", "processes.web.cpus"),
        (
            "[processes.web]\npids = 2\n",
            "processes.web.pids: 2 is below",
        ),
        (
            "[processes.web]\nmemory = \"lots\"\n",
            "processes.web.memory",
        ),
        (
            "[network]\nallow = [\"nosuchapp\"]\n",
            "network.allow: there is no app named \"nosuchapp\"",
        ),
        ("[network]\negress = \"sometimes\"\n", "network.egress"),
        (
            "[security]\ncapabilities = [\"SYS_ADMIN\"]\n",
            "security.capabilities",
        ),
        (
            "isolation = \"sandbox\"\n[security]\ncapabilities = [\"NET_BIND_SERVICE\"]\n",
            "security.capabilities: only trusted apps may keep capabilities",
        ),
    ] {
        let dir = tmp.path().join("bad-policy");
        let _ = std::fs::remove_dir_all(&dir);
        copy_dir(&examples().join("hello"), &dir);
        write(&dir, "berth.toml", &format!("name = \"hello\"\n{toml}"));
        let err = p.fails(&["deploy", dir.to_str().expect("path")]);
        assert!(err.contains(expect), "{toml}: {err}");
    }
    // Malformed Procfile: line named.
    let bad_procfile = tmp.path().join("bad-procfile");
    copy_dir(&examples().join("hello"), &bad_procfile);
    write(
        &bad_procfile,
        "Procfile",
        "web: python3 app.py\nthis line is wrong\n",
    );
    let err = p.fails(&["deploy", bad_procfile.to_str().expect("path")]);
    assert!(err.contains("Procfile line 2"), "{err}");
    // Uploads over the limit: refused by the platform, and by the CLI before uploading.
    let big = tmp.path().join("big");
    copy_dir(&examples().join("hello"), &big);
    // Incompressible bytes (xorshift), so the packed upload really is large.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let noise: Vec<u8> = (0..300_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    std::fs::write(big.join("blob.bin"), noise).expect("write");
    let err = p.fails(&["deploy", big.to_str().expect("path")]);
    assert!(err.contains("over the limit of 65536 bytes"), "{err}");
    let out = p.berth_env(
        &["deploy", big.to_str().expect("path")],
        &[("BERTH_UPLOAD_LIMIT", "10K")],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("upload limit"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Bad env changes.
    let err = p.fails(&["env", "set", "hello", "1BAD=x"]);
    assert!(err.contains("1BAD"), "{err}");
    let err = p.fails(&["env", "unset", "hello", "NEVER_SET"]);
    assert!(err.contains("NEVER_SET is not set"), "{err}");

    // Nothing changed.
    assert_eq!(p.json(&["apps"]), apps);
    let after = p.json(&["releases", "hello"]);
    assert_eq!(after, releases);
    assert_eq!(p.get("hello", "/").0, 200);
}

#[test]
fn berth_up_explains_what_stops_it() {
    let data = tempfile::tempdir().expect("tmp");
    let up = |extra: &[&str], path: Option<&str>| {
        let mut cmd = Command::new(berth_bin());
        cmd.arg("--data-dir").arg(data.path()).arg("up").args(extra);
        cmd.args(["--edge-tls-port", &common::free_port().to_string()]);
        if let Some(p) = path {
            cmd.env("PATH", p);
        }
        cmd.output().expect("run berth up")
    };
    // Missing crun: says which package to install.
    let api = common::free_port().to_string();
    let edge = common::free_port().to_string();
    let out = up(
        &[
            "--api-port",
            &api,
            "--edge-port",
            &edge,
            "--bridge",
            "btmiss",
        ],
        Some("/nonexistent"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("crun not found") && err.contains("apt-get install crun"),
        "{err}"
    );
    // Ports in use: names the port.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let out = up(
        &[
            "--api-port",
            &port,
            "--edge-port",
            &edge,
            "--bridge",
            "btmiss",
        ],
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&port) && err.contains("--api-port"), "{err}");
    let taken_edge = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
    let eport = taken_edge.local_addr().expect("addr").port().to_string();
    let out = up(
        &[
            "--api-port",
            &api,
            "--edge-port",
            &eport,
            "--bridge",
            "btport",
            "--subnet",
            "10.99.250.0/24",
        ],
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&eport) && err.contains("--edge-port"), "{err}");
    // The failed start took its bridge away again.
    let bridge = Command::new("ip")
        .args(["link", "show", "dev", "btport"])
        .output()
        .expect("ip");
    assert!(!bridge.status.success(), "bridge btport left behind");
    // `down` on it touches nothing (before, it took down the default bridge berth0, which
    // may be another platform's).
    let down = Command::new(berth_bin())
        .arg("--data-dir")
        .arg(data.path())
        .arg("down")
        .output()
        .expect("berth down");
    assert!(down.status.success());
    assert!(
        String::from_utf8_lossy(&down.stdout).contains("nothing to stop"),
        "{down:?}"
    );
    // Bad settings: every problem named.
    let out = up(
        &[
            "--api-port",
            &api,
            "--edge-port",
            &api,
            "--bridge",
            "this-name-is-far-too-long",
            "--subnet",
            "8.8.8.0/24",
        ],
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--subnet"), "{err}");
    let out = up(
        &[
            "--api-port",
            &api,
            "--edge-port",
            &api,
            "--bridge",
            "this-name-is-far-too-long",
        ],
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--bridge") && err.contains("--edge-port"),
        "{err}"
    );
}

/// A directory of links to every program on this machine's PATH but `missing`.
fn path_without(missing: &str) -> (tempfile::TempDir, String) {
    let bin = tempfile::tempdir().expect("tmp");
    let path = std::env::var("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain(["/usr/sbin".into(), "/usr/bin".into()]) {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let link = bin.path().join(&name);
            if name != missing && !link.exists() {
                let _ = std::os::unix::fs::symlink(entry.path(), link);
            }
        }
    }
    let dir = bin.path().display().to_string();
    (bin, dir)
}

#[test]
fn without_gvisor_sandboxing_is_refused_clearly_and_nothing_changes() {
    let (_bin, path) = path_without("runsc");
    // A platform that would sandbox every app does not start without runsc.
    let data = tempfile::tempdir().expect("tmp");
    let out = Command::new(berth_bin())
        .env("PATH", &path)
        .args(["--data-dir", data.path().to_str().expect("path"), "up"])
        .args(["--api-port", &common::free_port().to_string()])
        .args(["--edge-port", &common::free_port().to_string()])
        .args(["--edge-tls-port", &common::free_port().to_string()])
        .args(["--bridge", "btnogv", "--subnet", "10.99.250.0/24"])
        .args(["--default-isolation", "sandbox"])
        .output()
        .expect("berth up");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("runsc not found") && err.contains("apt-get install runsc"),
        "{err}"
    );

    // A trusted platform on such a host runs trusted apps and refuses sandboxed ones.
    let p = Platform::start_env(None, &[], &[("PATH", path.as_str())]);
    p.ok(&["deploy", examples().join("hello").to_str().expect("path")]);
    let apps = p.json(&["apps"]);
    let releases = p.json(&["releases", "hello"]);
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("jail");
    copy_dir(&examples().join("hello"), &dir);
    write(
        &dir,
        "berth.toml",
        "name = \"hello\"\nisolation = \"sandbox\"\n",
    );
    let err = p.fails(&["deploy", dir.to_str().expect("path")]);
    assert!(
        err.contains("isolation \"sandbox\" needs gVisor") && err.contains("apt-get install runsc"),
        "{err}"
    );
    assert_eq!(p.json(&["apps"]), apps);
    assert_eq!(p.json(&["releases", "hello"]), releases);
    assert_eq!(p.get("hello", "/").0, 200);
}
