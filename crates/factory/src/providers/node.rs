//! Node.js: `package.json` → `npm ci` (with a lockfile) or `npm install`, with the host's
//! node and npm; `npm start` runs the app. `node_modules` is cached per lockfile.

use super::{cached_install, BuildPlan, DetectError, Provider};
use std::collections::BTreeMap;
use std::path::Path;

pub struct Node;

pub(super) fn build_only(dir: &Path) -> BuildPlan {
    let (keys, install): (&[&str], &str) = if dir.join("package-lock.json").exists() {
        (
            &["package.json", "package-lock.json"],
            "npm ci --no-audit --no-fund",
        )
    } else {
        (&["package.json"], "npm install --no-audit --no-fund")
    };
    let mut env = BTreeMap::new();
    env.insert("NODE_ENV".into(), "production".into());
    BuildPlan {
        provider: "node".into(),
        build_commands: vec![cached_install("node_modules", keys, install)],
        processes: BTreeMap::new(),
        release_command: None,
        test_command: None,
        env,
    }
}

impl Provider for Node {
    fn name(&self) -> &'static str {
        "node"
    }

    fn detect(&self, dir: &Path) -> bool {
        dir.join("package.json").is_file()
    }

    fn plan(&self, dir: &Path) -> Result<BuildPlan, DetectError> {
        let text = std::fs::read_to_string(dir.join("package.json")).map_err(|e| {
            DetectError::BadFile {
                file: "package.json".into(),
                message: e.to_string(),
            }
        })?;
        let pkg: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| DetectError::BadFile {
                file: "package.json".into(),
                message: format!("line {}: {e}", e.line()),
            })?;
        let mut plan = build_only(dir);
        let web = if pkg["scripts"]["start"].is_string() {
            "npm start".to_string()
        } else if let Some(main) = pkg["main"].as_str() {
            format!("node {main}")
        } else if dir.join("server.js").is_file() {
            "node server.js".into()
        } else if dir.join("index.js").is_file() {
            "node index.js".into()
        } else {
            return Err(DetectError::NoWebProcess {
                provider: "node".into(),
                hint: "add a `start` script to package.json, or a Procfile with a `web:` line"
                    .into(),
            });
        };
        plan.processes.insert("web".into(), web);
        Ok(plan)
    }
}
