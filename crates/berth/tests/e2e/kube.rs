//! The kube plane against a real Kubernetes API server (kube-apiserver 1.20 built from
//! Debian's source package by `scripts/install-deps`, with etcd, on loopback ports of its
//! own): `berth render` writes a kustomize tree whose build is exactly the objects berth
//! rendered, and the API server accepts every one of them by server-side apply.

use crate::common;

use common::{copy_dir, fixture};
use std::path::Path;
use std::process::{Command, Output};

use common::kube_lab::{repo, KubeLab as Lab};

fn berth(args: &[&str]) -> Output {
    Command::new(common::berth_bin())
        .args(args)
        .output()
        .expect("berth")
}

/// `kubectl kustomize DIR`, which must build, as its documents.
fn kustomize(dir: &Path) -> std::collections::BTreeMap<String, serde_json::Value> {
    let built = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    documents(&String::from_utf8_lossy(&built.stdout))
}

/// `berth render -f DIR --out OUT` with `extra` arguments.
fn render(dir: &str, out: &Path, extra: &[&str]) -> Output {
    let out = out.to_str().unwrap();
    let mut args = vec!["render", "-f", dir, "--out", out];
    args.extend_from_slice(extra);
    berth(&args)
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

/// A platform definition: hello (web only), shop (sandboxed, a worker, variables, a health
/// path), and Score's volume example (an image, a volume).
fn platform(root: &Path) {
    copy_dir(&repo().join("examples/hello"), &root.join("hello"));
    std::fs::create_dir_all(root.join("vols")).unwrap();
    std::fs::copy(
        repo().join("crates/core/tests/fixtures/score-volumes.yaml"),
        root.join("vols/score.yaml"),
    )
    .unwrap();
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

    // The overlay builds to exactly the rendered objects, each as its file in base/ says
    // (a directory per namespace and app, `_project` for the namespace's own).
    let overlay = out.join("overlays/production");
    let docs = kustomize(&overlay);
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
        let name = m["name"].as_str().unwrap();
        let key = format!("{kind}/{}/{name}", m["namespace"].as_str().unwrap_or(""));
        let ns = m["namespace"].as_str().unwrap_or(name);
        let app = docs[&key]["metadata"]["labels"]["app.kubernetes.io/name"]
            .as_str()
            .unwrap_or("_project");
        let file = out
            .join("base")
            .join(ns)
            .join(app)
            .join(format!("{}-{name}.yaml", kind.to_ascii_lowercase()));
        let text = std::fs::read_to_string(&file).unwrap();
        let v: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(docs[&key], v, "{key}");
    }
    // Each app's directory builds alone to its own objects (what Argo CD syncs per app).
    let shop = kustomize(&out.join("base/berth-default/shop"));
    let want: Vec<&String> = docs
        .keys()
        .filter(|k| docs[*k]["metadata"]["labels"]["app.kubernetes.io/name"] == "shop")
        .collect();
    assert_eq!(shop.keys().collect::<Vec<_>>(), want);
    assert!(want.len() >= 6, "{want:?}");
    // What a cluster needs to know of each app.
    let web = &docs["Deployment/berth-default/shop-web"];
    let pod = &web["spec"]["template"]["spec"];
    assert_eq!(web["spec"]["replicas"], 2);
    assert_eq!(pod["runtimeClassName"], "gvisor");
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &pod["containers"][0];
    // A plain command runs without a shell (as on berth's own runtime).
    assert_eq!(c["command"], serde_json::json!(["python3", "app.py"]));
    assert_eq!(c["resources"]["limits"]["cpu"], "1000m");
    assert_eq!(
        c["resources"]["requests"]["cpu"], "250m",
        "a quarter of the limit"
    );
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/");
    assert!(c["image"]
        .as_str()
        .unwrap()
        .starts_with("registry.localhost:5000/shop:"));
    assert_eq!(
        docs["ConfigMap/berth-default/shop-env"]["data"]["MODE"],
        "blue"
    );
    assert!(docs.contains_key("Deployment/berth-default/shop-worker"));
    assert!(!docs.contains_key("Service/berth-default/shop-worker"));
    assert!(
        docs["Deployment/berth-default/hello-web"]["spec"]["template"]["spec"]
            .get("runtimeClassName")
            .is_none()
    );
    assert_eq!(
        docs["Ingress/berth-default/shop"]["spec"]["rules"][0]["host"],
        "shop.apps.example.test"
    );
    // Score's volume example: a claim for its volume, mounted where it says, and a
    // Deployment that replaces its pod rather than running two on one volume.
    let claim = &docs["PersistentVolumeClaim/berth-default/my-workload-data"];
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "1Gi");
    let vols = &docs["Deployment/berth-default/my-workload-web"]["spec"];
    assert_eq!(vols["strategy"]["type"], "Recreate");
    assert_eq!(
        vols["template"]["spec"]["containers"][0]["image"],
        "busybox"
    );
    let mounts =
        serde_json::to_string(&vols["template"]["spec"]["containers"][0]["volumeMounts"]).unwrap();
    assert!(mounts.contains("\"mountPath\":\"/data\""), "{mounts}");
    let egress =
        serde_json::to_string(&docs["NetworkPolicy/berth-default/egress-internet"]).unwrap();
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
    let deployments = lab.ok(&["get", "deployments", "-n", "berth-default", "-o", "name"]);
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
        "berth-default",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ]);
    assert!(
        managed.split_whitespace().any(|m| m == "berth"),
        "{managed}"
    );
    // Applying the same rendering again changes nothing (the spec's generation stays; 1.20
    // still writes the apply's time into managedFields).
    let version = |lab: &Lab| {
        lab.ok(&[
            "get",
            "deployment",
            "shop-web",
            "-n",
            "berth-default",
            "-o",
            "jsonpath={.metadata.generation}",
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
    assert_eq!(before, "1");
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

#[test]
fn berth_applies_to_a_cluster_shows_drift_reports_conflicts_and_prunes_only_its_own() {
    let work = tempfile::tempdir().unwrap();
    let defs = work.path().join("platform");
    platform(&defs);
    let d = defs.to_str().unwrap();
    let lab = Lab::start();
    let kubeconfig = lab.kubeconfig();
    let kc = kubeconfig.to_str().unwrap();
    let kube = |args: &[&str]| {
        let mut all = vec!["kube"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-f", d, "--kubeconfig", kc, "--project", "team"]);
        berth(&all)
    };
    let text = |o: &Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };

    // Nothing there yet: every object is a create (exit 2: changes), then applied.
    let plan = kube(&["plan"]);
    assert_eq!(plan.status.code(), Some(2), "{}", text(&plan));
    assert!(
        text(&plan).contains("+ create Deployment berth-team/shop-web"),
        "{}",
        text(&plan)
    );
    let applied = kube(&["apply"]);
    assert!(applied.status.success(), "{}", text(&applied));
    assert_eq!(
        lab.ok(&[
            "get",
            "deployment",
            "shop-worker",
            "-n",
            "berth-team",
            "-o",
            "jsonpath={.spec.template.spec.runtimeClassName}"
        ]),
        "gvisor"
    );
    let plan = kube(&["plan"]);
    assert_eq!(plan.status.code(), Some(0), "as declared: {}", text(&plan));

    // A change by hand is drift: the plan names the field, apply puts it back.
    lab.ok(&[
        "scale",
        "deployment",
        "shop-web",
        "-n",
        "berth-team",
        "--replicas=5",
    ]);
    let plan = kube(&["plan"]);
    assert_eq!(plan.status.code(), Some(2));
    assert!(
        text(&plan).contains("~ update Deployment berth-team/shop-web")
            && text(&plan).contains("spec.replicas"),
        "{}",
        text(&plan)
    );
    assert!(kube(&["apply"]).status.success());
    let replicas = |lab: &Lab| {
        lab.ok(&[
            "get",
            "deployment",
            "shop-web",
            "-n",
            "berth-team",
            "-o",
            "jsonpath={.spec.replicas}",
        ])
    };
    assert_eq!(replicas(&lab), "2");

    // A variable set by hand in the app's ConfigMap: drift too; apply refuses to drop it
    // silently, and removes it when forced.
    lab.ok(&[
        "patch",
        "configmap",
        "shop-env",
        "-n",
        "berth-team",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"DEBUG":"1"}}"#,
    ]);
    let plan = kube(&["plan"]);
    assert_eq!(plan.status.code(), Some(2));
    assert!(
        text(&plan).contains("data.DEBUG (not declared"),
        "{}",
        text(&plan)
    );
    let refused = kube(&["apply"]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("DEBUG that berth does not declare"),
        "{}",
        text(&refused)
    );
    assert!(kube(&["apply", "--force-conflicts"]).status.success());
    assert_eq!(
        lab.ok(&[
            "get",
            "configmap",
            "shop-env",
            "-n",
            "berth-team",
            "-o",
            "jsonpath={.data}"
        ]),
        r#"{"MODE":"blue"}"#
    );

    // Another manager that took a field by server-side apply: a conflict, reported with the
    // field, nothing overwritten — until asked.
    let theirs = work.path().join("theirs.yaml");
    std::fs::write(
        &theirs,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: shop-web\n  namespace: berth-team\nspec:\n  replicas: 7\n  selector:\n    matchLabels:\n      app.kubernetes.io/component: web\n      app.kubernetes.io/managed-by: berth\n      app.kubernetes.io/name: shop\n  template:\n    metadata:\n      labels:\n        app.kubernetes.io/component: web\n        app.kubernetes.io/managed-by: berth\n        app.kubernetes.io/name: shop\n    spec:\n      containers:\n      - name: web\n        image: example.test/other:1\n",
    )
    .unwrap();
    lab.ok(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager",
        "ops",
        "-f",
        theirs.to_str().unwrap(),
    ]);
    let refused = kube(&["apply"]);
    assert!(!refused.status.success());
    let said = text(&refused);
    assert!(
        said.contains("conflicts with \"ops\"")
            && said.contains(".spec.replicas")
            && said.contains("--force-conflicts"),
        "{said}"
    );
    assert_eq!(replicas(&lab), "7", "nothing overwritten");
    assert!(kube(&["apply", "--force-conflicts"]).status.success());
    assert_eq!(replicas(&lab), "2");

    // Prune: an app removed from the definition goes, with all its objects; an object
    // berth did not make stays, labelled or not in its namespace.
    lab.ok(&[
        "create",
        "configmap",
        "by-hand",
        "-n",
        "berth-team",
        "--from-literal=a=b",
    ]);
    std::fs::remove_dir_all(defs.join("hello")).unwrap();
    let plain = kube(&["apply"]);
    assert!(plain.status.success());
    assert!(
        lab.ok(&["get", "deployments", "-n", "berth-team", "-o", "name"])
            .contains("hello-web"),
        "without --prune nothing is deleted"
    );
    let plan = kube(&["plan", "--prune"]);
    assert_eq!(plan.status.code(), Some(2));
    assert!(
        text(&plan).contains("- delete Deployment berth-team/hello-web")
            && !text(&plan).contains("by-hand"),
        "{}",
        text(&plan)
    );
    let pruned = kube(&["apply", "--prune"]);
    assert!(pruned.status.success(), "{}", text(&pruned));
    assert!(
        text(&pruned).contains("deleted Deployment berth-team/hello-web"),
        "{}",
        text(&pruned)
    );
    eventually_gone(&lab, "deployment", "hello-web");
    let left = lab.ok(&[
        "get",
        "configmaps,services,ingresses",
        "-n",
        "berth-team",
        "-o",
        "name",
    ]);
    assert!(!left.contains("hello"), "{left}");
    assert!(
        left.contains("configmap/by-hand") && left.contains("service/shop"),
        "{left}"
    );

    // Bad input: a namespace berth did not make, an unknown kubeconfig, wrong credentials,
    // a cluster that is not there — each named, nothing changed.
    lab.ok(&["create", "namespace", "berth-theirs"]);
    let said = berth(&[
        "kube",
        "apply",
        "-f",
        d,
        "--kubeconfig",
        kc,
        "--project",
        "theirs",
    ]);
    assert!(!said.status.success());
    assert!(
        text(&said).contains("namespace berth-theirs exists and is not berth's"),
        "{}",
        text(&said)
    );
    assert!(!lab
        .ok(&["get", "deployments", "-n", "berth-theirs", "-o", "name"])
        .contains("shop"));
    let said = berth(&[
        "kube",
        "plan",
        "-f",
        d,
        "--kubeconfig",
        "/nonexistent/kubeconfig",
    ]);
    assert!(
        text(&said).contains("reading the kubeconfig /nonexistent/kubeconfig"),
        "{}",
        text(&said)
    );
    let config = std::fs::read_to_string(&kubeconfig).unwrap();
    let token_line = config
        .lines()
        .find(|l| l.trim_start().starts_with("token:"))
        .unwrap();
    let wrong = work.path().join("wrong-token");
    std::fs::write(
        &wrong,
        config.replace(token_line, "    token: not-the-token"),
    )
    .unwrap();
    let said = berth(&[
        "kube",
        "apply",
        "-f",
        d,
        "--kubeconfig",
        wrong.to_str().unwrap(),
    ]);
    assert!(!said.status.success());
    assert!(
        text(&said).contains("refused berth's credentials (401)"),
        "{}",
        text(&said)
    );
    let port = config
        .split("https://127.0.0.1:")
        .nth(1)
        .unwrap()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .to_string();
    let down = work.path().join("down");
    let closed = common::free_port();
    std::fs::write(
        &down,
        config.replace(&format!("127.0.0.1:{port}"), &format!("127.0.0.1:{closed}")),
    )
    .unwrap();
    let said = berth(&[
        "kube",
        "plan",
        "-f",
        d,
        "--kubeconfig",
        down.to_str().unwrap(),
    ]);
    assert!(!said.status.success());
    assert!(
        text(&said).contains("cannot reach the cluster"),
        "{}",
        text(&said)
    );
}

