//! Validated names. An app name ends up in host names, file paths, container ids and
//! network interface names, so it is held to the strictest of those: a DNS label.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("app name is empty")]
    Empty,
    #[error("app name {0:?} is longer than 63 characters")]
    TooLong(String),
    #[error("app name {name:?} contains {bad:?}; use lowercase letters, digits and '-' only")]
    BadCharacter { name: String, bad: char },
    #[error("app name {0:?} must start with a letter and end with a letter or digit")]
    BadEdge(String),
    #[error("app name {0:?} is the platform's own host name (berth.localhost, berth.<base domain>); pick another")]
    Reserved(String),
}

/// The label of the platform's own host name at the edge (`berth.localhost`,
/// `berth.<base domain>`): its API, git remotes and webhooks over HTTPS. No app has it.
pub const PLATFORM_LABEL: &str = "berth";

/// An app's name: a DNS label (lowercase ASCII letters, digits and `-`, at most 63
/// characters, starting with a letter, not ending with `-`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AppName(String);

/// Splits `PROJECT/APP` (an app named with its project) into the project and the app;
/// a plain name has no project. Neither part is checked here.
pub fn split_qualified(raw: &str) -> (Option<&str>, &str) {
    match raw.split_once('/') {
        Some((project, app)) => (Some(project), app),
        None => (None, raw),
    }
}

impl AppName {
    /// Checks `raw` and wraps it.
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        if raw.is_empty() {
            return Err(NameError::Empty);
        }
        if raw.len() > 63 {
            return Err(NameError::TooLong(raw.to_string()));
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(NameError::BadCharacter {
                name: raw.to_string(),
                bad,
            });
        }
        let first = raw.chars().next().unwrap_or('-');
        if !first.is_ascii_lowercase() || raw.ends_with('-') {
            return Err(NameError::BadEdge(raw.to_string()));
        }
        if raw == PLATFORM_LABEL {
            return Err(NameError::Reserved(raw.to_string()));
        }
        Ok(Self(raw.to_string()))
    }

    /// Derives a name from a directory name: lowercased, other characters turned into `-`.
    /// The result still has to pass [`AppName::parse`].
    pub fn suggest_from(dir_name: &str) -> String {
        let mut s: String = dir_name
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        while s.contains("--") {
            s = s.replace("--", "-");
        }
        s.trim_matches('-').to_string()
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for AppName {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<AppName> for String {
    fn from(value: AppName) -> Self {
        value.0
    }
}

/// Checks a process type name (`web`, `worker`, …): same rules as an app name, at most 20
/// characters since it is part of instance ids.
pub fn validate_process_type(raw: &str) -> Result<(), String> {
    if raw.is_empty() || raw.len() > 20 {
        return Err(format!(
            "process type {raw:?} must be 1 to 20 characters long"
        ));
    }
    AppName::parse(raw).map(|_| ()).map_err(|e| {
        format!(
            "process type {raw:?}: {}",
            e.to_string().replace("app name ", "")
        )
    })
}

/// Checks an environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn validate_env_key(raw: &str) -> Result<(), String> {
    let mut chars = raw.chars();
    let ok_first = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !ok_first || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "environment variable name {raw:?} is invalid; use letters, digits and '_', not starting with a digit"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["hello", "a", "my-app-2", &"a".repeat(63)] {
            assert!(AppName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_hostile_names() {
        for bad in [
            "",
            "Hello",
            "../etc",
            "a/b",
            "a b",
            "a;rm -rf",
            "$(id)",
            "a..b",
            "-a",
            "a-",
            "1abc",
            "ümlaut",
            &"a".repeat(64),
        ] {
            assert!(AppName::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn error_names_the_bad_character() {
        let err = AppName::parse("my_app").unwrap_err().to_string();
        assert!(err.contains("'_'"), "{err}");
    }

    #[test]
    fn suggests_names_from_directories() {
        assert_eq!(AppName::suggest_from("My_Site.v2"), "my-site-v2");
        assert_eq!(AppName::suggest_from("hello"), "hello");
    }

    #[test]
    fn env_keys() {
        assert!(validate_env_key("GREETING").is_ok());
        assert!(validate_env_key("_x1").is_ok());
        assert!(validate_env_key("1X").is_err());
        assert!(validate_env_key("A-B").is_err());
        assert!(validate_env_key("").is_err());
    }
}
