//! An app as the Kubernetes objects that run it: per project a Namespace with a LimitRange
//! and network policies (deny by default; the app's port from anywhere; egress to the
//! internet but not to private ranges), per app a ConfigMap of its variables, a Deployment
//! per process type (non-root, no capabilities, read-only root, seccomp RuntimeDefault;
//! gVisor's RuntimeClass for sandboxed apps), a Service and an Ingress (TLS) for `web`, and a
//! PersistentVolumeClaim per volume. Secret values are never rendered: the Deployment reads
//! the `<app>-secrets` Secret, which the backend writes into the cluster.

use berth_core::limits::Limits;
use berth_core::policy::Isolation;
use berth_core::projects::Quota;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvFromSource, EnvVar, EnvVarSource, ExecAction, HTTPGetAction, Lifecycle, LifecycleHandler,
    LimitRange, LimitRangeItem, LimitRangeSpec, LocalObjectReference, Namespace,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceQuota, ResourceQuotaSpec,
    ResourceRequirements, SeccompProfile, Secret, SecretEnvSource, SecretKeySelector,
    SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, TCPSocketAction,
    Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, IPBlock, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, NetworkPolicy, NetworkPolicyEgressRule,
    NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
    ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::{Metadata, Resource};
use std::collections::BTreeMap;

/// The user apps run as, as on berth's own runtime.
pub const APP_UID: i64 = 10_001;

/// The pod template's annotation holding the digest of the app's variables.
pub const ENV_DIGEST: &str = "berth.dev/env-digest";
/// How long a web pod keeps answering after it is told to stop (its endpoints' removal
/// reaching every node's proxy meanwhile).
pub const DRAIN_SECONDS: u32 = 3;
/// Where secrets given as files appear, as on berth's own runtime.
pub const SECRET_FILES_DIR: &str = "/run/secrets";
/// The pod template's annotation naming the secret versions the pods read.
pub const SECRETS_VERSION: &str = "berth.dev/secrets-version";

/// A digest of variables (names and values), short.
fn env_digest(env: &BTreeMap<String, String>) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for (k, v) in env {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..8])
}

/// Who manages the objects (label and server-side apply field manager).
pub const MANAGER: &str = "berth";

/// Ranges an app may not reach (the machine's and the cluster's private networks, link-local
/// metadata endpoints): the egress blocklist as policy.
pub const BLOCKED_EGRESS: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "100.64.0.0/10",
];

/// One process type of an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeProcess {
    /// The command (none: the image's own).
    pub command: Option<String>,
    pub instances: u32,
    pub limits: Limits,
}

/// A volume of an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeVolume {
    pub name: String,
    pub mount: String,
    pub size_bytes: u64,
    /// The StorageClass its claim asks for (none: the cluster's default).
    pub storage_class: Option<String>,
}

/// The app's PostgreSQL database (score.yaml's `postgres` resource): a CloudNativePG
/// `Cluster` (`<app>-db`) whose connection the pods read from the operator's
/// `<app>-db-app` Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeDatabase {
    pub size_bytes: u64,
    /// The StorageClass of its disk (none: the cluster's default).
    pub storage_class: Option<String>,
}

/// The database's connection as the pods' variables, from the keys of the Secret
/// CloudNativePG writes; score.yaml's `${resources.DB.OUTPUT}` are these.
pub const DATABASE_ENV: &[(&str, &str)] = &[
    ("BERTH_DB_HOST", "host"),
    ("BERTH_DB_PORT", "port"),
    ("BERTH_DB_NAME", "dbname"),
    ("BERTH_DB_USERNAME", "username"),
    ("BERTH_DB_PASSWORD", "password"),
    ("DATABASE_URL", "uri"),
];

/// The CloudNativePG `Cluster` of an app's database.
pub fn database_cluster(app: &str) -> String {
    format!("{app}-db")
}

