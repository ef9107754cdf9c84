//! A person's sign-in (`berth login`): the OIDC provider's ID token for each platform they
//! signed in to, in `$XDG_CONFIG_HOME/berth/credentials.json` (else
//! `~/.config/berth/credentials.json`), readable by them alone. An expired one is ignored.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// One platform's sign-in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Login {
    /// Who the provider says they are.
    pub identity: String,
    /// The ID token, sent as the bearer token.
    pub id_token: String,
    /// Unix seconds when it expires.
    pub expires_at: i64,
}

/// Where sign-ins are kept.
pub fn path() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| "/root".into())
                .join(".config")
        });
    base.join("berth").join("credentials.json")
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn read_all() -> Result<BTreeMap<String, Login>> {
    match std::fs::read_to_string(path()) {
        Ok(text) => {
            serde_json::from_str(&text).with_context(|| format!("reading {}", path().display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path().display())),
    }
}

fn write_all(all: &BTreeMap<String, Login>) -> Result<()> {
    let file = path();
    let dir = file.parent().context("credentials path")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = file.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(serde_json::to_string_pretty(all)?.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &file).with_context(|| format!("writing {}", file.display()))?;
    Ok(())
}

/// The unexpired sign-in for the API at `base`.
pub fn load(base: &str) -> Result<Option<Login>> {
    Ok(read_all()?.remove(base).filter(|l| l.expires_at > now()))
}

/// Keeps a sign-in for the API at `base`.
pub fn save(base: &str, login: Login) -> Result<()> {
    let mut all = read_all()?;
    all.insert(base.to_string(), login);
    write_all(&all)
}

/// Forgets the sign-in for the API at `base`; whether there was one.
pub fn forget(base: &str) -> Result<bool> {
    let mut all = read_all()?;
    let had = all.remove(base).is_some();
    if had {
        write_all(&all)?;
    }
    Ok(had)
}
