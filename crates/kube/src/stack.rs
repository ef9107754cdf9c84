//! The seeds' cluster stack, used where a cluster has it: cert-manager (a `Certificate` per
//! app for its Ingress's TLS secret, from a ClusterIssuer), Argo Rollouts (a canary app's
//! web process as a `Rollout` whose steps are berth.toml's canary steps, in place of its
//! Deployment) and CloudNativePG (an app's database as a `Cluster`, with the network
//! policies that let the app and the operator reach it), the Prometheus operator (the
//! app's SLO rules as a `PrometheusRule` over its ingress-nginx requests, and a
//! `ServiceMonitor` where the app serves metrics of its own); and for GitOps, Argo CD (an
//! `Application` per app syncing its rendered directory from a git repository). Each is used only when its CRD exists (`Cluster::stack`), or when `berth
//! render --stack` names it; otherwise the built-in equivalent stands (the Ingress's TLS
//! secret from whatever the cluster uses, a Deployment's rolling update).

use crate::render::{database_cluster, KubeApp, KubeDatabase, Manifest};
use serde_json::json;

/// What a cluster has of the stack.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stack {
    /// cert-manager, with the ClusterIssuer to ask.
    pub cert_manager: Option<String>,
    pub argo_rollouts: bool,
    pub cloudnative_pg: bool,
    pub prometheus_operator: bool,
    pub argo_cd: bool,
}

/// The CRDs that show each part.
pub const CERT_MANAGER_CRD: &str = "certificates.cert-manager.io";
pub const ARGO_ROLLOUTS_CRD: &str = "rollouts.argoproj.io";
pub const CLOUDNATIVE_PG_CRD: &str = "clusters.postgresql.cnpg.io";
pub const ARGO_CD_CRD: &str = "applications.argoproj.io";
pub const PROMETHEUS_RULE_CRD: &str = "prometheusrules.monitoring.coreos.com";
/// The namespace Argo CD watches for Applications (its manifests' default).
pub const ARGO_CD_NAMESPACE: &str = "argocd";
/// The namespace CloudNativePG's operator runs in (its manifests' default).
pub const CLOUDNATIVE_PG_NAMESPACE: &str = "cnpg-system";

impl Stack {
    /// From `cert-manager,argo-rollouts` (empty: nothing); every unknown name at once.
    pub fn parse(list: &str, issuer: &str) -> Result<Self, String> {
        let mut stack = Stack::default();
        let mut unknown = Vec::new();
        for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "cert-manager" => stack.cert_manager = Some(issuer.to_string()),
                "argo-rollouts" => stack.argo_rollouts = true,
                "cloudnative-pg" => stack.cloudnative_pg = true,
                "argo-cd" => stack.argo_cd = true,
                "prometheus-operator" => stack.prometheus_operator = true,
                other => unknown.push(other.to_string()),
            }
        }
        if unknown.is_empty() {
            Ok(stack)
        } else {
            Err(format!(
                "--stack: {} unknown (berth knows cert-manager, argo-rollouts, cloudnative-pg, prometheus-operator and argo-cd)",
                unknown.join(", ")
            ))
        }
    }

    /// The parts berth uses in place of built-in objects, for output (Argo CD, which only
    /// a rendering for GitOps uses, is not one).
    pub fn names(&self) -> Vec<&'static str> {
        let mut n = Vec::new();
        if self.cert_manager.is_some() {
            n.push("cert-manager");
        }
        if self.argo_rollouts {
            n.push("argo-rollouts");
        }
        if self.cloudnative_pg {
            n.push("cloudnative-pg");
        }
        if self.prometheus_operator {
            n.push("prometheus-operator");
        }
        n
    }
}

fn custom(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    namespace: &str,
    name: &str,
    object: serde_json::Value,
) -> Manifest {
    Manifest {
        api_version: format!("{group}/{version}"),
        group: group.into(),
        version: version.into(),
        plural: plural.into(),
        kind: kind.into(),
        namespace: Some(namespace.into()),
        name: name.into(),
        object,
    }
}