/// What berth knows of an app, as the cluster needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeApp {
    pub name: String,
    /// Its project's namespace (`namespace_of`).
    pub namespace: String,
    /// The image, by digest where it is known (`registry/app@sha256:…`).
    pub image: String,
    /// The port `web` listens on (`$PORT`).
    pub port: u16,
    pub processes: BTreeMap<String, KubeProcess>,
    pub env: BTreeMap<String, String>,
    /// Whether the app has secrets (read from `<app>-secrets`).
    pub has_secrets: bool,
    /// Secrets given as files (`[secrets] files`): the `<app>-secret-files` Secret,
    /// mounted read-only at `/run/secrets`.
    pub secret_files: Vec<String>,
    pub volumes: Vec<KubeVolume>,
    /// Host names the Ingress routes to `web`.
    pub hosts: Vec<String>,
    pub isolation: Isolation,
    /// `GET` this path for readiness (none: the port accepting connections).
    pub health_path: Option<String>,
    /// berth.toml's canary strategy (an Argo Rollouts `Rollout` where the cluster has it).
    pub canary: Option<berth_core::canary::CanarySpec>,
    /// Which secret values the pods get (names and versions, never values): a change rolls
    /// the pods, as a change of variables does.
    pub secrets_version: Option<String>,
    /// The Secret (`kubernetes.io/dockerconfigjson`) the node pulls the image with.
    pub pull_secret: Option<String>,
    pub database: Option<KubeDatabase>,
    /// The app's objectives (a PrometheusRule where the cluster has the Prometheus operator).
    pub slo: berth_core::slo::SloSpec,
    /// Where `web` serves its own metrics (a ServiceMonitor scrapes them).
    pub metrics_path: Option<String>,
    /// Variables made of the database's connection (`postgresql://$(BERTH_DB_USERNAME)@…`),
    /// expanded by the kubelet when the pod starts.
    pub derived_env: BTreeMap<String, String>,
}

/// A rendered object: its kind, namespace and name, and the object itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub api_version: String,
    /// The API group (empty: the core group), version and plural, for the API's paths.
    pub group: String,
    pub version: String,
    pub plural: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub object: serde_json::Value,
}

impl Manifest {
    fn of<K>(object: K) -> Self
    where
        K: Resource + Metadata<Ty = ObjectMeta> + serde::Serialize,
    {
        let meta = object.metadata();
        let (namespace, name) = (
            meta.namespace.clone(),
            meta.name.clone().unwrap_or_default(),
        );
        // k8s-openapi writes apiVersion and kind itself.
        let value = serde_json::to_value(&object).unwrap_or_default();
        Manifest {
            api_version: K::API_VERSION.to_string(),
            group: K::GROUP.to_string(),
            version: K::VERSION.to_string(),
            plural: K::URL_PATH_SEGMENT.to_string(),
            kind: K::KIND.to_string(),
            namespace,
            name,
            object: value,
        }
    }

    /// The object as YAML.
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(&self.object).unwrap_or_default()
    }

    /// `kind-name`, a file name for it.
    pub fn file_name(&self) -> String {
        format!("{}-{}.yaml", self.kind.to_ascii_lowercase(), self.name)
    }
}

fn labels(app: Option<&str>, process: Option<&str>) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([(
        "app.kubernetes.io/managed-by".to_string(),
        MANAGER.to_string(),
    )]);
    if let Some(a) = app {
        l.insert("app.kubernetes.io/name".into(), a.into());
    }
    if let Some(p) = process {
        l.insert("app.kubernetes.io/component".into(), p.into());
    }
    l
}

fn meta(name: &str, namespace: Option<&str>, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        labels: Some(labels),
        ..Default::default()
    }
}

pub(crate) fn quantity_bytes(bytes: u64) -> Quantity {
    const MI: u64 = 1 << 20;
    const GI: u64 = 1 << 30;
    if bytes.is_multiple_of(GI) {
        Quantity(format!("{}Gi", bytes / GI))
    } else if bytes.is_multiple_of(MI) {
        Quantity(format!("{}Mi", bytes / MI))
    } else {
        Quantity(bytes.to_string())
    }
}

