//! Credentials for OCI registries berth pushes to: a user name and a password (or token)
//! per registry host, kept sealed like secrets; only the host and user name ever come out.

use serde::{Deserialize, Serialize};

/// Body of `POST /v1/registries` (`berth registry login`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryLogin {
    /// `host[:port]`, as in the registry address.
    #[schema(pattern = "^[a-z0-9.-]+(:[0-9]{1,5})?$")]
    pub host: String,
    pub username: String,
    /// Password or access token; sealed at once, never shown again.
    pub password: String,
}

impl std::fmt::Debug for RegistryLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryLogin")
            .field("host", &self.host)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A registry berth holds credentials for (never the password).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RegistryView {
    pub host: String,
    pub username: String,
    pub created_at: i64,
    pub created_by: String,
}

/// Checks a login: a registry host (`host[:port]`, lowercase), a user name and a password
/// of sane sizes.
pub fn check_login(login: &RegistryLogin) -> Result<(), String> {
    let (name, port) = match login.host.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (login.host.as_str(), None),
    };
    let host_ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    if !host_ok {
        return Err(format!(
            "{:?} is not a registry host: give HOST or HOST:PORT, e.g. registry.example.com",
            login.host
        ));
    }
    if login.username.is_empty()
        || login.username.len() > 256
        || login.username.contains(':')
        || login.username.chars().any(char::is_control)
    {
        return Err(
            "the user name must be 1-256 characters, without ':' or control characters".into(),
        );
    }
    if login.password.is_empty() || login.password.len() > 4096 {
        return Err("the password must be 1-4096 bytes".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_name_a_host_and_never_print_the_password() {
        let mut l = RegistryLogin {
            host: "127.0.0.1:5000".into(),
            username: "ci".into(),
            password: "hunter2-hunter2".into(),
        };
        assert!(check_login(&l).is_ok());
        assert!(!format!("{l:?}").contains("hunter2"));
        for bad in ["", "Registry.io", "a b", "host:0", "host:99999", "x/y"] {
            l.host = bad.into();
            assert!(check_login(&l).is_err(), "{bad}");
        }
    }
}
