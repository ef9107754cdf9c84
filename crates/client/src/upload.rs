//! A directory made ready to deploy: its app name (flag, berth.toml, or the directory's
//! name), the packed source (gzip tar, ignore files honoured), and the git commit it is.

use anyhow::{anyhow, bail, Result};
use berth_core::spec::BerthToml;
use berth_core::AppName;
use std::path::Path;

/// A packed directory and where it goes.
#[derive(Debug)]
pub struct Upload {
    pub app: AppName,
    pub archive: Vec<u8>,
    /// The git commit of a clean checkout.
    pub commit: Option<String>,
    /// The API path to post it to (with the commit and its time).
    pub path: String,
}

/// berth.toml and score.yaml of `dir`, read beneath it (regular files of at most 1 MiB; a
/// link out of the directory is refused by name, never followed): this runs on the
/// platform too, for pushes and MCP git deploys.
fn local_toml(dir: &Path) -> Result<BerthToml> {
    let tree = berth_factory::tree::SourceTree::open(dir).map_err(|e| anyhow!("{e}"))?;
    let read = |name: &str| {
        tree.read_spec(name)
            .map_err(|e| anyhow!("{}: {e}", dir.display()))
    };
    let path = dir.join("berth.toml");
    let mut toml = match read("berth.toml")? {
        Some(text) => {
            BerthToml::parse(&text).map_err(|e| anyhow!("{}: {}", path.display(), e.0))?
        }
        None => BerthToml::default(),
    };
    // A score.yaml names its workload; its problems are refused here, before the upload.
    let score = dir.join("score.yaml");
    if let Some(text) = read("score.yaml")? {
        let parsed = berth_core::score::Score::parse(&text)
            .map_err(|problems| anyhow!("{}: {}", score.display(), problems.join("; ")))?;
        parsed.apply_to(&mut toml);
    }
    Ok(toml)
}

/// Packs `dir` for a deploy of `app` (else berth.toml's name, else score.yaml's, else the
/// directory's name),
/// refusing more than `limit` bytes.
pub fn prepare(dir: &Path, app: Option<String>, limit: u64) -> Result<Upload> {
    let dir = dir
        .canonicalize()
        .map_err(|e| anyhow!("{}: {e}", dir.display()))?;
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let toml = local_toml(&dir)?;
    let name = match app.or(toml.name.clone()) {
        Some(n) => n,
        None => AppName::suggest_from(
            &dir.file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default(),
        ),
    };
    let app = AppName::parse(&name).map_err(|e| {
        anyhow!(
            "{e}\nhint: app names are DNS labels (lowercase letters, digits, '-'); pass --app NAME"
        )
    })?;
    let archive = berth_factory::source::pack(&dir, limit).map_err(|e| match e {
        berth_factory::source::SourceError::TooLarge { limit, .. } => anyhow!(
            "{} packs to more than the upload limit of {limit} bytes\nhint: exclude build outputs and dependencies with .gitignore or .dockerignore",
            dir.display()
        ),
        other => anyhow!("packing {}: {other}", dir.display()),
    })?;
    let commit = berth_factory::source::git_commit(&dir);
    let mut path = format!("/v1/apps/{app}/deploys");
    if let Some(c) = &commit {
        path.push_str(&format!("?commit={c}"));
        if let Some(t) = berth_factory::source::git_commit_time(&dir) {
            path.push_str(&format!("&commit_time={t}"));
        }
    }
    Ok(Upload {
        app,
        archive,
        commit,
        path,
    })
}