/// The CPU a pod asks the scheduler for: a quarter of its limit (at least 10m). berth's
/// CPU limit is a ceiling, as on its own runtime, not a reservation; memory is asked for
/// whole (a node short of memory evicts pods that use more than they asked for).
fn cpu_request(limit_millis: u32) -> u32 {
    (limit_millis / 4).max(10)
}

fn quantity_cpu(millis: u32) -> Quantity {
    Quantity(format!("{millis}m"))
}

/// A project's namespace: `berth-PROJECT`, so that berth's namespaces never meet the
/// cluster's own (`default`, `kube-system`) or anyone else's.
pub fn namespace_of(project: &str) -> Result<String, String> {
    let ns = format!("berth-{project}");
    if ns.len() > 63 {
        return Err(format!(
            "project {project:?} is too long for a namespace (berth-{project} is over 63 characters)"
        ));
    }
    Ok(ns)
}

/// A project's quota as a ResourceQuota's hard limits: memory and pods at twice the
/// quota (a rolling update's new pods start beside the old ones; berth holds each release
/// to the quota itself), volume storage as it is. None when the quota limits none of them.
fn quota_limits(quota: &Quota) -> Option<BTreeMap<String, Quantity>> {
    let mut hard = BTreeMap::new();
    if let Some(m) = quota.max_memory_bytes {
        hard.insert(
            "limits.memory".to_string(),
            quantity_bytes(m.saturating_mul(2)),
        );
    }
    if let Some(n) = quota.max_instances {
        hard.insert(
            "pods".to_string(),
            Quantity(n.saturating_mul(2).to_string()),
        );
    }
    if let Some(b) = quota.max_volume_bytes {
        hard.insert("requests.storage".to_string(), quantity_bytes(b));
    }
    (!hard.is_empty()).then_some(hard)
}

