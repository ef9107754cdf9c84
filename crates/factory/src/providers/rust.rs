//! Rust: `Cargo.toml` → `cargo build --release` with the host's toolchain; the binary named
//! after the package is copied into the image. Registry and target directory live in the
//! build cache, so an unchanged rebuild compiles nothing.

use super::{BuildPlan, DetectError, Provider};
use crate::tree::SourceTree;
use std::collections::BTreeMap;

pub struct Rust;

impl Provider for Rust {
    fn name(&self) -> &'static str {
        "rust"
    }

    fn detect(&self, dir: &SourceTree) -> bool {
        dir.is_file("Cargo.toml")
    }

    fn plan(&self, dir: &SourceTree) -> Result<BuildPlan, DetectError> {
        let bad = |message: String| DetectError::BadFile {
            file: "Cargo.toml".into(),
            message,
        };
        let text = dir.read_spec("Cargo.toml")?.unwrap_or_default();
        let manifest: toml::Value =
            toml::from_str(&text).map_err(|e| bad(e.message().to_string()))?;
        let name = manifest
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
            .ok_or_else(|| bad("no [package] name; workspaces need a Procfile".into()))?;
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(bad(format!(
                "package name {name:?} is not a valid crate name"
            )));
        }
        let mut env = BTreeMap::new();
        env.insert("CARGO_HOME".into(), "/cache/cargo".into());
        env.insert("CARGO_TARGET_DIR".into(), "/cache/target".into());
        let mut processes = BTreeMap::new();
        processes.insert("web".into(), format!("/app/.berth/bin/{name}"));
        Ok(BuildPlan {
            provider: "rust".into(),
            build_commands: vec![
                "cargo build --release".into(),
                format!("mkdir -p .berth/bin && cp /cache/target/release/{name} .berth/bin/"),
            ],
            processes,
            release_command: None,
            test_command: None,
            env,
        })
    }
}
