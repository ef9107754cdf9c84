//! API types of git connections: an app deployed from a branch of a remote repository on
//! every push (webhooks from GitHub, Gitea/Forgejo and GitLab, and polling as a fallback).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Body of `POST /v1/apps/{app}/git`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GitConnect {
    /// The repository (https, http, git or ssh).
    pub url: String,
    /// The branch whose pushes deploy (default: main).
    #[serde(default = "main")]
    pub branch: String,
}

fn main() -> String {
    "main".into()
}

/// An app's git connection as shown (never its webhook secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GitConnectionView {
    pub app: String,
    pub url: String,
    pub branch: String,
    /// Who connected it.
    pub created_by: String,
    /// Unix seconds.
    pub created_at: i64,
    /// The last commit of the branch berth acted on.
    pub last_commit: Option<String>,
    /// What came of it (`deployed v3`, `failed: …`, `deploying`).
    pub last_outcome: Option<String>,
    /// Unix seconds of that.
    pub last_at: Option<i64>,
    /// What triggered it (`github`, `gitea`, `gitlab`, `poll`, `connect`).
    pub last_trigger: Option<String>,
    /// Webhook URLs by provider, relative to the API (`/hooks/github`).
    pub hooks: BTreeMap<String, String>,
}

/// Answer of `POST /v1/apps/{app}/git`: the connection and its webhook secret, shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GitConnected {
    pub connection: GitConnectionView,
    /// The secret the webhooks are signed with (GitHub, Gitea, Forgejo) or carry as their
    /// token (GitLab). Shown this once.
    pub webhook_secret: String,
}

/// Body of `POST /v1/apps/{app}/git/key`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeployKeyRequest {
    /// Replace the app's key with a new one (the old one stops working once removed from
    /// the repository; berth forgets it at once).
    #[serde(default)]
    pub rotate: bool,
}

/// An app's deploy key: the public half, to add to the repository (read-only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeployKeyView {
    pub app: String,
    /// `ssh-ed25519 AAAA… berth deploy key for APP`, as the repository's deploy key.
    pub public_key: String,
    /// `SHA256:…`, as git hosts show it.
    pub fingerprint: String,
    /// Unix seconds.
    pub created_at: i64,
    /// True when this call made it.
    pub created: bool,
}
