//! Who may call what: API tokens' roles, the rule that maps a role and an endpoint to a
//! yes or no, and the shapes of tokens and audit entries in the API.

use serde::{Deserialize, Serialize};

/// What a token may do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads apps, releases, logs, metrics, SLOs, DORA and alerts.
    Viewer,
    /// Also deploys, rolls back and changes apps: env, secrets, domains, volumes, databases.
    Deployer,
    /// Everything: tokens, the audit log, backups, key rotation.
    Admin,
}

impl Role {
    /// The stable string stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Deployer => "deployer",
            Self::Admin => "admin",
        }
    }

    /// Parses `viewer`, `deployer` or `admin`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "viewer" => Ok(Self::Viewer),
            "deployer" => Ok(Self::Deployer),
            "admin" => Ok(Self::Admin),
            other => Err(format!(
                "{other:?} is not a role; use viewer, deployer or admin"
            )),
        }
    }

    /// The least role that may call `method` on the endpoint `route` (a route template
    /// such as `/v1/apps/{app}/deploys`).
    pub fn needed(method: &str, route: &str) -> Role {
        // The MCP endpoint: any token may talk; each tool's API call is judged by itself.
        if route == "/mcp" || route.starts_with("/mcp/") {
            return Role::Viewer;
        }
        // A git fetch and a plan come as POSTs; they only read.
        if (route.starts_with("/git/") && route.ends_with("/git-upload-pack"))
            || route == "/v1/platform/plan"
        {
            return Role::Viewer;
        }
        // Anyone may see the projects they can reach; making them is an admin's.
        if route == "/v1/projects" && method == "GET" {
            return Role::Viewer;
        }
        let admin_only = [
            "/v1/tenants",
            "/v1/people",
            "/v1/registries",
            "/v1/projects",
            "/v1/tokens",
            "/v1/audit",
            "/v1/backups",
            "/v1/secrets/rotate-key",
            "/v1/gc",
            "/v1/dns",
            "/v1/gitops",
            "/ui/audit",
        ];
        if admin_only
            .iter()
            .any(|p| route == *p || route.starts_with(&format!("{p}/")))
        {
            return Role::Admin;
        }
        match method {
            "GET" | "HEAD" | "OPTIONS" => Role::Viewer,
            _ => Role::Deployer,
        }
    }

    /// Whether this role may call `method` on `route`.
    pub fn allows(self, method: &str, route: &str) -> bool {
        self >= Self::needed(method, route)
    }
}

/// Body of `POST /v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenCreate {
    /// A name for people to recognise it by (also the actor in the audit log).
    #[schema(pattern = "^[A-Za-z0-9._@-]{1,64}$")]
    pub name: String,
    pub role: Role,
    /// Limit the token to one project's apps (default: the whole platform).
    #[serde(default)]
    pub project: Option<String>,
    /// Limit the token to one tenant's projects (not with `project`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Seconds it stays valid; forever when absent.
    #[serde(default)]
    pub expires_in: Option<u64>,
}

/// A token as listed (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// `platform`, `tenant:NAME` for a token limited to one tenant's projects, or
    /// `project:NAME` for one limited to one project's apps.
    pub scope: String,
    pub created_at: i64,
    pub created_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
}

/// Answer of `POST /v1/tokens`: the token itself, this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenCreated {
    pub token: String,
    #[serde(flatten)]
    pub view: TokenView,
}

