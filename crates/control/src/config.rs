//! Platform settings for `berth up`. Defaults are documented next to each constant; the CLI
//! layers flags and environment over them; [`PlatformConfig::validate`] reports every
//! problem at once.

use berth_core::policy::Isolation;
use berth_runtime::network::{Network, Subnet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Default API port (loopback only).
pub const DEFAULT_API_PORT: u16 = 7070;
/// Default edge port (all interfaces).
pub const DEFAULT_EDGE_PORT: u16 = 8080;
/// Default HTTPS port of the edge (all interfaces).
pub const DEFAULT_EDGE_TLS_PORT: u16 = 8443;
/// Default bridge name.
pub const DEFAULT_BRIDGE: &str = "berth0";
/// Default instance subnet: private, and away from the 10.88.0.0/16 that podman and CNI use.
pub const DEFAULT_SUBNET: &str = "10.77.0.0/24";
/// Port every app listens on inside its own network namespace (given as `PORT`).
pub const APP_PORT: u16 = 8000;
/// How long old instances keep serving in-flight requests after traffic has moved.
pub const DEFAULT_DRAIN_GRACE: Duration = Duration::from_secs(2);
/// How long an instance has to exit after SIGTERM before SIGKILL.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a build may run.
pub const DEFAULT_BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// The log-store source id of the edge's access log.
pub const EDGE_ACCESS_SOURCE: &str = "edge-access";

/// Everything `berth up` needs to know.
#[derive(Debug, Clone)]
pub struct PlatformConfig {
    /// Where all state lives.
    pub data_dir: PathBuf,
    /// API listen address.
    pub api_listen: SocketAddr,
    /// Edge listen address.
    pub edge_listen: SocketAddr,
    /// Edge HTTPS listen address (`None`: no HTTPS).
    pub edge_tls_listen: Option<SocketAddr>,
    /// ACME directory for certificates of public names (`None`: the local CA certifies all).
    pub acme: Option<berth_edge::acme::AcmeSettings>,
    /// Time between certificate renewal checks.
    pub cert_check_interval: Duration,
    /// Bridge interface name.
    pub bridge: String,
    /// Instance subnet.
    pub subnet: Subnet,
    /// Extra domain apps answer on (`APP.<domain>`), besides `APP.localhost`.
    pub base_domain: Option<String>,
    /// Largest accepted upload, bytes.
    pub upload_limit: u64,
    /// Drain grace period.
    pub drain_grace: Duration,
    /// SIGTERM → SIGKILL timeout.
    pub stop_timeout: Duration,
    /// Build timeout.
    pub build_timeout: Duration,
    /// Free space the data directory's disk must have for a build to start (bytes).
    pub min_free_disk: u64,
    /// How often every app's public URLs are probed.
    pub probe_interval: Duration,
    /// Time between polls of connected git branches (zero: webhooks only).
    pub git_poll_interval: Duration,
    /// Where app names are published in DNS (RFC 2136), with the TSIG key.
    pub dns: Option<berth_edge::dns_update::DnsSettings>,
    /// The berth binary, mounted into containers (init, static server).
    pub berth_binary: PathBuf,
    /// Isolation of apps whose berth.toml does not choose one.
    pub default_isolation: Isolation,
    /// Where the keys that seal secrets come from (default: `<data>/keys/secrets.json`).
    pub secrets_key: Option<berth_data::secrets::KeySource>,
    /// Factor SLO windows are scaled by (1: the SRE workbook's hours and days; smaller for
    /// drills).
    pub slo_time_scale: f64,
    /// Time between samples of the edge's counters for SLOs.
    pub slo_sample_interval: Duration,
    /// Whether the edge writes an access log (ingested as each app's `access` stream).
    pub access_log: bool,
    /// Proxies in front of the edge whose forwarding headers it keeps (`--trusted-proxy`).
    pub trusted_proxies: Vec<berth_edge::policy::Cidr>,
    /// Ranges neither apps nor builds reach (`--egress-block`).
    pub egress_block: Vec<berth_edge::policy::Cidr>,
    /// Default log retention of apps (berth.toml `[logs]` overrides it per app).
    pub log_retention: berth_observe::Retention,
    /// How long a condition holds before it alerts (app down, crash loop, …).
    pub alert_for: Duration,
    /// Where alerts are delivered.
    pub alert_targets: crate::notify::AlertTargets,
    /// Scheduled backups (`None`: only those asked for).
    pub backup: Option<crate::backups::create::BackupSchedule>,
    /// Loki to push every app's log to.
    pub loki: Option<berth_observe::loki::LokiTarget>,
    /// OTLP endpoint (base URL) for berth's traces; apps get it as
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub otlp_endpoint: Option<String>,
    /// The OpenID Connect provider people sign in with: issuer URL and berth's client id.
    pub oidc: Option<(String, String)>,
    /// berth's client secret at that provider, when it has one (kept on the platform).
    pub oidc_client_secret: Option<String>,
    /// The registry every built image is pushed to.
    pub registry: Option<berth_factory::registry::Registry>,
    /// Where Docker Hub names are pulled from instead (`--registry-mirror`).
    pub registry_mirror: Option<String>,
    /// Only images whose signature verifies with the platform's key may start.
    pub require_signed: bool,
    /// The vulnerability gate every new image passes (`--vuln-db`, `--vuln-gate`).
    pub vuln_gate: Option<berth_factory::builder::VulnGate>,
    /// Apps run in this Kubernetes cluster instead of on this machine
    /// (`--backend kubernetes`).
    pub kube: Option<crate::kube_backend::KubeTarget>,
}

impl PlatformConfig {
    /// Where the platform's image signing key lives (`cosign.key`, `cosign.pub`).
    pub fn signing_dir(&self) -> PathBuf {
        self.data_dir.join("signing")
    }

    /// Defaults for a data directory.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            api_listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_API_PORT),
            edge_listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_EDGE_PORT),
            edge_tls_listen: Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                DEFAULT_EDGE_TLS_PORT,
            )),
            acme: None,
            cert_check_interval: crate::certificates::DEFAULT_CHECK_INTERVAL,
            bridge: DEFAULT_BRIDGE.into(),
            subnet: DEFAULT_SUBNET.parse().unwrap_or(Subnet {
                network: Ipv4Addr::new(10, 77, 0, 0),
                prefix: 24,
            }),
            base_domain: None,
            upload_limit: berth_factory::source::DEFAULT_UPLOAD_LIMIT,
            drain_grace: DEFAULT_DRAIN_GRACE,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            build_timeout: DEFAULT_BUILD_TIMEOUT,
            min_free_disk: 1 << 30,
            probe_interval: Duration::from_secs(30),
            dns: None,
            git_poll_interval: crate::git_connect::DEFAULT_POLL_INTERVAL,
            berth_binary: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("berth")),
            default_isolation: Isolation::Trusted,
            secrets_key: None,
            backup: None,
            alert_targets: crate::notify::AlertTargets::default(),
            loki: None,
            otlp_endpoint: None,
            oidc: None,
            oidc_client_secret: None,
            registry: None,
            registry_mirror: None,
            require_signed: false,
            vuln_gate: None,
            kube: None,
            alert_for: crate::health_alerts::DEFAULT_ALERT_FOR,
            log_retention: berth_observe::Retention::default(),
            access_log: true,
            trusted_proxies: Vec::new(),
            egress_block: Vec::new(),
            slo_time_scale: 1.0,
            slo_sample_interval: crate::slo::DEFAULT_SAMPLE_INTERVAL,
        }
    }

    /// Every problem with these settings, each naming its setting.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.data_dir.is_absolute() {
            problems.push(format!(
                "--data-dir: {} must be an absolute path",
                self.data_dir.display()
            ));
        }
        if let Err(e) = Network::validate_bridge_name(&self.bridge) {
            problems.push(format!("--bridge: {e}"));
        }
        if self.api_listen.port() == self.edge_listen.port() {
            problems.push(format!(
                "--api-port and --edge-port are both {}",
                self.api_listen.port()
            ));
        }
        if let Some(tls) = self.edge_tls_listen {
            for (flag, port) in [
                ("--api-port", self.api_listen.port()),
                ("--edge-port", self.edge_listen.port()),
            ] {
                if port == tls.port() {
                    problems.push(format!("{flag} and --edge-tls-port are both {port}"));
                }
            }
        }
        if self.kube.is_some() && self.registry.is_none() {
            problems.push(
                "--backend kubernetes needs --registry: the cluster's nodes pull every release's image from it".into(),
            );
        }
        if let Some(a) = &self.acme {
            if !a.directory.starts_with("https://") {
                problems.push(format!(
                    "--acme-directory: {:?} must be an https:// URL (RFC 8555)",
                    a.directory
                ));
            }
            if let Some(e) = &a.email {
                if !e.contains('@') || e.contains(char::is_whitespace) {
                    problems.push(format!("--acme-email: {e:?} is not an email address"));
                }
            }
            if let Some(f) = &a.ca_file {
                if !f.is_file() {
                    problems.push(format!("--acme-ca-file: {} does not exist", f.display()));
                }
            }
        }
        if let Some(d) = &self.base_domain {
            let ok = !d.is_empty()
                && d.len() <= 200
                && d.split('.').all(|l| {
                    berth_core::AppName::parse(l).is_ok()
                        || l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') && !l.is_empty()
                });
            if !ok {
                problems.push(format!("--base-domain: {d:?} is not a valid domain name"));
            }
        }
        if let Some(b) = &self.backup {
            let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
            match berth_data::backup::location::Location::parse(&b.to, &cwd) {
                Ok(berth_data::backup::location::Location::Dir(d)) if d.starts_with(&self.data_dir) => {
                    problems.push(format!(
                        "--backup-to: {} is inside the data directory; a backup there is lost with it",
                        d.display()
                    ))
                }
                Ok(_) => {}
                Err(e) => problems.push(format!("--backup-to: {e}")),
            }
            if let Err(e) = crate::backups::create::read_passphrase_file(&b.passphrase_file) {
                problems.push(format!("--backup-passphrase-file: {e}"));
            }
            if b.every < Duration::from_secs(1) {
                problems.push("--backup-every: must be at least 1s".into());
            }
        }
        if !(self.slo_time_scale > 0.0 && self.slo_time_scale <= 1.0) {
            problems.push(format!(
                "--slo-time-scale: {} must be above 0 and at most 1",
                self.slo_time_scale
            ));
        }
        if self.slo_sample_interval < Duration::from_millis(100) {
            problems.push("--slo-sample-interval: must be at least 100ms".into());
        }
        if let Some(am) = &self.alert_targets.alertmanager {
            if !(am.starts_with("http://") || am.starts_with("https://")) {
                problems.push(format!(
                    "--alertmanager: {am:?} must be an http:// or https:// URL"
                ));
            }
        }
        if let Some(loki) = &self.loki {
            if let Err(e) = loki.push_url() {
                problems.push(format!("--loki-url: {e}"));
            }
        }
        if let Some((issuer, client_id)) = &self.oidc {
            if !(issuer.starts_with("https://") || issuer.starts_with("http://")) {
                problems.push(format!(
                    "--oidc-issuer: {issuer:?} must be an https:// (or, on loopback, http://) URL"
                ));
            }
            if client_id.trim().is_empty() {
                problems.push("--oidc-client-id: empty".into());
            }
        }
        if let Some(otlp) = &self.otlp_endpoint {
            if let Err(e) = berth_observe::traces::traces_url(otlp) {
                problems.push(format!("--otlp-endpoint: {e}"));
            }
        }
        if let Some((url, secret)) = &self.alert_targets.webhook {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                problems.push(format!(
                    "--alert-webhook: {url:?} must be an http:// or https:// URL"
                ));
            }
            if secret.len() < 16 {
                problems.push(
                    "--alert-webhook-secret-file: the secret has fewer than 16 characters".into(),
                );
            }
        }
        if self.upload_limit < 1024 {
            problems.push("--upload-limit: must be at least 1024 bytes".into());
        }
        problems
    }

    /// SQLite database file.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("berth.db")
    }
    /// API bearer token file (mode 0600).
    pub fn token_path(&self) -> PathBuf {
        self.data_dir.join("api-token")
    }
    /// Where the API address is published for the CLI.
    pub fn api_info_path(&self) -> PathBuf {
        self.data_dir.join("api.json")
    }
    /// Edge files (routes snapshot, applied generation, pid, log).
    pub fn edge_dir(&self) -> PathBuf {
        self.data_dir.join("edge")
    }
    /// The edge's access log (a raw file of the log store, ingested into apps' logs).
    pub fn edge_access_log(&self) -> PathBuf {
        self.logs_dir()
            .join("raw")
            .join(format!("{}.log", EDGE_ACCESS_SOURCE))
    }

    /// Request counts the edge writes about once a second.
    pub fn edge_metrics_file(&self) -> PathBuf {
        self.edge_dir().join("metrics.json")
    }
    /// OCI image layouts.
    pub fn images_dir(&self) -> PathBuf {
        self.data_dir.join("images")
    }
    /// Unpacked root filesystems, one per image digest.
    pub fn rootfs_dir(&self) -> PathBuf {
        self.data_dir.join("rootfs")
    }
    /// Per-instance bundles and exit status files.
    pub fn instances_dir(&self) -> PathBuf {
        self.data_dir.join("instances")
    }
    /// Build caches.
    pub fn cache_dir(&self) -> PathBuf {
        self.data_dir.join("cache")
    }
    /// Where Dockerfile builds work and keep their layer caches: outside the data
    /// directory (which the unprivileged build user must not be able to enter), one per
    /// data directory.
    pub fn build_user_dir(&self) -> PathBuf {
        use sha2::Digest as _;
        let digest = hex::encode(sha2::Sha256::digest(
            self.data_dir.as_os_str().as_encoded_bytes(),
        ));
        PathBuf::from("/var/cache/berth").join(format!("builds-{}", &digest[..12]))
    }
    /// Build scratch space.
    pub fn builds_dir(&self) -> PathBuf {
        self.data_dir.join("builds")
    }
    /// Log store.
    pub fn logs_dir(&self) -> PathBuf {
        self.data_dir.join("logs")
    }
    /// crun state root.
    pub fn runtime_state_dir(&self) -> PathBuf {
        self.data_dir.join("run/crun")
    }
    /// runsc's state root (sandboxed apps).
    pub fn sandbox_state_dir(&self) -> PathBuf {
        self.data_dir.join("run/runsc")
    }
    /// Volume images, mount points and snapshots.
    pub fn volumes_dir(&self) -> PathBuf {
        self.data_dir.join("volumes")
    }
    /// The keyring that seals secrets.
    pub fn secrets_key_source(&self) -> berth_data::secrets::KeySource {
        self.secrets_key.clone().unwrap_or_else(|| {
            berth_data::secrets::KeySource::File(self.data_dir.join("keys/secrets.json"))
        })
    }
    /// The RAM-backed directory of decrypted secrets (outside the data directory).
    pub fn secrets_runtime_dir(&self) -> PathBuf {
        berth_data::secret_files::SecretFiles::default_root(&self.data_dir)
    }
    /// Builds' secrets and raw output: a RAM-backed directory apart from instances'.
    pub fn build_secrets_runtime_dir(&self) -> PathBuf {
        berth_data::secret_files::SecretFiles::builds_root(&self.data_dir)
    }
    /// Where the database server's files live, and where it listens.
    pub fn postgres_layout(&self) -> berth_data::postgres::PgLayout {
        berth_data::postgres::PgLayout {
            data_root: self.data_dir.join("postgres"),
            run_root: berth_data::postgres::default_run_root(&self.data_dir),
            listen: self.subnet.gateway(),
            subnet: self.subnet.to_string(),
        }
    }
    /// The certificate snapshot the edge reads (in RAM, beside decrypted secrets).
    pub fn edge_certs_file(&self) -> PathBuf {
        self.secrets_runtime_dir().join("edge-certs.json")
    }
    /// A host's HTTPS URL at the edge, if HTTPS is served.
    pub fn https_url(&self, host: &str) -> Option<String> {
        let port = self.edge_tls_listen?.port();
        Some(if port == 443 {
            format!("https://{host}/")
        } else {
            format!("https://{host}:{port}/")
        })
    }
    /// The app's URL at the edge (in a cluster: at its Ingress, whose controller serves
    /// the standard ports).
    pub fn app_url(&self, app: &str) -> String {
        let port = self.edge_listen.port();
        let host = match &self.base_domain {
            Some(d) => format!("{app}.{d}"),
            None => format!("{app}.localhost"),
        };
        if port == 80 || self.kube.is_some() {
            format!("http://{host}/")
        } else {
            format!("http://{host}:{port}/")
        }
    }
    /// The platform's own host names at the edge (`berth.localhost`, `berth.<base
    /// domain>`): the API behind them, for git remotes, webhooks and remote CLIs over HTTPS.
    pub fn platform_hosts(&self) -> Vec<String> {
        self.app_hosts(berth_core::names::PLATFORM_LABEL)
    }
    /// The platform's HTTPS address at the edge (its last host name), if HTTPS is served.
    pub fn platform_url(&self) -> Option<String> {
        self.https_url(self.platform_hosts().last()?)
    }
    /// Where the edge reaches the API (loopback when it listens on every address).
    pub fn api_upstream(&self) -> SocketAddr {
        let ip = match self.api_listen.ip() {
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        SocketAddr::new(ip, self.api_listen.port())
    }
    /// Host names an app answers to.
    pub fn app_hosts(&self, app: &str) -> Vec<String> {
        let mut hosts = vec![format!("{app}.localhost")];
        if let Some(d) = &self.base_domain {
            hosts.push(format!("{app}.{d}"));
        }
        hosts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_problems_are_all_reported() {
        let c = PlatformConfig::new("/var/lib/berth".into());
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        let mut bad = c.clone();
        bad.data_dir = "relative".into();
        bad.bridge = "way-too-long-bridge-name".into();
        bad.edge_listen.set_port(bad.api_listen.port());
        let p = bad.validate();
        assert_eq!(p.len(), 3, "{p:?}");
    }

    #[test]
    fn https_and_acme_settings_are_checked_once_each() {
        let mut c = PlatformConfig::new("/var/lib/berth".into());
        c.edge_tls_listen = Some(c.edge_listen);
        c.acme = Some(berth_edge::acme::AcmeSettings {
            directory: "http://acme.test/dir".into(),
            email: Some("not an address".into()),
            ca_file: Some("/nonexistent/root.pem".into()),
        });
        let p = c.validate();
        assert_eq!(p.len(), 4, "{p:?}");
        for flag in [
            "--edge-tls-port",
            "--acme-directory",
            "--acme-email",
            "--acme-ca-file",
        ] {
            assert_eq!(
                p.iter().filter(|m| m.contains(flag)).count(),
                1,
                "{flag}: {p:?}"
            );
        }
    }

    #[test]
    fn urls() {
        let mut c = PlatformConfig::new("/d".into());
        assert_eq!(c.app_url("hello"), "http://hello.localhost:8080/");
        c.base_domain = Some("apps.example.com".into());
        assert_eq!(
            c.app_hosts("hello"),
            ["hello.localhost", "hello.apps.example.com"]
        );
    }
}
