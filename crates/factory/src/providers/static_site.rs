//! Static sites: a directory with `index.html`, served by berth's own static file server.

use super::{BuildPlan, DetectError, Provider, BERTH_IN_CONTAINER};
use std::collections::BTreeMap;
use std::path::Path;

pub struct StaticSite;

impl Provider for StaticSite {
    fn name(&self) -> &'static str {
        "static"
    }

    fn detect(&self, dir: &Path) -> bool {
        dir.join("index.html").is_file()
    }

    fn plan(&self, _dir: &Path) -> Result<BuildPlan, DetectError> {
        let mut processes = BTreeMap::new();
        processes.insert(
            "web".into(),
            format!("{BERTH_IN_CONTAINER} serve-static --dir /app --port $PORT"),
        );
        Ok(BuildPlan {
            provider: "static".into(),
            build_commands: vec![],
            processes,
            release_command: None,
            test_command: None,
            env: BTreeMap::new(),
        })
    }
}
