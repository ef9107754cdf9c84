//! OCI registries (Distribution API): pushing built images to the registry a cluster or a
//! team pulls from — as they are in berth's store (same manifest digest), tagged like
//! there: the git commit, or `sha256-<source digest>` — and pulling images to deploy or to
//! build on. skopeo does the transfers, with the credentials berth holds and never those
//! of the user running it.

use crate::image::ImageStore;
use crate::tool::Ran;
use berth_core::model::ImageRef;
use berth_core::registries::ImageReference;
use std::process::Command;
use std::time::{Duration, Instant};

/// Why an image could not be pushed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0:?} is not a registry address: give HOST[:PORT][/PATH], or http://HOST:PORT[/PATH] for a registry without TLS")]
    BadAddress(String),
    #[error("skopeo is not installed (install the `skopeo` package)")]
    Missing,
    #[error("pushing {reference} failed: {detail}")]
    Push { reference: String, detail: String },
    #[error("copying {0} took longer than {1:?}")]
    Timeout(String, Duration),
    #[error("{reference} was not found in its registry: {detail}")]
    NotFound { reference: String, detail: String },
    #[error("the registry refused access to {reference}: {detail}")]
    Unauthorized { reference: String, detail: String },
    #[error("pulling {reference} failed: {detail}")]
    Pull { reference: String, detail: String },
}

/// How berth reaches registries it pulls from.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// An auth file (`{"auths": {HOST: {"auth": …}}}`) with the credentials berth holds.
    pub auth_file: Option<std::path::PathBuf>,
    /// Registry hosts spoken to without TLS (besides those on loopback).
    pub plain_http: Vec<String>,
    /// Where Docker Hub names (`debian:bookworm`) are pulled from instead of Docker Hub.
    pub docker_hub_mirror: Option<String>,
}

impl Access {
    /// Whether `reference`'s registry is spoken to with TLS verified.
    pub fn tls_verify(&self, reference: &ImageReference) -> bool {
        !(reference.on_loopback() || self.plain_http.contains(&reference.registry))
    }
}

/// Copies the image `reference` names (this machine's platform, from a multi-platform
/// index) into the OCI layout `layout` as `tag`, digests unchanged where the image is
/// already in OCI form.
pub fn pull(
    reference: &ImageReference,
    layout: &std::path::Path,
    tag: &str,
    access: &Access,
    timeout: Duration,
) -> Result<(), RegistryError> {
    let whole = reference.whole();
    let deadline = Instant::now() + timeout;
    let attempt = |preserve: bool| {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--retry-times", "2"])
            .arg(format!("--src-tls-verify={}", access.tls_verify(reference)));
        if preserve {
            cmd.arg("--preserve-digests");
        }
        if let Some(auth) = &access.auth_file {
            cmd.arg("--src-authfile").arg(auth);
        } else {
            // Never the credentials of whoever runs berth.
            cmd.arg("--src-no-creds");
        }
        cmd.arg(format!("docker://{whole}"))
            .arg(format!("oci:{}:{tag}", layout.display()));
        crate::tool::run_until(&mut cmd, deadline)
    };
    let mut ran = attempt(true);
    if let Ok(Ran::Failed(why)) = &ran {
        // A Docker-format image becomes an OCI one on the way: its digest changes.
        if why.contains("preserve") || why.contains("digest") {
            ran = attempt(false);
        }
    }
    match ran {
        Ok(Ran::Succeeded) => Ok(()),
        Ok(Ran::Failed(detail)) => {
            let lower = detail.to_ascii_lowercase();
            let reference = whole;
            if lower.contains("manifest unknown")
                || lower.contains("not found")
                || lower.contains("name unknown")
            {
                Err(RegistryError::NotFound { reference, detail })
            } else if lower.contains("unauthorized")
                || lower.contains("authentication required")
                || lower.contains("denied")
            {
                Err(RegistryError::Unauthorized { reference, detail })
            } else {
                Err(RegistryError::Pull { reference, detail })
            }
        }
        Ok(Ran::TimedOut) => Err(RegistryError::Timeout(whole, timeout)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(RegistryError::Missing),
        Err(e) => Err(RegistryError::Pull {
            reference: whole,
            detail: e.to_string(),
        }),
    }
}

/// A registry images are pushed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    /// `host[:port][/path]`.
    pub base: String,
    /// Plain HTTP (no TLS).
    pub plain_http: bool,
}

