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
}

/// A tenant as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TenantView {
    pub name: String,
    pub created_at: i64,
    pub quota: Quota,
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