/// The app's database as CloudNativePG's `Cluster` (one instance, its `app` database owned
/// by the `app` role, as the operator's defaults), and the network policies the project's
/// deny-by-default needs opened: the app's pods to the database's port, the database's
/// pods from the operator and each other and out to the API server.
fn database_objects(app: &KubeApp, db: &KubeDatabase, labels: &serde_json::Value) -> Vec<Manifest> {
    let (ns, name) = (app.namespace.as_str(), app.name.as_str());
    let cluster = database_cluster(name);
    let db_pods = json!({ "matchLabels": { "cnpg.io/cluster": cluster } });
    let app_pods = json!({ "matchLabels": { "app.kubernetes.io/name": name } });
    let postgres = json!({ "protocol": "TCP", "port": 5432 });
    let mut storage = json!({ "size": crate::render::quantity_bytes(db.size_bytes).0 });
    if let Some(class) = &db.storage_class {
        storage["storageClass"] = json!(class);
    }
    let policy = |policy_name: String, spec: serde_json::Value| {
        custom(
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
            ns,
            &policy_name,
            json!({
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": { "name": policy_name, "namespace": ns, "labels": labels },
                "spec": spec,
            }),
        )
    };
    vec![
        custom(
            "postgresql.cnpg.io",
            "v1",
            "Cluster",
            "clusters",
            ns,
            &cluster,
            json!({
                "apiVersion": "postgresql.cnpg.io/v1",
                "kind": "Cluster",
                "metadata": { "name": cluster, "namespace": ns, "labels": labels },
                "spec": {
                    "instances": 1,
                    "bootstrap": { "initdb": { "database": "app", "owner": "app" } },
                    "storage": storage,
                },
            }),
        ),
        policy(
            cluster.clone(),
            json!({
                "podSelector": db_pods,
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [
                    { "from": [{ "podSelector": app_pods }], "ports": [postgres] },
                    { "from": [{ "podSelector": db_pods }] },
                    {
                        "from": [{ "namespaceSelector": { "matchLabels": {
                            "kubernetes.io/metadata.name": CLOUDNATIVE_PG_NAMESPACE,
                        } } }],
                        "ports": [postgres, { "protocol": "TCP", "port": 8000 }],
                    },
                ],
                // The instance manager talks to the API server, wherever it is.
                "egress": [{}],
            }),
        ),
        policy(
            format!("{name}-db-client"),
            json!({
                "podSelector": app_pods,
                "policyTypes": ["Egress"],
                "egress": [{ "to": [{ "podSelector": db_pods }], "ports": [postgres] }],
            }),
        ),
    ]
}

/// The app's SLO rules for the Prometheus operator (the same multi-window, multi-burn-rate
/// rules as `berth slo --rules`, over the requests ingress-nginx counts for its Ingress),
/// and a ServiceMonitor of its Service where `web` serves metrics of its own.
fn monitoring_objects(app: &KubeApp, labels: &serde_json::Value) -> Vec<Manifest> {
    let (ns, name) = (app.namespace.as_str(), app.name.as_str());
    let mut out = Vec::new();
    if !app.hosts.is_empty() {
        let source = berth_core::slo::RequestMetrics::IngressNginx {
            namespace: ns.to_string(),
        };
        let rules = berth_core::slo::prometheus_rules_for(&[(name.to_string(), app.slo)], &source);
        let groups = serde_yaml_ng::from_str::<serde_json::Value>(&rules)
            .map(|v| v["groups"].clone())
            .unwrap_or_default();
        let rule_name = format!("{name}-slo");
        out.push(custom(
            "monitoring.coreos.com",
            "v1",
            "PrometheusRule",
            "prometheusrules",
            ns,
            &rule_name,
            json!({
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "PrometheusRule",
                "metadata": { "name": rule_name, "namespace": ns, "labels": labels },
                "spec": { "groups": groups },
            }),
        ));
    }
    if let Some(path) = &app.metrics_path {
        out.push(custom(
            "monitoring.coreos.com",
            "v1",
            "ServiceMonitor",
            "servicemonitors",
            ns,
            name,
            json!({
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "ServiceMonitor",
                "metadata": { "name": name, "namespace": ns, "labels": labels },
                "spec": {
                    "selector": { "matchLabels": labels },
                    "endpoints": [{ "port": "http", "path": path }],
                },
            }),
        ));
    }
    out
}

