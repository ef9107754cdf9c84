//! App state as plain data: secret names, volume names, sizes and mount paths, and the
//! rules they are held to. The planes that store and mount them (`berth-data`, the control
//! plane) rely on these checks having run first.

use serde::{Deserialize, Serialize};

/// Longest secret name.
pub const MAX_SECRET_NAME: usize = 128;
/// Largest secret value (64 KiB: keys, certificates, JSON credentials).
pub const MAX_SECRET_VALUE: usize = 64 * 1024;
/// Most secrets per app.
pub const MAX_SECRETS_PER_APP: usize = 256;
/// Where secrets chosen as files appear inside containers.
pub const SECRET_FILES_DIR: &str = "/run/secrets";
/// Smallest volume: an ext4 filesystem with room for its journal and some data.
pub const MIN_VOLUME_BYTES: u64 = 16 << 20;
/// Largest volume.
pub const MAX_VOLUME_BYTES: u64 = 4 << 40;
/// Most volumes per app.
pub const MAX_VOLUMES_PER_APP: usize = 16;

/// Checks a secret's name: it becomes an environment variable or a file name, so it is held
/// to the environment variable rules.
pub fn validate_secret_name(raw: &str) -> Result<(), String> {
    if raw.len() > MAX_SECRET_NAME {
        return Err(format!(
            "secret name {raw:?} is longer than {MAX_SECRET_NAME} characters"
        ));
    }
    crate::names::validate_env_key(raw).map_err(|_| {
        format!(
            "secret name {raw:?} is not an environment variable name; use letters, digits and '_', not starting with a digit"
        )
    })
}

/// Checks a secret's value.
pub fn validate_secret_value(name: &str, value: &str) -> Result<(), String> {
    if value.len() > MAX_SECRET_VALUE {
        return Err(format!(
            "secret {name}: value is {} bytes, more than the limit of {MAX_SECRET_VALUE}",
            value.len()
        ));
    }
    if value.contains('\0') {
        return Err(format!("secret {name}: value contains a NUL byte"));
    }
    Ok(())
}

/// Checks a volume's name: a DNS-label-like word of at most 32 characters (it names files
/// and mount points).
pub fn validate_volume_name(raw: &str) -> Result<(), String> {
    if raw.is_empty() || raw.len() > 32 {
        return Err(format!(
            "volume name {raw:?} must be 1 to 32 characters long"
        ));
    }
    crate::AppName::parse(raw).map(|_| ()).map_err(|e| {
        format!(
            "volume name {raw:?}: {}",
            e.to_string().replace("app name ", "")
        )
    })
}

/// Parses a volume size: bytes, or a number with `K`, `M`, `G` or `T` (powers of 1024; an
/// optional `i`/`iB`/`B` suffix is accepted). Bounds: [`MIN_VOLUME_BYTES`] to
/// [`MAX_VOLUME_BYTES`].
pub fn parse_volume_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || {
        format!("size {text:?} is not a size; use a number with K, M, G or T, such as 1G or 512M")
    };
    let value: f64 = num.parse().map_err(|_| bad())?;
    let shift = match unit
        .trim()
        .trim_end_matches("iB")
        .trim_end_matches(['i', 'B'])
    {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        "T" | "t" => 40,
        _ => return Err(bad()),
    };
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < MIN_VOLUME_BYTES as f64 {
        return Err(format!(
            "size {text:?} is too small; a volume holds at least 16M"
        ));
    }
    if bytes > MAX_VOLUME_BYTES as f64 {
        return Err(format!("size {text:?} is larger than the maximum of 4T"));
    }
    // Whole mebibytes: the filesystem image is made in those.
    Ok(((bytes as u64) >> 20) << 20)
}

/// Paths a volume may not be mounted on or under: the system, berth's own mounts.
const SYSTEM_PREFIXES: &[&str] = &[
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/sbin",
    "/sys", "/usr", "/run", "/var/run", "/.berth",
];
/// Paths a volume may not be mounted on (it may go below them).
const SYSTEM_EXACT: &[&str] = &["/", "/app", "/tmp", "/var", "/home", "/root", "/opt"];

