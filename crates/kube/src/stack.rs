//! The seeds' cluster stack, used where a cluster has it: cert-manager (a `Certificate` per
//! app for its Ingress's TLS secret, from a ClusterIssuer) and Argo Rollouts (a canary app's
//! web process as a `Rollout` whose steps are berth.toml's canary steps, in place of its
//! Deployment). Each is used only when its CRD exists (`Cluster::stack`), or when `berth
//! render --stack` names it; otherwise the built-in equivalent stands (the Ingress's TLS
//! secret from whatever the cluster uses, a Deployment's rolling update).

use crate::render::{KubeApp, Manifest};
use serde_json::json;

/// What a cluster has of the stack.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stack {
    /// cert-manager, with the ClusterIssuer to ask.
    pub cert_manager: Option<String>,
    pub argo_rollouts: bool,
}

/// The CRDs that show each part.
pub const CERT_MANAGER_CRD: &str = "certificates.cert-manager.io";
pub const ARGO_ROLLOUTS_CRD: &str = "rollouts.argoproj.io";

impl Stack {
    /// From `cert-manager,argo-rollouts` (empty: nothing); every unknown name at once.
    pub fn parse(list: &str, issuer: &str) -> Result<Self, String> {
        let mut stack = Stack::default();
        let mut unknown = Vec::new();
        for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "cert-manager" => stack.cert_manager = Some(issuer.to_string()),
                "argo-rollouts" => stack.argo_rollouts = true,
                other => unknown.push(other.to_string()),
            }
        }
        if unknown.is_empty() {
            Ok(stack)
        } else {
            Err(format!(
                "--stack: {} unknown (berth knows cert-manager and argo-rollouts)",
                unknown.join(", ")
            ))
        }
    }

    /// The parts in use, for output.
    pub fn names(&self) -> Vec<&'static str> {
        let mut n = Vec::new();
        if self.cert_manager.is_some() {
            n.push("cert-manager");
        }
        if self.argo_rollouts {
            n.push("argo-rollouts");
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
        let s = Stack::parse("cert-manager, argo-rollouts", "ca").unwrap();
        assert_eq!(s.cert_manager.as_deref(), Some("ca"));
        assert!(s.argo_rollouts);
        assert_eq!(s.names(), vec!["cert-manager", "argo-rollouts"]);
        assert_eq!(Stack::parse("", "ca").unwrap(), Stack::default());
        let e = Stack::parse("istio,cert-manager,linkerd", "ca").unwrap_err();
        assert!(e.contains("istio, linkerd unknown"), "{e}");
    }
}
