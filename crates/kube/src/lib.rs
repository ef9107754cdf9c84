//! berth's kube plane: when a team outgrows one machine, the same apps as Kubernetes
//! objects — rendered as a kustomize tree for GitOps (`berth render`), and (next) applied
//! to a cluster by server-side apply.

#![forbid(unsafe_code)]

pub mod canary;
pub mod cluster;
pub mod kustomize;
pub mod render;
pub mod spec;
pub mod stack;

pub use render::{
    app_objects, namespace_of, project_objects, KubeApp, KubeProcess, KubeVolume, Manifest,
};