/// Checks a mount path inside the app's filesystem: absolute, normalised (no `.`, `..` or
/// empty parts), not over the system or berth's own mounts.
pub fn validate_mount_path(raw: &str) -> Result<(), String> {
    if !raw.starts_with('/') {
        return Err(format!(
            "mount path {raw:?} must be absolute, such as /data"
        ));
    }
    if raw.len() > 200 || raw.chars().any(|c| c.is_control() || c == ',' || c == ':') {
        return Err(format!(
            "mount path {raw:?} must be at most 200 characters with no control characters, ',' or ':'"
        ));
    }
    let parts: Vec<&str> = raw[1..].split('/').collect();
    if raw != "/"
        && parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err(format!(
            "mount path {raw:?} leaves the app's filesystem or is not normalised; write it without '.', '..' or '//'"
        ));
    }
    if SYSTEM_EXACT.contains(&raw)
        || SYSTEM_PREFIXES
            .iter()
            .any(|p| raw == *p || raw.starts_with(&format!("{p}/")))
    {
        return Err(format!(
            "mount path {raw:?} is a system path; pick a path of the app's own, such as /data or /app/uploads"
        ));
    }
    Ok(())
}

/// Whether one mount path is the same as, or inside, another.
pub fn mount_paths_overlap(a: &str, b: &str) -> bool {
    a == b || a.starts_with(&format!("{b}/")) || b.starts_with(&format!("{a}/"))
}

/// One secret in `berth secrets list`: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SecretView {
    /// Name.
    pub name: String,
    /// 1, 2, … (each `set` makes a new version).
    pub version: u32,
    /// How it reaches the app: `env`, `file` (`/run/secrets/NAME`), or `build` (a build
    /// secret: the build's environment and `/run/secrets/NAME` while it builds, never the
    /// running app).
    pub injected_as: String,
    /// Who set this version.
    pub updated_by: String,
    /// Unix seconds.
    pub updated_at: i64,
}

/// Body of `POST /v1/apps/{app}/secrets`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SecretChange {
    /// Secrets to set (new versions).
    #[serde(default)]
    pub set: std::collections::BTreeMap<String, String>,
    /// Secrets to remove.
    #[serde(default)]
    pub unset: Vec<String>,
    /// Build secrets instead: present only while the app builds (as environment variables
    /// and files under `/run/secrets`), never in a release or an image; no new release.
    #[serde(default)]
    pub build: bool,
}

/// One volume in `berth volumes list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VolumeView {
    /// App it belongs to.
    pub app: String,
    /// Name.
    pub name: String,
    /// Size, bytes.
    pub size_bytes: u64,
    /// Bytes in use, when the volume is mounted on the host.
    pub used_bytes: Option<u64>,
    /// Where it appears inside the app's containers.
    pub mount: String,
    /// Whether only one instance may use it at a time (deploys are stop-first).
    pub exclusive: bool,
    /// Instances that have it mounted now.
    pub mounted_by: Vec<String>,
    /// Snapshots, oldest first.
    pub snapshots: Vec<SnapshotView>,
    /// Unix seconds.
    pub created_at: i64,
}

/// One snapshot of a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SnapshotView {
    /// Snapshot id (`YYYYmmdd-HHMMSS-xxxx`).
    pub id: String,
    /// Bytes it takes on disk.
    pub disk_bytes: u64,
    /// Unix seconds.
    pub created_at: i64,
}

/// Body of `POST /v1/apps/{app}/volumes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VolumeCreate {
    /// Name.
    pub name: String,
    /// Size (`1G`).
    pub size: String,
    /// Mount path inside the app's containers.
    pub mount: String,
    /// One instance at a time (deploys stop the old instance before starting the new).
    #[serde(default)]
    pub exclusive: bool,
}

/// Body of `POST /v1/apps`: an app with everything it needs, created all at once or not at
/// all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppCreate {
    /// App name: a DNS label.
    #[schema(pattern = "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    /// Custom domains.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Secrets: name → value.
    #[serde(default)]
    pub secrets: std::collections::BTreeMap<String, String>,
    /// Volumes.
    #[serde(default)]
    pub volumes: Vec<VolumeCreate>,
    /// A PostgreSQL database (`DATABASE_URL`).
    #[serde(default)]
    pub database: bool,
    /// The project it goes to (default: the token's, else `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
}

/// What `POST /v1/apps` created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AppCreated {
    /// App name.
    pub name: String,
    /// Its URL at the edge.
    pub url: String,
    /// Custom domains with their HTTPS URLs.
    pub domains: Vec<crate::domains::DomainView>,
    /// Names of its secrets (never values).
    pub secrets: Vec<String>,
    /// Its volumes.
    pub volumes: Vec<VolumeView>,
    /// Its database, if it has one.
    pub database: Option<String>,
}

/// Body of `POST /v1/apps/{app}/volumes/{name}/restore`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VolumeRestore {
    /// Snapshot id.
    pub snapshot: String,
    /// Restore even though instances use the volume (they are restarted).
    #[serde(default)]
    pub force: bool,
}

