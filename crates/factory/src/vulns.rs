//! The vulnerability gate: an image's SBOM checked against an offline database the operator
//! provides, in the OSV format (osv.dev's schema, as its per-ecosystem `all.zip` exports
//! unpack: one JSON record per advisory, e.g. Debian's, PyPI's, npm's, crates.io's,
//! Alpine's). A package is affected when its version is listed in a record's `versions`, or
//! falls in one of its `ranges` (Debian versions compared as dpkg does, npm and crates.io as
//! SemVer). A record's severity is its CVSS vector's (v2, v3 or v4, scored with the `cvss`
//! crate) or its `database_specific.severity`; a record that says none counts as critical,
//! so that the gate fails closed.

use crate::sbom::{Inventory, Package};
use serde::Deserialize;
use std::cmp::Ordering;
use std::path::{Path, PathBuf};

/// How severe a vulnerability is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// Reads `low`, `medium` (or `moderate`), `high` or `critical`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "low" => Some(Self::Low),
            "medium" | "moderate" => Some(Self::Medium),
            "high" => Some(Self::High),
            "critical" => Some(Self::Critical),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors reading the database.
#[derive(Debug, thiserror::Error)]
pub enum VulnDbError {
    #[error("reading the vulnerability database {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an OSV record: {message}")]
    Record { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Deserialize)]
struct Record {
    id: String,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    severity: Vec<SeverityEntry>,
    #[serde(default)]
    affected: Vec<Affected>,
    #[serde(default)]
    database_specific: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
struct SeverityEntry {
    score: String,
}

#[derive(Debug, Clone, Deserialize)]
struct Affected {
    package: Option<OsvPackage>,
    #[serde(default)]
    ranges: Vec<Range>,
    #[serde(default)]
    versions: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct OsvPackage {
    ecosystem: String,
    name: String,
}

#[derive(Debug, Clone, Deserialize)]
struct Range {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    events: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// One vulnerability found in an image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// The advisory (`DEBIAN-CVE-…`, `GHSA-…`, `RUSTSEC-…`).
    pub id: String,
    /// Its CVE, when it names one.
    pub cve: Option<String>,
    pub package: String,
    pub version: String,
    pub severity: Severity,
    /// The first fixed version, when the record says.
    pub fixed: Option<String>,
    pub summary: Option<String>,
}

impl Finding {
    /// Whether `accepted` (advisory ids or CVEs) names it.
    pub fn accepted(&self, accepted: &[String]) -> bool {
        accepted
            .iter()
            .any(|a| *a == self.id || Some(a) == self.cve.as_ref())
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}) in {} {}",
            self.cve.as_deref().unwrap_or(&self.id),
            self.severity,
            self.package,
            self.version
        )?;
        if let Some(fixed) = &self.fixed {
            write!(f, ", fixed in {fixed}")?;
        }
        Ok(())
    }
}

/// The database: every OSV record under a directory.
#[derive(Debug, Default)]
pub struct VulnDb {
    records: Vec<Record>,
}

impl VulnDb {
    /// Reads every `*.json` under `dir`.
    pub fn load(dir: &Path) -> Result<Self, VulnDbError> {
        let mut records = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let entries = std::fs::read_dir(&d).map_err(|source| VulnDbError::Io {
                path: d.clone(),
                source,
            })?;
            for e in entries.flatten() {
                let path = e.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|x| x == "json") {
                    let bytes = std::fs::read(&path).map_err(|source| VulnDbError::Io {
                        path: path.clone(),
                        source,
                    })?;
                    let record: Record =
                        serde_json::from_slice(&bytes).map_err(|e| VulnDbError::Record {
                            path: path.clone(),
                            message: e.to_string(),
                        })?;
                    records.push(record);
                }
            }
        }
        Ok(Self { records })
    }

    /// How many records it holds.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Every known vulnerability of the inventory's packages.
    pub fn scan(&self, inventory: &Inventory) -> Vec<Finding> {
        let mut found = Vec::new();
        for record in &self.records {
            for affected in &record.affected {
                let Some(osv) = &affected.package else {
                    continue;
                };
                for p in &inventory.packages {
                    if !same_package(osv, p) || !is_affected(affected, p) {
                        continue;
                    }
                    found.push(Finding {
                        id: record.id.clone(),
                        cve: std::iter::once(&record.id)
                            .chain(&record.aliases)
                            .find(|a| a.starts_with("CVE-"))
                            .cloned(),
                        package: p.name.clone(),
                        version: p.version.clone(),
                        severity: severity_of(record),
                        fixed: first_fixed(affected),
                        summary: record.summary.clone(),
                    });
                }
            }
        }
        found.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.id.cmp(&b.id)));
        found.dedup_by(|a, b| a.id == b.id && a.package == b.package);
        found
    }
}

