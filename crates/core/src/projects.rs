//! Projects: the level between the platform and its apps. Each app belongs to one project
//! (`default` unless said otherwise); a token may be limited to one project; each project
//! may have quotas.

use serde::{Deserialize, Serialize};

/// The project apps go to when none is named.
pub const DEFAULT_PROJECT: &str = "default";

/// Limits of a project; absent ones do not limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_apps: Option<u32>,
    /// Instances of every process type of the apps' serving releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<u32>,
    /// The sum of those instances' memory limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_bytes: Option<u64>,
    /// The sum of the apps' volume sizes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_volume_bytes: Option<u64>,
}

/// What a project uses now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Usage {
    pub apps: u32,
    pub instances: u32,
    pub memory_bytes: u64,
    pub volume_bytes: u64,
}

impl Quota {
    /// The first limit `usage` goes past, as a message.
    pub fn exceeded_by(&self, usage: &Usage) -> Option<String> {
        if let Some(m) = self.max_apps.filter(|m| usage.apps > *m) {
            return Some(format!("{} apps, the quota is {m}", usage.apps));
        }
        if let Some(m) = self.max_instances.filter(|m| usage.instances > *m) {
            return Some(format!("{} instances, the quota is {m}", usage.instances));
        }
        if let Some(m) = self.max_memory_bytes.filter(|m| usage.memory_bytes > *m) {
            return Some(format!(
                "{} MiB of memory, the quota is {} MiB",
                usage.memory_bytes >> 20,
                m >> 20
            ));
        }
        if let Some(m) = self.max_volume_bytes.filter(|m| usage.volume_bytes > *m) {
            return Some(format!(
                "{} MiB of volumes, the quota is {} MiB",
                usage.volume_bytes >> 20,
                m >> 20
            ));
        }
        None
    }
}

/// Body of `POST /v1/projects`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectCreate {
    /// A DNS label, like an app's name.
    #[schema(pattern = "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    #[serde(default)]
    pub quota: Quota,
    /// The tenant it belongs to (default: `default`, or the token's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// The tenant projects belong to when none is named.
pub const DEFAULT_TENANT: &str = "default";

/// Body of `POST /v1/tenants`: an organisation above projects, with quotas over all of
/// its projects' apps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantCreate {
    /// A DNS label.
    #[schema(pattern = "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    #[serde(default)]
    pub quota: Quota,
    #[serde(default)]
    pub policy: TenantPolicy,
}

/// What a tenant's apps are held to, whatever their berth.toml says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TenantPolicy {
    /// The least isolation its apps run (and build) at: with `sandbox`, an app that asks
    /// for `trusted` is refused, and one that asks for nothing is sandboxed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_isolation: Option<crate::policy::Isolation>,
    /// The capabilities its apps may keep (a subset of those the platform grants); none
    /// given: all those.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<String>>,
}

impl TenantPolicy {
    /// The policy with its capabilities checked (each one the platform grants) and
    /// written as the platform names them (`net_raw` → `CAP_NET_RAW`).
    pub fn normalized(&self) -> Result<Self, String> {
        let capabilities = match &self.capabilities {
            None => None,
            Some(list) => Some(
                list.iter()
                    .map(|c| crate::policy::parse_capability(c))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        Ok(Self {
            min_isolation: self.min_isolation,
            capabilities,
        })
    }

    /// The isolation an app of the tenant runs at, given what its berth.toml asks
    /// (`asked`) and the platform's default; an error when it asks for less than the
    /// tenant's least.
    pub fn isolation(
        &self,
        tenant: &str,
        asked: Option<crate::policy::Isolation>,
        default: crate::policy::Isolation,
    ) -> Result<crate::policy::Isolation, String> {
        let least = self
            .min_isolation
            .unwrap_or(crate::policy::Isolation::Trusted);
        match asked {
            Some(level) if level < least => Err(format!(
                "tenant {tenant} holds its apps to isolation {:?} at least; berth.toml asks for {:?}",
                least.as_str(),
                level.as_str()
            )),
            Some(level) => Ok(level),
            None => Ok(default.max(least)),
        }
    }

    /// The capabilities of `asked` the tenant does not let its apps keep.
    pub fn refused_capabilities<'a>(&self, asked: &'a [String]) -> Vec<&'a str> {
        match &self.capabilities {
            None => Vec::new(),
            Some(allowed) => asked
                .iter()
                .filter(|c| !allowed.contains(c))
                .map(String::as_str)
                .collect(),
        }
    }
}

