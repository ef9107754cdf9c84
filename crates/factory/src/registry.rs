//! Pushing built images to an OCI registry (Distribution API) — the registry a cluster or a
//! team pulls from. Images go as they are in berth's store (same manifest digest), tagged
//! like there: the git commit, or `sha256-<source digest>`. skopeo does the transfer.

use crate::image::ImageStore;
use crate::tool::Ran;
use berth_core::model::ImageRef;
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
    #[error("pushing {0} took longer than {1:?}")]
    Timeout(String, Duration),
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

    /// Pushes `image` from `store`; the reference it now has there.
    /// The registry's host (`host[:port]`), which credentials are kept under.
    pub fn host(&self) -> &str {
        self.base.split('/').next().unwrap_or_default()
    }

    /// Pushes `image` from `store` (signing in with the auth file `auth`, if given); the
    /// reference it now has there.
    pub fn push(
        &self,
        store: &ImageStore,
        image: &ImageRef,
        auth: Option<&std::path::Path>,
        timeout: Duration,
    ) -> Result<String, RegistryError> {
        let reference = self.reference(image);
        let source = format!(
            "oci:{}:{}",
            store.layout(&image.repository).display(),
            image.tag
        );
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
        match crate::tool::run_until(&mut cmd, Instant::now() + timeout) {
            Ok(Ran::Succeeded) => Ok(reference),
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
