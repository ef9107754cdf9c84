//! Command-line syntax.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// berth: push code, get a running service with a URL.
///
/// Start the platform with `berth up`, then deploy a directory with `berth deploy DIR`:
/// berth detects how to build it (Procfile, Python, Node, Rust, static site), builds an OCI
/// image, runs it in a container and routes http://APP.localhost:8080/ to it.
#[derive(Debug, Parser)]
#[command(name = "berth", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// Data directory of the platform (default: $XDG_DATA_HOME/berth or ~/.local/share/berth).
    /// The CLI finds the API address and token there.
    #[arg(long, env = "BERTH_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// API address, e.g. http://127.0.0.1:7070 (default: read from the data directory).
    #[arg(long, env = "BERTH_API_URL", global = true)]
    pub api_url: Option<String>,
    /// API token (default: read from <data dir>/api-token).
    #[arg(long, env = "BERTH_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the platform on this machine: API, edge, supervisor (foreground; Ctrl-C stops the
    /// control plane, apps and the edge keep serving).
    Up(UpArgs),
    /// Stop every app container and the edge of a data directory, and remove its bridge.
    Down,
    /// Build and deploy a directory (default: the current one). Redeploys are zero-downtime.
    ///
    /// The app name comes from --app, else `name` in berth.toml, else the directory name.
    Deploy {
        /// Directory to deploy.
        #[arg(default_value = ".")]
        path: PathBuf,
        /// App name (a DNS label).
        #[arg(long)]
        app: Option<String>,
    },
    /// List apps with their URL and serving release.
    Apps,
    /// Show an app's instances: state, restarts, last exit code.
    Ps { app: String },
    /// Show an app's releases: version, image, what made it, status, who, when.
    Releases { app: String },
    /// Go back to the previous release (or --to N) without rebuilding.
    Rollback {
        app: String,
        /// Release version to return to.
        #[arg(long)]
        to: Option<u32>,
    },
    /// Show an app's logs (runtime by default, --build for the last build).
    Logs {
        app: String,
        /// Keep streaming new lines.
        #[arg(short, long)]
        follow: bool,
        /// Show the last build's log instead.
        #[arg(long)]
        build: bool,
        /// How many recent lines to show.
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
    },
    /// Read or change an app's environment (each change is a new release).
    #[command(subcommand)]
    Env(EnvCommand),
    /// Stop an app and delete it with its releases, images, cache and logs.
    Destroy { app: String },

    /// (internal) Run the edge process.
    #[command(hide = true)]
    Edge {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        routes: PathBuf,
        #[arg(long)]
        applied: PathBuf,
    },
    /// (internal) Init process inside app containers.
    #[command(hide = true)]
    ContainerInit {
        #[arg(long)]
        status_file: PathBuf,
        /// Start the app only once the network namespace has its default route.
        #[arg(long)]
        wait_for_network: bool,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Serve a directory over HTTP (what static-site apps run).
    #[command(hide = true)]
    ServeStatic {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, env = "PORT")]
        port: u16,
    },
}

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Show the environment of the serving release.
    List { app: String },
    /// Set variables: `berth env set APP KEY=VALUE...`.
    Set {
        app: String,
        #[arg(required = true)]
        pairs: Vec<String>,
    },
    /// Remove variables: `berth env unset APP KEY...`.
    Unset {
        app: String,
        #[arg(required = true)]
        keys: Vec<String>,
    },
}

/// `berth up` settings.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// API port (listens on 127.0.0.1).
    #[arg(long, env = "BERTH_API_PORT", default_value_t = berth_control::config::DEFAULT_API_PORT)]
    pub api_port: u16,
    /// Edge port (listens on all interfaces).
    #[arg(long, env = "BERTH_EDGE_PORT", default_value_t = berth_control::config::DEFAULT_EDGE_PORT)]
    pub edge_port: u16,
    /// Linux bridge for app containers.
    #[arg(long, env = "BERTH_BRIDGE", default_value = berth_control::config::DEFAULT_BRIDGE)]
    pub bridge: String,
    /// Private subnet for app containers.
    #[arg(long, env = "BERTH_SUBNET", default_value = berth_control::config::DEFAULT_SUBNET)]
    pub subnet: String,
    /// Domain apps also answer on, as APP.<domain> (APP.localhost always works).
    #[arg(long, env = "BERTH_BASE_DOMAIN")]
    pub base_domain: Option<String>,
    /// Largest accepted upload, e.g. 256M.
    #[arg(long, env = "BERTH_UPLOAD_LIMIT", default_value = "256M")]
    pub upload_limit: String,
    /// How long old instances keep serving after traffic moved, e.g. 2s.
    #[arg(long, default_value = "2s")]
    pub drain_grace: String,
    /// Longest a build may run, e.g. 20m.
    #[arg(long, default_value = "20m")]
    pub build_timeout: String,
    /// Isolation of apps whose berth.toml does not choose: `trusted` (crun: Linux namespaces,
    /// cgroups, seccomp, no capabilities) or `sandbox` (gVisor: the app never talks to the
    /// host's kernel; recommended when apps come from people you do not fully trust).
    #[arg(long, env = "BERTH_DEFAULT_ISOLATION", default_value = "trusted", value_parser = ["trusted", "sandbox"])]
    pub default_isolation: String,
}