fn eventually_gone(lab: &Lab, kind: &str, name: &str) {
    let gone = common::eventually(std::time::Duration::from_secs(30), || {
        !lab.kubectl(&["get", kind, name, "-n", "berth-team"])
            .status
            .success()
    });
    assert!(gone, "{kind} {name} is still there");
}

/// Minimal CRDs of cert-manager's Certificate, Argo Rollouts' Rollout, the Prometheus
/// operator's PrometheusRule and ServiceMonitor, and Argo CD's Application (CloudNativePG's Cluster is the lab's): the fields berth sets, typed as their
/// published schemas type them (and required where they are).
const STACK_CRDS: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: certificates.cert-manager.io
spec:
  group: cert-manager.io
  scope: Namespaced
  names: {kind: Certificate, plural: certificates, singular: certificate, listKind: CertificateList}
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
            required: [secretName, issuerRef]
            properties:
              secretName: {type: string}
              dnsNames: {type: array, items: {type: string}}
              issuerRef:
                type: object
                required: [name]
                properties:
                  name: {type: string}
                  kind: {type: string}
                  group: {type: string}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: prometheusrules.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: PrometheusRule, plural: prometheusrules, singular: prometheusrule, listKind: PrometheusRuleList}
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
            properties:
              groups:
                type: array
                items:
                  type: object
                  required: [name, rules]
                  properties:
                    name: {type: string}
                    rules:
                      type: array
                      items:
                        type: object
                        required: [expr]
                        properties:
                          record: {type: string}
                          alert: {type: string}
                          expr: {x-kubernetes-int-or-string: true}
                          labels: {type: object, additionalProperties: {type: string}}
                          annotations: {type: object, additionalProperties: {type: string}}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: ServiceMonitor, plural: servicemonitors, singular: servicemonitor, listKind: ServiceMonitorList}
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
            required: [selector, endpoints]
            properties:
              selector:
                type: object
                properties:
                  matchLabels: {type: object, additionalProperties: {type: string}}
              endpoints:
                type: array
                items:
                  type: object
                  properties:
                    port: {type: string}
                    path: {type: string}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: applications.argoproj.io
