//! Static sites: a directory with `index.html`, served by berth's own static file server.

use super::{BuildPlan, DetectError, Provider, BERTH_IN_CONTAINER};
use crate::tree::SourceTree;
use std::collections::BTreeMap;

pub struct StaticSite;

impl Provider for StaticSite {
    fn name(&self) -> &'static str {
        "static"
    }

    fn detect(&self, dir: &SourceTree) -> bool {
        dir.is_file("index.html")
    }

    fn plan(&self, _dir: &SourceTree) -> Result<BuildPlan, DetectError> {
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