/// An app's database in `berth db info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DatabaseView {
    /// App.
    pub app: String,
    /// Database name on the server.
    pub database: String,
    /// Role the app logs in as (its password is the `DATABASE_URL` secret).
    pub role: String,
    /// Server address as apps see it.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Whether the server answers now.
    pub server_running: bool,
    /// Backups, oldest first.
    pub backups: Vec<DatabaseBackupView>,
    /// Unix seconds.
    pub created_at: i64,
}

/// One database backup (pg_dump custom format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DatabaseBackupView {
    /// Backup id.
    pub id: String,
    /// Size, bytes.
    pub bytes: u64,
    /// Unix seconds.
    pub created_at: i64,
}

/// Body of `POST /v1/apps/{app}/database/restore`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DatabaseRestore {
    /// Backup id.
    pub backup: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_are_env_names() {
        assert!(validate_secret_name("DATABASE_URL").is_ok());
        assert!(validate_secret_name("_x1").is_ok());
        for bad in ["", "1X", "MY-KEY", "A B", "É"] {
            let e = validate_secret_name(bad).unwrap_err();
            assert!(e.contains("not an environment variable name"), "{e}");
        }
        assert!(validate_secret_name(&"A".repeat(129)).is_err());
        assert!(validate_secret_value("K", &"x".repeat(MAX_SECRET_VALUE + 1)).is_err());
    }

    #[test]
    fn sizes_parse_with_units_and_bounds() {
        assert_eq!(parse_volume_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_volume_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_volume_size("1.5GiB").unwrap(), 1536 << 20);
        assert_eq!(parse_volume_size("64Mi").unwrap(), 64 << 20);
        for bad in ["10 potatoes", "G", "", "-1G", "1X"] {
            let e = parse_volume_size(bad).unwrap_err();
            assert!(e.contains("not a size"), "{bad}: {e}");
        }
        assert!(parse_volume_size("0").unwrap_err().contains("too small"));
        assert!(parse_volume_size("1M").unwrap_err().contains("too small"));
        assert!(parse_volume_size("5T").unwrap_err().contains("maximum"));
    }

    #[test]
    fn mount_paths_stay_in_the_apps_own_space() {
        for ok in [
            "/data",
            "/app/uploads",
            "/var/lib/app",
            "/srv/files",
            "/tmp/cache",
        ] {
            assert!(validate_mount_path(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("data", "absolute"),
            ("/data/../etc", "leaves"),
            ("/data//x", "leaves"),
            ("/./data", "leaves"),
            ("/", "system path"),
            ("/etc", "system path"),
            ("/usr/local/x", "system path"),
            ("/proc/self", "system path"),
            ("/run/secrets", "system path"),
            ("/app", "system path"),
            ("/.berth/status", "system path"),
            ("/a,b", "','"),
        ] {
            let e = validate_mount_path(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(mount_paths_overlap("/data", "/data/x"));
        assert!(!mount_paths_overlap("/data", "/database"));
    }

    #[test]
    fn volume_names_are_short_labels() {
        assert!(validate_volume_name("data").is_ok());
        assert!(validate_volume_name("Data").is_err());
        assert!(validate_volume_name(&"a".repeat(33)).is_err());
        assert!(validate_volume_name("../x").is_err());
    }
}

/// `POST /v1/backups`: back the whole platform up to a directory or `s3://bucket/prefix`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackupCreate {
    /// Where: a directory on the platform's machine, or `s3://bucket/prefix`.
    pub to: String,
    /// Wraps the keyring in the backup; needed again to restore.
    pub passphrase: String,
    /// After the backup, keep one backup for each of this many recent days (0: no limit).
    #[serde(default)]
    pub keep_daily: u32,
    /// … and one for each of this many recent weeks.
    #[serde(default)]
    pub keep_weekly: u32,
}

impl std::fmt::Debug for BackupCreate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupCreate")
            .field("to", &self.to)
            .field("passphrase", &"<redacted>")
            .field("keep_daily", &self.keep_daily)
            .field("keep_weekly", &self.keep_weekly)
            .finish()
    }
}

/// A platform backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackupView {
    /// Id (`<unix seconds>-<hex>`).
    pub id: String,
    /// Where it is.
    pub location: String,
    /// Unix seconds.
    pub created_at: i64,
    /// berth that wrote it.
    pub berth_version: String,
    /// Apps in it.
    pub apps: Vec<String>,
    /// Volumes in it (`app/name`).
    pub volumes: Vec<String>,
    /// Apps whose database it holds.
    pub databases: Vec<String>,
    /// Bytes of all its parts.
    pub bytes: u64,
    /// Older backups the retention policy deleted afterwards.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pruned: Vec<String>,
}
