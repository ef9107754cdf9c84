//! The kube plane with pods that really run: the test's own cluster (kube-apiserver, the
//! controller manager, the scheduler and a kubelet, built from Debian's source package;
//! containerd and runc; a CNI bridge of its own; all on loopback and under a temporary
//! directory). An app `berth kube apply --wait` deploys runs as a pod under berth's
//! guardrails, answers through its Service, takes a change of its variables by a rollout,
//! comes back when its pod is killed, and an image that cannot be pulled fails the apply
//! with the pod's reason.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::kube_lab::{repo, KubeLab};
use common::said;

/// A cluster whose pods run, and what this test does with it.
struct Cluster {
    lab: KubeLab,
}

impl std::ops::Deref for Cluster {
    type Target = KubeLab;
    fn deref(&self) -> &KubeLab {
        &self.lab
    }
}

impl Cluster {
    fn start() -> Self {
        Cluster {
            lab: KubeLab::with_node(),
        }
    }

    /// Makes an image from a directory and gives it to the node's containerd.
    fn import(&self, rootfs: &Path, reference: &str) {
        let tar = self.dir.path().join("images/app.tar");
        let made = Command::new(repo().join("scripts/kube-lab/mkimage.py"))
            .arg(rootfs)
            .arg(reference)
            .arg(&tar)
            .status()
            .unwrap();
        assert!(made.success());
        let sock = self.dir.path().join("run/containerd/containerd.sock");
        let imported = Command::new("ctr")
            .arg("--address")
            .arg(&sock)
            .args(["-n", "k8s.io", "image", "import"])
            .arg(&tar)
            .output()
            .unwrap();
        assert!(
            imported.status.success(),
            "{}",
            String::from_utf8_lossy(&imported.stderr)
        );
    }
}

fn get(service: std::net::SocketAddr, path: &str) -> String {
    let mut answer = String::new();
    common::eventually(Duration::from_secs(30), || {
        match common::http_get_at(service, "localhost", path) {
            Ok((200, body)) => {
                answer = body;
                true
            }
            _ => false,
        }
    });
    answer
}

/// An image of busybox serving `/www` (and a CGI script that says `$MODE`).
fn web_rootfs(at: &Path) {
    std::fs::create_dir_all(at.join("bin")).unwrap();
    std::fs::create_dir_all(at.join("www/cgi-bin")).unwrap();
    std::fs::copy("/bin/busybox", at.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", at.join("bin/sh")).unwrap();
    std::fs::write(at.join("www/index.html"), "hello from a pod\n").unwrap();
    let cgi = at.join("www/cgi-bin/env");
    std::fs::write(
        &cgi,
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho \"MODE=$MODE uid=$(/bin/busybox id -u)\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cgi, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn declare(defs: &Path, image: &str, mode: &str) {
    let web = defs.join("web");
    std::fs::create_dir_all(&web).unwrap();
    std::fs::write(
        web.join("berth.toml"),
        format!(
            "image = \"{image}\"\n[processes.web]\ncommand = \"busybox httpd -f -p 8000 -h /www\"\n[health]\npath = \"/\"\n[env]\nMODE = \"{mode}\"\n"
        ),
    )
    .unwrap();
}

/// The app's pods that are not being deleted.
fn live_pods(c: &Cluster) -> Vec<String> {
    c.ok(&[
        "get",
        "pods",
        "-n",
        "berth-default",
        "-o",
        r#"jsonpath={range .items[*]}{.metadata.name} {.metadata.deletionTimestamp}{"\n"}{end}"#,
    ])
    .lines()
    .filter(|l| l.split_whitespace().count() == 1)
    .map(|l| l.trim().to_string())
    .collect()
}

fn apply(c: &Cluster, defs: &Path) -> Output {
    Command::new(common::berth_bin())
        .args(["kube", "apply", "--wait", "--timeout", "150s", "-f"])
        .arg(defs)
        .arg("--kubeconfig")
        .arg(c.kubeconfig())
        .output()
        .unwrap()
}

#[test]
fn an_app_runs_as_a_pod_answers_through_its_service_and_rolls() {
    let c = Cluster::start();
    let work = tempfile::tempdir().unwrap();
    let rootfs = work.path().join("rootfs");
    web_rootfs(&rootfs);
    c.import(&rootfs, "localhost/berth-test-web:1");
    let defs = work.path().join("platform");
    declare(&defs, "localhost/berth-test-web:1", "one");

    // Deployed and waited for: the pod runs, as berth's user, and answers.
    let out = apply(&c, &defs);
    assert!(out.status.success(), "{}", said(&out));
    assert!(
        said(&out).contains("Deployment berth-default/web-web: 1/1 ready"),
        "{}",
        said(&out)
    );
    let web = c.service("berth-default", "web");
    assert_eq!(get(web, "/"), "hello from a pod\n");
    assert_eq!(get(web, "/cgi-bin/env"), "MODE=one uid=10001\n");

    // A changed variable rolls the Deployment: a new pod with the new value.
    let before = c.ok(&["get", "pods", "-n", "berth-default", "-o", "name"]);
    declare(&defs, "localhost/berth-test-web:1", "two");
    let out = apply(&c, &defs);
    assert!(out.status.success(), "{}", said(&out));
    // The old pod keeps answering for its drain pause while it leaves the Service's
    // endpoints; then only the new one does.
    let mut last = String::new();
    let rolled = common::eventually(Duration::from_secs(30), || {
        last = get(web, "/cgi-bin/env");
        last == "MODE=two uid=10001\n"
    });
    assert!(rolled, "still {last:?}");
    // The old pod goes once the new one is ready.
    let mut after = Vec::new();
    common::eventually(Duration::from_secs(90), || {
        after = live_pods(&c);
        after.len() == 1
    });
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(
        !before.contains(&after[0]),
        "a new pod: {before} → {after:?}"
    );

    // A killed pod is replaced by Kubernetes.
    let pod = after[0].clone();
    c.ok(&[
        "delete",
        "-n",
        "berth-default",
        &format!("pod/{pod}"),
        "--wait=false",
    ]);
    let replaced = common::eventually(Duration::from_secs(120), || {
        let now = live_pods(&c);
        now.len() == 1
            && now[0] != pod
            && c.ok(&[
                "get",
                "pod",
                &now[0],
                "-n",
                "berth-default",
                "-o",
                "jsonpath={.status.containerStatuses[0].ready}",
            ]) == "true"
    });
    assert!(replaced, "the killed pod was not replaced");
    assert_eq!(get(web, "/"), "hello from a pod\n");

    // An image the node cannot get: the apply fails with the pod's reason.
    declare(&defs, "localhost/berth-test-missing:1", "two");
    let out = apply(&c, &defs);
    assert!(!out.status.success());
    let text = said(&out);
    assert!(
        text.contains("cannot start")
            && (text.contains("ErrImagePull") || text.contains("ImagePullBackOff")),
        "{text}"
    );
}