spec:
  group: argoproj.io
  scope: Namespaced
  names: {kind: Application, plural: applications, singular: application, listKind: ApplicationList}
  versions:
  - name: v1alpha1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        required: [spec]
        properties:
          spec:
            type: object
            required: [destination, project]
            properties:
              project: {type: string}
              source:
                type: object
                required: [repoURL]
                properties:
                  repoURL: {type: string}
                  targetRevision: {type: string}
                  path: {type: string}
              destination:
                type: object
                properties:
                  server: {type: string}
                  namespace: {type: string}
              syncPolicy:
                type: object
                properties:
                  automated:
                    type: object
                    properties:
                      prune: {type: boolean}
                      selfHeal: {type: boolean}
                  syncOptions: {type: array, items: {type: string}}
"#;

#[test]
fn the_clusters_stack_is_used_where_its_crds_are() {
    let work = tempfile::tempdir().unwrap();
    let defs = work.path().join("platform");
    platform(&defs);
    std::fs::write(
        defs.join("shop/berth.toml"),
        "[deploy]\nstrategy = \"canary\"\nsteps = [10, 50]\nstep_pause = \"30s\"\n[metrics]\npath = \"/metrics\"\n[slo]\nlatency_ms = 500\n",
    )
    .unwrap();
    // Score's getting-started example: its postgres, and a variable made of its connection.
    std::fs::create_dir_all(defs.join("sample")).unwrap();
    std::fs::copy(
        repo().join("crates/core/tests/fixtures/score-getting-started.yaml"),
        defs.join("sample/score.yaml"),
    )
    .unwrap();
    let d = defs.to_str().unwrap();
    let lab = Lab::start();
    // Before the cluster has CloudNativePG, an app with a database is refused, whole.
    let kc = lab.kubeconfig();
    let refused = berth(&[
        "kube",
        "apply",
        "-f",
        d,
        "--kubeconfig",
        kc.to_str().unwrap(),
    ]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("sample ask(s) for a postgres database") && why.contains("CloudNativePG"),
        "{why}"
    );
    assert!(!lab
        .kubectl(&["get", "namespace", "berth-default"])
        .status
        .success());
    let crds = work.path().join("crds.yaml");
    std::fs::write(&crds, STACK_CRDS).unwrap();
    lab.ok(&["apply", "-f", crds.to_str().unwrap()]);
    lab.install_crd(common::kube_lab::CLOUDNATIVE_PG_CRD);
    lab.install_crd(common::kube_lab::ARGO_ROLLOUTS_CRD);
    common::eventually(std::time::Duration::from_secs(30), || {
        lab.kubectl(&["get", "rollouts.argoproj.io", "-A"])
            .status
            .success()
            && lab
                .kubectl(&["get", "certificates.cert-manager.io", "-A"])
                .status
                .success()
            && lab
                .kubectl(&["get", "clusters.postgresql.cnpg.io", "-A"])
                .status
                .success()
    });
    let apply = berth(&[
        "kube",
        "apply",
        "-f",
        d,
        "--kubeconfig",
        kc.to_str().unwrap(),
        "--cluster-issuer",
        "team-ca",
    ]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&apply.stdout),
        String::from_utf8_lossy(&apply.stderr)
    );
    assert!(apply.status.success(), "{said}");
    assert!(
        said.contains(
            "the cluster has cert-manager, argo-rollouts, cloudnative-pg, prometheus-operator"
        ),
        "{said}"
    );
    assert!(
        said.contains("the cluster has Argo CD: for GitOps"),
        "{said}"
    );
    // The SLO rules as a PrometheusRule over ingress-nginx's counts of the app's Ingress
    // (valid rules for promtool), and a ServiceMonitor of the metrics shop serves itself.
    let rule = lab.ok(&[
        "get",
        "prometheusrule",
        "shop-slo",
        "-n",
        "berth-default",
        "-o",
        "json",
    ]);
    let rule: serde_json::Value = serde_json::from_str(&rule).unwrap();
    let groups = &rule["spec"]["groups"];
    assert_eq!(groups[0]["name"], "berth-slo-shop");
    let text = serde_json::to_string(groups).unwrap();
    assert!(
        text.contains(r#"nginx_ingress_controller_requests{exported_namespace=\"berth-default\",ingress=\"shop\",status=~\"5..\"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"le=\"0.5\""#),
        "berth.toml's 500 ms: {text}"
    );
    let rules_file = work.path().join("rules.yaml");
    std::fs::write(
        &rules_file,
        serde_yaml_ng::to_string(&serde_json::json!({ "groups": groups })).unwrap(),
    )
    .unwrap();
    let checked = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules_file)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let monitor = lab.ok(&[
        "get",
        "servicemonitor",
        "shop",
        "-n",
        "berth-default",
        "-o",
        "jsonpath={.spec.endpoints[0].port} {.spec.endpoints[0].path} {.spec.selector.matchLabels.app\\.kubernetes\\.io/name}",
    ]);
    assert_eq!(monitor, "http /metrics shop");
    assert!(
        !lab.kubectl(&["get", "servicemonitor", "hello", "-n", "berth-default"])
            .status
            .success(),
        "hello serves no metrics of its own"
    );
    // The database: a CloudNativePG Cluster; the app's variables read its connection from
    // the operator's Secret, the score.yaml's string made of them; the network policies
    // let the app (and the operator) reach it.
    let db = lab.ok(&[
        "get",
        "clusters.postgresql.cnpg.io",
        "sample-db",
        "-n",
        "berth-default",
        "-o",
        "jsonpath={.spec.instances} {.spec.bootstrap.initdb.database} {.spec.storage.size}",
    ]);
    assert_eq!(db, "1 app 1Gi");
    let env = lab.ok(&[
        "get",
        "deployment",
        "sample-web",
        "-n",
        "berth-default",
        "-o",
        "json",
    ]);
    let env: serde_json::Value = serde_json::from_str(&env).unwrap();
    let env = env["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .clone();
    let var = |name: &str| env.iter().find(|e| e["name"] == name).cloned().unwrap();
    assert_eq!(
        var("BERTH_DB_HOST")["valueFrom"]["secretKeyRef"],
        serde_json::json!({"name": "sample-db-app", "key": "host", "optional": false})
    );
    assert_eq!(
        var("DATABASE_URL")["valueFrom"]["secretKeyRef"]["key"],
        "uri"
    );
    assert_eq!(
        var("PG_CONNECTION_STRING")["value"],
        "postgresql://$(BERTH_DB_USERNAME):$(BERTH_DB_PASSWORD)@$(BERTH_DB_HOST):$(BERTH_DB_PORT)/$(BERTH_DB_NAME)?sslmode=disable"
    );
    let position = |name: &str| env.iter().position(|e| e["name"] == name).unwrap();
    assert!(
        position("BERTH_DB_PASSWORD") < position("PG_CONNECTION_STRING"),
        "a variable expands only those listed before it"
    );
    let policies = lab.ok(&["get", "networkpolicy", "-n", "berth-default", "-o", "name"]);
    for want in ["sample-db", "sample-db-client"] {
        assert!(
            policies.contains(&format!("networkpolicy.networking.k8s.io/{want}\n"))
                || policies.ends_with(&format!("/{want}")),
            "{want} in {policies}"
        );
    }
    // A certificate per app from the issuer, for its host, into the Ingress's TLS secret.
    let cert = lab.ok(&[
        "get",
        "certificate",
        "shop",
        "-n",
        "berth-default",
        "-o",
        "jsonpath={.spec.secretName} {.spec.dnsNames[0]} {.spec.issuerRef.name}",
    ]);
    assert_eq!(cert, "shop-tls shop.localhost team-ca");
    // The canary app's web is a Rollout with berth.toml's steps; its worker and the other
    // app stay Deployments.
    let steps = lab.ok(&[
        "get", "rollout", "shop-web", "-n", "berth-default", "-o",
        "jsonpath={.spec.strategy.canary.steps[*].setWeight} {.spec.strategy.canary.steps[1].pause.duration}",
    ]);
    assert_eq!(steps, "10 50 30s");
    let deployments = lab.ok(&["get", "deployments", "-n", "berth-default", "-o", "name"]);
    assert!(!deployments.contains("shop-web"), "{deployments}");
    assert!(
        deployments.contains("shop-worker") && deployments.contains("hello-web"),
        "{deployments}"
    );
    // As declared now; and prune knows the stack's kinds: shop gone, its Rollout and
    // Certificate go too.
    let plan = berth(&[
        "kube",
        "plan",
        "-f",
        d,
        "--kubeconfig",
        kc.to_str().unwrap(),
        "--cluster-issuer",
        "team-ca",
    ]);
    assert_eq!(
        plan.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&plan.stdout)
    );
    // The definition without the database app renders without CloudNativePG.
    let out = work.path().join("deploy");
    let said = render(d, &out, &["--stack", "cert-manager"]);
    assert!(!said.status.success());
    assert!(
        String::from_utf8_lossy(&said.stderr).contains("--stack has none"),
        "{}",
        String::from_utf8_lossy(&said.stderr)
    );
    assert!(!out.exists(), "nothing written");
    std::fs::remove_dir_all(defs.join("shop")).unwrap();
    std::fs::remove_dir_all(defs.join("sample")).unwrap();
    let pruned = berth(&[
        "kube",
        "apply",
        "--prune",
        "-f",
        d,
        "--kubeconfig",
        kc.to_str().unwrap(),
    ]);
    assert!(pruned.status.success());
    let left = lab.ok(&[
        "get",
        "rollouts,certificates,clusters.postgresql.cnpg.io,networkpolicies,prometheusrules,servicemonitors",
        "-n",
        "berth-default",
        "-o",
        "name",
    ]);
    assert!(!left.contains("shop") && !left.contains("sample"), "{left}");
    // render is told the stack; an unknown part is refused.
    let said = render(d, &out, &["--stack", "cert-manager,istio"]);
    assert!(!said.status.success());
    assert!(String::from_utf8_lossy(&said.stderr).contains("istio unknown"));
    assert!(!out.exists(), "nothing written");

    // GitOps: Argo CD is not asked to sync without a repository.
    let said = render(d, &out, &["--stack", "argo-cd"]);
    assert!(!said.status.success());
    assert!(String::from_utf8_lossy(&said.stderr).contains("needs --repo"));
    assert!(!out.exists(), "nothing written");
    // With one: an Application per app syncing its directory, and the root one syncing
    // them and the namespace's own objects; the API server takes them all.
    let said = render(
        d,
        &out,
        &[
            "--stack",
            "argo-cd",
            "--repo",
            "https://git.example.test/team/platform.git",
            "--revision",
            "main",
            "--repo-path",
            "deploy",
        ],
    );
    let text = String::from_utf8_lossy(&said.stdout);
    assert!(said.status.success(), "{text}");
    assert!(text.contains("kubectl apply -f"), "{text}");
    let apps = kustomize(&out.join("argocd"));
    assert!(
        apps.contains_key("Application/argocd/berth-default.hello"),
        "{apps:?}"
    );
    assert!(apps.contains_key("Namespace//berth-default"), "{apps:?}");
    let hello = &apps["Application/argocd/berth-default.hello"]["spec"];
    assert_eq!(
        hello["source"],
        serde_json::json!({
            "repoURL": "https://git.example.test/team/platform.git",
            "targetRevision": "main",
            "path": "deploy/base/berth-default/hello",
        })
    );
    assert_eq!(hello["destination"]["namespace"], "berth-default");
    assert_eq!(hello["syncPolicy"]["automated"]["prune"], true);
    lab.ok(&["create", "namespace", "argocd"]);
    lab.ok(&[
        "apply",
        "--server-side",
        "--field-manager",
        "berth",
        "-k",
        out.join("argocd").to_str().unwrap(),
    ]);
    lab.ok(&[
        "apply",
        "--server-side",
        "--field-manager",
        "berth",
        "-f",
        out.join("argocd-root.yaml").to_str().unwrap(),
    ]);
    let root = lab.ok(&[
        "get",
        "applications.argoproj.io",
        "berth-default",
        "-n",
        "argocd",
        "-o",
        "jsonpath={.spec.source.path}",
    ]);
    assert_eq!(root, "deploy/argocd");
}
