//! `berth.toml`: what only berth knows about an app (its name, health check, process
//! commands and instance counts). Read with `deny_unknown_fields` so a typo is an error,
//! then validated as a whole so that every problem is reported at once.

use crate::names::{validate_process_type, AppName};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Default health-check timeout: how long a new instance has to answer before the deploy fails.
pub const DEFAULT_HEALTH_TIMEOUT_SECS: u64 = 30;
/// Most instances of one process type on one machine.
pub const MAX_INSTANCES: u32 = 16;

/// The contents of `berth.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BerthToml {
    /// App name; defaults to the directory's name.
    pub name: Option<String>,
    /// Health check of new instances before traffic moves to them.
    pub health: HealthToml,
    /// Process types: command override and instance count.
    pub processes: BTreeMap<String, ProcessToml>,
    /// Environment set at build and run time (overridden by `berth env set`).
    pub env: BTreeMap<String, String>,
}

/// `[health]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthToml {
    /// Path to GET; when set the instance must answer 2xx or 3xx. Unset: any HTTP answer.
    pub path: Option<String>,
    /// Seconds a new instance has to become healthy.
    pub timeout_secs: Option<u64>,
}

/// `[processes.<type>]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessToml {
    /// Command, run with `sh -c`; overrides the detected or Procfile command.
    pub command: Option<String>,
    /// How many instances to run.
    pub instances: Option<u32>,
}

/// A `berth.toml` that could not be read; names the file, line and field where known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("berth.toml: {0}")]
pub struct SpecError(pub String);

/// The health check a deploy applies to new instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// Path to GET, or `None` for "any HTTP response".
    pub path: Option<String>,
    /// Seconds allowed.
    pub timeout_secs: u64,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            path: None,
            timeout_secs: DEFAULT_HEALTH_TIMEOUT_SECS,
        }
    }
}

impl BerthToml {
    /// Parses and validates `berth.toml` text. Errors carry line and column from the TOML
    /// parser, or the dotted field path from validation; all validation errors are joined.
    pub fn parse(text: &str) -> Result<Self, SpecError> {
        let parsed: BerthToml = toml::from_str(text).map_err(|e| {
            let mut msg = e.message().to_string();
            if let Some(span) = e.span() {
                let line = text[..span.start.min(text.len())].lines().count().max(1);
                let line = if text[..span.start.min(text.len())].ends_with('\n') {
                    line + 1
                } else {
                    line
                };
                msg = format!("line {line}: {msg}");
            }
            SpecError(msg)
        })?;
        let problems = parsed.validate();
        if problems.is_empty() {
            Ok(parsed)
        } else {
            Err(SpecError(problems.join("; ")))
        }
    }

    /// Every problem found, each naming its field.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(name) = &self.name {
            if let Err(e) = AppName::parse(name) {
                problems.push(format!("name: {e}"));
            }
        }
        if let Some(path) = &self.health.path {
            if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                problems.push(format!(
                    "health.path: {path:?} must start with '/' and contain no spaces"
                ));
            }
        }
        if let Some(t) = self.health.timeout_secs {
            if !(1..=600).contains(&t) {
                problems.push(format!(
                    "health.timeout_secs: {t} must be between 1 and 600"
                ));
            }
        }
        for (kind, p) in &self.processes {
            if let Err(e) = validate_process_type(kind) {
                problems.push(format!("processes.{kind}: {e}"));
            }
            if let Some(n) = p.instances {
                if n > MAX_INSTANCES {
                    problems.push(format!(
                        "processes.{kind}.instances: {n} is more than the maximum of {MAX_INSTANCES}"
                    ));
                }
                if kind == "release" {
                    problems.push(
                        "processes.release.instances: the release command runs once per deploy; it has no instances"
                            .into(),
                    );
                }
            }
            if let Some(c) = &p.command {
                if c.trim().is_empty() {
                    problems.push(format!("processes.{kind}.command: is empty"));
                }
            }
        }
        for key in self.env.keys() {
            if let Err(e) = crate::names::validate_env_key(key) {
                problems.push(format!("env.{key}: {e}"));
            }
        }
        problems
    }

    /// The health check this file asks for, with defaults filled in.
    pub fn health_check(&self) -> HealthCheck {
        HealthCheck {
            path: self.health.path.clone(),
            timeout_secs: self
                .health
                .timeout_secs
                .unwrap_or(DEFAULT_HEALTH_TIMEOUT_SECS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_file() {
        let t = BerthToml::parse(
            r#"
name = "shop"
[health]
path = "/healthz"
timeout_secs = 10
[processes.web]
instances = 2
[processes.worker]
command = "python3 worker.py"
[env]
MODE = "prod"
"#,
        )
        .unwrap();
        assert_eq!(t.name.as_deref(), Some("shop"));
        assert_eq!(t.health_check().path.as_deref(), Some("/healthz"));
        assert_eq!(t.processes["web"].instances, Some(2));
        assert_eq!(t.env["MODE"], "prod");
    }

    #[test]
    fn unknown_field_names_line_and_field() {
        let e = BerthToml::parse("name = \"a\"\n[health]\npaht = \"/x\"\n").unwrap_err();
        let s = e.to_string();
        assert!(s.contains("line 3"), "{s}");
        assert!(s.contains("paht"), "{s}");
    }

    #[test]
    fn validation_reports_every_problem() {
        let e = BerthToml::parse(
            "name = \"Bad Name\"\n[health]\ntimeout_secs = 0\n[processes.web]\ninstances = 99\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("name:"), "{e}");
        assert!(e.contains("health.timeout_secs"), "{e}");
        assert!(e.contains("processes.web.instances"), "{e}");
    }

    #[test]
    fn wrong_type_is_reported() {
        let e = BerthToml::parse("[processes.web]\ninstances = \"two\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
    }
}