/// The objects a project's namespace holds whatever its apps: with the project's `quota`,
/// a ResourceQuota as the cluster's side of it.
pub fn project_objects(namespace: &str, quota: Option<&Quota>) -> Vec<Manifest> {
    let ns = Some(namespace);
    let all_pods = LabelSelector::default();
    let defaults = Limits::default();
    let limit = BTreeMap::from([
        ("cpu".to_string(), quantity_cpu(defaults.cpu_millis)),
        ("memory".to_string(), quantity_bytes(defaults.memory_bytes)),
    ]);
    let request = BTreeMap::from([
        (
            "cpu".to_string(),
            quantity_cpu(cpu_request(defaults.cpu_millis)),
        ),
        ("memory".to_string(), quantity_bytes(defaults.memory_bytes)),
    ]);
    let resource_quota = quota.and_then(quota_limits).map(|hard| {
        Manifest::of(ResourceQuota {
            metadata: meta("berth-quota", ns, labels(None, None)),
            spec: Some(ResourceQuotaSpec {
                hard: Some(hard),
                ..Default::default()
            }),
            ..Default::default()
        })
    });
    let mut objects = vec![
        Manifest::of(Namespace {
            metadata: meta(namespace, None, labels(None, None)),
            ..Default::default()
        }),
        Manifest::of(LimitRange {
            metadata: meta("berth-defaults", ns, labels(None, None)),
            spec: Some(LimitRangeSpec {
                limits: vec![LimitRangeItem {
                    type_: "Container".into(),
                    default: Some(limit),
                    default_request: Some(request),
                    ..Default::default()
                }],
            }),
        }),
        Manifest::of(NetworkPolicy {
            metadata: meta("default-deny", ns, labels(None, None)),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(all_pods.clone()),
                policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
                ..Default::default()
            }),
        }),
        Manifest::of(NetworkPolicy {
            metadata: meta("egress-internet", ns, labels(None, None)),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(all_pods),
                policy_types: Some(vec!["Egress".into()]),
                egress: Some(vec![
                    NetworkPolicyEgressRule {
                        to: Some(vec![NetworkPolicyPeer {
                            ip_block: Some(IPBlock {
                                cidr: "0.0.0.0/0".into(),
                                except: Some(
                                    BLOCKED_EGRESS.iter().map(|c| c.to_string()).collect(),
                                ),
                            }),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    },
                    // Names still resolve (the cluster's DNS, wherever it runs).
                    NetworkPolicyEgressRule {
                        ports: Some(
                            ["UDP", "TCP"]
                                .iter()
                                .map(|p| NetworkPolicyPort {
                                    port: Some(IntOrString::Int(53)),
                                    protocol: Some(p.to_string()),
                                    ..Default::default()
                                })
                                .collect(),
                        ),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
        }),
    ];
    // After the namespace and its LimitRange (quota'd pods need their defaults).
    objects.extend(resource_quota);
    objects
}

/// One object of every kind berth renders with `stack` (for listing what it manages).
pub fn kinds(stack: &crate::stack::Stack) -> Vec<Manifest> {
    let probe = kinds_app();
    let app = crate::stack::apply_stack(&probe, stack, app_objects(&probe));
    // The Secret of an app's secret values, which the backend writes.
    let secret = secret_object(&probe, &BTreeMap::new());
    let every_limit = Quota {
        max_apps: Some(1),
        max_instances: Some(1),
        max_memory_bytes: Some(1 << 30),
        max_volume_bytes: Some(1 << 30),
    };
    project_objects("kinds", Some(&every_limit))
        .into_iter()
        .chain(app)
        .chain([secret])
        .collect()
}

/// An app with one of everything (two process types, a volume, a host, a canary).
pub(crate) fn kinds_app() -> KubeApp {
    KubeApp {
        name: "kinds".into(),
        namespace: "kinds".into(),
        image: String::new(),
        port: 8000,
        processes: ["web", "worker"]
            .iter()
            .map(|k| {
                let p = KubeProcess {
                    command: None,
                    instances: 1,
                    limits: Limits::default(),
                };
                (k.to_string(), p)
            })
            .collect(),
        env: BTreeMap::new(),
        has_secrets: false,
        secret_files: Vec::new(),
        volumes: vec![KubeVolume {
            name: "v".into(),
            mount: "/v".into(),
            size_bytes: 1 << 20,
            storage_class: None,
        }],
        hosts: vec!["kinds.invalid".into()],
        isolation: Isolation::Trusted,
        health_path: None,
        canary: Some(Default::default()),
        secrets_version: None,
        pull_secret: None,
        database: Some(KubeDatabase {
            size_bytes: 1 << 30,
            storage_class: None,
        }),
        slo: Default::default(),
        metrics_path: Some("/metrics".into()),
        derived_env: BTreeMap::new(),
    }
}

/// The objects of one app (in its project's namespace).
pub fn app_objects(app: &KubeApp) -> Vec<Manifest> {
    let ns = Some(app.namespace.as_str());
    let name = app.name.as_str();
    let mut out = Vec::new();
    out.push(Manifest::of(ConfigMap {
        metadata: meta(&format!("{name}-env"), ns, labels(Some(name), None)),
        data: Some(app.env.clone()),
        ..Default::default()
    }));
    for v in &app.volumes {
        out.push(Manifest::of(PersistentVolumeClaim {
            metadata: meta(&format!("{name}-{}", v.name), ns, labels(Some(name), None)),
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                storage_class_name: v.storage_class.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".to_string(),
                        quantity_bytes(v.size_bytes),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }));
    }
    for (kind, process) in &app.processes {
        out.push(Manifest::of(deployment(app, kind, process)));
    }
    if app.processes.contains_key("web") {
        let web = labels(Some(name), Some("web"));
        out.push(Manifest::of(NetworkPolicy {
            metadata: meta(&format!("{name}-web"), ns, labels(Some(name), None)),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(LabelSelector {
                    match_labels: Some(web.clone()),
                    ..Default::default()
                }),
                policy_types: Some(vec!["Ingress".into()]),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    ports: Some(vec![NetworkPolicyPort {
                        port: Some(IntOrString::Int(i32::from(app.port))),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }));
        out.push(Manifest::of(Service {
            metadata: meta(name, ns, labels(Some(name), None)),
            spec: Some(ServiceSpec {
                selector: Some(web),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    target_port: Some(IntOrString::Int(i32::from(app.port))),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }));
        if !app.hosts.is_empty() {
            out.push(Manifest::of(ingress(app)));
        }
    }
    out
}

/// The app's `<app>-secrets` Secret with its values (written to the cluster by the backend,
/// never rendered into files).
pub fn secret_object(app: &KubeApp, values: &BTreeMap<String, Vec<u8>>) -> Manifest {
    Manifest::of(Secret {
        metadata: meta(
            &format!("{}-secrets", app.name),
            Some(&app.namespace),
            labels(Some(&app.name), None),
        ),
        type_: Some("Opaque".into()),
        data: Some(
            values
                .iter()
                .map(|(k, v)| (k.clone(), k8s_openapi::ByteString(v.clone())))
                .collect(),
        ),
        ..Default::default()
    })
}

/// The app's `<app>-secret-files` Secret: its secrets given as files.
pub fn secret_files_object(app: &KubeApp, files: &BTreeMap<String, Vec<u8>>) -> Manifest {
    let mut m = secret_object(app, files);
    let name = format!("{}-secret-files", app.name);
    m.object["metadata"]["name"] = serde_json::Value::String(name.clone());
    m.name = name;
    m
}

/// A registry pull secret of a namespace (`kubernetes.io/dockerconfigjson`), from an auth
/// file's JSON (`{"auths": {HOST: {"auth": …}}}`).
pub fn pull_secret_object(namespace: &str, name: &str, docker_config: &[u8]) -> Manifest {
    Manifest::of(Secret {
        metadata: meta(name, Some(namespace), labels(None, None)),
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        data: Some(BTreeMap::from([(
            ".dockerconfigjson".to_string(),
            k8s_openapi::ByteString(docker_config.to_vec()),
        )])),
        ..Default::default()
    })
}

fn ingress(app: &KubeApp) -> Ingress {
    let name = app.name.as_str();
    let backend = IngressBackend {
        service: Some(IngressServiceBackend {
            name: name.to_string(),
            port: Some(ServiceBackendPort {
                number: Some(80),
                ..Default::default()
            }),
        }),
        ..Default::default()
    };
    Ingress {
        metadata: meta(name, Some(&app.namespace), labels(Some(name), None)),
        spec: Some(IngressSpec {
            tls: Some(vec![IngressTLS {
                hosts: Some(app.hosts.clone()),
                secret_name: Some(format!("{name}-tls")),
            }]),
            rules: Some(
                app.hosts
                    .iter()
                    .map(|h| IngressRule {
                        host: Some(h.clone()),
                        http: Some(HTTPIngressRuleValue {
                            paths: vec![HTTPIngressPath {
                                path: Some("/".into()),
                                path_type: "Prefix".into(),
                                backend: backend.clone(),
                            }],
                        }),
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A one-off container a deploy runs to its end before the new pods start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OneOff {
    /// The app's tests (`[deploy] test`): its variables, but not its secrets, volumes or
    /// database.
    Tests,
    /// The release command (Procfile `release:`), with all the app's processes have.
    Release,
    /// The postdeploy script of the app's first deploy, likewise.
    Postdeploy,
}

impl OneOff {
    pub fn name(self) -> &'static str {
        match self {
            OneOff::Tests => "tests",
            OneOff::Release => "release",
            OneOff::Postdeploy => "postdeploy",
        }
    }
}

/// The label on a one-off's pod (which is not one of the app's instances).
pub const ONE_OFF: &str = "berth.dev/one-off";

/// A deploy's one-off as a Job of the release's image (`APP-KIND-vVERSION`): one pod with
/// the guardrails of the app's processes, never restarted, stopped after `deadline_secs`.
/// Its variables are the release's own (not the ConfigMap, which the release has not
/// changed yet).
pub fn one_off_job(
    app: &KubeApp,
    version: u32,
    kind: OneOff,
    command: &str,
    deadline_secs: u64,
) -> Manifest {
    let base = if kind == OneOff::Tests {
        KubeApp {
            has_secrets: false,
            secret_files: Vec::new(),
            volumes: Vec::new(),
            database: None,
            derived_env: BTreeMap::new(),
            ..app.clone()
        }
    } else {
        app.clone()
    };
    let process = KubeProcess {
        command: Some(command.to_string()),
        instances: 1,
        limits: app
            .processes
            .values()
            .next()
            .map(|p| p.limits)
            .unwrap_or_default(),
    };
    let suffix = format!("-{}-v{version}", kind.name());
    let keep = 63usize.saturating_sub(suffix.len()).min(app.name.len());
    let name = format!(
        "{}{suffix}",
        app.name
            .get(..keep)
            .unwrap_or(&app.name)
            .trim_end_matches('-')
    );
    let mut template = deployment(&base, kind.name(), &process)
        .spec
        .map(|s| s.template)
        .unwrap_or_default();
    let mut labels = labels(Some(&app.name), Some(kind.name()));
    labels.insert(ONE_OFF.into(), "true".into());
    if let Some(meta) = template.metadata.as_mut() {
        meta.labels = Some(labels.clone());
    }
    if let Some(pod) = template.spec.as_mut() {
        pod.restart_policy = Some("Never".into());
        for c in &mut pod.containers {
            c.readiness_probe = None;
            c.lifecycle = None;
            c.ports = None;
            if let Some(from) = c.env_from.as_mut() {
                from.retain(|f| f.config_map_ref.is_none());
            }
            let env = c.env.get_or_insert_with(Vec::new);
            for (k, v) in &base.env {
                if !env.iter().any(|e| &e.name == k) {
                    env.push(EnvVar {
                        name: k.clone(),
                        value: Some(v.clone()),
                        ..Default::default()
                    });
                }
            }
        }
    }
    Manifest::of(Job {
        metadata: meta(&name, Some(&app.namespace), labels),
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(i64::try_from(deadline_secs).unwrap_or(i64::MAX)),
            template,
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn deployment(app: &KubeApp, kind: &str, process: &KubeProcess) -> Deployment {
    let name = app.name.as_str();
    let pod_labels = labels(Some(name), Some(kind));
    let resources = BTreeMap::from([
        ("cpu".to_string(), quantity_cpu(process.limits.cpu_millis)),
        (
            "memory".to_string(),
            quantity_bytes(process.limits.memory_bytes),
        ),
    ]);
    let requests = BTreeMap::from([
        (
            "cpu".to_string(),
            quantity_cpu(cpu_request(process.limits.cpu_millis)),
        ),
        (
            "memory".to_string(),
            quantity_bytes(process.limits.memory_bytes),
        ),
    ]);
    let mut env = vec![EnvVar {
        name: "PORT".into(),
        value: Some(app.port.to_string()),
        ..Default::default()
    }];
    env.push(EnvVar {
        name: "BERTH_APP".into(),
        value: Some(name.to_string()),
        ..Default::default()
    });
    if app.database.is_some() {
        // The connection, from the operator's Secret (a variable the app sets wins).
        let secret = format!("{}-app", database_cluster(name));
        for (var, key) in DATABASE_ENV {
            if app.env.contains_key(*var) || app.derived_env.contains_key(*var) {
                continue;
            }
            env.push(EnvVar {
                name: var.to_string(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret.clone(),
                        key: key.to_string(),
                        optional: Some(false),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
    }
    // After what they refer to: `$(VAR)` expands only variables listed before it.
    for (var, value) in &app.derived_env {
        env.push(EnvVar {
            name: var.clone(),
            value: Some(value.clone()),
            ..Default::default()
        });
    }
    let mut env_from = vec![EnvFromSource {
        config_map_ref: Some(ConfigMapEnvSource {
            name: format!("{name}-env"),
            optional: Some(false),
        }),
        ..Default::default()
    }];
    if app.has_secrets {
        env_from.push(EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: format!("{name}-secrets"),
                optional: Some(false),
            }),
            ..Default::default()
        });
    }
    // A read-only root: /tmp and the volumes are where the app writes.
    let mut volumes = vec![Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "tmp".into(),
        mount_path: "/tmp".into(),
        ..Default::default()
    }];
    if !app.secret_files.is_empty() {
        volumes.push(Volume {
            name: "secret-files".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(format!("{name}-secret-files")),
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "secret-files".into(),
            mount_path: SECRET_FILES_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    for v in &app.volumes {
        volumes.push(Volume {
            name: format!("vol-{}", v.name),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: format!("{name}-{}", v.name),
                read_only: None,
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: format!("vol-{}", v.name),
            mount_path: v.mount.clone(),
            ..Default::default()
        });
    }
    let web = kind == "web";
    let probe = web.then(|| Probe {
        http_get: app.health_path.as_ref().map(|p| HTTPGetAction {
            path: Some(p.clone()),
            port: IntOrString::Int(i32::from(app.port)),
            ..Default::default()
        }),
        tcp_socket: app.health_path.is_none().then(|| TCPSocketAction {
            port: IntOrString::Int(i32::from(app.port)),
            ..Default::default()
        }),
        period_seconds: Some(5),
        failure_threshold: Some(3),
        ..Default::default()
    });
    let container = Container {
        name: kind.to_string(),
        image: Some(app.image.clone()),
        command: process
            .command
            .as_ref()
            .map(|c| berth_core::procfile::command_argv(c)),
        env: Some(env),
        env_from: Some(env_from),
        ports: web.then(|| {
            vec![ContainerPort {
                name: Some("http".into()),
                container_port: i32::from(app.port),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]
        }),
        readiness_probe: probe,
        // Taken out of its Service's endpoints as it is told to stop, a web pod keeps
        // answering a moment so that requests routed to it meanwhile are not refused (an
        // image without a shell or `sleep` just stops at once).
        lifecycle: web.then(|| Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec![
                        "/bin/sh".into(),
                        "-c".into(),
                        format!("sleep {DRAIN_SECONDS}"),
                    ]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        resources: Some(ResourceRequirements {
            limits: Some(resources),
            requests: Some(requests),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(APP_UID),
            run_as_group: Some(APP_UID),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    // A volume is mounted by one node at a time: replace rather than surge. The rolling
    // update's parameters are berth's own (Kubernetes' defaults, written out), so that an
    // app given a volume drops them (a Recreate Deployment may not have them).
    let strategy = Some(if app.volumes.is_empty() {
        DeploymentStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateDeployment {
                max_surge: Some(IntOrString::String("25%".into())),
                max_unavailable: Some(IntOrString::String("25%".into())),
            }),
        }
    } else {
        DeploymentStrategy {
            type_: Some("Recreate".into()),
            rolling_update: None,
        }
    });
    Deployment {
        metadata: meta(
            &format!("{name}-{kind}"),
            Some(&app.namespace),
            pod_labels.clone(),
        ),
        spec: Some(DeploymentSpec {
            replicas: Some(process.instances as i32),
            selector: LabelSelector {
                match_labels: Some(pod_labels.clone()),
                ..Default::default()
            },
            strategy,
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    // Pods read their variables when they start: a change of them changes
                    // the template, so the Deployment rolls.
                    annotations: Some(
                        [(ENV_DIGEST.to_string(), Some(env_digest(&app.env)))]
                            .into_iter()
                            .chain([(SECRETS_VERSION.to_string(), app.secrets_version.clone())])
                            .filter_map(|(k, v)| v.map(|v| (k, v)))
                            .collect(),
                    ),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    image_pull_secrets: app
                        .pull_secret
                        .as_ref()
                        .map(|name| vec![LocalObjectReference { name: name.clone() }]),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    runtime_class_name: (app.isolation == Isolation::Sandbox)
                        .then(|| "gvisor".to_string()),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        fs_group: Some(APP_UID),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shop() -> KubeApp {
        KubeApp {
            name: "shop".into(),
            namespace: "berth-team-a".into(),
            image: "registry.example.test/shop@sha256:0123".into(),
            port: 8000,
            processes: BTreeMap::from([
                (
                    "web".to_string(),
                    KubeProcess {
                        command: Some("python3 app.py".into()),
                        instances: 2,
                        limits: Limits::default(),
                    },
                ),
                (
                    "worker".to_string(),
                    KubeProcess {
                        command: None,
                        instances: 1,
                        limits: Limits {
                            memory_bytes: 256 << 20,
                            cpu_millis: 500,
                            pids: 64,
                        },
                    },
                ),
            ]),
            env: BTreeMap::from([("MODE".to_string(), "blue".to_string())]),
            has_secrets: true,
            secret_files: Vec::new(),
            volumes: vec![KubeVolume {
                name: "data".into(),
                mount: "/data".into(),
                size_bytes: 1 << 30,
                storage_class: Some("fast-ssd".into()),
            }],
            hosts: vec!["shop.example.test".into()],
            isolation: Isolation::Sandbox,
            health_path: Some("/health".into()),
            canary: None,
            secrets_version: None,
            pull_secret: None,
            database: Some(KubeDatabase {
                size_bytes: 5 << 30,
                storage_class: Some("fast-ssd".into()),
            }),
            slo: Default::default(),
            metrics_path: None,
            derived_env: BTreeMap::from([(
                "PG".to_string(),
                "postgresql://$(BERTH_DB_USERNAME)@$(BERTH_DB_HOST)/shop".to_string(),
            )]),
        }
    }

    #[test]
    fn an_app_renders_as_the_objects_a_cluster_runs_it_with() {
        let objects: Vec<Manifest> = project_objects(
            "berth-team-a",
            Some(&Quota {
                max_instances: Some(4),
                max_memory_bytes: Some(2 << 30),
                ..Default::default()
            }),
        )
        .into_iter()
        .chain(app_objects(&shop()))
        .collect();
        let all: String = objects
            .iter()
            .map(|m| format!("# {}\n{}", m.file_name(), m.to_yaml()))
            .collect::<Vec<_>>()
            .join("---\n");
        insta::assert_snapshot!(all);
    }

    #[test]
    fn a_trusted_app_without_volumes_or_secrets_asks_for_neither() {
        let mut app = shop();
        app.isolation = Isolation::Trusted;
        app.volumes.clear();
        app.has_secrets = false;
        app.hosts.clear();
        let objects = app_objects(&app);
        let text: String = objects.iter().map(Manifest::to_yaml).collect();
        assert!(!text.contains("gvisor"), "{text}");
        assert!(!text.contains("PersistentVolumeClaim") && !text.contains("persistentVolumeClaim"));
        assert!(!text.contains("shop-secrets"));
        assert!(
            !objects.iter().any(|m| m.kind == "Ingress"),
            "no host, no Ingress"
        );
        assert!(
            !text.contains("Recreate"),
            "rolling updates without a volume"
        );
    }
}
