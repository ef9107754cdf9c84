//! Images berth did not build from a plan — pulled from a registry, or built from a
//! Dockerfile — taken into the store and read for how to run them. They bring their own
//! root filesystem; whatever user they ask for, they run as berth's unprivileged app user.

use crate::builder::{log_step, BuildError, BuildOutput, BuildRequest};
use crate::image::{ImageMeta, ImageStore};
use crate::registry::{self, Access};
use berth_core::model::{ImageRef, RELEASE_PROCESS};
use berth_core::registries::{host_architecture, parse_reference, ImageReference};
use berth_core::spec::BerthToml;
use std::path::Path;
use std::time::Duration;

/// Longest one image pull may take.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(600);

/// Resolves a reference against the platform's registries: Docker Hub names go to the
/// configured mirror, when there is one.
pub fn resolve(text: &str, access: &Access) -> Result<ImageReference, BuildError> {
    let mut reference = parse_reference(text).map_err(BuildError::BadReference)?;
    if reference.registry == "docker.io" {
        if let Some(mirror) = &access.docker_hub_mirror {
            reference.registry = mirror.clone();
        }
    }
    Ok(reference)
}

/// Pulls `req.toml.image` into the app's repository; the image, pinned by its digest.
pub fn pull(
    images: &ImageStore,
    req: &BuildRequest,
    text: &str,
    work: &Path,
) -> Result<BuildOutput, BuildError> {
    let reference = resolve(text, &req.access)?;
    log_step(&req.log_file, &format!("Pulling {}", reference.whole()));
    let layout = work.join("pulled");
    std::fs::create_dir_all(work).map_err(|source| BuildError::Io {
        context: format!("creating {}", work.display()),
        source,
    })?;
    registry::pull(
        &reference,
        &layout,
        "image",
        &req.access,
        PULL_TIMEOUT.min(req.timeout),
    )?;
    let image = images.import(&req.app, &layout, "image")?;
    log_step(
        &req.log_file,
        &format!("Pulled {}", reference.pinned(&image.digest)),
    );
    adopt(images, req, image, false)
}

/// Reads how to run an image berth took in, checks that this machine can run it, and
/// applies berth.toml's process commands, tests and variables.
pub fn adopt(
    images: &ImageStore,
    req: &BuildRequest,
    image: ImageRef,
    reused: bool,
) -> Result<BuildOutput, BuildError> {
    let platform = images.platform(&image)?;
    if platform.os != "linux" || platform.architecture != host_architecture() {
        return Err(BuildError::WrongPlatform {
            image: format!("{}/{}", platform.os, platform.architecture),
            host: format!("linux/{}", host_architecture()),
        });
    }
    let mut meta = images.meta(&image)?;
    apply_toml(&mut meta, &req.toml);
    if req.toml.port.is_none() && meta.ports.len() > 1 {
        return Err(BuildError::Ports(meta.ports.clone()));
    }
    if !meta.processes.contains_key(berth_core::model::WEB_PROCESS) {
        return Err(BuildError::NoCommand);
    }
    for (kind, cmd) in &meta.processes {
        log_step(&req.log_file, &format!("Process {kind}: {cmd}"));
    }
    match meta.user.as_deref() {
        Some("root") | Some("0") | Some("0:0") => log_step(
            &req.log_file,
            "The image asks to run as root; berth runs every app as the unprivileged user 10001 \
             (write to /tmp or a volume, listen on a port above 1023)",
        ),
        Some(user) => log_step(
            &req.log_file,
            &format!(
                "The image asks to run as {user:?}; berth runs it as the unprivileged user 10001"
            ),
        ),
        None => {}
    }
    log_step(
        &req.log_file,
        &format!(
            "Image {}:{} ({})",
            image.repository, image.tag, image.digest
        ),
    );
    Ok(BuildOutput {
        image,
        meta,
        reused,
    })
}

/// The port the web process listens on: berth.toml's, else the one the image exposes.
pub fn web_port(meta: &ImageMeta, toml: &BerthToml) -> Option<u16> {
    let exposed = match meta.ports.as_slice() {
        [one] => Some(*one),
        _ => None,
    };
    toml.port.or(exposed)
}

/// berth.toml's `[processes.*] command`, `[deploy] test` and `[env]` over what the image
/// says.
fn apply_toml(meta: &mut ImageMeta, toml: &BerthToml) {
    for (k, v) in &toml.env {
        let key = format!("{k}=");
        meta.env.retain(|kv| !kv.starts_with(&key));
        meta.env.push(format!("{k}={v}"));
    }
    for (kind, p) in &toml.processes {
        if let Some(cmd) = &p.command {
            if kind == RELEASE_PROCESS {
                meta.release_command = Some(cmd.clone());
            } else {
                meta.processes.insert(kind.clone(), cmd.clone());
            }
        }
    }
    if let Some(test) = &toml.deploy.test {
        meta.test_command = Some(test.clone());
    }
}