/// Where Argo CD reads a rendered tree: a git repository, the revision to follow, and the
/// tree's directory in the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSource {
    pub repo: String,
    pub revision: String,
    pub path: String,
}

impl GitSource {
    fn path_of(&self, rel: &str) -> String {
        match self.path.trim_start_matches("./").trim_matches('/') {
            "" | "." => rel.to_string(),
            p => format!("{p}/{rel}"),
        }
    }
}

fn application(
    name: &str,
    destination: &str,
    path: String,
    git: &GitSource,
    labels: &serde_json::Value,
) -> Manifest {
    custom(
        "argoproj.io",
        "v1alpha1",
        "Application",
        "applications",
        ARGO_CD_NAMESPACE,
        name,
        json!({
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": {
                "name": name,
                "namespace": ARGO_CD_NAMESPACE,
                "labels": labels,
                // Deleting the Application deletes what it synced.
                "finalizers": ["resources-finalizer.argocd.argoproj.io"],
            },
            "spec": {
                "project": "default",
                "source": { "repoURL": git.repo, "targetRevision": git.revision, "path": path },
                "destination": { "server": "https://kubernetes.default.svc", "namespace": destination },
                "syncPolicy": {
                    "automated": { "prune": true, "selfHeal": true },
                    "syncOptions": ["ServerSideApply=true", "CreateNamespace=true"],
                },
            },
        }),
    )
}

/// GitOps with Argo CD: an `Application` per app directory of the rendered tree
/// (`base/NAMESPACE/APP`, named `NAMESPACE.APP`), syncing it automatically (pruning what
/// the tree no longer has, undoing changes by hand), then the root Application
/// (`NAMESPACE`, the app of apps) that syncs `argocd/` and the namespace's own objects —
/// so an app taken out of the definition takes its Application, and its objects, with it.
/// `dirs` are the tree's directories (`NAMESPACE/APP`, `NAMESPACE/_project`).
pub fn argo_applications(dirs: &[String], git: &GitSource) -> Vec<Manifest> {
    let labels = json!({ "app.kubernetes.io/managed-by": crate::render::MANAGER });
    let mut out = Vec::new();
    let mut namespaces = Vec::new();
    for dir in dirs {
        let Some((ns, app)) = dir.split_once('/') else {
            continue;
        };
        if !namespaces.contains(&ns) {
            namespaces.push(ns);
        }
        if app != crate::kustomize::PROJECT_DIR {
            out.push(application(
                &format!("{ns}.{app}"),
                ns,
                git.path_of(&format!("base/{dir}")),
                git,
                &labels,
            ));
        }
    }
    // One root per rendering (a definition is one project, one namespace).
    if let Some(ns) = namespaces.first() {
        out.push(application(
            ns,
            ns,
            git.path_of(crate::kustomize::ARGO_DIR),
            git,
            &labels,
        ));
    }
    out
}