/// A tenant as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TenantView {
    pub name: String,
    pub created_at: i64,
    pub quota: Quota,
    #[serde(default)]
    pub policy: TenantPolicy,
    /// The sum over its projects.
    pub usage: Usage,
    pub projects: Vec<String>,
}

/// A project as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProjectView {
    pub name: String,
    /// The tenant it belongs to.
    #[serde(default)]
    pub tenant: String,
    pub created_at: i64,
    pub quota: Quota,
    pub usage: Usage,
}

/// Project names are DNS labels, like app names.
pub fn check_project_name(name: &str) -> Result<(), String> {
    crate::AppName::parse(name)
        .map(|_| ())
        .map_err(|e| format!("project name: {e}"))
}

/// Tenant names are DNS labels too.
pub fn check_tenant_name(name: &str) -> Result<(), String> {
    crate::AppName::parse(name)
        .map(|_| ())
        .map_err(|e| format!("tenant name: {e}"))
}

impl Usage {
    /// This use and `other` together.
    pub fn add(&mut self, other: &Usage) {
        self.apps += other.apps;
        self.instances += other.instances;
        self.memory_bytes += other.memory_bytes;
        self.volume_bytes += other.volume_bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Isolation;

    #[test]
    fn a_tenant_holds_its_apps_to_its_least_isolation_and_its_capabilities() {
        let sandboxed = TenantPolicy {
            min_isolation: Some(Isolation::Sandbox),
            capabilities: Some(vec!["net_bind_service".into()]),
        }
        .normalized()
        .unwrap();
        assert_eq!(
            sandboxed.capabilities,
            Some(vec!["CAP_NET_BIND_SERVICE".to_string()])
        );
        // Nothing asked: the tenant's level, above the platform's default.
        assert_eq!(
            sandboxed.isolation("acme", None, Isolation::Trusted),
            Ok(Isolation::Sandbox)
        );
        let err = sandboxed
            .isolation("acme", Some(Isolation::Trusted), Isolation::Trusted)
            .unwrap_err();
        assert!(err.contains("acme") && err.contains("\"sandbox\""), "{err}");
        let free = TenantPolicy::default();
        assert_eq!(
            free.isolation("x", Some(Isolation::Trusted), Isolation::Sandbox),
            Ok(Isolation::Trusted)
        );
        assert_eq!(
            sandboxed.refused_capabilities(&["CAP_NET_RAW".into(), "CAP_NET_BIND_SERVICE".into()]),
            vec!["CAP_NET_RAW"]
        );
        assert!(free
            .refused_capabilities(&["CAP_NET_RAW".into()])
            .is_empty());
        assert!(TenantPolicy {
            min_isolation: None,
            capabilities: Some(vec!["sys_admin".into()]),
        }
        .normalized()
        .is_err());
    }

    #[test]
    fn quotas_name_the_first_limit_passed() {
        let q = Quota {
            max_apps: Some(2),
            max_memory_bytes: Some(1 << 30),
            ..Default::default()
        };
        let mut u = Usage {
            apps: 2,
            memory_bytes: 1 << 30,
            ..Default::default()
        };
        assert_eq!(q.exceeded_by(&u), None, "at the limit is fine");
        u.apps = 3;
        assert!(q
            .exceeded_by(&u)
            .unwrap()
            .contains("3 apps, the quota is 2"));
        u.apps = 1;
        u.memory_bytes = 2 << 30;
        assert!(q.exceeded_by(&u).unwrap().contains("2048 MiB of memory"));
        assert!(check_project_name("shop").is_ok());
        assert!(check_project_name("Shop!").is_err());
    }
}
