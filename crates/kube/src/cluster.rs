//! A cluster berth applies to: rendered objects sent by server-side apply (field manager
//! `berth`; a field another manager took is a conflict, reported, and taken back only when
//! asked), what would change found by a dry run (drift), and what berth no longer declares
//! pruned — only objects berth labelled, never anything else.

use crate::render::{Manifest, MANAGER};
use crate::stack::{
    Stack, ARGO_CD_CRD, ARGO_ROLLOUTS_CRD, CERT_MANAGER_CRD, CLOUDNATIVE_PG_CRD,
    PROMETHEUS_RULE_CRD,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::collections::BTreeSet;
use std::path::Path;

/// How a one-off Job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOutcome {
    pub succeeded: bool,
    /// Its container's exit code, when it ran to an end.
    pub exit_code: Option<i32>,
    /// Why it failed otherwise (`DeadlineExceeded`, `ImagePullBackOff`, …).
    pub reason: Option<String>,
    /// What it wrote.
    pub output: String,
}

/// Why a pod's container waits that means it will not start by itself.
const CANNOT_START: &[&str] = &[
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// The label every object berth renders carries.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The label naming the app an object belongs to.
pub const APP_NAME: &str = "app.kubernetes.io/name";

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("reading the kubeconfig {path}: {message}\nname one with --kubeconfig FILE (and --context NAME), or set KUBECONFIG")]
    Kubeconfig { path: String, message: String },
    #[error("cannot reach the cluster at {url}: {message}\nis the API server up, and is that the kubeconfig's server for this cluster (--context)?")]
    Unreachable { url: String, message: String },
    #[error("the cluster at {url} refused berth's credentials ({code}): {message}; check the kubeconfig's user (an expired or revoked token?)")]
    Unauthorized {
        url: String,
        code: u16,
        message: String,
    },
    #[error("{object}: {message}\nberth does not take fields another manager set without being asked: `berth kube apply --force-conflicts` takes them back")]
    Conflict { object: String, message: String },
    #[error("{object}: the cluster refused it ({code} {reason}): {message}")]
    Refused {
        object: String,
        code: u16,
        reason: String,
        message: String,
    },
    #[error("{object}: {message}")]
    Rollout { object: String, message: String },
    /// A canary (an Argo Rollouts Rollout) aborted — by `berth abort` or the controller's
    /// analysis — or degraded.
    #[error("{object}: the canary {}: {message}", if *.aborted { "was aborted" } else { "failed" })]
    Canary {
        object: String,
        aborted: bool,
        message: String,
    },
    #[error("namespace {0} exists and is not berth's (no {MANAGED_BY}={MANAGER} label); berth does not take over a namespace it did not make")]
    NotOurs(String),
    #[error("{object}: {message}")]
    Other { object: String, message: String },
}

/// A connected cluster.
pub struct Cluster {
    pub(crate) client: kube::Client,
    /// The API server's address, for messages.
    pub url: String,
}

/// A pod of an app, as `berth ps` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodState {
    pub name: String,
    /// Its process type.
    pub process: String,
    /// The pod's IP.
    pub address: String,
    /// Passing its readiness probe.
    pub ready: bool,
    /// Why its container waits (`ContainerCreating`, `CrashLoopBackOff`, …).
    pub waiting: Option<String>,
    pub restarts: i32,
    /// How its container last ended (code, and the kubelet's reason: `OOMKilled`, `Error`).
    pub last_exit: Option<i32>,
    pub last_reason: Option<String>,
    /// Unix seconds.
    pub started_at: i64,
}

/// A line a pod wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodLine {
    pub pod: String,
    /// Its process type (the pod's `app.kubernetes.io/component`).
    pub process: String,
    pub at: jiff::Timestamp,
    pub line: String,
}

/// What one object needs, as a dry run finds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    /// `Deployment default/shop-web`.
    pub object: String,
    /// `create`, or `update` with the fields that differ.
    pub action: String,
    pub fields: Vec<String>,
}

pub(crate) fn describe(m: &Manifest) -> String {
    match &m.namespace {
        Some(ns) => format!("{} {ns}/{}", m.kind, m.name),
        None => format!("{} {}", m.kind, m.name),
    }
}

