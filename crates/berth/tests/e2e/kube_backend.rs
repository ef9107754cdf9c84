//! `berth up --backend kubernetes` against the test's own cluster whose pods really run
//! (`scripts/kube-lab`: kube-apiserver, controller manager, scheduler, a kubelet with
//! containerd) and a real registry on loopback (Debian's `docker-registry`). An app deployed
//! with the usual commands becomes a Deployment, a Service and an Ingress in `berth-default`,
//! its image pulled by the node from the registry by digest; variable and secret changes roll
//! its pods; `berth logs` reads them; a release whose pods cannot start fails the deploy and
//! the serving one keeps serving; rollback and destroy work; apps berth builds from source
//! (Python, Node, a static site) run on the node with the stack files their image carries.

use crate::common;

use common::kube_lab::{push_image, KubeLab};
use common::registry::registry;
use common::said;
use common::Platform;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const NS: &str = "berth-default";

/// `berth up` with these flags, expected to stop with an error: what it said.
fn up_refused(extra: &[&str]) -> String {
    let p = Platform::unstarted(None, extra, &[]);
    let mut child = Command::new(common::berth_bin())
        .args(p.up_args())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("berth up {extra:?} did not stop");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    // Nothing was started: no edge left serving for a platform that never came up.
    let data = p.data.path().display().to_string();
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&data))
        .collect();
    assert!(left.is_empty(), "left running: {left:?}");
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// `berth deploy DIR --image IMAGE --app APP` and `extra` arguments.
fn deploy_image(
    p: &Platform,
    dir: &Path,
    image: &str,
    app: &str,
    extra: &[&str],
) -> std::process::Output {
    let dir = dir.display().to_string();
    let mut args = vec!["deploy", dir.as_str(), "--image", image, "--app", app];
    args.extend_from_slice(extra);
    p.berth(&args)
}

/// The body of a 200 answer from web's Service, once there is one saying `want`.
fn answer(lab: &KubeLab, path: &str, want: &str) -> String {
    answer_from(lab, "web", path, want)
}

fn answer_from(lab: &KubeLab, service: &str, path: &str, want: &str) -> String {
    let mut last = String::new();
    let ok = common::eventually(Duration::from_secs(60), || {
        let got = common::http_get_at(lab.service(NS, service), "localhost", path);
        last = format!("{got:?}");
        matches!(got, Ok((200, ref body)) if body.contains(want))
    });
    assert!(ok, "GET {path} never said {want:?}: {last}");
    last
}

/// One GET of `/` from `addr`: whether it answered 200.
fn get(addr: std::net::SocketAddr) -> Result<(), String> {
    match common::http_get_at(addr, "web", "/") {
        Ok((200, _)) => Ok(()),
        Ok((code, _)) => Err(format!("{addr}: {code}")),
        Err(e) => Err(format!("{addr}: {e}")),
    }
}

/// Waits until the Service's address answers (kube-proxy has its rules).
fn answer_at(service: std::net::SocketAddr) {
    let mut last = Ok(());
    let ok = common::eventually(Duration::from_secs(30), || {
        last = get(service);
        last.is_ok()
    });
    assert!(ok, "{service} never answered: {last:?}");
}

