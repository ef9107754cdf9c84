//! Canaries on a cluster with Argo Rollouts: an app's web pods as a `Rollout` whose steps
//! the controller walks (`stack::apply_stack` writes it), followed here to its end — fully
//! promoted, aborted or degraded — and promoted or aborted when someone asks
//! (`berth promote`, `berth abort`), as Argo's own `kubectl argo rollouts` does: through the
//! Rollout's status.

use crate::cluster::{check_pods, describe, Cluster, ClusterError};
use crate::render::Manifest;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::Value;

/// The label Argo Rollouts gives the pods of each of a Rollout's ReplicaSets.
const POD_HASH: &str = "rollouts-pod-template-hash";

/// Where a Rollout stands, from its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CanaryState {
    /// The controller has not yet taken in the Rollout's latest spec.
    Pending,
    /// Walking its steps: `step` of `steps` done, the canary at `weight`%.
    Progressing {
        step: usize,
        steps: usize,
        weight: u64,
    },
    /// Waiting at a step's pause.
    Paused {
        step: usize,
        steps: usize,
        weight: u64,
    },
    /// Fully promoted: the new pods are the stable ones.
    Healthy,
    /// Asked to abort; the controller has not yet put the stable pods back.
    Aborting,
    /// Aborted (`berth abort`, or the controller's analysis): the stable pods serve.
    Aborted(String),
    /// Failed otherwise (its progress deadline passed).
    Degraded(String),
}

