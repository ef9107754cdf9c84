//! A real Kubernetes cluster for the kube plane's tests (`scripts/kube-lab`): etcd and
//! kube-apiserver on loopback ports of its own, and with `with_node` the controller
//! manager, the scheduler, containerd and a kubelet so pods run. Stopped, containers and
//! all, when dropped.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The repository's root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub struct KubeLab {
    pub dir: tempfile::TempDir,
}

impl KubeLab {
    fn script(&self, name: &str, ports: &[u16]) {
        let out = Command::new(repo().join("scripts/kube-lab").join(name))
            .arg(self.dir.path())
            .args(ports.iter().map(|p| p.to_string()))
            .output()
            .expect("scripts/kube-lab");
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// etcd and the API server.
    pub fn start() -> Self {
        let lab = KubeLab {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        lab.script("start", &super::free_ports(3));
        lab
    }

    /// A cluster whose pods run (the node Ready).
    pub fn with_node() -> Self {
        let lab = Self::start();
        lab.script("start-node", &super::free_ports(4));
        lab
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .env("KUBECONFIG", self.kubeconfig())
            .args(args)
            .output()
            .expect("kubectl")
    }

    /// kubectl's output, which must succeed.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

impl Drop for KubeLab {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("scripts/kube-lab/stop"))
            .arg(self.dir.path())
            .status();
    }
}