/// What keeps a rollout's pod from serving.
enum PodTrouble {
    /// `pod NAME waits for a node: …` — may end by itself (a node added, a pod gone).
    WaitsForNode(String),
    /// `pod NAME cannot start: REASON (…)` — will not by waiting.
    CannotStart(String),
}

/// Whether `pod` waits for a node or cannot start (an image that cannot be pulled, a
/// container that keeps crashing).
fn pod_trouble(pod: &k8s_openapi::api::core::v1::Pod) -> Option<PodTrouble> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let status = pod.status.as_ref()?;
    for c in status.container_statuses.iter().flatten() {
        if let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            let reason = w.reason.clone().unwrap_or_default();
            if reason == "CrashLoopBackOff" || CANNOT_START.contains(&reason.as_str()) {
                let detail = w.message.as_ref().map(|m| format!(" ({m})"));
                return Some(PodTrouble::CannotStart(format!(
                    "pod {name} cannot start: {reason}{}",
                    detail.unwrap_or_default()
                )));
            }
        }
    }
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        })
        .map(|c| {
            PodTrouble::WaitsForNode(format!(
                "pod {name} waits for a node: {}",
                c.message.clone().unwrap_or_default()
            ))
        })
}

/// Stops a rollout of `what` at the first of `pods` that cannot start; a pod waiting for a
/// node is said through `progress` once (and kept in `stuck` for the timeout's message).
pub(crate) fn check_pods(
    what: &str,
    pods: impl IntoIterator<Item = k8s_openapi::api::core::v1::Pod>,
    stuck: &mut Option<String>,
    progress: &mut impl FnMut(&str),
) -> Result<(), ClusterError> {
    for pod in pods {
        match pod_trouble(&pod) {
            Some(PodTrouble::CannotStart(message)) => {
                return Err(ClusterError::Rollout {
                    object: what.to_string(),
                    message,
                })
            }
            Some(PodTrouble::WaitsForNode(line)) if stuck.as_ref() != Some(&line) => {
                progress(&line);
                *stuck = Some(line);
            }
            _ => {}
        }
    }
    Ok(())
}

fn resource(m: &Manifest) -> ApiResource {
    ApiResource {
        group: m.group.clone(),
        version: m.version.clone(),
        api_version: m.api_version.clone(),
        kind: m.kind.clone(),
        plural: m.plural.clone(),
    }
}

/// Fields where `want` and `have` differ, as dotted paths (what a person reads in a plan).
fn differences(
    prefix: &str,
    want: &serde_json::Value,
    have: &serde_json::Value,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => {
            let keys: BTreeSet<&String> = w.keys().chain(h.keys()).collect();
            for k in keys {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match (w.get(k), h.get(k)) {
                    (Some(a), Some(b)) => differences(&path, a, b, out),
                    _ => out.push(path),
                }
            }
        }
        (a, b) if a != b => out.push(prefix.to_string()),
        _ => {}
    }
}

/// What a person means by an object's content: no status, no bookkeeping.
fn content(v: &serde_json::Value) -> serde_json::Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
        if let Some(meta) = o.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            for k in [
                "managedFields",
                "resourceVersion",
                "generation",
                "uid",
                "creationTimestamp",
                "selfLink",
            ] {
                meta.remove(k);
            }
            if let Some(a) = meta.get_mut("annotations").and_then(|a| a.as_object_mut()) {
                a.remove("deployment.kubernetes.io/revision");
                if a.is_empty() {
                    meta.remove("annotations");
                }
            }
        }
    }
    v
}

