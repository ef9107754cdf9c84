//! Node.js: `package.json` → `npm ci` (with a lockfile) or `npm install`, with the host's
//! node and npm; `npm start` runs the app. `node_modules` is cached per lockfile.

use super::{cached_install, BuildPlan, DetectError, Provider};
use crate::tree::SourceTree;
use std::collections::BTreeMap;

pub struct Node;

pub(super) fn build_only(dir: &SourceTree) -> BuildPlan {
    let (keys, install): (&[&str], &str) = if dir.exists("package-lock.json") {
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

    fn detect(&self, dir: &SourceTree) -> bool {
        dir.is_file("package.json")
    }

    fn plan(&self, dir: &SourceTree) -> Result<BuildPlan, DetectError> {
        // Detected as a regular file inside; gone meanwhile reads as empty (a parse error).
        let text = dir.read_spec("package.json")?.unwrap_or_default();
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
        } else if dir.is_file("server.js") {
            "node server.js".into()
        } else if dir.is_file("index.js") {
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
