//! The kube plane against a real Kubernetes API server (kube-apiserver 1.20 built from
//! Debian's source package by `scripts/install-deps`, with etcd, on loopback ports of its
//! own): `berth render` writes a kustomize tree whose build is exactly the objects berth
//! rendered, and the API server accepts every one of them by server-side apply.

mod common;

use common::{copy_dir, fixture};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// etcd + kube-apiserver, stopped when dropped.
struct Lab {
    dir: tempfile::TempDir,
}

impl Lab {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ports = common::free_ports(3);
        let out = Command::new(repo().join("scripts/kube-lab/start"))
            .arg(dir.path())
            .args(ports.iter().map(|p| p.to_string()))
            .output()
            .expect("scripts/kube-lab/start");
        let lab = Lab { dir };
        assert!(
            out.status.success(),
            "the API server did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        lab
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .args(args)
            .output()
            .expect("kubectl")
    }

    fn ok(&self, args: &[&str]) -> String {
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

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("scripts/kube-lab/stop"))
            .arg(self.dir.path())
            .status();
    }
}

fn berth(args: &[&str]) -> Output {
    Command::new(common::berth_bin())
        .args(args)
        .output()
        .expect("berth")
}

/// The YAML documents of a kustomize build, as JSON objects keyed by kind/namespace/name.
fn documents(yaml: &str) -> std::collections::BTreeMap<String, serde_json::Value> {
    yaml.split("\n---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| {
            let v: serde_json::Value = serde_yaml_ng::from_str(d).unwrap();
            let key = format!(
                "{}/{}/{}",
                v["kind"].as_str().unwrap(),
                v["metadata"]["namespace"].as_str().unwrap_or(""),
                v["metadata"]["name"].as_str().unwrap()
            );
            (key, v)
        })
        .collect()
}

/// A platform definition: hello (web only), and shop (sandboxed, a worker, variables,
/// a health path).
fn platform(root: &Path) {
    copy_dir(&repo().join("examples/hello"), &root.join("hello"));
    let shop = root.join("shop");
    copy_dir(&fixture("stateful"), &shop);
    std::fs::write(
        shop.join("Procfile"),
        "web: python3 app.py\nworker: python3 app.py --worker\n",
    )
    .unwrap();
    std::fs::write(
        shop.join("berth.toml"),
        "isolation = \"sandbox\"\n[env]\nMODE = \"blue\"\n[health]\npath = \"/\"\n[processes.web]\ninstances = 2\n",
    )
    .unwrap();
}