/// A token's name: 1–64 of letters, digits, `-`, `_`, `.`, `@`.
pub fn check_token_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "token name {name:?} must be 1-64 letters, digits, '-', '_', '.' or '@'"
        ))
    }
}

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Its place in the log (1, 2, …).
    pub seq: i64,
    /// Unix seconds.
    pub at: i64,
    /// The token's name (`admin` for the bootstrap token).
    pub actor: String,
    pub token_id: String,
    /// What the client said it was (`berth-cli`, an MCP client, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    pub request_id: String,
    /// The caller's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `POST /v1/apps/{app}/deploys`, …
    pub action: String,
    /// The app (or token, backup) acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// `ok`, `succeeded`, `failed`, `refused` (bad input), `denied` (not allowed).
    pub outcome: String,
    /// HTTP status of the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// What it made: `release`, `image`.
    #[serde(default)]
    pub refs: serde_json::Map<String, serde_json::Value>,
    /// The error's message, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_nest_and_admin_endpoints_stay_admin_only() {
        let route = "/v1/apps/{app}/deploys";
        assert!(!Role::Viewer.allows("POST", route));
        assert!(Role::Deployer.allows("POST", route));
        assert!(Role::Viewer.allows("GET", "/v1/apps/{app}/logs"));
        for admin in [
            "/v1/tokens",
            "/v1/tokens/{name}",
            "/v1/audit",
            "/v1/backups",
        ] {
            assert!(!Role::Deployer.allows("GET", admin), "{admin}");
            assert!(!Role::Deployer.allows("POST", admin), "{admin}");
            assert!(Role::Admin.allows("DELETE", admin), "{admin}");
        }
        assert!(!Role::Viewer.allows("DELETE", "/v1/apps/{app}"));
        assert!(Role::Viewer.allows("POST", "/mcp"));
        assert!(Role::Viewer.allows("GET", "/v1/projects"));
        assert!(!Role::Deployer.allows("POST", "/v1/projects"));
        assert_eq!(Role::parse("deployer"), Ok(Role::Deployer));
        assert!(Role::parse("root")
            .unwrap_err()
            .contains("viewer, deployer or admin"));
        assert!(check_token_name("ci-deploy@shop").is_ok());
        assert!(check_token_name("a b").is_err());
        assert!(check_token_name("").is_err());
    }
}

/// Body of `POST /v1/people`: a role for a person who signs in with the platform's OIDC
/// provider, named by the identity the provider vouches for (their verified email, else
/// their subject).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PersonAdd {
    /// e.g. `alice@example.com`.
    #[schema(pattern = "^[^\\s/]{1,254}$")]
    pub identity: String,
    pub role: Role,
    /// Limit them to one project's apps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Limit them to one tenant's projects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// A person with a role, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PersonView {
    pub identity: String,
    pub role: Role,
    /// `platform`, `tenant:NAME` or `project:NAME`.
    pub scope: String,
    pub created_at: i64,
    pub created_by: String,
}

/// An identity as people may be granted roles: printable, no spaces or slashes, at most
/// 254 characters (an email address's limit).
pub fn check_identity(identity: &str) -> Result<(), String> {
    let ok = !identity.is_empty()
        && identity.len() <= 254
        && identity
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '/' || (!c.is_ascii() && !c.is_control()));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "identity {identity:?} must be 1-254 printable characters without spaces or '/'"
        ))
    }
}

/// `GET /v1/login`: how people sign in to this platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LoginInfo {
    /// The OpenID Connect provider people sign in with, when one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcInfo>,
}

/// The platform's OpenID Connect provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OidcInfo {
    /// Issuer URL (its discovery document is `<issuer>/.well-known/openid-configuration`).
    pub issuer: String,
    /// The client id berth is registered under (a public client: PKCE, no secret).
    pub client_id: String,
}

/// Body of `POST /v1/login/token`: an authorization code the provider sent back to the
/// CLI's loopback listener, for the platform to exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginExchange {
    pub code: String,
    /// Where the browser came back to: `http://127.0.0.1:PORT/callback`.
    pub redirect_uri: String,
    /// The PKCE verifier of the sign-in.
    pub code_verifier: String,
}

/// Answer of `POST /v1/login/token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LoginToken {
    /// The provider's ID token: the bearer token for this platform until it expires.
    pub id_token: String,
}

/// `GET /v1/whoami`: who the caller is to the platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WhoAmI {
    /// The token's name, or the person's identity.
    pub name: String,
    pub role: Role,
    /// `platform`, `tenant:NAME` or `project:NAME`.
    pub scope: String,
    /// `token` or `oidc`.
    pub via: String,
}