/// Whether an OSV package names this package (Debian records name source packages;
/// ecosystems carry a release, `Debian:12`, which any release of the image matches).
fn same_package(osv: &OsvPackage, p: &Package) -> bool {
    let ecosystem = osv.ecosystem.split(':').next().unwrap_or_default();
    match (ecosystem, p.ecosystem.as_str()) {
        ("Debian" | "Ubuntu", "deb") => {
            osv.name == p.name || p.source.as_deref() == Some(osv.name.as_str())
        }
        ("Alpine", "apk") => osv.name == p.name || p.source.as_deref() == Some(osv.name.as_str()),
        ("PyPI", "pypi") => normalise_pypi(&osv.name) == normalise_pypi(&p.name),
        ("npm", "npm") | ("crates.io", "cargo") => osv.name == p.name,
        _ => false,
    }
}

fn normalise_pypi(name: &str) -> String {
    name.to_ascii_lowercase().replace(['_', '.'], "-")
}

fn is_affected(affected: &Affected, p: &Package) -> bool {
    if affected.versions.contains(&p.version) {
        return true;
    }
    affected.ranges.iter().any(|r| in_range(r, p))
}

fn compare(p: &Package, a: &str, b: &str) -> Ordering {
    match p.ecosystem.as_str() {
        "deb" => dpkg_compare(a, b),
        "npm" | "cargo" => match (semver::Version::parse(a), semver::Version::parse(b)) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => generic_compare(a, b),
        },
        _ => generic_compare(a, b),
    }
}

fn in_range(range: &Range, p: &Package) -> bool {
    if range.kind == "GIT" {
        return false;
    }
    let v = p.version.as_str();
    let mut affected = false;
    // Events in version order ("0" first), as OSV means them.
    let mut events: Vec<(&str, &str)> = range
        .events
        .iter()
        .filter_map(|e| e.iter().next())
        .filter_map(|(k, val)| val.as_str().map(|s| (k.as_str(), s)))
        .collect();
    events.sort_by(|a, b| match (a.1, b.1) {
        ("0", "0") => Ordering::Equal,
        ("0", _) => Ordering::Less,
        (_, "0") => Ordering::Greater,
        (x, y) => compare(p, x, y),
    });
    for (kind, at) in events {
        let order = compare(p, v, at);
        match kind {
            "introduced" if at == "0" || order != Ordering::Less => affected = true,
            "fixed" if order != Ordering::Less => affected = false,
            "last_affected" if order == Ordering::Greater => affected = false,
            _ => {}
        }
    }
    affected
}

fn first_fixed(affected: &Affected) -> Option<String> {
    affected
        .ranges
        .iter()
        .flat_map(|r| r.events.iter())
        .find_map(|e| e.get("fixed").and_then(|f| f.as_str()).map(str::to_string))
}

fn severity_of(record: &Record) -> Severity {
    let from_cvss = record
        .severity
        .iter()
        .filter_map(|s| s.score.parse::<cvss::Cvss>().ok())
        .map(|c| match c.severity() {
            cvss::Severity::Critical => Severity::Critical,
            cvss::Severity::High => Severity::High,
            cvss::Severity::Medium => Severity::Medium,
            _ => Severity::Low,
        })
        .max();
    let declared = record
        .database_specific
        .as_ref()
        .and_then(|d| d.get("severity"))
        .and_then(|s| s.as_str())
        .and_then(Severity::parse);
    from_cvss.or(declared).unwrap_or(Severity::Critical)
}

/// Debian version order (`deb-version(7)`): epoch, then upstream version and revision
/// compared piecewise — non-digits by character with `~` before everything, digits
/// numerically.
pub fn dpkg_compare(a: &str, b: &str) -> Ordering {
    fn split(v: &str) -> (u64, &str, &str) {
        let (epoch, rest) = match v.split_once(':') {
            Some((e, r)) => (e.parse().unwrap_or(0), r),
            None => (0, v),
        };
        match rest.rsplit_once('-') {
            Some((up, rev)) => (epoch, up, rev),
            None => (epoch, rest, ""),
        }
    }
    fn order(c: Option<char>) -> i32 {
        match c {
            None => 0,
            Some('~') => -1,
            Some(c) if c.is_ascii_alphabetic() => c as i32,
            Some(c) => c as i32 + 256,
        }
    }
    fn part(a: &str, b: &str) -> Ordering {
        let (mut a, mut b) = (a, b);
        while !a.is_empty() || !b.is_empty() {
            let na = a.find(|c: char| c.is_ascii_digit()).unwrap_or(a.len());
            let nb = b.find(|c: char| c.is_ascii_digit()).unwrap_or(b.len());
            let (sa, sb) = (&a[..na], &b[..nb]);
            let mut ca = sa.chars();
            let mut cb = sb.chars();
            loop {
                let (x, y) = (ca.next(), cb.next());
                if x.is_none() && y.is_none() {
                    break;
                }
                match order(x).cmp(&order(y)) {
                    Ordering::Equal => {}
                    o => return o,
                }
            }
            a = &a[na..];
            b = &b[nb..];
            let da = a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len());
            let db = b.find(|c: char| !c.is_ascii_digit()).unwrap_or(b.len());
            let x: u128 = a[..da].parse().unwrap_or(0);
            let y: u128 = b[..db].parse().unwrap_or(0);
            match x.cmp(&y) {
                Ordering::Equal => {}
                o => return o,
            }
            a = &a[da..];
            b = &b[db..];
        }
        Ordering::Equal
    }
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| part(ua, ub))
        .then_with(|| part(ra, rb))
}

