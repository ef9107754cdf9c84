//! Canaries on the cluster backend through Argo Rollouts: an app whose berth.toml asks for
//! a canary has its web pods as a `Rollout` with those steps, the deploy follows the
//! Rollout's status to its end, and `berth promote` / `berth abort` reach it as Argo's own
//! CLI does (through its status). The cluster is the test's own API server (`scripts/
//! kube-lab`) with the Rollout CRD; Argo Rollouts' controller is not packaged for this
//! machine (not in Debian, npm or PyPI), so the test plays it: it moves the Rollout's status
//! through its steps as the controller would, and reads what berth asked of it.

use crate::common;

use common::kube_lab::{push_image, KubeLab, ARGO_ROLLOUTS_CRD};
use common::registry::registry;
use common::said;
use common::Platform;
use serde_json::{json, Value};
use std::time::Duration;

const NS: &str = "berth-default";
const ROLLOUT: &str = "/apis/argoproj.io/v1alpha1/namespaces/berth-default/rollouts/web-web";

fn rollout(lab: &KubeLab) -> Option<Value> {
    let out = lab.kubectl(&["get", "rollout", "web-web", "-n", NS, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// The Rollout once its spec is at `generation`.
fn rollout_at(lab: &KubeLab, generation: i64) -> Value {
    let mut last = None;
    let seen = common::eventually(Duration::from_secs(60), || {
        last = rollout(lab);
        last.as_ref()
            .is_some_and(|r| r["metadata"]["generation"].as_i64() == Some(generation))
    });
    assert!(seen, "no Rollout at generation {generation}: {last:?}");
    last.unwrap()
}

/// What the controller writes at `generation`.
fn controller_says(lab: &KubeLab, generation: i64, status: Value) {
    let mut status = status;
    status["observedGeneration"] = json!(generation.to_string());
    lab.patch_status(ROLLOUT, &status);
}

#[test]
fn a_canary_on_the_cluster_is_an_argo_rollout_promoted_or_aborted_on_request() {
    let lab = KubeLab::start();
    lab.install_crd(ARGO_ROLLOUTS_CRD);
    let reg = registry(true);
    let work = tempfile::tempdir().unwrap();
    let image = push_image(
        work.path(),
        reg.port,
        "web",
        "/bin/busybox httpd -f -p 8000 -h /www",
    );
    let kubeconfig = lab.kubeconfig().display().to_string();
    let registry_url = format!("http://127.0.0.1:{}/berth", reg.port);
    let p = Platform::start_with(&[
        "--backend",
        "kubernetes",
        "--kubeconfig",
        &kubeconfig,
        "--registry",
        &registry_url,
    ]);
    common::registry::login(&p, &reg);
    // Found when the platform started.
    assert!(
        p.up_log().contains("found: argo-rollouts"),
        "{}",
        p.up_log()
    );

    let dir = work.path().join("web");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("berth.toml"),
        "[deploy]\nstrategy = \"canary\"\nsteps = [20, 60]\nstep_pause = \"5s\"\n",
    )
    .unwrap();
    let deploy = {
        let dir = dir.display().to_string();
        let mut cmd = p.berth_command(&["deploy", &dir, "--image", &image, "--app", "web"]);
        std::thread::spawn(move || cmd.output().expect("berth deploy"))
    };

    // The web pods are a Rollout with berth.toml's steps, not a Deployment.
    let r = rollout_at(&lab, 1);
    assert_eq!(
        r["spec"]["strategy"]["canary"]["steps"],
        json!([
            { "setWeight": 20 }, { "pause": { "duration": "5s" } },
            { "setWeight": 60 }, { "pause": { "duration": "5s" } },
        ]),
        "{r}"
    );
    assert!(!lab
        .kubectl(&["get", "deployment", "web-web", "-n", NS])
        .status
        .success());
    // The controller walks to the first pause; someone promotes it.
    controller_says(
        &lab,
        1,
        json!({ "phase": "Paused", "currentStepIndex": 1, "currentPodHash": "v1hash" }),
    );
    let promoted = common::eventually(Duration::from_secs(30), || {
        let out = p.berth(&["promote", "web"]);
        out.status.success()
    });
    assert!(promoted, "berth promote never reached the canary");
    let asked = rollout(&lab).unwrap();
    assert_eq!(asked["status"]["promoteFull"], json!(true), "{asked}");
    // The deploy looks at the Rollout twice a second: it sees the pause before the end.
    std::thread::sleep(Duration::from_millis(1500));
    controller_says(
        &lab,
        1,
        json!({ "phase": "Healthy", "currentStepIndex": 4, "promoteFull": null }),
    );
    let out = deploy.join().unwrap();
    let text = said(&out);
    assert!(out.status.success(), "{text}");
    for line in [
        "canary through Argo Rollouts: 20% → 60% of the web pods, 5s each",
        "berth promote web",
        "Rollout berth-default/web-web: step 1/4: canary at 20%, paused",
        "Rollout berth-default/web-web: fully promoted",
    ] {
        assert!(text.contains(line), "{line:?} missing: {text}");
    }
    assert_eq!(p.json(&["releases", "web"])[0]["status"], "active");
    let v1_template = rollout(&lab).unwrap()["spec"]["template"].clone();

    // A variable change rolls through the same steps; this one is aborted.
    let change = {
        let mut cmd = p.berth_command(&["env", "set", "web", "MODE=risky"]);
        std::thread::spawn(move || cmd.output().expect("berth env set"))
    };
    let r = rollout_at(&lab, 2);
    assert_ne!(r["spec"]["template"], v1_template, "v2's pods differ");
    controller_says(
        &lab,
        2,
        json!({ "phase": "Progressing", "currentStepIndex": 0, "currentPodHash": "v2hash" }),
    );
    let aborted = common::eventually(Duration::from_secs(30), || {
        p.berth(&["abort", "web"]).status.success()
    });
    assert!(aborted, "berth abort never reached the canary");
    assert_eq!(rollout(&lab).unwrap()["status"]["abort"], json!(true));
    // Until the controller has put the stable pods back, the deploy waits.
    std::thread::sleep(Duration::from_secs(1));
    assert!(!change.is_finished());
    controller_says(
        &lab,
        2,
        json!({
            "phase": "Degraded",
            "abort": true,
            "message": "RolloutAborted: Rollout aborted update to revision 2",
        }),
    );
    let out = change.join().unwrap();
    let text = said(&out);
    assert!(!out.status.success(), "{text}");
    for line in [
        "the canary was aborted: RolloutAborted: Rollout aborted update to revision 2",
        "putting v1 back",
        "deploy again to retry the canary",
    ] {
        assert!(text.contains(line), "{line:?} missing: {text}");
    }
    // v1 serves, and its pod template is the Rollout's again (the controller rolls back).
    let releases = p.json(&["releases", "web"]);
    let serving: Vec<&Value> = releases
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "active")
        .collect();
    assert_eq!(serving.len(), 1, "{releases}");
    assert_eq!(serving[0]["version"], 1, "{releases}");
    let back = rollout_at(&lab, 3);
    assert_eq!(back["spec"]["template"], v1_template, "v1's pods again");

    // Nothing under way: refused, nothing asked of the Rollout.
    controller_says(&lab, 3, json!({ "phase": "Healthy", "abort": null }));
    let e = p.fails(&["promote", "web"]);
    assert!(e.contains("web has no canary under way"), "{e}");
    assert!(rollout(&lab).unwrap()["status"]["promoteFull"].is_null());
}
