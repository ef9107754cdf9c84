//! Python: `requirements.txt` or `pyproject.toml` → a virtualenv in `/app/.venv` built with
//! the host's Python and pip, cached per dependency set.

use super::{cached_install, BuildPlan, DetectError, Provider};
use crate::tree::SourceTree;
use std::collections::BTreeMap;

pub struct Python;

pub(super) fn build_only(dir: &SourceTree) -> BuildPlan {
    let (key, install) = if dir.exists("requirements.txt") {
        (
            "requirements.txt",
            "/app/.venv/bin/pip install --no-input -r requirements.txt",
        )
    } else {
        ("pyproject.toml", "/app/.venv/bin/pip install --no-input .")
    };
    let mut env = BTreeMap::new();
    env.insert(
        "PATH".into(),
        "/app/.venv/bin:/usr/local/bin:/usr/bin:/bin".into(),
    );
    env.insert("PYTHONUNBUFFERED".into(), "1".into());
    env.insert("VIRTUAL_ENV".into(), "/app/.venv".into());
    BuildPlan {
        provider: "python".into(),
        build_commands: vec![cached_install(
            ".venv",
            &[key],
            &format!("python3 -m venv .venv && {install}"),
        )],
        processes: BTreeMap::new(),
        release_command: None,
        test_command: None,
        env,
    }
}

impl Provider for Python {
    fn name(&self) -> &'static str {
        "python"
    }

    fn detect(&self, dir: &SourceTree) -> bool {
        dir.is_file("requirements.txt") || dir.is_file("pyproject.toml")
    }

    fn plan(&self, dir: &SourceTree) -> Result<BuildPlan, DetectError> {
        let mut plan = build_only(dir);
        let entry = ["app.py", "main.py", "server.py"]
            .into_iter()
            .find(|f| dir.is_file(f))
            .ok_or_else(|| DetectError::NoWebProcess {
                provider: "python".into(),
                hint: "add app.py, main.py or server.py, or a Procfile with a `web:` line".into(),
            })?;
        plan.processes
            .insert("web".into(), format!("python {entry}"));
        Ok(plan)
    }
}
