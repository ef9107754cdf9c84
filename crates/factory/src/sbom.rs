//! A software bill of materials per image, as SPDX 2.3 JSON: the packages the image's own
//! package databases list — Debian's dpkg status, Alpine's apk database, Python
//! distributions (`*.dist-info/METADATA`), npm packages (`node_modules/**/package.json`),
//! and Cargo.lock — read from the image's layers, each with its package URL (purl).

use serde::Serialize;
use std::collections::BTreeSet;
use std::io::Read;

/// Largest file read from a layer for the inventory.
const MAX_FILE: u64 = 64 << 20;

/// One package found in an image.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Package {
    /// `deb`, `apk`, `pypi`, `npm` or `cargo`.
    pub ecosystem: String,
    pub name: String,
    pub version: String,
    /// Package URL (`pkg:deb/debian/curl@7.88.1-10`).
    pub purl: String,
    /// The source package it was built from, where the database says (Debian, Alpine).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// The packages of an image, deduplicated and sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    pub packages: BTreeSet<Package>,
}

fn package(ecosystem: &str, name: &str, version: &str, purl: String) -> Package {
    Package {
        ecosystem: ecosystem.into(),
        name: name.into(),
        version: version.into(),
        purl,
        source: None,
    }
}

impl Inventory {
    /// Reads what one file of the image says, if it is a package database berth knows.
    pub fn add_file(&mut self, path: &str, text: &str) {
        let path = path.trim_start_matches("./").trim_start_matches('/');
        if path == "var/lib/dpkg/status" || path.starts_with("var/lib/dpkg/status.d/") {
            self.dpkg(text);
        } else if path == "lib/apk/db/installed" {
            self.apk(text);
        } else if path.ends_with(".dist-info/METADATA") {
            self.python(text);
        } else if path.ends_with("package.json")
            && path.contains("node_modules/")
            && !path.contains("/test")
        {
            self.npm(text);
        } else if path.ends_with("Cargo.lock") {
            self.cargo(text);
        }
    }

    fn dpkg(&mut self, text: &str) {
        for stanza in text.split("\n\n") {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
                    .map(str::trim)
            };
            let installed = field("Status").is_none_or(|s| s.ends_with(" installed"));
            if let (Some(name), Some(version), true) =
                (field("Package"), field("Version"), installed)
            {
                let arch = field("Architecture").unwrap_or("all");
                let source = field("Source")
                    .and_then(|s| s.split_whitespace().next())
                    .map(str::to_string);
                self.packages.insert(Package {
                    source,
                    ..package(
                        "deb",
                        name,
                        version,
                        format!("pkg:deb/debian/{name}@{}?arch={arch}", purl_escape(version)),
                    )
                });
            }
        }
    }

    fn apk(&mut self, text: &str) {
        for stanza in text.split("\n\n") {
            let field = |k: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix(':')))
            };
            if let (Some(name), Some(version)) = (field("P"), field("V")) {
                self.packages.insert(Package {
                    source: field("o").map(str::to_string),
                    ..package(
                        "apk",
                        name,
                        version,
                        format!("pkg:apk/alpine/{name}@{}", purl_escape(version)),
                    )
                });
            }
        }
    }

    fn python(&mut self, text: &str) {
        let field = |k: &str| {
            text.lines()
                .take_while(|l| !l.is_empty())
                .find_map(|l| l.strip_prefix(k).map(str::trim))
        };
        if let (Some(name), Some(version)) = (field("Name:"), field("Version:")) {
            let normalised = name.to_ascii_lowercase().replace(['_', '.'], "-");
            self.packages.insert(package(
                "pypi",
                name,
                version,
                format!("pkg:pypi/{normalised}@{}", purl_escape(version)),
            ));
        }
    }

    fn npm(&mut self, text: &str) {
        let Ok(json) = serde_json::from_str::<serde_json::Value>(text) else {
            return;
        };
        if let (Some(name), Some(version)) = (json["name"].as_str(), json["version"].as_str()) {
            let purl_name = match name.strip_prefix('@') {
                Some(scoped) => format!("%40{scoped}"),
                None => name.to_string(),
            };
            self.packages.insert(package(
                "npm",
                name,
                version,
                format!("pkg:npm/{purl_name}@{}", purl_escape(version)),
            ));
        }
    }

    fn cargo(&mut self, text: &str) {
        let Ok(lock) = text.parse::<toml::Table>() else {
            return;
        };
        for p in lock
            .get("package")
            .and_then(|p| p.as_array())
            .into_iter()
            .flatten()
        {
            // Only crates from a registry: the app's own crates are not dependencies.
            if p.get("source").is_none() {
                continue;
            }
            if let (Some(name), Some(version)) = (
                p.get("name").and_then(|v| v.as_str()),
                p.get("version").and_then(|v| v.as_str()),
            ) {
                self.packages.insert(package(
                    "cargo",
                    name,
                    version,
                    format!("pkg:cargo/{name}@{version}"),
                ));
            }
        }
    }

    /// Reads every package database in a layer (a tar stream).
    pub fn add_layer(&mut self, reader: impl Read) -> std::io::Result<()> {
        let mut tar = tar::Archive::new(reader);
        for entry in tar.entries()? {
            let mut entry = entry?;
            if !entry.header().entry_type().is_file() || entry.size() > MAX_FILE {
                continue;
            }
            let path = entry.path()?.to_string_lossy().into_owned();
            if !interesting(&path) {
                continue;
            }
            let mut text = String::new();
            if entry.read_to_string(&mut text).is_ok() {
                self.add_file(&path, &text);
            }
        }
        Ok(())
    }

    /// The SPDX 2.3 document of an image named `name` with manifest digest `digest`.
    pub fn spdx(&self, name: &str, digest: &str, created: &str) -> serde_json::Value {
        let hex = digest.trim_start_matches("sha256:");
        let packages: Vec<serde_json::Value> = self
            .packages
            .iter()
            .enumerate()
            .map(|(i, p)| {
                serde_json::json!({
                    "SPDXID": format!("SPDXRef-Package-{i}"),
                    "name": p.name,
                    "versionInfo": p.version,
                    "downloadLocation": "NOASSERTION",
                    "filesAnalyzed": false,
                    "externalRefs": [{
                        "referenceCategory": "PACKAGE-MANAGER",
                        "referenceType": "purl",
                        "referenceLocator": p.purl,
                    }],
                })
            })
            .collect();
        let relationships: Vec<serde_json::Value> = (0..packages.len())
            .map(|i| {
                serde_json::json!({
                    "spdxElementId": "SPDXRef-DOCUMENT",
                    "relationshipType": "DESCRIBES",
                    "relatedSpdxElement": format!("SPDXRef-Package-{i}"),
                })
            })
            .collect();
        serde_json::json!({
            "spdxVersion": "SPDX-2.3",
            "dataLicense": "CC0-1.0",
            "SPDXID": "SPDXRef-DOCUMENT",
            "name": format!("{name}@{digest}"),
            "documentNamespace": format!("https://berth.invalid/spdx/{name}/{hex}"),
            "creationInfo": {
                "created": created,
                "creators": ["Tool: berth"],
            },
            "packages": packages,
            "relationships": relationships,
        })
    }
}