/// Keys of a ConfigMap's `data` the cluster has and berth does not declare (a variable set
/// by hand): server-side apply leaves fields it never owned alone, so berth looks itself.
fn undeclared_keys(m: &Manifest, live: &serde_json::Value) -> Vec<String> {
    if m.kind != "ConfigMap" {
        return Vec::new();
    }
    let declared = m.object.get("data").and_then(|d| d.as_object());
    // A key berth applied before and declares no more is removed by the apply itself.
    let berths: BTreeSet<String> = live
        .pointer("/metadata/managedFields")
        .and_then(|f| f.as_array())
        .into_iter()
        .flatten()
        .filter(|f| f.get("manager").and_then(|m| m.as_str()) == Some(MANAGER))
        .filter_map(|f| f.pointer("/fieldsV1/f:data").and_then(|d| d.as_object()))
        .flat_map(|d| {
            d.keys()
                .filter_map(|k| k.strip_prefix("f:"))
                .map(str::to_string)
        })
        .collect();
    live.get("data")
        .and_then(|d| d.as_object())
        .map(|have| {
            have.keys()
                .filter(|k| !declared.is_some_and(|d| d.contains_key(*k)))
                .filter(|k| !berths.contains(*k))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

impl Cluster {
    /// Connects with a kubeconfig (default: `$KUBECONFIG`, `~/.kube/config`) and a context
    /// in it (default: its current one), and checks that the API server answers.
    pub async fn connect(
        kubeconfig: Option<&Path>,
        context: Option<&str>,
    ) -> Result<Self, ClusterError> {
        let where_ = kubeconfig
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "the default kubeconfig".into());
        let bad = |message: String| ClusterError::Kubeconfig {
            path: where_.clone(),
            message,
        };
        let options = KubeConfigOptions {
            context: context.map(str::to_string),
            ..Default::default()
        };
        let config = match kubeconfig {
            Some(p) => {
                let file = Kubeconfig::read_from(p).map_err(|e| bad(e.to_string()))?;
                kube::Config::from_custom_kubeconfig(file, &options)
                    .await
                    .map_err(|e| bad(e.to_string()))?
            }
            None => kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|e| bad(e.to_string()))?,
        };
        let url = config.cluster_url.to_string();
        let client = kube::Client::try_from(config).map_err(|e| bad(e.to_string()))?;
        let cluster = Cluster { client, url };
        cluster
            .client
            .apiserver_version()
            .await
            .map_err(|e| cluster.error("the API server", e))?;
        Ok(cluster)
    }

    pub(crate) fn error(&self, object: &str, e: kube::Error) -> ClusterError {
        match e {
            kube::Error::Api(s) if s.code == 401 || s.code == 403 => ClusterError::Unauthorized {
                url: self.url.clone(),
                code: s.code,
                message: s.message.clone(),
            },
            kube::Error::Api(s) if s.code == 409 && s.reason == "Conflict" => {
                ClusterError::Conflict {
                    object: object.to_string(),
                    message: s.message.clone(),
                }
            }
            kube::Error::Api(s) => ClusterError::Refused {
                object: object.to_string(),
                code: s.code,
                reason: s.reason.clone(),
                message: s.message.clone(),
            },
            kube::Error::HyperError(_) | kube::Error::Service(_) => ClusterError::Unreachable {
                url: self.url.clone(),
                message: e.to_string(),
            },
            other => ClusterError::Other {
                object: object.to_string(),
                message: other.to_string(),
            },
        }
    }

    pub(crate) fn api(&self, m: &Manifest) -> Api<DynamicObject> {
        let ar = resource(m);
        match &m.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        }
    }

    /// Refuses namespaces that exist without berth's label.
    async fn check_namespaces(&self, objects: &[Manifest]) -> Result<(), ClusterError> {
        for m in objects.iter().filter(|m| m.kind == "Namespace") {
            let live = self
                .api(m)
                .get_opt(&m.name)
                .await
                .map_err(|e| self.error(&describe(m), e))?;
            if let Some(ns) = live {
                if ns
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(MANAGED_BY))
                    .map(String::as_str)
                    != Some(MANAGER)
                {
                    return Err(ClusterError::NotOurs(m.name.clone()));
                }
            }
        }
        Ok(())
    }

    async fn send(
        &self,
        m: &Manifest,
        params: &PatchParams,
    ) -> Result<DynamicObject, ClusterError> {
        self.api(m)
            .patch(&m.name, params, &Patch::Apply(&m.object))
            .await
            .map_err(|e| self.error(&describe(m), e))
    }

    /// What the cluster has of the seeds' stack (by its CRDs); cert-manager's certificates
    /// are asked of `issuer`.
    pub async fn stack(&self, issuer: &str) -> Result<Stack, ClusterError> {
        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let has = |name: &'static str| {
            let crds = crds.clone();
            async move {
                crds.get_opt(name)
                    .await
                    .map(|c| c.is_some())
                    .map_err(|e| self.error(&format!("CustomResourceDefinition {name}"), e))
            }
        };
        Ok(Stack {
            cert_manager: has(CERT_MANAGER_CRD).await?.then(|| issuer.to_string()),
            argo_rollouts: has(ARGO_ROLLOUTS_CRD).await?,
            cloudnative_pg: has(CLOUDNATIVE_PG_CRD).await?,
            prometheus_operator: has(PROMETHEUS_RULE_CRD).await?,
            argo_cd: has(ARGO_CD_CRD).await?,
        })
    }

    /// What applying `objects` would change (a server-side dry run of each, compared with
    /// what the cluster has): an empty list when the cluster is as declared.
    pub async fn plan(&self, objects: &[Manifest]) -> Result<Vec<Change>, ClusterError> {
        self.check_namespaces(objects).await?;
        let mut changes = Vec::new();
        // Forced, so that fields another manager took show as what apply would change.
        let dry = PatchParams::apply(MANAGER).dry_run().force();
        for m in objects {
            let live = self
                .api(m)
                .get_opt(&m.name)
                .await
                .map_err(|e| self.error(&describe(m), e))?;
            let Some(live) = live else {
                changes.push(Change {
                    object: describe(m),
                    action: "create".into(),
                    fields: Vec::new(),
                });
                continue;
            };
            // A namespace that does not exist yet makes the dry run of what goes in it fail:
            // those are creates anyway.
            let after = self.send(m, &dry).await?;
            let (want, have) = (
                content(&serde_json::to_value(&after).unwrap_or_default()),
                content(&serde_json::to_value(&live).unwrap_or_default()),
            );
            let mut fields = Vec::new();
            differences("", &want, &have, &mut fields);
            fields.extend(
                undeclared_keys(m, &have).into_iter().map(|k| {
                    format!("data.{k} (not declared: removed on apply --force-conflicts)")
                }),
            );
            if !fields.is_empty() {
                changes.push(Change {
                    object: describe(m),
                    action: "update".into(),
                    fields,
                });
            }
        }
        Ok(changes)
    }

    /// Applies every object in order (namespaces first, as rendered); with `force`, fields
    /// another manager took are taken back. Stops at the first refusal.
    pub async fn apply(&self, objects: &[Manifest], force: bool) -> Result<usize, ClusterError> {
        self.check_namespaces(objects).await?;
        let mut params = PatchParams::apply(MANAGER);
        if force {
            params = params.force();
        }
        // Variables set by hand are refused before anything changes (or, forced, removed).
        let mut undeclared = Vec::new();
        for m in objects.iter().filter(|m| m.kind == "ConfigMap") {
            if let Some(live) = self
                .api(m)
                .get_opt(&m.name)
                .await
                .map_err(|e| self.error(&describe(m), e))?
            {
                let keys = undeclared_keys(m, &serde_json::to_value(&live).unwrap_or_default());
                if !keys.is_empty() {
                    undeclared.push((m, keys));
                }
            }
        }
        if !force {
            if let Some((m, keys)) = undeclared.first() {
                return Err(ClusterError::Conflict {
                    object: describe(m),
                    message: format!(
                        "has {} that berth does not declare (set by hand?)",
                        keys.join(", ")
                    ),
                });
            }
        }
        for m in objects {
            self.send(m, &params).await?;
        }
        for (m, keys) in undeclared {
            let remove: serde_json::Map<String, serde_json::Value> = keys
                .iter()
                .map(|k| (k.clone(), serde_json::Value::Null))
                .collect();
            let patch = serde_json::json!({ "data": remove });
            self.api(m)
                .patch(&m.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| self.error(&describe(m), e))?;
        }
        Ok(objects.len())
    }

    /// Waits until every Deployment among `objects` has rolled out (its new pods ready and
    /// the old ones gone) and every Rollout is fully promoted (`wait_canary`), saying how far each is through `progress`; stops early when a pod
    /// cannot start (an image that cannot be pulled, a container that keeps crashing) with
    /// the pod and its reason.
    pub async fn wait_rolled_out(
        &self,
        objects: &[Manifest],
        timeout: std::time::Duration,
        mut progress: impl FnMut(&str),
    ) -> Result<(), ClusterError> {
        use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
        use k8s_openapi::api::core::v1::Pod;
        const REVISION: &str = "deployment.kubernetes.io/revision";
        const TEMPLATE_HASH: &str = "pod-template-hash";
        let deadline = tokio::time::Instant::now() + timeout;
        let mut said = std::collections::BTreeMap::new();
        for m in objects
            .iter()
            .filter(|m| m.kind == "Deployment" || m.kind == "Rollout")
        {
            if m.kind == "Rollout" {
                self.wait_canary(m, deadline, &mut progress).await?;
                continue;
            }
            let ns = m.namespace.as_deref().unwrap_or("default");
            let what = describe(m);
            let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
            let replica_sets: Api<ReplicaSet> = Api::namespaced(self.client.clone(), ns);
            let mut stuck: Option<String> = None;
            loop {
                let d = deployments
                    .get(&m.name)
                    .await
                    .map_err(|e| self.error(&what, e))?;
                let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let st = d.status.clone().unwrap_or_default();
                let current =
                    st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
                let updated = st.updated_replicas.unwrap_or(0);
                let available = st.available_replicas.unwrap_or(0);
                let total = st.replicas.unwrap_or(0);
                let line = format!("{what}: {available}/{want} ready, {updated} updated");
                if said.get(&what) != Some(&line) {
                    progress(&line);
                    said.insert(what.clone(), line);
                }
                if current && updated == want && available == want && total == want {
                    break;
                }
                // A pod that cannot start will not by waiting.
                let selector = d
                    .spec
                    .as_ref()
                    .and_then(|s| s.selector.match_labels.clone())
                    .unwrap_or_default()
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",");
                // Only the pods of the Deployment's newest ReplicaSet: an older one's pods
                // (a failed release's, on their way out) say nothing about this rollout.
                let revision = d
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(REVISION).cloned());
                let newest = replica_sets
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .map_err(|e| self.error(&what, e))?
                    .items
                    .into_iter()
                    .find(|rs| {
                        revision.is_some()
                            && rs
                                .metadata
                                .annotations
                                .as_ref()
                                .and_then(|a| a.get(REVISION))
                                == revision.as_ref()
                    })
                    .and_then(|rs| {
                        rs.metadata
                            .labels
                            .and_then(|l| l.get(TEMPLATE_HASH).cloned())
                    });
                let list = pods
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .map_err(|e| self.error(&what, e))?;
                let current_pods = list.items.into_iter().filter(|p| {
                    p.metadata.deletion_timestamp.is_none()
                        && newest.as_ref().is_none_or(|h| {
                            p.metadata
                                .labels
                                .as_ref()
                                .and_then(|l| l.get(TEMPLATE_HASH))
                                == Some(h)
                        })
                });
                // Waiting for room on a node may end (a node added, a pod gone): said, and
                // named if the wait times out.
                check_pods(&what, current_pods, &mut stuck, &mut progress)?;
                if tokio::time::Instant::now() >= deadline {
                    return Err(ClusterError::Rollout {
                        object: what,
                        message: format!(
                            "not rolled out after {}s ({available}/{want} ready, {updated} updated){}",
                            timeout.as_secs(),
                            stuck.as_ref().map(|s| format!("; {s}")).unwrap_or_default()
                        ),
                    });
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
        Ok(())
    }

    /// The pods berth made for `app` (none when its namespace is not there).
    async fn list_app_pods(
        &self,
        namespace: &str,
        app: &str,
    ) -> Result<Vec<k8s_openapi::api::core::v1::Pod>, ClusterError> {
        use k8s_openapi::api::core::v1::Pod;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        // A deploy's one-offs (tests, release command) are not the app's instances.
        let selector = format!(
            "{MANAGED_BY}={MANAGER},{APP_NAME}={app},!{}",
            crate::render::ONE_OFF
        );
        match pods.list(&ListParams::default().labels(&selector)).await {
            Ok(l) => Ok(l.items),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(Vec::new()),
            Err(e) => Err(self.error(&format!("pods of {app} in {namespace}"), e)),
        }
    }

    /// Runs a one-off Job (`one_off_job`) to its end: an earlier Job of that name is
    /// replaced, the Job's pod followed until it exits (or cannot start, or `timeout`
    /// passes), its output read, and the Job deleted with its pod. `progress` hears every
    /// 30 s that it still runs.
    pub async fn run_job(
        &self,
        job: &Manifest,
        timeout: std::time::Duration,
        progress: impl Fn(String),
    ) -> Result<JobOutcome, ClusterError> {
        use k8s_openapi::api::batch::v1::Job;
        use k8s_openapi::api::core::v1::Pod;
        let namespace = job.namespace.clone().unwrap_or_default();
        let what = describe(job);
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &namespace);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let background = DeleteParams::background();
        let gone = |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 404);
        if let Err(e) = jobs.delete(&job.name, &background).await {
            if !gone(&e) {
                return Err(self.error(&what, e));
            }
        }
        // Its name is free once the earlier one is gone.
        let deadline = tokio::time::Instant::now() + timeout;
        while jobs
            .get_opt(&job.name)
            .await
            .map_err(|e| self.error(&what, e))?
            .is_some()
        {
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
        self.apply(std::slice::from_ref(job), false).await?;
        let selector = format!("job-name={}", job.name);
        let started = tokio::time::Instant::now();
        let mut said = started;
        let (succeeded, reason) = loop {
            if said.elapsed() >= std::time::Duration::from_secs(30) {
                said = tokio::time::Instant::now();
                progress(format!(
                    "Job {} still running ({}s)",
                    job.name,
                    started.elapsed().as_secs()
                ));
            }
            let status = jobs
                .get(&job.name)
                .await
                .map_err(|e| self.error(&what, e))?
                .status
                .unwrap_or_default();
            if status.succeeded.unwrap_or(0) > 0 {
                break (true, None);
            }
            let failed = status
                .conditions
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "Failed" && c.status == "True");
            if let Some(c) = failed {
                break (false, Some(c.reason.unwrap_or_else(|| "Failed".into())));
            }
            if status.failed.unwrap_or(0) > 0 {
                break (false, None);
            }
            let listed = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|e| self.error(&what, e))?;
            let stuck = listed.items.iter().find_map(|p| {
                p.status
                    .as_ref()?
                    .container_statuses
                    .as_ref()?
                    .iter()
                    .find_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
                    .filter(|r| CANNOT_START.contains(&r.as_str()))
            });
            if let Some(r) = stuck {
                break (false, Some(r));
            }
            if tokio::time::Instant::now() >= deadline {
                break (
                    false,
                    Some(format!("still running after {}s", timeout.as_secs())),
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        };
        let mut output = String::new();
        let mut exit_code = None;
        if let Ok(listed) = pods.list(&ListParams::default().labels(&selector)).await {
            for p in listed.items {
                let name = p.metadata.name.clone().unwrap_or_default();
                exit_code = exit_code.or_else(|| {
                    p.status
                        .as_ref()?
                        .container_statuses
                        .as_ref()?
                        .iter()
                        .find_map(|c| c.state.as_ref()?.terminated.as_ref().map(|t| t.exit_code))
                });
                if let Ok(text) = pods.logs(&name, &kube::api::LogParams::default()).await {
                    output.push_str(&text);
                }
            }
        }
        if let Err(e) = jobs.delete(&job.name, &background).await {
            if !gone(&e) {
                return Err(self.error(&what, e));
            }
        }
        Ok(JobOutcome {
            succeeded,
            exit_code,
            reason,
            output,
        })
    }

    /// Whether Secret `name` is in `namespace` (one an operator writes, say).
    pub async fn has_secret(&self, namespace: &str, name: &str) -> Result<bool, ClusterError> {
        let secrets: Api<k8s_openapi::api::core::v1::Secret> =
            Api::namespaced(self.client.clone(), namespace);
        secrets
            .get_metadata_opt(name)
            .await
            .map(|s| s.is_some())
            .map_err(|e| self.error(&format!("Secret {namespace}/{name}"), e))
    }

    /// Waits until Secret `name` is in `namespace`; `what` says who makes it.
    pub async fn wait_for_secret(
        &self,
        namespace: &str,
        name: &str,
        what: &str,
        timeout: std::time::Duration,
    ) -> Result<(), ClusterError> {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.has_secret(namespace, name).await? {
            if tokio::time::Instant::now() >= deadline {
                return Err(ClusterError::Rollout {
                    object: format!("Secret {namespace}/{name}"),
                    message: format!("not there after {}s: {what}", timeout.as_secs()),
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        Ok(())
    }

    /// An app's pods (not those being deleted), by process type and name.
    pub async fn app_pods(
        &self,
        namespace: &str,
        app: &str,
    ) -> Result<Vec<PodState>, ClusterError> {
        let mut out: Vec<PodState> = self
            .list_app_pods(namespace, app)
            .await?
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|pod| {
                let status = pod.status.unwrap_or_default();
                let container = status
                    .container_statuses
                    .unwrap_or_default()
                    .into_iter()
                    .next();
                let waiting = container
                    .as_ref()
                    .and_then(|c| c.state.as_ref())
                    .and_then(|s| s.waiting.as_ref())
                    .and_then(|w| w.reason.clone());
                let last = container
                    .as_ref()
                    .and_then(|c| c.last_state.as_ref())
                    .and_then(|s| s.terminated.clone());
                PodState {
                    name: pod.metadata.name.unwrap_or_default(),
                    process: pod
                        .metadata
                        .labels
                        .unwrap_or_default()
                        .remove("app.kubernetes.io/component")
                        .unwrap_or_default(),
                    address: status.pod_ip.unwrap_or_default(),
                    ready: container.as_ref().is_some_and(|c| c.ready),
                    waiting,
                    restarts: container.as_ref().map(|c| c.restart_count).unwrap_or(0),
                    last_exit: last.as_ref().map(|t| t.exit_code),
                    last_reason: last.and_then(|t| t.reason),
                    started_at: status.start_time.map(|t| t.0.as_second()).unwrap_or(0),
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.process, &a.name).cmp(&(&b.process, &b.name)));
        Ok(out)
    }

    /// The lines an app's pods wrote after `seen` (per pod and container, the timestamp of
    /// the last line already read), oldest first, with `seen` moved on. A pod met for the
    /// first time is read from its start.
    pub async fn app_logs(
        &self,
        namespace: &str,
        app: &str,
        seen: &mut std::collections::BTreeMap<(String, String), jiff::Timestamp>,
    ) -> Result<Vec<PodLine>, ClusterError> {
        use k8s_openapi::api::core::v1::Pod;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let mut out = Vec::new();
        let mut live = BTreeSet::new();
        for pod in self.list_app_pods(namespace, app).await? {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let process = pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("app.kubernetes.io/component").cloned())
                .unwrap_or_default();
            let started = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .map(|c| {
                    c.iter()
                        .filter(|c| c.state.as_ref().is_some_and(|s| s.waiting.is_none()))
                        .map(|c| c.name.clone())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            for container in started {
                let key = (name.clone(), container.clone());
                live.insert(key.clone());
                let since = seen.get(&key).copied();
                let params = kube::api::LogParams {
                    container: Some(container.clone()),
                    timestamps: true,
                    since_time: since,
                    ..Default::default()
                };
                let text = match pods.logs(&name, &params).await {
                    Ok(t) => t,
                    // Gone, or not started yet: the next pass reads it.
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 400 => continue,
                    Err(e) => return Err(self.error(&format!("log of pod {name}"), e)),
                };
                for raw in text.lines() {
                    let Some((ts, line)) = raw.split_once(' ') else {
                        continue;
                    };
                    let Ok(at) = ts.parse::<jiff::Timestamp>() else {
                        continue;
                    };
                    // The API's `sinceTime` is to the second: what was read is skipped.
                    if since.is_some_and(|s| at <= s) {
                        continue;
                    }
                    seen.insert(key.clone(), at);
                    out.push(PodLine {
                        pod: name.clone(),
                        process: process.clone(),
                        at,
                        line: line.to_string(),
                    });
                }
            }
        }
        seen.retain(|k, _| live.contains(k));
        out.sort_by_key(|l| l.at);
        Ok(out)
    }

    /// The objects berth labelled in `namespace` (of the kinds it renders with `stack`)
    /// that `keep` does not have: what a prune deletes. Objects without berth's label are
    /// never among them.
    pub async fn unkept(
        &self,
        namespace: &str,
        keep: &[Manifest],
        stack: &Stack,
    ) -> Result<Vec<(ApiResource, String)>, ClusterError> {
        self.unkept_of(namespace, None, keep, stack).await
    }

    /// [`Cluster::unkept`], of one app's objects only (`app`), or of every app's.
    async fn unkept_of(
        &self,
        namespace: &str,
        app: Option<&str>,
        keep: &[Manifest],
        stack: &Stack,
    ) -> Result<Vec<(ApiResource, String)>, ClusterError> {
        let mut seen = BTreeSet::new();
        let kinds: Vec<Manifest> = crate::render::kinds(stack)
            .into_iter()
            .filter(|m| m.namespace.is_some() && seen.insert(m.kind.clone()))
            .collect();
        let wanted: BTreeSet<(String, String)> = keep
            .iter()
            .filter(|m| m.namespace.as_deref() == Some(namespace))
            .map(|m| (m.kind.clone(), m.name.clone()))
            .collect();
        let mut selector = format!("{MANAGED_BY}={MANAGER}");
        if let Some(app) = app {
            selector.push_str(&format!(",{APP_NAME}={app}"));
        }
        let ours = ListParams::default().labels(&selector);
        let mut unkept = Vec::new();
        for kind in kinds {
            let ar = resource(&kind);
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), namespace, &ar);
            let list = match api.list(&ours).await {
                Ok(l) => l,
                // A namespace not made yet holds nothing.
                Err(kube::Error::Api(s)) if s.code == 404 => continue,
                Err(e) => return Err(self.error(&format!("{} in {namespace}", kind.plural), e)),
            };
            for item in list.items {
                let name = item.metadata.name.clone().unwrap_or_default();
                if !wanted.contains(&(kind.kind.clone(), name.clone())) {
                    unkept.push((ar.clone(), name));
                }
            }
        }
        Ok(unkept)
    }

    /// Deletes what `unkept` finds; what was deleted (`Kind namespace/name`).
    pub async fn prune(
        &self,
        namespace: &str,
        keep: &[Manifest],
        stack: &Stack,
    ) -> Result<Vec<String>, ClusterError> {
        let unkept = self.unkept(namespace, keep, stack).await?;
        self.delete_all(namespace, unkept).await
    }

    /// One app's objects (berth's label and the app's) that `keep` does not have.
    pub async fn app_unkept(
        &self,
        namespace: &str,
        app: &str,
        keep: &[Manifest],
        stack: &Stack,
    ) -> Result<Vec<String>, ClusterError> {
        Ok(self
            .unkept_of(namespace, Some(app), keep, stack)
            .await?
            .into_iter()
            .map(|(ar, name)| format!("{} {namespace}/{name}", ar.kind))
            .collect())
    }

    /// Deletes one app's objects that `keep` does not have (a process type it no longer
    /// declares, its Ingress once it has no host); with nothing kept, the whole app.
    /// Other apps' objects, and anything berth did not label, are never touched.
    pub async fn prune_app(
        &self,
        namespace: &str,
        app: &str,
        keep: &[Manifest],
        stack: &Stack,
    ) -> Result<Vec<String>, ClusterError> {
        let unkept = self.unkept_of(namespace, Some(app), keep, stack).await?;
        self.delete_all(namespace, unkept).await
    }

    async fn delete_all(
        &self,
        namespace: &str,
        objects: Vec<(ApiResource, String)>,
    ) -> Result<Vec<String>, ClusterError> {
        let mut deleted = Vec::new();
        for (ar, name) in objects {
            let what = format!("{} {namespace}/{name}", ar.kind);
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), namespace, &ar);
            api.delete(&name, &DeleteParams::background())
                .await
                .map_err(|e| self.error(&what, e))?;
            deleted.push(what);
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_variable_berth_applied_before_is_not_one_set_by_hand() {
        let m = crate::render::app_objects(&crate::render::kinds_app())
            .into_iter()
            .find(|m| m.kind == "ConfigMap")
            .unwrap();
        let live = serde_json::json!({
            "metadata": {"managedFields": [
                {"manager": "berth", "operation": "Apply", "fieldsV1": {"f:data": {"f:OLD": {}}}},
                {"manager": "kubectl-edit", "operation": "Update", "fieldsV1": {"f:data": {"f:HAND": {}}}}
            ]},
            "data": {"OLD": "1", "HAND": "2"}
        });
        assert_eq!(undeclared_keys(&m, &live), vec!["HAND".to_string()]);
    }

    #[test]
    fn a_plan_names_the_fields_that_differ_and_ignores_bookkeeping() {
        let want = serde_json::json!({"metadata": {"name": "a", "resourceVersion": "9"}, "spec": {"replicas": 2, "x": {"y": 1}}});
        let have = serde_json::json!({"metadata": {"name": "a", "resourceVersion": "3", "managedFields": []}, "spec": {"replicas": 5, "x": {"y": 1}}, "status": {"ready": 1}});
        let mut fields = Vec::new();
        differences("", &content(&want), &content(&have), &mut fields);
        assert_eq!(fields, vec!["spec.replicas".to_string()]);
    }
}
