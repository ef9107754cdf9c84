//! Rendered objects as a kustomize tree Argo CD or Flux can read: `base/` holds every object,
//! one directory per namespace and, in it, one per app (`_project` for the namespace's own
//! objects), each with the kustomization that lists its files; `base/kustomization.yaml`
//! lists those directories, and `overlays/production/` builds on it — `kubectl kustomize
//! OUT/overlays/production` yields exactly the objects berth applies. With Argo CD
//! (GitOps mode), `argocd/` holds an `Application` per directory and `argocd-root.yaml` the
//! one that syncs them all.

use crate::render::Manifest;
use std::collections::BTreeMap;
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
/// The directory of a namespace's own objects (no app can be named so).
pub const PROJECT_DIR: &str = "_project";
/// Where the Argo CD Applications go, and the root Application's file.
pub const ARGO_DIR: &str = "argocd";
pub const ARGO_ROOT: &str = "argocd-root.yaml";

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

fn remove(dir: &Path) -> Result<(), KustomizeError> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|source| KustomizeError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// The directory under `base/` an object goes to: `NAMESPACE/APP`, or `NAMESPACE/_project`
/// for what belongs to no app (a Namespace is in its own).
pub fn object_dir(m: &Manifest) -> String {
    let namespace = match (&m.namespace, m.kind.as_str()) {
        (Some(ns), _) => ns.as_str(),
        (None, "Namespace") => m.name.as_str(),
        (None, _) => "cluster",
    };
    let app = m.object["metadata"]["labels"]["app.kubernetes.io/name"]
        .as_str()
        .unwrap_or(PROJECT_DIR);
    format!("{namespace}/{app}")
}

fn kustomization(comment: &str, resources: &[String]) -> String {
    let mut text = format!(
        "# {comment}\napiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n"
    );
    for r in resources {
        text.push_str(&format!("- {r}\n"));
    }
    text
}

/// Writes `objects` under `out` (replacing an earlier rendering there), and with
/// `applications` (the Argo CD ones, the root last) `argocd/`; the files written.
pub fn write_tree(
    out: &Path,
    objects: &[Manifest],
    applications: &[Manifest],
) -> Result<Vec<PathBuf>, KustomizeError> {
    let base = out.join("base");
    if out.exists()
        && std::fs::read_dir(out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
        && !base.join("kustomization.yaml").exists()
    {
        return Err(KustomizeError::NotOurs(out.to_path_buf()));
    }
    remove(&base)?;
    remove(&out.join(ARGO_DIR))?;
    let _ = std::fs::remove_file(out.join(ARGO_ROOT));
    let mut written = Vec::new();
    let mut dirs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in objects {
        let dir = object_dir(m);
        let path = base.join(&dir).join(m.file_name());
        write(&path, &m.to_yaml())?;
        written.push(path);
        dirs.entry(dir).or_default().push(m.file_name());
    }
    for (dir, files) in &dirs {
        let path = base.join(dir).join("kustomization.yaml");
        write(
            &path,
            &kustomization(
                "Rendered by berth: the objects of one app (or of its namespace). Do not edit; render again.",
                files,
            ),
        )?;
        written.push(path);
    }
    let listed: Vec<String> = dirs.keys().cloned().collect();
    let path = base.join("kustomization.yaml");
    write(
        &path,
        &kustomization(
            "Rendered by berth: the objects of every app. Do not edit; render again.",
            &listed,
        ),
    )?;
    written.push(path);
    if let Some((root, apps)) = applications.split_last() {
        let mut files = Vec::new();
        for a in apps {
            let path = out.join(ARGO_DIR).join(format!("{}.yaml", a.name));
            write(&path, &a.to_yaml())?;
            written.push(path);
            files.push(format!("{}.yaml", a.name));
        }
        // The root syncs the namespaces' own objects too.
        files.extend(
            dirs.keys()
                .filter(|d| d.ends_with(&format!("/{PROJECT_DIR}")))
                .map(|d| format!("../base/{d}")),
        );
        let path = out.join(ARGO_DIR).join("kustomization.yaml");
        write(
            &path,
            &kustomization(
                "Rendered by berth: an Argo CD Application per app, and the namespace's own objects. Do not edit; render again.",
                &files,
            ),
        )?;
        written.push(path);
        let path = out.join(ARGO_ROOT);
        write(&path, &root.to_yaml())?;
        written.push(path);
    }
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
