//! A declarative platform: a directory with one subdirectory per app (its source and
//! berth.toml), planned against what runs (`berth plan -f DIR`) and applied (`berth apply -f
//! DIR`). The plan names each change field by field; berth.toml's fields are compared
//! flattened (`processes.web.instances`, `env.MODE`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One field's change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldChange {
    /// Dotted path in berth.toml (`processes.web.instances`), or `source` for the code.
    pub field: String,
    /// The value applied before (`None`: not set).
    pub before: Option<String>,
    /// The value declared now (`None`: removed).
    pub after: Option<String>,
}

/// What a plan does to one app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AppChange {
    pub app: String,
    /// `create`, `update`, `adopt` (an app made by hand, from now on declared), or `delete`
    /// (with prune).
    pub action: String,
    /// The app's directory in the platform definition (not for deletes).
    pub dir: Option<String>,
    /// The fields that change.
    pub fields: Vec<FieldChange>,
}

/// `POST /v1/platform/plan`: the changes, and the apps that stay as they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlanView {
    pub changes: Vec<AppChange>,
    pub unchanged: Vec<String>,
}

/// Body of `POST /v1/gitops`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GitopsAdd {
    /// The repository (https, http, git or ssh).
    pub url: String,
    /// The platform directory inside it (default: its root).
    #[serde(default)]
    pub path: String,
    /// The branch whose commits are applied (default: main).
    #[serde(default = "main")]
    pub branch: String,
    /// Its name (default: the repository's).
    #[serde(default)]
    pub name: Option<String>,
    /// Also delete the apps it made that a commit no longer declares.
    #[serde(default)]
    pub prune: bool,
}

fn main() -> String {
    "main".into()
}

/// A GitOps source as shown (never its webhook secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GitopsView {
    pub name: String,
    pub url: String,
    pub path: String,
    pub branch: String,
    pub prune: bool,
    pub created_by: String,
    pub created_at: i64,
    /// The last commit acted on.
    pub last_commit: Option<String>,
    /// `applied: …`, `refused: …` (an invalid definition: nothing applied), `failed: …`,
    /// `applying`.
    pub last_outcome: Option<String>,
    pub last_at: Option<i64>,
    /// `add`, `poll`, `github`, `gitea`, `gitlab`.
    pub last_trigger: Option<String>,
    /// What differs now from the last commit applied (changes made by hand), when it was
    /// applied.
    pub drift: Vec<AppChange>,
}

/// Answer of `POST /v1/gitops`: the source and its webhook secret, shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GitopsAdded {
    pub source: GitopsView,
    pub webhook_secret: String,
}

/// berth.toml as `field → value` (tables flattened with dots, arrays and scalars as TOML).
pub fn flatten(value: &toml::Value) -> BTreeMap<String, String> {
    fn walk(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", value, &mut out);
    out
}

/// The fields that differ between two flattened specs, in order.
pub fn diff(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Vec<FieldChange> {
    let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| FieldChange {
            field: k.clone(),
            before: before.get(k).cloned(),
            after: after.get(k).cloned(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(text: &str) -> BTreeMap<String, String> {
        flatten(&toml::from_str::<toml::Value>(text).unwrap())
    }

    #[test]
    fn specs_flatten_and_differ_field_by_field() {
        let a = flat(
            "name = \"shop\"\n[processes.web]\ninstances = 2\n[env]\nMODE = \"a\"\nOLD = \"x\"\n",
        );
        let b = flat(
            "name = \"shop\"\n[processes.web]\ninstances = 3\n[env]\nMODE = \"a\"\nNEW = \"y\"\n",
        );
        assert_eq!(a["processes.web.instances"], "2");
        assert_eq!(a["env.MODE"], "\"a\"");
        let d = diff(&a, &b);
        let fields: Vec<&str> = d.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["env.NEW", "env.OLD", "processes.web.instances"]);
        assert_eq!(d[2].before.as_deref(), Some("2"));
        assert_eq!(d[2].after.as_deref(), Some("3"));
        assert_eq!(d[0].before, None);
        assert_eq!(d[1].after, None);
        assert!(diff(&a, &a).is_empty());
    }
}