/// Where the Rollout whose `generation` and body (`spec`, `status`) these are stands.
pub fn canary_state(generation: Option<i64>, body: &Value) -> CanaryState {
    let status = &body["status"];
    // Argo Rollouts writes the generation it has seen as a string.
    let observed = match &status["observedGeneration"] {
        Value::String(s) => s.parse::<i64>().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    };
    if observed.is_none_or(|o| o < generation.unwrap_or(0)) {
        return CanaryState::Pending;
    }
    let message = status["message"]
        .as_str()
        .filter(|m| !m.is_empty())
        .unwrap_or("no message from the controller")
        .to_string();
    if status["abort"].as_bool() == Some(true) {
        return match status["phase"].as_str() {
            Some("Degraded") => CanaryState::Aborted(message),
            _ => CanaryState::Aborting,
        };
    }
    let steps = body["spec"]["strategy"]["canary"]["steps"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let step = status["currentStepIndex"]
        .as_u64()
        .map_or(0, |s| s as usize)
        .min(steps.len());
    let weight = steps[..step]
        .iter()
        .rev()
        .find_map(|s| s["setWeight"].as_u64())
        .unwrap_or(0);
    let steps = steps.len();
    match status["phase"].as_str() {
        Some("Healthy") => CanaryState::Healthy,
        Some("Degraded") => CanaryState::Degraded(message),
        Some("Paused") => CanaryState::Paused {
            step,
            steps,
            weight,
        },
        _ => CanaryState::Progressing {
            step,
            steps,
            weight,
        },
    }
}

impl Cluster {
    /// Follows the Rollout `rollout` until it is fully promoted (Ok), aborted or degraded
    /// (`ClusterError::Canary`), one of its new pods cannot start, or `deadline` passes;
    /// each new state said through `progress`.
    pub(crate) async fn wait_canary(
        &self,
        rollout: &Manifest,
        deadline: tokio::time::Instant,
        mut progress: impl FnMut(&str),
    ) -> Result<(), ClusterError> {
        use k8s_openapi::api::core::v1::Pod;
        let what = describe(rollout);
        let api = self.api(rollout);
        let ns = rollout.namespace.as_deref().unwrap_or("default");
        let pods: kube::Api<Pod> = kube::Api::namespaced(self.client.clone(), ns);
        let mut said = String::new();
        let mut stuck: Option<String> = None;
        loop {
            let live = api
                .get(&rollout.name)
                .await
                .map_err(|e| self.error(&what, e))?;
            let state = canary_state(live.metadata.generation, &live.data);
            let line = match &state {
                CanaryState::Pending => "waiting for Argo Rollouts to take it in".to_string(),
                CanaryState::Progressing {
                    step,
                    steps,
                    weight,
                } => format!("step {step}/{steps}: canary at {weight}%"),
                CanaryState::Paused {
                    step,
                    steps,
                    weight,
                } => format!("step {step}/{steps}: canary at {weight}%, paused"),
                CanaryState::Aborting => "aborting: the stable pods take over".to_string(),
                CanaryState::Healthy => "fully promoted".to_string(),
                CanaryState::Aborted(m) | CanaryState::Degraded(m) => m.clone(),
            };
            if line != said {
                progress(&format!("{what}: {line}"));
                said = line;
            }
            match state {
                CanaryState::Healthy => return Ok(()),
                CanaryState::Aborted(message) => {
                    return Err(ClusterError::Canary {
                        object: what,
                        aborted: true,
                        message,
                    })
                }
                CanaryState::Degraded(message) => {
                    return Err(ClusterError::Canary {
                        object: what,
                        aborted: false,
                        message,
                    })
                }
                _ => {}
            }
            // The new pods (the Rollout's current ReplicaSet's): one that cannot start
            // will not by waiting.
            if let Some(hash) = live.data["status"]["currentPodHash"].as_str() {
                let selector = format!("{POD_HASH}={hash}");
                let listed = pods
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .map_err(|e| self.error(&what, e))?;
                check_pods(&what, listed.items, &mut stuck, &mut progress)?;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClusterError::Rollout {
                    object: what,
                    message: format!(
                        "the canary did not finish in time ({said}){}",
                        stuck.map(|s| format!("; {s}")).unwrap_or_default()
                    ),
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }

    /// The Rollout `NAME-web` of `app` in `namespace` walking its steps (neither fully
    /// promoted nor stopped), if there is one.
    pub async fn canary_under_way(
        &self,
        namespace: &str,
        app: &str,
    ) -> Result<Option<Manifest>, ClusterError> {
        let rollout = rollout_of(namespace, app);
        let live = match self.api(&rollout).get_opt(&rollout.name).await {
            Ok(live) => live,
            // No Rollout kind here: no canary either.
            Err(kube::Error::Api(s)) if s.code == 404 => None,
            Err(e) => return Err(self.error(&describe(&rollout), e)),
        };
        Ok(live
            .filter(|l| {
                matches!(
                    canary_state(l.metadata.generation, &l.data),
                    CanaryState::Pending
                        | CanaryState::Progressing { .. }
                        | CanaryState::Paused { .. }
                        | CanaryState::Aborting
                )
            })
            .map(|_| rollout))
    }

    /// Promotes the canary `rollout` fully (skipping its remaining steps) or aborts it,
    /// through its status as Argo's own CLI does; the controller does the rest.
    pub async fn command_canary(
        &self,
        rollout: &Manifest,
        abort: bool,
    ) -> Result<(), ClusterError> {
        let patch = if abort {
            serde_json::json!({ "status": { "abort": true } })
        } else {
            serde_json::json!({ "status": { "promoteFull": true } })
        };
        self.api(rollout)
            .patch_status(
                &rollout.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(|e| self.error(&describe(rollout), e))?;
        Ok(())
    }
}

/// The Rollout of `app`'s web pods, as `apply_stack` names it.
fn rollout_of(namespace: &str, app: &str) -> Manifest {
    Manifest {
        api_version: "argoproj.io/v1alpha1".into(),
        group: "argoproj.io".into(),
        version: "v1alpha1".into(),
        kind: "Rollout".into(),
        plural: "rollouts".into(),
        namespace: Some(namespace.into()),
        name: format!("{app}-web"),
        object: Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rollout(status: Value) -> Value {
        json!({
            "spec": { "strategy": { "canary": { "steps": [
                { "setWeight": 10 }, { "pause": { "duration": "30s" } },
                { "setWeight": 50 }, { "pause": { "duration": "30s" } },
            ] } } },
            "status": status,
        })
    }

    #[test]
    fn a_rollouts_status_says_where_its_canary_stands() {
        // Not yet seen by the controller: its last state says nothing about this spec.
        let old = rollout(json!({ "observedGeneration": "1", "phase": "Healthy" }));
        assert_eq!(canary_state(Some(2), &old), CanaryState::Pending);
        assert_eq!(canary_state(Some(1), &json!({})), CanaryState::Pending);
        let paused = rollout(json!({
            "observedGeneration": "2", "phase": "Paused", "currentStepIndex": 3,
        }));
        assert_eq!(
            canary_state(Some(2), &paused),
            CanaryState::Paused {
                step: 3,
                steps: 4,
                weight: 50
            }
        );
        let starting = rollout(json!({ "observedGeneration": 2, "phase": "Progressing" }));
        assert_eq!(
            canary_state(Some(2), &starting),
            CanaryState::Progressing {
                step: 0,
                steps: 4,
                weight: 0
            }
        );
        let done = rollout(json!({ "observedGeneration": "2", "phase": "Healthy" }));
        assert_eq!(canary_state(Some(2), &done), CanaryState::Healthy);
        let asked = rollout(json!({ "observedGeneration": "2", "phase": "Paused", "abort": true }));
        assert_eq!(canary_state(Some(2), &asked), CanaryState::Aborting);
        let aborted = rollout(json!({
            "observedGeneration": "2", "phase": "Degraded", "abort": true,
            "message": "RolloutAborted: Rollout aborted update to revision 2",
        }));
        assert_eq!(
            canary_state(Some(2), &aborted),
            CanaryState::Aborted("RolloutAborted: Rollout aborted update to revision 2".into())
        );
        let stuck = rollout(json!({
            "observedGeneration": "2", "phase": "Degraded",
            "message": "ProgressDeadlineExceeded: ReplicaSet has timed out progressing.",
        }));
        assert!(matches!(
            canary_state(Some(2), &stuck),
            CanaryState::Degraded(m) if m.starts_with("ProgressDeadlineExceeded")
        ));
    }
}
