//! A real OCI registry for tests: Debian's `docker-registry` (CNCF Distribution) on
//! loopback, with its own storage, optionally wanting a password (htpasswd).

use super::free_port;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct RegistryServer {
    pub child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for RegistryServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The user and password of the registry that wants one; the bcrypt hash of the password
/// was made once for this test (`htpasswd -B` would make an equivalent one).
pub const PUSHER: &str = "pusher";
pub const PASSWORD: &str = "reg1stry-pass-2026";
const PASSWORD_BCRYPT: &str = "$2b$10$TeeeXBWgnKfOQsFnMtCzCeyWJxC3z3C56HbLjL2yuTCYIEiq4mIsO";

pub fn registry(with_password: bool) -> RegistryServer {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = dir.path().join("config.yml");
    let mut text = format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
        dir.path().join("data").display()
    );
    if with_password {
        let htpasswd = dir.path().join("htpasswd");
        std::fs::write(&htpasswd, format!("{PUSHER}:{PASSWORD_BCRYPT}\n")).expect("htpasswd");
        text.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
            htpasswd.display()
        ));
    }
    std::fs::write(&config, text).expect("config");
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
        super::eventually(Duration::from_secs(30), || {
            // 200, or 401 from one that wants a password: either way it answers.
            Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg(format!("http://127.0.0.1:{port}/v2/"))
                .output()
                .is_ok_and(|o| matches!(&o.stdout[..], b"200" | b"401"))
        }),
        "the registry did not start"
    );
    r
}

/// `berth registry login` of the registry that wants a password, which must succeed.
pub fn login(p: &super::Platform, reg: &RegistryServer) {
    let out = p.berth_env(
        &[
            "registry",
            "login",
            &format!("127.0.0.1:{}", reg.port),
            "--username",
            PUSHER,
        ],
        &[("BERTH_REGISTRY_PASSWORD", PASSWORD)],
    );
    assert!(out.status.success(), "{out:?}");
}