impl Registry {
    /// Reads `HOST[:PORT][/PATH]` (HTTPS) or `http://HOST:PORT[/PATH]` / `https://…`.
    pub fn parse(text: &str) -> Result<Self, RegistryError> {
        let bad = || RegistryError::BadAddress(text.to_string());
        let (rest, plain_http) = match text.split_once("://") {
            Some(("http", rest)) => (rest, true),
            Some(("https", rest)) => (rest, false),
            Some(_) => return Err(bad()),
            None => (text, false),
        };
        let base = rest.trim_end_matches('/');
        let host = base.split('/').next().unwrap_or_default();
        let ok = !host.is_empty()
            && base
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-._:/[]".contains(c))
            && !base.contains("//");
        if !ok {
            return Err(bad());
        }
        Ok(Self {
            base: base.to_string(),
            plain_http,
        })
    }

    /// Where `image` goes: `base/repository:tag`.
    pub fn reference(&self, image: &ImageRef) -> String {
        format!("{}/{}:{}", self.base, image.repository, image.tag)
    }

    /// The registry's host (`host[:port]`), which credentials are kept under.
    pub fn host(&self) -> &str {
        self.base.split('/').next().unwrap_or_default()
    }

    /// Pushes `image` from `store` (signing in with the auth file `auth`, if given), with
    /// its signature and SBOM under cosign's tags (`sha256-<hex>.sig`, `.sbom`); the
    /// reference it now has there.
    pub fn push(
        &self,
        store: &ImageStore,
        image: &ImageRef,
        auth: Option<&std::path::Path>,
        timeout: Duration,
    ) -> Result<String, RegistryError> {
        let deadline = Instant::now() + timeout;
        let reference = self.reference(image);
        self.push_tag(
            store,
            &image.repository,
            &image.tag,
            &reference,
            auth,
            deadline,
            timeout,
        )?;
        for tag in [
            crate::signing::signature_tag(&image.digest),
            crate::builder::sbom_tag(&image.digest),
        ] {
            if store.find(&image.repository, &tag).ok().flatten().is_some() {
                let to = format!("{}/{}:{tag}", self.base, image.repository);
                self.push_tag(store, &image.repository, &tag, &to, auth, deadline, timeout)?;
            }
        }
        Ok(reference)
    }

    #[allow(clippy::too_many_arguments)]
    fn push_tag(
        &self,
        store: &ImageStore,
        repository: &str,
        tag: &str,
        reference: &str,
        auth: Option<&std::path::Path>,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(), RegistryError> {
        let reference = reference.to_string();
        let source = format!("oci:{}:{tag}", store.layout(repository).display());
        let mut cmd = Command::new("skopeo");
        cmd.args([
            "copy",
            "--quiet",
            "--preserve-digests",
            "--retry-times",
            "2",
        ])
        .arg(format!("--dest-tls-verify={}", !self.plain_http));
        if let Some(auth) = auth {
            cmd.arg("--dest-authfile").arg(auth);
        }
        cmd.arg(&source).arg(format!("docker://{reference}"));
        match crate::tool::run_until(&mut cmd, deadline) {
            Ok(Ran::Succeeded) => Ok(()),
            Ok(Ran::Failed(detail)) => Err(RegistryError::Push { reference, detail }),
            Ok(Ran::TimedOut) => Err(RegistryError::Timeout(reference, timeout)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(RegistryError::Missing),
            Err(e) => Err(RegistryError::Push {
                reference,
                detail: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_addresses_are_read_with_their_transport() {
        let r = Registry::parse("http://127.0.0.1:5000/team/").unwrap();
        assert_eq!(r.base, "127.0.0.1:5000/team");
        assert!(r.plain_http);
        let r = Registry::parse("registry.example.com/berth").unwrap();
        assert!(!r.plain_http);
        let image = ImageRef {
            repository: "shop".into(),
            tag: "0123abc".into(),
            digest: "sha256:00".into(),
        };
        assert_eq!(
            r.reference(&image),
            "registry.example.com/berth/shop:0123abc"
        );
        assert_eq!(r.host(), "registry.example.com");
        for bad in [
            "",
            "ftp://x",
            "http://",
            "Registry.Example.com",
            "a b",
            "x//y",
        ] {
            assert!(Registry::parse(bad).is_err(), "{bad}");
        }
    }
}