#[test]
fn rendered_apps_are_what_kustomize_builds_and_what_a_real_api_server_accepts() {
    let work = tempfile::tempdir().unwrap();
    let defs = work.path().join("platform");
    platform(&defs);
    let out = work.path().join("deploy");
    let (d, o) = (defs.to_str().unwrap(), out.to_str().unwrap());
    let said = berth(&[
        "--json",
        "render",
        "-f",
        d,
        "--out",
        o,
        "--base-domain",
        "apps.example.test",
    ]);
    assert!(
        said.status.success(),
        "{}",
        String::from_utf8_lossy(&said.stderr)
    );
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&said.stdout).unwrap();

    // The overlay builds to exactly the rendered objects, each as its file in base/ says.
    let overlay = out.join("overlays/production");
    let built = Command::new("kubectl")
        .args(["kustomize", overlay.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let docs = documents(&String::from_utf8_lossy(&built.stdout));
    let mut names: Vec<String> = listed
        .iter()
        .map(|m| {
            format!(
                "{}/{}/{}",
                m["kind"].as_str().unwrap(),
                m["namespace"].as_str().unwrap_or(""),
                m["name"].as_str().unwrap()
            )
        })
        .collect();
    names.sort();
    assert_eq!(docs.keys().cloned().collect::<Vec<_>>(), names);
    for m in &listed {
        let kind = m["kind"].as_str().unwrap();
        let ns = m["namespace"].as_str().unwrap_or("cluster");
        let file = out.join("base").join(ns).join(format!(
            "{}-{}.yaml",
            kind.to_ascii_lowercase(),
            m["name"].as_str().unwrap()
        ));
        let text = std::fs::read_to_string(&file).unwrap();
        let v: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
        let key = format!(
            "{kind}/{}/{}",
            m["namespace"].as_str().unwrap_or(""),
            m["name"].as_str().unwrap()
        );
        assert_eq!(docs[&key], v, "{key}");
    }
    // What a cluster needs to know of each app.
    let web = &docs["Deployment/default/shop-web"];
    let pod = &web["spec"]["template"]["spec"];
    assert_eq!(web["spec"]["replicas"], 2);
    assert_eq!(pod["runtimeClassName"], "gvisor");
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &pod["containers"][0];
    assert_eq!(c["command"][2], "python3 app.py");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/");
    assert!(c["image"]
        .as_str()
        .unwrap()
        .starts_with("registry.localhost:5000/shop:"));
    assert_eq!(docs["ConfigMap/default/shop-env"]["data"]["MODE"], "blue");
    assert!(docs.contains_key("Deployment/default/shop-worker"));
    assert!(!docs.contains_key("Service/default/shop-worker"));
    assert!(
        docs["Deployment/default/hello-web"]["spec"]["template"]["spec"]
            .get("runtimeClassName")
            .is_none()
    );
    assert_eq!(
        docs["Ingress/default/shop"]["spec"]["rules"][0]["host"],
        "shop.apps.example.test"
    );
    let egress = serde_json::to_string(&docs["NetworkPolicy/default/egress-internet"]).unwrap();
    assert!(
        egress.contains("169.254.0.0/16") && egress.contains("10.0.0.0/8"),
        "{egress}"
    );

    // A real API server takes every object by server-side apply, owned by berth.
    let lab = Lab::start();
    lab.ok(&[
        "apply",
        "--server-side",
        "--field-manager",
        "berth",
        "-k",
        overlay.to_str().unwrap(),
    ]);
    let deployments = lab.ok(&["get", "deployments", "-n", "default", "-o", "name"]);
    for d in ["hello-web", "shop-web", "shop-worker"] {
        assert!(
            deployments.contains(&format!("deployment.apps/{d}")),
            "{deployments}"
        );
    }
    let managed = lab.ok(&[
        "get",
        "deployment",
        "shop-web",
        "-n",
        "default",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ]);
    assert!(
        managed.split_whitespace().any(|m| m == "berth"),
        "{managed}"
    );
    // Applying the same rendering again changes nothing.
    let version = |lab: &Lab| {
        lab.ok(&[
            "get",
            "deployment",
            "shop-web",
            "-n",
            "default",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
    };
    let before = version(&lab);
    lab.ok(&[
        "apply",
        "--server-side",
        "--field-manager",
        "berth",
        "-k",
        overlay.to_str().unwrap(),
    ]);
    assert_eq!(version(&lab), before, "a second apply is a no-op");

    // Bad input: an app with a broken berth.toml; nothing is written, the tree stays.
    std::fs::write(
        defs.join("shop/berth.toml"),
        "isolation = \"sandbox\"\n[processes.web]\nmemory = \"lots\"\n",
    )
    .unwrap();
    let base_before = std::fs::read_to_string(out.join("base/kustomization.yaml")).unwrap();
    let said = berth(&["render", "-f", d, "--out", o]);
    assert!(!said.status.success());
    let err = String::from_utf8_lossy(&said.stderr);
    assert!(err.contains("shop") && err.contains("memory"), "{err}");
    assert_eq!(
        std::fs::read_to_string(out.join("base/kustomization.yaml")).unwrap(),
        base_before
    );
    // A directory that is not berth's is not overwritten.
    let theirs = work.path().join("theirs");
    std::fs::create_dir_all(&theirs).unwrap();
    std::fs::write(theirs.join("notes.txt"), "mine").unwrap();
    std::fs::write(defs.join("shop/berth.toml"), "").unwrap();
    let said = berth(&["render", "-f", d, "--out", theirs.to_str().unwrap()]);
    assert!(!said.status.success());
    assert!(String::from_utf8_lossy(&said.stderr).contains("not a tree berth rendered"));
}
