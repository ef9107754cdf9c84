//! Language providers: each looks at a source directory and, if it recognises it, proposes a
//! [`BuildPlan`]. The first match wins, in the order of [`all`]; a `Procfile` then overrides
//! the process commands and `berth.toml` overrides both.

mod node;
mod python;
mod rust;
mod static_site;

use crate::plan::BuildPlan;
use crate::tree::{SourceTree, TreeError};
use berth_core::model::{RELEASE_PROCESS, TEST_PROCESS};
use berth_core::procfile;
use berth_core::spec::BerthToml;
use std::collections::BTreeMap;
use std::path::Path;

/// Path inside the container of berth's own binary (static server, container init).
pub const BERTH_IN_CONTAINER: &str = "/.berth/berth";

/// Why nothing could be planned.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(
        "berth does not know how to build this directory: it looked for Procfile, \
         requirements.txt, pyproject.toml, package.json, Cargo.toml, index.html and a Dockerfile and found none"
    )]
    Unrecognised,
    #[error(transparent)]
    Procfile(#[from] procfile::ProcfileError),
    #[error("{file}: {message}")]
    BadFile { file: String, message: String },
    /// A file berth reads is not a regular file inside the source (or is too large).
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error("{provider} app has no web process: {hint}")]
    NoWebProcess { provider: String, hint: String },
}

/// One language provider.
pub trait Provider {
    /// Short name used in plans and logs.
    fn name(&self) -> &'static str;
    /// Whether this provider recognises the directory.
    fn detect(&self, dir: &SourceTree) -> bool;
    /// The plan for a recognised directory.
    fn plan(&self, dir: &SourceTree) -> Result<BuildPlan, DetectError>;
}

/// Every provider, in detection order.
pub fn all() -> Vec<Box<dyn Provider>> {
    vec![
        Box::new(python::Python),
        Box::new(node::Node),
        Box::new(rust::Rust),
        Box::new(static_site::StaticSite),
    ]
}

fn plan_with_no_language(processes: BTreeMap<String, String>) -> BuildPlan {
    BuildPlan {
        provider: "procfile".into(),
        build_commands: vec![],
        processes,
        release_command: None,
        test_command: None,
        env: BTreeMap::new(),
    }
}

/// Detects how to build `dir` and applies `Procfile` and `berth.toml` overrides. Every file
/// is read beneath `dir` ([`SourceTree`]): a link out of it is never followed.
pub fn detect(dir: &Path, toml: &BerthToml) -> Result<BuildPlan, DetectError> {
    let tree = SourceTree::open(dir)?;
    let dir = &tree;
    let procfile = match dir.read_spec("Procfile")? {
        Some(text) => Some(procfile::parse(&text)?),
        None => None,
    };
    let language = all().into_iter().find(|p| p.detect(dir));
    let mut plan = match (&language, &procfile) {
        (Some(p), _) => match p.plan(dir) {
            Ok(plan) => plan,
            // A Procfile may supply the web command the provider could not guess.
            Err(DetectError::NoWebProcess { provider, .. }) if procfile.is_some() => BuildPlan {
                provider,
                ..language_plan_without_processes(p.as_ref(), dir)?
            },
            Err(e) => return Err(e),
        },
        (None, Some(_)) => plan_with_no_language(BTreeMap::new()),
        (None, None) => return Err(DetectError::Unrecognised),
    };
    if let Some(mut pf) = procfile {
        plan.release_command = pf.remove(RELEASE_PROCESS);
        plan.test_command = pf.remove(TEST_PROCESS);
        plan.processes = pf;
    }
    for (kind, p) in &toml.processes {
        if let Some(cmd) = &p.command {
            if kind == RELEASE_PROCESS {
                plan.release_command = Some(cmd.clone());
            } else {
                plan.processes.insert(kind.clone(), cmd.clone());
            }
        }
    }
    if let Some(test) = &toml.deploy.test {
        plan.test_command = Some(test.clone());
    }
    if plan.processes.is_empty() {
        return Err(DetectError::NoWebProcess {
            provider: plan.provider,
            hint: "add a Procfile with a `web:` line".into(),
        });
    }
    Ok(plan)
}