/// Requests to web's Service address (kube-proxy sends each to one of its ready pods) until
/// `stop` (at most 3000, 10 ms apart): how many were sent, and the failures.
fn load_through_service(
    service: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (u32, Vec<String>) {
    use std::sync::atomic::Ordering;
    let (mut sent, mut failures) = (0u32, Vec::new());
    while !stop.load(Ordering::SeqCst) && sent < 3000 {
        if let Err(e) = get(service) {
            failures.push(e);
        }
        sent += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    (sent, failures)
}

/// A field of web's Deployment (a JSONPath).
fn web_deployment(lab: &KubeLab, path: &str) -> String {
    lab.ok(&[
        "get",
        "deployment",
        "web-web",
        "-n",
        NS,
        "-o",
        &format!("jsonpath={path}"),
    ])
}

/// The image web's Deployment runs.
fn deployed_image(lab: &KubeLab) -> String {
    web_deployment(lab, "{.spec.template.spec.containers[0].image}")
}

#[test]
fn apps_run_in_the_cluster_with_the_usual_commands() {
    let lab = KubeLab::with_node();
    // A registry that wants a password: the nodes pull with the pull secret berth writes.
    let reg = registry(true);
    lab.trust_plain_registry(reg.port);
    let work = tempfile::tempdir().unwrap();
    let web = push_image(
        work.path(),
        reg.port,
        "web",
        // Like most servers, it stops at once when told to (SIGTERM).
        "echo \"web starting with MODE=$MODE\"; /bin/busybox httpd -f -p 8000 -h /www & trap \"kill $!; exit 0\" TERM; wait",
    );
    let crash = push_image(
        work.path(),
        reg.port,
        "crash",
        "echo 'cannot start: no database'; exit 3",
    );
    let kubeconfig = lab.kubeconfig().display().to_string();
    let registry_url = format!("http://127.0.0.1:{}/berth", reg.port);

    // Refused before anything starts: no registry for the nodes to pull from, a cluster
    // that does not answer.
    let e = up_refused(&["--backend", "kubernetes", "--kubeconfig", &kubeconfig]);
    assert!(e.contains("--backend kubernetes needs --registry"), "{e}");
    let dead = work.path().join("dead.kubeconfig");
    std::fs::write(
        &dead,
        std::fs::read_to_string(&kubeconfig)
            .unwrap()
            .replace("https://127.0.0.1:", "https://127.0.0.1:1"),
    )
    .unwrap();
    let e = up_refused(&[
        "--backend",
        "kubernetes",
        "--kubeconfig",
        &dead.display().to_string(),
        "--registry",
        &registry_url,
    ]);
    assert!(e.contains("cannot reach the cluster"), "{e}");

    // The cluster has CloudNativePG (its CRD; the platform looks for it when it starts).
    lab.install_crd(common::kube_lab::CLOUDNATIVE_PG_CRD);
    let p = Platform::start_with(&[
        "--backend",
        "kubernetes",
        "--kubeconfig",
        &kubeconfig,
        "--registry",
        &registry_url,
        "--kube-storage-class",
        "berth-local",
    ]);
    assert!(
        p.up_log()
            .contains("apps run in the Kubernetes cluster at https://127.0.0.1:"),
        "{}",
        p.up_log()
    );

    let status = p.berth(&["status"]);
    assert!(
        said(&status).contains("apps run in the Kubernetes cluster at https://127.0.0.1:"),
        "{}",
        said(&status)
    );
    common::registry::login(&p, &reg);

    // Deployed as on the embedded runtime; the rollout is followed to the end.
    // Its berth.toml: CERT is a secret given as a file.
    let web_dir = work.path().join("web");
    std::fs::create_dir_all(&web_dir).unwrap();
    std::fs::write(
        web_dir.join("berth.toml"),
        "[secrets]\nfiles = [\"CERT\"]\n",
    )
    .unwrap();
    let out = deploy_image(&p, &web_dir, &web, "web", &[]);
    assert!(out.status.success(), "{}", said(&out));
    assert!(
        said(&out).contains("Deployment berth-default/web-web: 1/1 ready"),
        "{}",
        said(&out)
    );
    // Served by the cluster's Ingress controller, not this machine's edge.
    assert!(
        said(&out).contains("serving at http://web.localhost/"),
        "{}",
        said(&out)
    );
    let releases = p.json(&["releases", "web"]);
    let digest = releases[0]["image"]["digest"].as_str().unwrap().to_string();
    let image = deployed_image(&lab);
    assert_eq!(
        image,
        format!("127.0.0.1:{}/berth/web@{digest}", reg.port),
        "the node pulls the release's image by digest"
    );
    let kinds = lab.ok(&["get", "service,ingress,configmap", "-n", NS, "-o", "name"]);
    for want in [
        "service/web",
        "ingress.networking.k8s.io/web",
        "configmap/web-env",
    ] {
        assert!(kinds.contains(want), "{want} in {kinds}");
    }
    answer(&lab, "/", "hello from the cluster");
    let pull = lab.ok(&[
        "get",
        "secret",
        "berth-registry",
        "-n",
        NS,
        "-o",
        "jsonpath={.type}",
    ]);
    assert_eq!(pull, "kubernetes.io/dockerconfigjson");
    let pull_secrets = web_deployment(&lab, "{.spec.template.spec.imagePullSecrets[*].name}");
    assert_eq!(pull_secrets, "berth-registry");

    // Scaled out: two pods, both in `berth ps`.
    let out = p.berth(&["scale", "web", "web=2"]);
    assert!(said(&out).contains("2/2 ready"), "{}", said(&out));
    let ps = p.json(&["ps", "web"]);
    let running: Vec<&serde_json::Value> = ps
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["state"] == "running" && i["process"] == "web")
        .collect();
    assert_eq!(running.len(), 2, "{ps}");
    assert_eq!(
        p.json(&["apps"])[0]["running"],
        2,
        "berth apps counts the pods"
    );
    assert!(
        running
            .iter()
            .all(|i| i["address"].as_str().unwrap().starts_with("10.88.")),
        "{ps}"
    );

    // Changed by hand: scaled down, its Service deleted. `berth kube drift` names both; a
    // deploy does not take the replicas back unasked (a conflict, with what to do), and
    // `berth kube restore` puts the serving release's objects back.
    assert_eq!(p.berth(&["kube", "drift"]).status.code(), Some(0));
    // (A patch, not `kubectl scale`: kube-apiserver 1.20 records no owner for a change
    // through the scale subresource.)
    lab.ok(&[
        "patch",
        "deployment",
        "web-web",
        "-n",
        NS,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"replicas":1}}"#,
    ]);
    lab.ok(&["delete", "service", "web", "-n", NS]);
    let out = p.berth(&["kube", "drift", "web"]);
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    assert!(
        said(&out).contains("~ update Deployment berth-default/web-web"),
        "{}",
        said(&out)
    );
    assert!(said(&out).contains("spec.replicas"), "{}", said(&out));
    assert!(
        said(&out).contains("+ create Service berth-default/web"),
        "{}",
        said(&out)
    );
    let before = p.json(&["releases", "web"])[0]["version"].clone();
    let out = p.berth(&["env", "set", "web", "MODE=forced"]);
    assert!(!out.status.success(), "{}", said(&out));
    assert!(
        said(&out).contains("berth kube restore web"),
        "{}",
        said(&out)
    );
    assert_eq!(p.json(&["apps"])[0]["current_release"], before);
    let out = p.berth(&["kube", "restore", "web"]);
    assert!(out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("restored web"), "{}", said(&out));
    assert_eq!(p.berth(&["kube", "drift", "web"]).status.code(), Some(0));
    let replicas = web_deployment(&lab, "{.spec.replicas}");
    assert_eq!(replicas, "2");
    answer(&lab, "/", "hello from the cluster");

    // A variable and a secret: new releases whose pods have them; the secret's value is
    // in the Secret berth wrote, never in a rendered object.
    // The variable's rollout under load (two pods, replaced one by one): no request
    // fails, sent to its Service's address (kube-proxy picks a ready pod for each).
    let service = lab.service(NS, "web");
    answer_at(service);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || load_through_service(service, stop))
    };
    std::thread::sleep(Duration::from_secs(1));
    p.ok(&["env", "set", "web", "MODE=two"]);
    // The old pods' stop (their drain) is over before the load ends.
    std::thread::sleep(Duration::from_secs(5));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (sent, failures) = load.join().unwrap();
    eprintln!(
        "rollout under load: {sent} requests, {} failed",
        failures.len()
    );
    assert!(sent > 100, "only {sent} requests were sent");
    assert!(
        failures.is_empty(),
        "{} of {sent} failed: {failures:?}",
        failures.len()
    );
    p.ok(&[
        "secrets",
        "set",
        "web",
        "TOKEN=s3cret-value",
        "CERT=pem-data",
    ]);
    answer(
        &lab,
        "/cgi-bin/env",
        "MODE=two TOKEN=s3cret-value CERT=pem-data",
    );
    let secret = lab.ok(&[
        "get",
        "secret",
        "web-secrets",
        "-n",
        NS,
        "-o",
        "jsonpath={.data.TOKEN}",
    ]);
    assert_eq!(secret, "czNjcmV0LXZhbHVl", "base64 of the value");
    let deployment = lab.ok(&["get", "deployment", "web-web", "-n", NS, "-o", "yaml"]);
    assert!(!deployment.contains("s3cret-value"), "{deployment}");

    // The pods' output reaches `berth logs`.
    assert!(
        common::eventually(Duration::from_secs(30), || {
            p.ok(&["logs", "web"])
                .contains("web starting with MODE=two")
        }),
        "{}",
        p.ok(&["logs", "web"])
    );

    // A release whose pods cannot start fails with the reason; the serving one keeps
    // serving, and the cluster has its objects again.
    let serving = p.json(&["releases", "web"])[0]["version"].as_u64().unwrap();
    let out = p.berth(&["deploy", "--image", &crash, "--app", "web"]);
    assert!(!out.status.success(), "{}", said(&out));
    assert!(
        said(&out).contains("CrashLoopBackOff") || said(&out).contains("cannot start"),
        "{}",
        said(&out)
    );
    assert!(
        said(&out).contains(&format!("putting v{serving} back")),
        "{}",
        said(&out)
    );
    let apps = p.json(&["apps"]);
    assert_eq!(apps[0]["current_release"].as_u64(), Some(serving), "{apps}");
    answer(
        &lab,
        "/cgi-bin/env",
        "MODE=two TOKEN=s3cret-value CERT=pem-data",
    );
    let image = deployed_image(&lab);
    assert!(image.ends_with(&digest), "{image}");

    // Rollback to the first release: MODE back to its first value, no secret.
    p.ok(&["rollback", "web", "--to", "1"]);
    answer(&lab, "/cgi-bin/env", "MODE= TOKEN= CERT=");
    let files = lab.kubectl(&["get", "secret", "web-secret-files", "-n", NS]);
    assert!(
        !files.status.success(),
        "v1 has no secrets: their Secrets are pruned"
    );

    // An app berth builds from source (Python, on this machine's stack) runs on the node
    // too: its image carries the stack files it needs.
    let out = p.berth(&[
        "deploy",
        &common::examples().join("hello").display().to_string(),
    ]);
    assert!(out.status.success(), "{}", said(&out));
    assert!(
        said(&out).contains("files of this machine's stack"),
        "{}",
        said(&out)
    );
    answer_from(&lab, "hello", "/", "Hello");
    // So do a Node app (started by `npm start`, with a dependency from npm) and a static
    // site (served by berth's own binary).
    for (example, want) in [
        ("node-app", "node-app up for"),
        ("static-site", "Static site served by berth"),
    ] {
        let out = p.berth(&[
            "deploy",
            &common::examples().join(example).display().to_string(),
        ]);
        assert!(out.status.success(), "{example}: {}", said(&out));
        answer_from(&lab, example, "/", want);
    }

    // The tests and the release command run as Jobs of the new image before its pods
    // start, their output in the deploy's; tests that fail fail the deploy and the serving
    // release stays.
    let tested = work.path().join("tested");
    std::fs::create_dir_all(&tested).unwrap();
    let toml = |test: &str| {
        format!(
            "[deploy]\ntest = \"{test}\"\n[processes.release]\ncommand = \"echo migrating as $BERTH_APP with MODE=$MODE\"\n[env]\nMODE = \"ok\"\n"
        )
    };
    std::fs::write(
        tested.join("berth.toml"),
        toml("echo the tests see MODE=$MODE; test $MODE = ok"),
    )
    .unwrap();
    let deploy_tested = || deploy_image(&p, &tested, &web, "tested", &[]);
    let out = deploy_tested();
    assert!(out.status.success(), "{}", said(&out));
    for want in [
        "running tests in the cluster",
        "the tests see MODE=ok",
        "the tests passed",
        "running release in the cluster",
        "migrating as tested with MODE=ok",
        "Deployment berth-default/tested-web: 1/1 ready",
    ] {
        assert!(said(&out).contains(want), "{want}: {}", said(&out));
    }
    std::fs::write(tested.join("berth.toml"), toml("echo two failed; exit 3")).unwrap();
    let out = deploy_tested();
    assert!(!out.status.success(), "{}", said(&out));
    assert!(
        said(&out).contains("the tests failed: they exited with code 3"),
        "{}",
        said(&out)
    );
    assert!(said(&out).contains("two failed"), "{}", said(&out));
    let apps = p.json(&["apps"]);
    let current = apps
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "tested")
        .map(|a| a["current_release"].clone());
    assert_eq!(current, Some(serde_json::json!(1)), "v1 serves on: {apps}");
    let jobs = lab.ok(&["get", "jobs", "-n", NS, "-o", "name"]);
    assert!(jobs.trim().is_empty(), "one-offs are deleted: {jobs}");
    p.ok(&["destroy", "tested"]);

    // A volume is a PersistentVolumeClaim of the platform's storage class (here a volume
    // the test made on the node's disk), mounted by the app's pods; what they write
    // outlives them.
    let disk = work.path().join("pv");
    std::fs::create_dir_all(&disk).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&disk, std::fs::Permissions::from_mode(0o777)).unwrap();
    let pv = work.path().join("pv.yaml");
    std::fs::write(
        &pv,
        format!(
            "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: test-disk}}\nspec:\n  capacity: {{storage: 1Gi}}\n  accessModes: [ReadWriteOnce]\n  storageClassName: berth-local\n  persistentVolumeReclaimPolicy: Retain\n  hostPath: {{path: {}}}\n",
            disk.display()
        ),
    )
    .unwrap();
    lab.ok(&["apply", "-f", &pv.display().to_string()]);
    let out = p.berth(&[
        "volumes", "create", "web", "data", "--size", "64M", "--mount", "/data",
    ]);
    assert!(out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("ready"), "{}", said(&out));
    let claim = lab.ok(&[
        "get",
        "pvc",
        "web-data",
        "-n",
        NS,
        "-o",
        "jsonpath={.spec.storageClassName} {.spec.resources.requests.storage} {.status.phase}",
    ]);
    assert_eq!(claim, "berth-local 64Mi Bound");
    answer(&lab, "/cgi-bin/count", "visits=");
    let visits = |body: &str| -> u32 {
        let n: String = body
            .split("visits=")
            .nth(1)
            .unwrap()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        n.parse().unwrap()
    };
    let first = visits(&answer(&lab, "/cgi-bin/count", "visits="));
    assert!(
        std::fs::read_to_string(disk.join("visits")).is_ok(),
        "the pods wrote to the claim's volume"
    );
    p.ok(&["env", "set", "web", "MODE=three"]);
    let after = visits(&answer(&lab, "/cgi-bin/count", "visits="));
    assert!(after > first, "the new pods see what the old ones wrote");
    let volumes = p.json(&["volumes", "list", "web"]);
    assert_eq!(volumes[0]["name"], "data", "{volumes}");
    assert_eq!(volumes[0]["mount"], "/data", "{volumes}");
    assert!(
        !volumes[0]["mounted_by"].as_array().unwrap().is_empty(),
        "{volumes}"
    );
    // Snapshots are the cluster storage's to take.
    let out = p.berth(&["volumes", "snapshot", "web", "data"]);
    assert!(!out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("VolumeSnapshot"), "{}", said(&out));
    // Destroyed: in use, it needs --force; then a release without it deletes the claim.
    let out = p.berth(&["volumes", "destroy", "web", "data", "--yes"]);
    assert!(!out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("--force"), "{}", said(&out));
    let out = p.berth(&["volumes", "destroy", "web", "data", "--force", "--yes"]);
    assert!(out.status.success(), "{}", said(&out));
    let t0 = Instant::now();
    assert!(
        common::eventually(Duration::from_secs(150), || !lab
            .kubectl(&["get", "pvc", "web-data", "-n", NS])
            .status
            .success()),
        "the claim is deleted: {}\n{}\n{}",
        said(&out),
        said(&lab.kubectl(&["get", "pvc", "web-data", "-n", NS, "-o", "yaml"])),
        said(&lab.kubectl(&["get", "pods", "-n", NS, "-o", "wide"]))
    );
    eprintln!("claim deleted after {:?}", t0.elapsed());
    assert!(
        web_deployment(&lab, "{.spec.template.spec.volumes[*].name}")
            .split(' ')
            .all(|v| v != "data")
    );
    answer(&lab, "/", "hello from the cluster");

    // A database: CloudNativePG's Cluster, made before the pods that read its connection
    // from the operator's Secret. (CloudNativePG's operator is not a Debian package and its
    // images cannot be pulled here: the test does its part, writing the Secret the operator
    // writes once the database is up.)
    let operator = {
        let kubeconfig = lab.kubeconfig();
        std::thread::spawn(move || {
            let kubectl = |args: &[&str]| {
                Command::new("kubectl")
                    .env("KUBECONFIG", &kubeconfig)
                    .args(args)
                    .output()
                    .unwrap()
            };
            let made = common::eventually(Duration::from_secs(60), || {
                kubectl(&["get", "clusters.postgresql.cnpg.io", "web-db", "-n", NS])
                    .status
                    .success()
            });
            assert!(made, "no Cluster web-db");
            std::thread::sleep(Duration::from_secs(2));
            let out = kubectl(&[
                "create",
                "secret",
                "generic",
                "web-db-app",
                "-n",
                NS,
                "--from-literal=uri=postgresql://app:pw@web-db-rw.berth-default:5432/app",
                "--from-literal=host=web-db-rw",
                "--from-literal=port=5432",
                "--from-literal=dbname=app",
                "--from-literal=username=app",
                "--from-literal=password=pw",
            ]);
            assert!(out.status.success(), "{out:?}");
        })
    };
    let out = p.berth(&["db", "create", "web"]);
    assert!(out.status.success(), "{}", said(&out));
    assert!(
        said(&out).contains("waiting for CloudNativePG to make database web-db"),
        "{}",
        said(&out)
    );
    operator.join().unwrap();
    let db = lab.ok(&[
        "get",
        "clusters.postgresql.cnpg.io",
        "web-db",
        "-n",
        NS,
        "-o",
        "jsonpath={.spec.bootstrap.initdb.database} {.spec.storage.storageClass}",
    ]);
    assert_eq!(db, "app berth-local");
    answer(
        &lab,
        "/cgi-bin/env",
        "DB=postgresql://app:pw@web-db-rw.berth-default:5432/app",
    );
    let info = p.json(&["db", "info", "web"]);
    assert_eq!(info["host"], "web-db-rw.berth-default", "{info}");
    assert_eq!(info["server_running"], true, "{info}");
    let out = p.berth(&["db", "create", "web"]);
    assert!(!out.status.success(), "an app has one database");
    let out = p.berth(&["db", "backup", "web"]);
    assert!(!out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("ScheduledBackup"), "{}", said(&out));

    // Destroy: the app's objects go; the namespace stays.
    p.ok(&["destroy", "web"]);
    let left = lab.ok(&[
        "get",
        "deployment,service,ingress,configmap,secret,networkpolicy,clusters.postgresql.cnpg.io",
        "-n",
        NS,
        "-l",
        "app.kubernetes.io/name=web",
        "-o",
        "name",
    ]);
    assert!(left.trim().is_empty(), "{left}");
    lab.ok(&["get", "namespace", NS]);

    // A project with a quota: its namespace has a ResourceQuota (room for a rolling
    // update's new pods beside the old), and the app's pods run within it.
    p.ok(&[
        "projects",
        "create",
        "team",
        "--max-memory",
        "1G",
        "--max-instances",
        "3",
    ]);
    let out = deploy_image(&p, &web_dir, &web, "front", &["--project", "team"]);
    assert!(out.status.success(), "{}", said(&out));
    let quota = || {
        lab.ok(&[
            "get",
            "resourcequota",
            "berth-quota",
            "-n",
            "berth-team",
            "-o",
            "jsonpath={.spec.hard.limits\\.memory} {.spec.hard.pods} {.status.used.pods}",
        ])
    };
    assert!(
        common::eventually(Duration::from_secs(30), || quota() == "2Gi 6 1"),
        "{}",
        quota()
    );
}