/// Dotted versions compared piece by piece, numbers as numbers (PyPI, Alpine, others).
fn generic_compare(a: &str, b: &str) -> Ordering {
    let pieces = |s: &str| -> Vec<String> {
        s.split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect()
    };
    let (pa, pb) = (pieces(a), pieces(b));
    for i in 0..pa.len().max(pb.len()) {
        let (x, y) = (pa.get(i), pb.get(i));
        let o = match (x, y) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some(x), Some(y)) => match (x.parse::<u128>(), y.parse::<u128>()) {
                (Ok(m), Ok(n)) => m.cmp(&n),
                _ => x.cmp(y),
            },
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_versions_order_as_dpkg_orders_them() {
        for (a, b) in [
            ("2.0", "1:1.0"),
            ("1.0~rc1", "1.0"),
            ("1.35.0-4", "1.35.0-4+deb12u1"),
            ("1:1.35.0-4", "1:1.35.0-4+deb12u1"),
            ("2.9", "2.10"),
            ("1.0-1", "1.0-1.1"),
            ("7.88.1-10+deb12u5", "7.88.1-10+deb12u12"),
        ] {
            assert_eq!(dpkg_compare(a, b), Ordering::Less, "{a} < {b}");
            assert_eq!(dpkg_compare(b, a), Ordering::Greater, "{b} > {a}");
        }
        assert_eq!(dpkg_compare("1.0-1", "0:1.0-1"), Ordering::Equal);
    }

    fn inventory() -> Inventory {
        let mut inv = Inventory::default();
        inv.add_file(
            "var/lib/dpkg/status",
            "Package: busybox-static\nStatus: install ok installed\nSource: busybox\nArchitecture: amd64\nVersion: 1:1.35.0-4\n",
        );
        inv.add_file(
            "app/node_modules/lodash/package.json",
            r#"{"name":"lodash","version":"4.17.20"}"#,
        );
        inv
    }

    #[test]
    fn osv_records_match_by_source_package_range_and_version() {
        let dir = tempfile::tempdir().unwrap();
        // Debian's OSV export names source packages and gives ECOSYSTEM ranges.
        std::fs::write(
            dir.path().join("DEBIAN-CVE-2022-48174.json"),
            r#"{"id":"DEBIAN-CVE-2022-48174","aliases":["CVE-2022-48174"],"summary":"stack overflow in ash",
                "severity":[{"type":"CVSS_V3","score":"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
                "affected":[{"package":{"ecosystem":"Debian:12","name":"busybox"},
                  "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"1:1.35.0-4+deb12u1"}]}]}]}"#,
        )
        .unwrap();
        // A GitHub advisory in OSV form: SemVer range, severity declared.
        std::fs::write(
            dir.path().join("GHSA-35jh-r3h4-6jhm.json"),
            r#"{"id":"GHSA-35jh-r3h4-6jhm","aliases":["CVE-2021-23337"],
                "affected":[{"package":{"ecosystem":"npm","name":"lodash"},
                  "ranges":[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"4.17.21"}]}]}],
                "database_specific":{"severity":"HIGH"}}"#,
        )
        .unwrap();
        // Fixed long before the installed version: not a finding.
        std::fs::write(
            dir.path().join("old.json"),
            r#"{"id":"DEBIAN-CVE-2017-0001","affected":[{"package":{"ecosystem":"Debian:12","name":"busybox"},
                "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"1:1.22.0-1"}]}]}]}"#,
        )
        .unwrap();
        let db = VulnDb::load(dir.path()).unwrap();
        assert_eq!(db.len(), 3);
        let found = db.scan(&inventory());
        let ids: Vec<&str> = found.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, ["DEBIAN-CVE-2022-48174", "GHSA-35jh-r3h4-6jhm"]);
        assert_eq!(found[0].severity, Severity::Critical);
        assert_eq!(found[1].severity, Severity::High);
        assert_eq!(
            found[0].to_string(),
            "CVE-2022-48174 (critical) in busybox-static 1:1.35.0-4, fixed in 1:1.35.0-4+deb12u1"
        );
        assert!(found[1].accepted(&["CVE-2021-23337".to_string()]));

        std::fs::write(dir.path().join("broken.json"), "{").unwrap();
        assert!(VulnDb::load(dir.path())
            .unwrap_err()
            .to_string()
            .contains("broken.json"));
    }
}