/// `objects` of `app` with the stack's parts in place of the built-in ones.
pub fn apply_stack(app: &KubeApp, stack: &Stack, mut objects: Vec<Manifest>) -> Vec<Manifest> {
    let (ns, name) = (app.namespace.as_str(), app.name.as_str());
    let labels = json!({
        "app.kubernetes.io/managed-by": crate::render::MANAGER,
        "app.kubernetes.io/name": name,
    });
    if let (Some(issuer), false) = (&stack.cert_manager, app.hosts.is_empty()) {
        if app.processes.contains_key("web") {
            objects.push(custom(
                "cert-manager.io",
                "v1",
                "Certificate",
                "certificates",
                ns,
                name,
                json!({
                    "apiVersion": "cert-manager.io/v1",
                    "kind": "Certificate",
                    "metadata": { "name": name, "namespace": ns, "labels": labels },
                    "spec": {
                        "secretName": format!("{name}-tls"),
                        "dnsNames": app.hosts,
                        "issuerRef": { "name": issuer, "kind": "ClusterIssuer" },
                    },
                }),
            ));
        }
    }
    if stack.prometheus_operator && app.processes.contains_key("web") {
        objects.extend(monitoring_objects(app, &labels));
    }
    if let (true, Some(db)) = (stack.cloudnative_pg, &app.database) {
        objects.extend(database_objects(app, db, &labels));
    }
    if let (true, Some(canary)) = (stack.argo_rollouts, &app.canary) {
        let web = format!("{name}-web");
        if let Some(i) = objects
            .iter()
            .position(|m| m.kind == "Deployment" && m.name == web)
        {
            let deployment = objects.remove(i);
            let spec = &deployment.object["spec"];
            let mut steps = Vec::new();
            for weight in &canary.steps {
                steps.push(json!({ "setWeight": weight }));
                steps.push(json!({ "pause": { "duration": format!("{}s", canary.step_secs) } }));
            }
            let rollout = json!({
                "apiVersion": "argoproj.io/v1alpha1",
                "kind": "Rollout",
                "metadata": deployment.object["metadata"].clone(),
                "spec": {
                    "replicas": spec["replicas"].clone(),
                    "selector": spec["selector"].clone(),
                    "template": spec["template"].clone(),
                    "strategy": { "canary": { "steps": steps } },
                },
            });
            objects.insert(
                i,
                custom(
                    "argoproj.io",
                    "v1alpha1",
                    "Rollout",
                    "rollouts",
                    ns,
                    &web,
                    rollout,
                ),
            );
        }
    }
    objects
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stack_is_named_part_by_part() {
        let s = Stack::parse("cert-manager, argo-rollouts,cloudnative-pg", "ca").unwrap();
        assert_eq!(s.cert_manager.as_deref(), Some("ca"));
        assert!(s.argo_rollouts && s.cloudnative_pg);
        assert_eq!(
            s.names(),
            vec!["cert-manager", "argo-rollouts", "cloudnative-pg"]
        );
        assert_eq!(Stack::parse("", "ca").unwrap(), Stack::default());
        let e = Stack::parse("istio,cert-manager,linkerd", "ca").unwrap_err();
        assert!(e.contains("istio, linkerd unknown"), "{e}");
    }

    #[test]
    fn argo_cd_gets_an_application_per_app_and_a_root_that_syncs_them() {
        let git = GitSource {
            repo: "https://git.example.test/team/p.git".into(),
            revision: "main".into(),
            path: "./deploy/".into(),
        };
        let dirs: Vec<String> = ["berth-a/_project", "berth-a/shop", "berth-a/web"]
            .iter()
            .map(|d| d.to_string())
            .collect();
        let apps = argo_applications(&dirs, &git);
        let names: Vec<&str> = apps.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["berth-a.shop", "berth-a.web", "berth-a"]);
        let spec = &apps[0].object["spec"];
        assert_eq!(spec["source"]["path"], "deploy/base/berth-a/shop");
        assert_eq!(spec["source"]["targetRevision"], "main");
        assert_eq!(spec["destination"]["namespace"], "berth-a");
        assert_eq!(apps[2].object["spec"]["source"]["path"], "deploy/argocd");
        assert!(apps
            .iter()
            .all(|a| a.namespace.as_deref() == Some("argocd")));
        let at_root = GitSource {
            path: ".".into(),
            ..git
        };
        assert_eq!(
            argo_applications(&dirs[1..2], &at_root)[0].object["spec"]["source"]["path"],
            "base/berth-a/shop"
        );
    }
}