/// Whether a path in a layer may be a package database.
fn interesting(path: &str) -> bool {
    let path = path.trim_start_matches("./");
    path == "var/lib/dpkg/status"
        || path.starts_with("var/lib/dpkg/status.d/")
        || path == "lib/apk/db/installed"
        || path.ends_with(".dist-info/METADATA")
        || (path.ends_with("/package.json") && path.contains("node_modules/"))
        || path.ends_with("Cargo.lock")
}

/// Escapes what a purl version may not hold verbatim.
fn purl_escape(s: &str) -> String {
    s.replace('%', "%25")
        .replace(':', "%3A")
        .replace('+', "%2B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_databases_become_packages_with_purls() {
        let mut inv = Inventory::default();
        inv.add_file(
            "var/lib/dpkg/status",
            "Package: busybox-static\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1:1.35.0-4\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n",
        );
        inv.add_file(
            "app/.venv/lib/python3.11/site-packages/Flask-3.0.0.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: Flask\nVersion: 3.0.0\n\nFlask is...",
        );
        inv.add_file(
            "app/node_modules/@scope/pkg/package.json",
            r#"{"name":"@scope/pkg","version":"1.2.3"}"#,
        );
        inv.add_file(
            "app/Cargo.lock",
            "[[package]]\nname = \"mine\"\nversion = \"0.1.0\"\n\n[[package]]\nname = \"serde\"\nversion = \"1.0.200\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\n",
        );
        let purls: Vec<&str> = inv.packages.iter().map(|p| p.purl.as_str()).collect();
        assert_eq!(
            purls,
            [
                "pkg:cargo/serde@1.0.200",
                "pkg:deb/debian/busybox-static@1%3A1.35.0-4?arch=amd64",
                "pkg:npm/%40scope/pkg@1.2.3",
                "pkg:pypi/flask@3.0.0",
            ]
        );
        let doc = inv.spdx("web", "sha256:abcd", "2026-11-29T00:00:00Z");
        assert_eq!(doc["spdxVersion"], "SPDX-2.3");
        assert_eq!(doc["packages"].as_array().unwrap().len(), 4);
    }
}
