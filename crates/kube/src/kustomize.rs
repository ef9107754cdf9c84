//! Rendered objects as a kustomize tree Argo CD or Flux can read: `base/` holds every object
//! (one file each, by namespace) with the kustomization that lists them, and
//! `overlays/production/` builds on it — `kubectl kustomize OUT/overlays/production` yields
//! exactly the objects berth applies.

use crate::render::Manifest;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum KustomizeError {
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} exists and is not a tree berth rendered (no base/kustomization.yaml); pick an empty or earlier output directory")]
    NotOurs(PathBuf),
}

/// The overlay a tree starts with.
pub const OVERLAY: &str = "overlays/production";

fn write(path: &Path, text: &str) -> Result<(), KustomizeError> {
    let err = |source| KustomizeError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    std::fs::write(path, text).map_err(err)
}

/// Writes `objects` under `out` (replacing an earlier rendering there); the files written.
pub fn write_tree(out: &Path, objects: &[Manifest]) -> Result<Vec<PathBuf>, KustomizeError> {
    let base = out.join("base");
    if out.exists()
        && std::fs::read_dir(out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
        && !base.join("kustomization.yaml").exists()
    {
        return Err(KustomizeError::NotOurs(out.to_path_buf()));
    }
    if base.exists() {
        std::fs::remove_dir_all(&base).map_err(|source| KustomizeError::Write {
            path: base.clone(),
            source,
        })?;
    }
    let mut written = Vec::new();
    let mut resources = Vec::new();
    for m in objects {
        let dir = m.namespace.as_deref().unwrap_or("cluster");
        let rel = format!("{dir}/{}", m.file_name());
        let path = base.join(&rel);
        write(&path, &m.to_yaml())?;
        written.push(path);
        resources.push(rel);
    }
    let mut kustomization = String::from(
        "# Rendered by berth: the objects of every app. Do not edit; render again.\n\
         apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n",
    );
    for r in &resources {
        kustomization.push_str(&format!("- {r}\n"));
    }
    let path = base.join("kustomization.yaml");
    write(&path, &kustomization)?;
    written.push(path);
    let overlay = out.join(OVERLAY).join("kustomization.yaml");
    if !overlay.exists() {
        write(
            &overlay,
            "# Your changes to berth's objects for this cluster (patches, images, replicas).\n\
             apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- ../../base\n",
        )?;
        written.push(overlay);
    }
    Ok(written)
}