fn language_plan_without_processes(
    p: &dyn Provider,
    dir: &SourceTree,
) -> Result<BuildPlan, DetectError> {
    // Providers that fail only for want of a start command still know their build steps.
    match p.name() {
        "python" => Ok(python::build_only(dir)),
        "node" => Ok(node::build_only(dir)),
        _ => p.plan(dir),
    }
}

/// The shell of an install step cached by its key files' digest: restored from the cache
/// when they are unchanged, else run and kept (an install that makes no directory — a
/// package with no dependencies — keeps an empty one).
pub(crate) fn cached_install(dir: &str, key_files: &[&str], install: &str) -> String {
    let key_files = key_files.join(" ");
    format!(
        "key=$(cat {key_files} 2>/dev/null | sha256sum | cut -c1-16); \
         if [ -d /cache/{dir}-$key ]; then echo \"-----> Restoring {dir} from the build cache\"; cp -a /cache/{dir}-$key {dir}; \
         else {install} && mkdir -p {dir} && rm -rf /cache/{dir}-* && cp -a {dir} /cache/{dir}-$key; fi"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn example(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples")
            .join(name)
    }

    fn toml_of(dir: &Path) -> BerthToml {
        std::fs::read_to_string(dir.join("berth.toml"))
            .map(|t| BerthToml::parse(&t).unwrap())
            .unwrap_or_default()
    }

    #[test]
    fn plans_for_every_example() {
        for name in ["hello", "static-site", "python-app", "node-app", "rust-app"] {
            let dir = example(name);
            let plan = detect(&dir, &toml_of(&dir)).unwrap_or_else(|e| panic!("{name}: {e}"));
            insta::assert_json_snapshot!(name, plan);
        }
    }

    #[test]
    fn empty_directory_says_what_it_looked_for() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("README.md"), "hi").unwrap();
        let e = detect(d.path(), &BerthToml::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("Procfile") && e.contains("package.json"), "{e}");
    }

    #[test]
    fn bad_procfile_names_its_line() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("Procfile"), "web: ok\nnonsense\n").unwrap();
        let e = detect(d.path(), &BerthToml::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("Procfile line 2"), "{e}");
    }

    #[test]
    fn a_procfile_out_of_the_source_is_refused_by_name_never_read() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "web: TOP-SECRET\n").unwrap();
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("index.html"), "hi").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), d.path().join("Procfile"))
            .unwrap();
        let e = detect(d.path(), &BerthToml::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("Procfile") && !e.contains("TOP-SECRET"), "{e}");
        // package.json through a link out is not a Node app, nor read.
        std::fs::remove_file(d.path().join("Procfile")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", d.path().join("package.json")).unwrap();
        let plan = detect(d.path(), &BerthToml::default()).unwrap();
        assert_eq!(plan.provider, "static");
    }

    #[test]
    fn python_without_entry_point_asks_for_a_procfile() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("requirements.txt"), "six\n").unwrap();
        let e = detect(d.path(), &BerthToml::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("Procfile"), "{e}");
    }

    #[test]
    fn procfile_overrides_provider_and_release_is_split_off() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("index.html"), "hi").unwrap();
        std::fs::write(
            d.path().join("Procfile"),
            "web: ./serve\nrelease: ./migrate\n",
        )
        .unwrap();
        let plan = detect(d.path(), &BerthToml::default()).unwrap();
        assert_eq!(plan.processes["web"], "./serve");
        assert_eq!(plan.release_command.as_deref(), Some("./migrate"));
        assert!(!plan.processes.contains_key("release"));
        // A `test:` line is the tests, not a process; berth.toml's [deploy] test wins.
        std::fs::write(d.path().join("Procfile"), "web: ./serve\ntest: ./check\n").unwrap();
        let plan = detect(d.path(), &BerthToml::default()).unwrap();
        assert_eq!(plan.test_command.as_deref(), Some("./check"));
        assert!(!plan.processes.contains_key("test"));
        let toml = BerthToml::parse("[deploy]\ntest = \"./check --all\"\n").unwrap();
        let plan = detect(d.path(), &toml).unwrap();
        assert_eq!(plan.test_command.as_deref(), Some("./check --all"));
    }
}
