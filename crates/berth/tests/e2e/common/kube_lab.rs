//! A real Kubernetes cluster for the kube plane's tests (`scripts/kube-lab`): etcd and
//! kube-apiserver on loopback ports of its own, and with `with_node` the controller
//! manager, the scheduler, containerd, a kubelet and kube-proxy so pods run and Services'
//! addresses reach them. Stopped, containers and all, when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository's root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// An image of busybox (its httpd, a CGI script saying `$MODE` and `$TOKEN`) whose
/// entrypoint says it starts, then serves: pushed to the registry as `src/NAME:1`.
pub fn push_image(work: &Path, registry_port: u16, name: &str, entrypoint: &str) -> String {
    let root = work.join(format!("rootfs-{name}"));
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("www/cgi-bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in ["sh", "sleep"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(root.join("www/index.html"), "hello from the cluster\n").unwrap();
    // Counts its visits in /data (a volume, where the app has one).
    let count = root.join("www/cgi-bin/count");
    std::fs::write(
        &count,
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho x >> /data/visits\necho \"visits=$(/bin/busybox wc -l < /data/visits)\"\n",
    )
    .unwrap();
    let cgi = root.join("www/cgi-bin/env");
    std::fs::write(
        &cgi,
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho \"MODE=$MODE TOKEN=$TOKEN CERT=$(/bin/busybox cat /run/secrets/CERT) DB=$DATABASE_URL\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    for script in [&cgi, &count] {
        std::fs::set_permissions(script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let tar = work.join(format!("{name}.tar"));
    let reference = format!("127.0.0.1:{registry_port}/src/{name}:1");
    let made = Command::new(repo().join("scripts/kube-lab/mkimage.py"))
        .arg(&root)
        .arg(&reference)
        .arg(&tar)
        .args(["/bin/sh", "-c", entrypoint])
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let pushed = Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false", "--dest-creds"])
        .arg(format!(
            "{}:{}",
            super::registry::PUSHER,
            super::registry::PASSWORD
        ))
        .arg(format!("docker-archive:{}", tar.display()))
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    reference
}

pub struct KubeLab {
    pub dir: tempfile::TempDir,
    /// Held while a node runs: one kubelet and kube-proxy per machine at a time (they own
    /// host-wide state — the kubelet's cgroups, kube-proxy's iptables chains).
    _node: Option<std::sync::MutexGuard<'static, ()>>,
}

/// One node lab at a time in this test binary.
static ONE_NODE: std::sync::Mutex<()> = std::sync::Mutex::new(());

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
            _node: None,
        };
        lab.script("start", &super::free_ports(3));
        lab
    }

    /// A cluster whose pods run (the node Ready).
    pub fn with_node() -> Self {
        let node = ONE_NODE.lock().unwrap_or_else(|e| e.into_inner());
        let mut lab = Self::start();
        lab._node = Some(node);
        lab.script("start-node", &super::free_ports(6));
        lab
    }

    /// Lets the node pull from a registry on loopback over plain HTTP (`127.0.0.1:PORT`).
    pub fn trust_plain_registry(&self, port: u16) {
        let host = format!("127.0.0.1:{port}");
        let dir = self.dir.path().join("certs.d").join(&host);
        std::fs::create_dir_all(&dir).expect("certs.d");
        std::fs::write(
            dir.join("hosts.toml"),
            format!(
                "server = \"http://{host}\"\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
            ),
        )
        .expect("hosts.toml");
    }

    /// A Service's address (its cluster IP, port 80), which kube-proxy takes to its pods.
    pub fn service(&self, namespace: &str, name: &str) -> std::net::SocketAddr {
        let ip = self.ok(&[
            "get",
            "service",
            name,
            "-n",
            namespace,
            "-o",
            "jsonpath={.spec.clusterIP}",
        ]);
        format!("{ip}:80").parse().expect("a cluster IP")
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

    /// Installs a CustomResourceDefinition (YAML) and waits until its kind is served.
    pub fn install_crd(&self, yaml: &str) {
        let file = self.dir.path().join("crd.yaml");
        std::fs::write(&file, yaml).unwrap();
        self.ok(&["apply", "-f", file.to_str().unwrap()]);
        let v: serde_json::Value = serde_yaml_ng::from_str(yaml).unwrap();
        let name = v["metadata"]["name"].as_str().unwrap().to_string();
        let served = super::eventually(std::time::Duration::from_secs(30), || {
            self.kubectl(&["get", &name, "-A"]).status.success()
        });
        assert!(served, "{name} is not served");
    }

    /// Merges `status` into the status of the custom object at `path` (e.g.
    /// `/apis/argoproj.io/v1alpha1/namespaces/NS/rollouts/NAME`) through its status
    /// subresource, as its controller would.
    pub fn patch_status(&self, path: &str, status: &serde_json::Value) {
        let server = self.ok(&[
            "config",
            "view",
            "--raw",
            "-o",
            "jsonpath={.clusters[0].cluster.server}",
        ]);
        let token = self.ok(&[
            "config",
            "view",
            "--raw",
            "-o",
            "jsonpath={.users[0].user.token}",
        ]);
        let out = Command::new("curl")
            .args(["-sSk", "--fail-with-body", "-X", "PATCH"])
            .args(["-H", "Content-Type: application/merge-patch+json"])
            .arg("-H")
            .arg(format!("Authorization: Bearer {token}"))
            .arg("--data")
            .arg(serde_json::json!({ "status": status }).to_string())
            .arg(format!("{server}{path}/status"))
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "patching {path}/status: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
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

/// A minimal CRD of CloudNativePG's Cluster: the fields berth sets, typed as its published
/// schema types them.
pub const CLOUDNATIVE_PG_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: clusters.postgresql.cnpg.io
spec:
  group: postgresql.cnpg.io
  scope: Namespaced
  names: {kind: Cluster, plural: clusters, singular: cluster, listKind: ClusterList}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [instances]
            properties:
              instances: {type: integer, minimum: 1}
              bootstrap:
                type: object
                properties:
                  initdb:
                    type: object
                    properties:
                      database: {type: string}
                      owner: {type: string}
              storage:
                type: object
                properties:
                  size: {type: string}
                  storageClass: {type: string}
"#;

/// A minimal CRD of Argo Rollouts' Rollout: the fields berth sets, typed as its published
/// schema types them, with the status subresource its controller (and CLI) write through.
pub const ARGO_ROLLOUTS_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: rollouts.argoproj.io
spec:
  group: argoproj.io
  scope: Namespaced
  names: {kind: Rollout, plural: rollouts, singular: rollout, listKind: RolloutList}
  versions:
  - name: v1alpha1
    served: true
    storage: true
    subresources:
      status: {}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              replicas: {type: integer}
              selector: {type: object, x-kubernetes-preserve-unknown-fields: true}
              template: {type: object, x-kubernetes-preserve-unknown-fields: true}
              strategy:
                type: object
                properties:
                  canary:
                    type: object
                    properties:
                      steps:
                        type: array
                        items:
                          type: object
                          properties:
                            setWeight: {type: integer, format: int32}
                            pause:
                              type: object
                              properties:
                                duration: {type: string}
          status: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;
