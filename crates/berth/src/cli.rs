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
    /// API token (default: your sign-in from `berth login`, else <data dir>/api-token).
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
    Up(Box<UpArgs>),
    /// Stop every app container and the edge of a data directory, and remove its bridge.
    Down,
    /// The settings `berth up` would run with here: each one's value and where it comes
    /// from (flag, environment, config file and line, or default).
    Config {
        /// The config file (default: <data dir>/berth.toml, else /etc/berth/berth.toml).
        #[arg(long, env = "BERTH_CONFIG")]
        config: Option<PathBuf>,
    },
    /// The platform of a data directory at a glance: control plane, edge, runtimes, bridge,
    /// firewall, disk, database server and certificates, each with its health (read from
    /// the machine, so it answers when the control plane does not). Exit 1 when something
    /// is down.
    Status,
    /// Check this machine before berth runs on it: privileges, kernel, cgroups, crun and
    /// runsc, nftables, iproute2, buildah, skopeo, PostgreSQL, the ports berth listens on,
    /// disk — each problem with its fix. Exit 1 when berth could not run.
    Doctor {
        /// The API port berth up will use.
        #[arg(long, default_value_t = 7070)]
        api_port: u16,
        /// The edge's HTTP port.
        #[arg(long, default_value_t = 8080)]
        edge_port: u16,
        /// The edge's HTTPS port (0: not served).
        #[arg(long, default_value_t = 8443)]
        edge_tls_port: u16,
    },
    /// Run berth as a systemd service: writes berth.service (`berth up` for --data-dir,
    /// default /var/lib/berth; journald logging; restarted on failure; stopping it leaves
    /// apps and the edge serving), the shell completions and the man pages, then enables and
    /// starts it.
    ///
    /// Example: sudo berth install; journalctl -u berth
    Install {
        /// Write the files under this directory instead (for a package or an image); nothing
        /// is enabled.
        #[arg(long)]
        root: Option<PathBuf>,
        /// The berth binary the service runs (default: this one).
        #[arg(long)]
        bin: Option<PathBuf>,
    },
    /// Stop and disable the systemd service and remove what `berth install` wrote (the apps,
    /// the edge and the data directory stay).
    Uninstall {
        /// Remove the files from under this directory instead.
        #[arg(long)]
        root: Option<PathBuf>,
    },
    /// The blackbox probes of an app: its public URLs requested through the edge on a
    /// schedule (`berth up --probe-interval`), with status, latency and, over HTTPS, when
    /// the certificate served expires.
    Probes { app: String },
    /// The DNS records berth publishes for app names (`berth up --dns`): the zone, what names
    /// point at, and each name's state (published, pending, failed with the server's reason).
    /// Exits 1 while a name fails.
    Dns,
    /// Grafana dashboards for berth's metrics, for teams that already run Grafana.
    #[command(subcommand)]
    Grafana(GrafanaCommand),
    /// Free disk space: the images of old releases (beyond each app's last 10, and never one
    /// a current release or a running instance uses), root filesystems no kept image needs,
    /// and build caches of removed apps or over 2 GiB. The control plane also does this
    /// every hour.
    Gc {
        /// Only say what would go.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print a shell completion script.
    ///
    /// Example: berth completions bash > /etc/bash_completion.d/berth (zsh: into a
    /// directory of $fpath as _berth; fish: ~/.config/fish/completions/berth.fish)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (berth.1, berth-deploy.1, …) into a directory.
    ///
    /// Example: berth man --out /usr/local/share/man/man1
    Man {
        #[arg(long)]
        out: PathBuf,
    },
    /// Build and deploy a directory (default: the current one), a commit of a git
    /// repository (--git URL --ref main), or an image from an OCI registry (--image REF).
    /// Redeploys are zero-downtime.
    ///
    /// A directory is built with its Dockerfile when it has one (buildah, unprivileged),
    /// else by the language berth detects. The app name comes from --app, else `name` in
    /// berth.toml, else the directory's (repository's, image's) name. Name an app with its
    /// project as PROJECT/APP.
    ///
    /// Examples:
    ///   berth deploy examples/hello
    ///   berth deploy --image registry.example.com/team/web:1.4 --app web
    ///   berth registry login registry.example.com --username ci --password-stdin < token
    Deploy {
        /// Directory to deploy.
        #[arg(default_value = ".")]
        path: PathBuf,
        /// A git repository to deploy instead (https://, http://, git:// or ssh://); the
        /// release records the commit.
        #[arg(long, value_name = "URL")]
        git: Option<String>,
        /// With --git: the branch, tag or commit (default: the repository's default branch).
        #[arg(long = "ref", value_name = "REF", requires = "git")]
        git_ref: Option<String>,
        /// An image to deploy from a registry (HOST[:PORT]/PATH:TAG or …@sha256:…), pulled
        /// with the credentials of `berth registry login` and pinned by digest in the
        /// release; berth.toml of PATH, if there is one, still applies.
        #[arg(long, value_name = "REF", conflicts_with = "git")]
        image: Option<String>,
        /// App name (a DNS label).
        #[arg(long)]
        app: Option<String>,
        /// The project a new app goes to (default: the token's, else `default`).
        #[arg(long, env = "BERTH_PROJECT")]
        project: Option<String>,
    },
    /// List apps with their URL and serving release.
    Apps,
    /// Show an app's instances: state, restarts, last exit code.
    Ps { app: String },
    /// Show an app's releases: version, image, what made it, status, who, when.
    Releases { app: String },
    /// Run more or fewer instances of an app's process types (a new release of the same
    /// image, rolled out without downtime; the edge spreads requests over the web
    /// instances, fewest outstanding requests first).
    ///
    /// Example: berth scale shop web=3 worker=1
    Scale {
        app: String,
        /// TYPE=COUNT pairs (web at least 1, any type at most 16).
        #[arg(required = true, value_name = "TYPE=COUNT")]
        counts: Vec<String>,
    },
    /// Roll the serving release out again: a new release of the same image and settings,
    /// with new instances, health checks and a drain of the old ones (no downtime).
    Redeploy { app: String },
    /// Kill one instance abruptly (SIGKILL, as a crash); the supervisor restarts it, and
    /// the edge sends requests to the app's other instances meanwhile.
    ///
    /// Example: berth kill shop web.0
    Kill {
        app: String,
        /// The instance: `PROCESS.INDEX` of the serving release (see `berth ps`), or its id.
        instance: String,
    },
    /// Rehearse failures under load: a bounded load against the app's URL while berth
    /// kills one of its instances, then the control plane (started again as it was), then
    /// redeploys the app; reports requests failed, latency and SLO burn rate per phase.
    ///
    /// Needs the platform on this machine for the control-plane phase (skipped otherwise).
    /// Example: berth drill shop --phase 10s --rate 100
    Drill {
        app: String,
        /// How long each phase lasts (steady, instance killed, control plane killed,
        /// redeploy).
        #[arg(long, default_value = "10s", value_parser = parse_phase)]
        phase: std::time::Duration,
        /// Clients sending at once (kept-alive connections).
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Requests per second, all clients together.
        #[arg(long, default_value_t = 50)]
        rate: u32,
        /// Path requested.
        #[arg(long, default_value = "/")]
        path: String,
    },
    /// Give a canary under way all the requests now (skipping its remaining steps); on a
    /// cluster, promote its Argo Rollouts Rollout fully.
    Promote { app: String },
    /// Roll a canary under way back now; the serving release keeps serving (on a cluster,
    /// its Argo Rollouts Rollout is aborted).
    Abort { app: String },
    /// Show an app's images: digest, size, the releases that run them, SBOM and signature.
    ///
    /// Every image berth builds or pulls gets an SPDX 2.3 SBOM (from the package databases
    /// in it) and a cosign-format signature by the platform's key (<data>/signing/cosign.pub).
    Images { app: String },
    /// Print the SPDX 2.3 SBOM of an app's serving release (or --release N).
    Sbom {
        app: String,
        /// The release (default: the one serving).
        #[arg(long)]
        release: Option<u32>,
    },
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
        /// How many lines to show (the most recent that match).
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
        #[command(flatten)]
        filter: LogFilterArgs,
    },
    /// Read or change an app's environment (each change is a new release).
    #[command(subcommand)]
    Env(EnvCommand),
    /// Stop an app and delete it with its releases, images, cache, logs, secrets and volumes.
    Destroy { app: String },
    /// Create an app with everything it needs, all at once or not at all: e.g.
    /// `berth create shop --domain shop.example.com --secret API_KEY=… --volume
    /// data:1G:/data --database`, then `berth deploy DIR --app shop`.
    ///
    /// If any part fails (a domain taken, the database server refusing), nothing is left
    /// behind. With --idempotency-key, running the same command again returns the first
    /// result and creates nothing twice.
    Create {
        app: String,
        /// A domain served over HTTPS (repeatable).
        #[arg(long = "domain", value_name = "DOMAIN")]
        domains: Vec<String>,
        /// A secret NAME=VALUE (repeatable).
        #[arg(long = "secret", value_name = "NAME=VALUE")]
        secrets: Vec<String>,
        /// A volume NAME:SIZE:MOUNT, e.g. data:1G:/data; add :exclusive for one instance at
        /// a time (repeatable).
        #[arg(long = "volume", value_name = "NAME:SIZE:MOUNT")]
        volumes: Vec<String>,
        /// A PostgreSQL database, given to the app as DATABASE_URL.
        #[arg(long)]
        database: bool,
        /// Makes retries safe: the same key returns the first result.
        #[arg(long, env = "BERTH_IDEMPOTENCY_KEY")]
        idempotency_key: Option<String>,
        /// The project it goes to (default: the token's, else `default`).
        #[arg(long, env = "BERTH_PROJECT")]
        project: Option<String>,
    },
    /// Manage an app's secrets: encrypted at rest, never shown again, redacted from logs.
    ///
    /// Secrets reach the app as environment variables, or as files under /run/secrets when
    /// berth.toml lists them in `[secrets] files = ["NAME"]`. Each change is a new release
    /// (zero downtime); a rollback returns to the secret versions of its release. Build
    /// secrets (`--build`) reach only the app's builds: private registries' tokens.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Manage an app's volumes: durable, size-limited disks that survive redeploys,
    /// rollbacks, crashes and platform restarts.
    #[command(subcommand)]
    Volumes(VolumesCommand),
    /// Give an app a PostgreSQL database: berth runs the server, the app gets DATABASE_URL.
    #[command(subcommand)]
    Db(DbCommand),
    /// Give an app its own domain names, served over HTTPS (HTTP/2 and HTTP/1.1).
    ///
    /// Certificates come from the ACME directory given to `berth up --acme-directory` (e.g.
    /// Let's Encrypt), or from berth's own local CA for `*.localhost` names and when no
    /// directory is configured (trust it with `berth ca export`). They are renewed before
    /// they expire. Plain HTTP to a domain is redirected to HTTPS unless --no-redirect.
    #[command(subcommand)]
    Domains(DomainsCommand),
    /// berth's local certificate authority.
    #[command(subcommand)]
    Ca(CaCommand),
    /// The DORA four keys of an app, a project or the whole platform over the last day,
    /// week and month: deployment frequency, lead time for changes (commit → serving, for
    /// git checkouts), change failure rate (deploys that failed or were rolled back) and time
    /// to restore service, each with its performance band (elite, high, medium, low).
    Dora {
        /// An app (default: the whole platform).
        #[arg(conflicts_with = "project")]
        app: Option<String>,
        /// A project's apps together.
        #[arg(long)]
        project: Option<String>,
        /// One window instead of 1d, 7d and 30d, e.g. 14d.
        #[arg(long)]
        window: Option<String>,
    },
    /// An app's service level objectives (berth.toml `[slo]`: availability, latency_p,
    /// latency_ms; defaults 99.9% and 99% under 300 ms): burn rate of each error budget over
    /// 5m, 30m, 1h, 6h and 3d, the 30-day budget left, and whether a page or ticket fires
    /// (the SRE workbook's multi-window table: page at 14.4× over 1h and 5m or 6× over 6h and
    /// 30m; ticket at 1× over 3d and 6h).
    ///
    /// With --rules, prints the same objectives as Prometheus recording and alerting rules.
    Slo {
        /// The app (with --rules: default every app).
        app: Option<String>,
        /// Print Prometheus rules (YAML) instead.
        #[arg(long)]
        rules: bool,
        /// Write the rules to this file.
        #[arg(long, requires = "rules")]
        out: Option<PathBuf>,
    },
    /// Alerts berth raised (SLO burn, …): the firing ones; with --all also those resolved in
    /// the last day.
    Alerts {
        #[arg(long)]
        all: bool,
    },
    /// Serve MCP (Model Context Protocol) on stdin/stdout, for AI agents: the platform's API as
    /// tools (list apps, deploy a directory, logs, rollback, env, secrets by name, SLOs,
    /// DORA, …), acting with this CLI's token — give an agent a deployer token of its own
    /// (`berth tokens create agent --role deployer`) and every change it makes is audited.
    ///
    /// Example agent config: {"command": "berth", "args": ["mcp"], "env": {"BERTH_TOKEN": "…"}}
    Mcp,
    /// Make, list and revoke API tokens for people, CI and agents, each with a role:
    /// viewer (reads), deployer (also deploys and changes apps), admin (everything).
    ///
    /// Example: berth tokens create ci --role deployer --expires 90d, then give CI
    /// BERTH_TOKEN=<the token> and BERTH_API_URL=http://<host>:7070.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Projects group apps: a token can be limited to one project's apps (it cannot see or
    /// touch the others), and a project can have quotas (apps, instances, memory, volumes).
    ///
    /// Example: berth projects create shop --max-apps 5 --max-memory 4G, then
    /// berth tokens create shop-ci --role deployer --project shop
    #[command(subcommand)]
    Projects(ProjectsCommand),
    /// Tenants are organisations above projects: a tenant's projects share its quotas
    /// (apps, instances, memory, volumes), and a token can be limited to one tenant.
    ///
    /// Example: berth tenants create acme --max-apps 20, berth projects create shop
    /// --tenant acme, then berth tokens create acme-admin --role admin --tenant acme
    #[command(subcommand)]
    Tenants(TenantsCommand),
    /// Sign in with the platform's OpenID Connect provider: a browser page at the provider,
    /// then the CLI acts as you, with the role an admin gave you (`berth people add`).
    /// The sign-in is kept in ~/.config/berth/credentials.json until it expires.
    Login {
        /// Print the address to open instead of opening a browser.
        #[arg(long)]
        no_browser: bool,
        /// The port of the local address the browser comes back to
        /// (http://127.0.0.1:PORT/callback), for providers that only send it back to a
        /// redirect address registered exactly; any free port when not given.
        #[arg(long)]
        callback_port: Option<u16>,
    },
    /// Forget your sign-in to this platform.
    Logout,
    /// Who the platform takes you for: name, role, scope, and whether by token or sign-in.
    Whoami,
    /// Roles for people who sign in with the platform's OIDC provider, by the identity it
    /// vouches for (their verified email, else their subject).
    ///
    /// Example: berth people add alice@example.com --role deployer --project shop
    #[command(subcommand)]
    People(PeopleCommand),
    /// Credentials for the registry built images are pushed to (`berth up --registry`):
    /// kept sealed like secrets, used for each push, never shown again.
    ///
    /// Example: echo "$TOKEN" | berth registry login registry.example.com --username ci --password-stdin
    #[command(subcommand)]
    Registry(RegistryCommand),
    /// Who changed what: every call that changed something (or tried to), with its token,
    /// client, request id, outcome and what it made. Append-only.
    Audit {
        /// Only entries newer than this (30m, 2d) or since a time (2026-11-29T10:00:00Z).
        #[arg(long)]
        since: Option<String>,
        /// Only calls by this token name (`admin` is the bootstrap token).
        #[arg(long)]
        actor: Option<String>,
        /// Only calls on this app.
        #[arg(long)]
        app: Option<String>,
        /// At most this many (the most recent).
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: u32,
    },
    /// Back up the whole platform (state, keys, volumes, databases, images) to a directory or
    /// an S3 bucket, and restore it onto a new machine.
    #[command(subcommand)]
    Backup(BackupCommand),
    /// What applying a platform definition would change: DIR holds one directory per app
    /// (its source and berth.toml; the app is named by berth.toml's name, else the
    /// directory). Each app is shown as create, update (berth.toml field by field, the code
    /// as a whole, and drift: a release made by hand since the last apply), adopt (an app
    /// made by hand) or, with --prune, delete. Exit status as `terraform plan
    /// -detailed-exitcode`: 0 no changes, 2 changes, 1 an error.
    ///
    /// Example: berth plan -f platform/
    Plan {
        #[arg(short = 'f', long = "file", value_name = "DIR")]
        dir: PathBuf,
        /// Also delete apps an earlier apply made that DIR no longer has (never apps made
        /// by hand).
        #[arg(long)]
        prune: bool,
    },
    /// Write the apps of a platform definition (DIR, as `berth plan` reads it) as Kubernetes
    /// objects for a cluster: a kustomize tree with every object in `OUT/base` and an
    /// overlay to adjust in `OUT/overlays/production`, for Argo CD, Flux or `kubectl apply
    /// -k`. Per project a Namespace with a LimitRange and deny-by-default network policies;
    /// per app a ConfigMap, a Deployment per process type (non-root, no capabilities,
    /// read-only root, seccomp; gVisor for sandboxed apps), a Service and an Ingress with
    /// TLS. Secret values are never written. Images are named REGISTRY/APP:CODE (the
    /// digest of the app's directory) unless berth.toml says `image =`.
    ///
    /// With `--stack argo-cd --repo URL` (GitOps): also `OUT/argocd/`, an Argo CD
    /// Application per app syncing its directory from the repository, and
    /// `OUT/argocd-root.yaml`, the Application that syncs them — apply it once, then each
    /// commit of a new rendering is what the cluster runs.
    ///
    /// Example: berth render -f platform/ --out deploy/ --base-domain apps.example.com
    ///   berth render -f platform/ --out deploy/ --stack argo-cd --repo https://git.example.com/team/platform.git
    Render {
        #[command(flatten)]
        definition: Definition,
        /// The parts of a cluster stack to render for (`berth kube` finds them itself):
        /// cert-manager (a Certificate per app), argo-rollouts (a canary app's web as a
        /// Rollout with its steps), cloudnative-pg (a score.yaml's postgres as a Cluster,
        /// its connection in the app's variables), prometheus-operator (an app's SLO rules
        /// as a PrometheusRule, a ServiceMonitor where berth.toml has `[metrics] path`),
        /// argo-cd (Applications; needs --repo).
        #[arg(long, value_name = "LIST", default_value = "")]
        stack: String,
        /// With --stack argo-cd: the git repository the rendered tree is committed to.
        #[arg(long, value_name = "URL")]
        repo: Option<String>,
        /// With --repo: the branch, tag or commit Argo CD follows.
        #[arg(long, value_name = "REV", default_value = "HEAD", requires = "repo")]
        revision: String,
        /// With --repo: where OUT is in the repository (default: OUT as given, when it is
        /// a relative path; else the repository's root).
        #[arg(long, value_name = "PATH", requires = "repo")]
        repo_path: Option<String>,
        /// Where to write the tree (an earlier rendering there is replaced, its overlay kept).
        #[arg(long, value_name = "OUT")]
        out: PathBuf,
    },
    /// Apply a platform definition (DIR, as `berth render` renders it) to a Kubernetes
    /// cluster by server-side apply, as field manager `berth`: `berth kube plan` shows what
    /// would change object by object and field by field (drift: a change made by hand), and
    /// `berth kube apply` makes the cluster so. A field another manager changed is a
    /// conflict, reported and left alone unless --force-conflicts; a namespace berth did not
    /// make is never taken over; --prune deletes what berth made and DIR no longer has
    /// (only objects carrying berth's label).
    ///
    /// Example: berth kube apply -f platform/ --kubeconfig ~/.kube/config --prune
    #[command(subcommand)]
    Kube(KubeCommand),
    /// Make the platform what DIR declares (see `berth plan`): every change of the plan,
    /// deploys and, with --prune, deletes; a second apply changes nothing. DIR is read and
    /// checked whole first: an invalid definition changes nothing.
    Apply {
        #[arg(short = 'f', long = "file", value_name = "DIR")]
        dir: PathBuf,
        #[arg(long)]
        prune: bool,
    },
    /// GitOps: apply a platform definition (see `berth plan`) from a directory of a git
    /// repository on every commit of a branch — announced by a push webhook or found by the
    /// poll. A commit whose definition is invalid is refused whole; `status` shows drift
    /// (changes made by hand since the last commit applied).
    ///
    /// Example: berth gitops add https://github.com/acme/infra.git --path platform/
    #[command(subcommand)]
    Gitops(GitopsCommand),
    /// Deploy with `git push`: berth serves a git repository per app (smart HTTP at the API,
    /// your token as the password); a push to `main` builds and deploys that commit, streams
    /// the build to you, and is rejected when the deploy fails.
    ///
    /// Example: berth git remote shop --add berth && git push berth main
    #[command(subcommand)]
    Git(GitCommand),

    /// (internal) The pre-receive hook of berth's git repositories.
    #[command(hide = true)]
    GitHook,
    /// (internal) Run the edge process.
    #[command(hide = true)]
    Edge {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        routes: PathBuf,
        #[arg(long)]
        applied: PathBuf,
        #[arg(long, requires = "certs")]
        tls_listen: Option<std::net::SocketAddr>,
        #[arg(long)]
        certs: Option<PathBuf>,
        /// Where request counts are written about once a second.
        #[arg(long)]
        metrics: Option<PathBuf>,
        /// Where the access log is appended.
        #[arg(long)]
        access_log: Option<PathBuf>,
        /// Unix socket where this edge offers its listening sockets to a successor.
        #[arg(long)]
        handover: Option<PathBuf>,
        /// Take the listening sockets over from the edge offering them at --handover (a
        /// graceful upgrade); bind them afresh when none does.
        #[arg(long, requires = "handover")]
        take_over: bool,
        /// Serve plain HTTP on epoll even where io_uring is available.
        #[arg(long)]
        no_io_uring: bool,
        /// A peer whose forwarding headers are kept and extended (see `berth up
        /// --trusted-proxy`); repeatable.
        #[arg(long, value_name = "CIDR")]
        trusted_proxy: Vec<berth_edge::policy::Cidr>,
    },
    /// (internal) Init process inside app containers.
    #[command(hide = true)]
    ContainerInit {
        #[arg(long)]
        status_file: PathBuf,
        /// Start the app only once the network namespace has its default route.
        #[arg(long)]
        wait_for_network: bool,
        /// NUL-separated KEY=VALUE file of secrets to add to the app's environment.
        #[arg(long)]
        secrets_env: Option<PathBuf>,
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

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Names, versions, how each reaches the app, who set it and when (never values).
    List { app: String },
    /// Set secrets: `berth secrets set APP NAME=VALUE... [--file NAME=PATH] [--stdin NAME]`.
    ///
    /// Prefer --stdin or --file for real credentials: values on the command line end up in
    /// shell history and process listings.
    Set {
        app: String,
        /// NAME=VALUE pairs.
        pairs: Vec<String>,
        /// Read a secret's value from a file: NAME=PATH (repeatable).
        #[arg(long = "file", value_name = "NAME=PATH")]
        files: Vec<String>,
        /// Read one secret's value from standard input (a trailing newline is dropped).
        #[arg(long, value_name = "NAME")]
        stdin: Option<String>,
        /// A build secret: present only while the app builds — as an environment variable
        /// of the build steps and as the file /run/secrets/NAME (a Dockerfile reads it with
        /// `RUN --mount=type=secret,id=NAME`) — never in the image, the running app or the
        /// build log (its value is redacted). For private package registries:
        /// `berth secrets set web --stdin NPM_TOKEN --build < token.txt`. No new release.
        #[arg(long)]
        build: bool,
    },
    /// Remove secrets: `berth secrets unset APP NAME...` (`--build` for build secrets).
    Unset {
        app: String,
        #[arg(required = true)]
        names: Vec<String>,
        /// Remove build secrets.
        #[arg(long)]
        build: bool,
    },
    /// Re-encrypt every stored secret under a new key and retire the old key.
    RotateKey,
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Create the app's database and role; the app gets DATABASE_URL as a secret (a new
    /// release if it runs). Only this app can connect to it.
    Create { app: String },
    /// The app's database: name, role, server, backups.
    Info { app: String },
    /// Dump the database (pg_dump custom format) into the data directory.
    Backup { app: String },
    /// Replace the database's contents with a backup (one transaction).
    Restore {
        app: String,
        /// Backup id, from `berth db info`.
        backup: String,
    },
    /// Open psql on the app's database as the administrator (on the machine berth runs on).
    Psql {
        app: String,
        /// Arguments for psql, after `--` (e.g. `-- -c 'select 1'`).
        #[arg(last = true)]
        args: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum VolumesCommand {
    /// Volumes of an app: size, use, mount path, snapshots.
    List { app: String },
    /// Create a volume and mount it into the app (a new release if it is running).
    ///
    /// Example: `berth volumes create shop data --size 1G --mount /data`
    Create {
        app: String,
        /// Volume name (lowercase letters, digits, '-').
        name: String,
        /// Size, e.g. 512M or 1G; a write past it fails with "no space left on device".
        #[arg(long)]
        size: String,
        /// Where the volume appears inside the app's containers, e.g. /data.
        #[arg(long)]
        mount: String,
        /// Only one instance may use it at a time (e.g. an embedded database): deploys stop
        /// the old instance before starting the new one.
        #[arg(long)]
        exclusive: bool,
    },
    /// Take a consistent snapshot of a volume (the filesystem is frozen while it is copied).
    Snapshot { app: String, name: String },
    /// Put a snapshot back (`--force` while the app runs: it is stopped and started again).
    Restore {
        app: String,
        name: String,
        /// Snapshot id, from `berth volumes list`.
        snapshot: String,
        /// Restore even though instances use the volume (brief downtime).
        #[arg(long)]
        force: bool,
    },
    /// Delete a volume and its snapshots. Asks for confirmation.
    Destroy {
        app: String,
        name: String,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
        /// Destroy even though the app mounts it (the app is redeployed without it).
        #[arg(long)]
        force: bool,
    },
}

/// Which log lines `berth logs` shows.
#[derive(Debug, Args, Default)]
pub struct LogFilterArgs {
    /// Lines from this long ago (30m, 1h, 2d) or this time (2026-11-29T10:00:00Z) on.
    #[arg(long)]
    pub since: Option<String>,
    /// Lines before this long ago or this time.
    #[arg(long)]
    pub until: Option<String>,
    /// Lines of this release only, e.g. 3.
    #[arg(long)]
    pub release: Option<u32>,
    /// Lines that match this regular expression, e.g. 'ERROR|WARN' or '(?i)timeout'.
    #[arg(long)]
    pub grep: Option<String>,
    /// Lines of this process type only, e.g. web or worker.
    #[arg(long)]
    pub process: Option<String>,
    /// `runtime` (the app's own output), `build` (its builds' output, labelled with the
    /// release each made; 0 for failed builds), `access` (the edge's access log: method,
    /// path, status, time, client) or `platform` (what berth says about it: crashes,
    /// restarts).
    #[arg(long)]
    pub stream: Option<String>,
}

/// `berth gitops …`.
#[derive(Debug, Subcommand)]
pub enum GitopsCommand {
    /// Apply the definition in PATH of URL's BRANCH now and on every commit (the webhook
    /// URLs and their secret are printed, the secret only now).
    Add {
        url: String,
        /// The platform directory inside the repository (default: its root).
        #[arg(long, default_value = "")]
        path: String,
        #[arg(long, default_value = "main")]
        branch: String,
        /// The source's name (default: the repository's).
        #[arg(long)]
        name: Option<String>,
        /// Delete the apps it made that a commit no longer declares.
        #[arg(long)]
        prune: bool,
    },
    /// Every source: the last commit, what came of it, and drift. Exits 1 when the last
    /// commit was refused or failed, or something drifted.
    Status,
    /// Stop applying a source (the apps it made stay).
    Remove { name: String },
}

/// `berth git …`.
#[derive(Debug, Subcommand)]
pub enum GitCommand {
    /// The git remote of an app (`https://berth.localhost:8443/git/APP.git`: the platform's
    /// own host name at the edge); with --add [NAME] it is added to the repository here
    /// (default name `berth`) with a credential helper that hands git your berth token.
    Remote {
        app: String,
        #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "berth")]
        add: Option<String>,
    },
    /// Deploy an app from a branch of a repository on every push: berth checks it can read
    /// the branch, deploys its head, then deploys each push a webhook announces (GitHub,
    /// Gitea/Forgejo, GitLab: the URLs and the secret are printed, the secret only now) or
    /// the poll finds (`berth up --git-poll-interval`, default 60s).
    ///
    /// Example: berth git connect shop https://github.com/acme/shop.git --branch main
    Connect {
        app: String,
        /// The repository: https://, http://, git://, ssh:// or git@host:path (a private
        /// one over ssh with the app's deploy key, see `berth git key`).
        url: String,
        #[arg(long, default_value = "main")]
        branch: String,
    },
    /// The app's deploy key for private repositories over ssh, made on first use: add the
    /// printed public key to the repository as a read-only deploy key (GitHub: Settings →
    /// Deploy keys; GitLab: Settings → Repository → Deploy keys), then `berth git connect`
    /// with its ssh URL. berth keeps the private half sealed.
    ///
    /// Example: berth git key shop && berth git connect shop git@github.com:acme/shop.git
    Key {
        app: String,
        /// Replace it with a new key (remove the old one from the repository).
        #[arg(long)]
        rotate: bool,
    },
    /// An app's git connection: repository, branch, and what the last push did.
    Status { app: String },
    /// Stop deploying an app on pushes (its releases stay).
    Disconnect { app: String },
    /// A git credential helper answering with the CLI's token (what `remote --add` sets up):
    /// `git config credential.URL.helper '!berth git credential'`.
    Credential {
        /// What git asks: get, store or erase.
        operation: String,
    },
}

/// `berth grafana …`.
#[derive(Debug, Subcommand)]
pub enum GrafanaCommand {
    /// Write provisionable dashboard JSON (platform, an app's RED signals and resources,
    /// SLOs, DORA four keys) into a directory, for a Grafana whose Prometheus scrapes
    /// berth's /metrics. Each has a `datasource` variable; point a file provider at the
    /// directory, or import the files.
    ///
    /// Example: berth grafana dashboards --out /etc/grafana/dashboards/berth
    Dashboards {
        /// The directory (made if missing; berth's files in it are replaced).
        #[arg(long)]
        out: PathBuf,
    },
}

/// `berth domains …`.
#[derive(Debug, Subcommand)]
pub enum DomainsCommand {
    /// Route a domain to an app and get it a certificate, e.g. `berth domains add shop
    /// shop.example.com` (point the name's DNS at this machine first when using ACME).
    Add {
        app: String,
        /// The domain, e.g. shop.example.com.
        domain: String,
        /// Keep serving plain HTTP instead of redirecting it to HTTPS.
        #[arg(long)]
        no_redirect: bool,
    },
    /// List an app's domains with their certificates.
    List { app: String },
    /// Stop routing a domain to an app (its certificate is forgotten).
    Remove { app: String, domain: String },
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Make a token; it is printed once and never shown again (berth keeps only its hash).
    Create {
        /// A name people recognise (the actor in `berth audit`), e.g. ci or alice.
        name: String,
        /// viewer, deployer or admin.
        #[arg(long, default_value = "viewer")]
        role: String,
        /// Limit the token to one project's apps.
        #[arg(long, conflicts_with = "tenant")]
        project: Option<String>,
        /// Limit the token to the apps of one tenant's projects.
        #[arg(long)]
        tenant: Option<String>,
        /// Valid for this long (30d, 12h); forever when not given.
        #[arg(long)]
        expires: Option<String>,
    },
    /// List tokens (never their secret): role, who made them, last use, revocation.
    List,
    /// Revoke a token at once; calls with it are refused (and audited).
    Revoke { name: String },
}

/// Quotas of a project or a tenant; absent ones do not limit.
#[derive(Debug, Args)]
pub struct QuotaArgs {
    /// At most this many apps.
    #[arg(long)]
    pub max_apps: Option<u32>,
    /// At most this many instances across the apps' serving releases.
    #[arg(long)]
    pub max_instances: Option<u32>,
    /// At most this much memory (the instances' limits added up), e.g. 4G.
    #[arg(long)]
    pub max_memory: Option<String>,
    /// At most this much volume space, e.g. 20G.
    #[arg(long)]
    pub max_volume: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ProjectsCommand {
    /// Make a project, with quotas if given.
    Create {
        /// A DNS label, e.g. shop.
        name: String,
        /// The tenant it belongs to (default: `default`, or your token's).
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        quota: QuotaArgs,
    },
    /// List projects with their tenant, quotas and what they use.
    List,
}

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Keep credentials for a registry host (HOST or HOST:PORT), replacing earlier ones.
    ///
    /// Credentials belong to a scope: the platform's (default) are used by every project's
    /// deploys; with --tenant or --project only by that tenant's or project's, which then
    /// take precedence over the platform's for the same host.
    Login {
        host: String,
        #[arg(long)]
        username: String,
        /// Read the password (or token) from standard input (else BERTH_REGISTRY_PASSWORD).
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        scope: RegistryScopeArgs,
    },
    /// List the registries berth holds credentials for, with their scopes (never the
    /// passwords).
    List,
    /// Forget a registry's credentials (the platform's, or those of --tenant/--project).
    Logout {
        host: String,
        #[command(flatten)]
        scope: RegistryScopeArgs,
    },
}

/// Whose deploys may use registry credentials.
#[derive(Debug, Args)]
pub struct RegistryScopeArgs {
    /// Only this project's deploys use them.
    #[arg(long, conflicts_with = "tenant")]
    pub project: Option<String>,
    /// Only the deploys of this tenant's projects use them.
    #[arg(long)]
    pub tenant: Option<String>,
}

impl RegistryScopeArgs {
    /// `project:NAME`, `tenant:NAME`, or none (the platform's).
    pub fn scope(&self) -> Option<String> {
        match (&self.project, &self.tenant) {
            (Some(p), _) => Some(format!("project:{p}")),
            (None, Some(t)) => Some(format!("tenant:{t}")),
            (None, None) => None,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum PeopleCommand {
    /// Give a person a role (replacing the one they had).
    Add {
        /// e.g. alice@example.com.
        identity: String,
        /// viewer, deployer or admin.
        #[arg(long, default_value = "viewer")]
        role: String,
        /// Limit them to one project's apps.
        #[arg(long, conflicts_with = "tenant")]
        project: Option<String>,
        /// Limit them to the apps of one tenant's projects.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List people with a role.
    List,
    /// Take a person's role away; their sign-ins are refused from then on.
    Remove { identity: String },
}

#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// Make a tenant, with quotas over all of its projects if given, and what its apps are
    /// held to whatever their berth.toml says.
    ///
    /// Example: berth tenants create acme --isolation sandbox --max-apps 20
    Create {
        /// A DNS label, e.g. acme.
        name: String,
        #[command(flatten)]
        quota: QuotaArgs,
        /// The least isolation its apps run and build at: `sandbox` runs every app of the
        /// tenant under gVisor (an app asking for `trusted` is refused).
        #[arg(long, value_name = "LEVEL")]
        isolation: Option<String>,
        /// The capabilities its apps may keep, comma-separated (e.g. net_bind_service);
        /// `none` for none. Default: every one the platform grants.
        #[arg(long, value_name = "CAPS")]
        capabilities: Option<String>,
    },
    /// List tenants with their projects, quotas and what they use.
    List,
}

/// Where the passphrase of a backup comes from.
#[derive(Debug, Args)]
pub struct PassphraseArgs {
    /// File holding the backup passphrase (at least 12 characters; keep it apart from the
    /// backups: without it a backup's secrets cannot be restored). Or set
    /// BERTH_BACKUP_PASSPHRASE.
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
}

/// `berth backup …`.
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Write a backup of the running platform: the state store (online snapshot), the
    /// keyring wrapped under a passphrase (secrets and TLS keys stay encrypted), every volume
    /// (a frozen point-in-time copy, tar + zstd), every database (pg_dump) and the apps'
    /// images. Apps keep serving meanwhile.
    ///
    /// LOCATION is a directory on the platform's machine or s3://BUCKET/PREFIX (S3 settings
    /// from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION and
    /// AWS_ALLOW_HTTP in the environment of `berth up`).
    ///
    /// Example: berth backup create --to /mnt/backups --passphrase-file ~/.berth-pass --keep-daily 7 --keep-weekly 4
    Create {
        /// Directory or s3://BUCKET/PREFIX.
        #[arg(long)]
        to: String,
        #[command(flatten)]
        passphrase: PassphraseArgs,
        /// Afterwards keep one backup for each of this many recent days (0: keep all).
        #[arg(long, default_value_t = 0)]
        keep_daily: u32,
        /// Afterwards also keep one backup for each of this many recent weeks.
        #[arg(long, default_value_t = 0)]
        keep_weekly: u32,
    },
    /// List the backups at a location, oldest first.
    List {
        /// Directory or s3://BUCKET/PREFIX (S3 settings from the AWS_* environment).
        location: String,
    },
    /// Check a backup: every part present with its checksum, and with a passphrase, that
    /// it opens the backup.
    Verify {
        /// Directory or s3://BUCKET/PREFIX.
        location: String,
        /// Backup id (default: the newest).
        id: Option<String>,
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
    /// Restore a backup onto the data directory (--data-dir) while berth is not running on
    /// it. The directory must be empty, or --force moves its contents aside. Then start
    /// `berth up`: apps, releases, secrets, certificates, volumes and databases are back.
    ///
    /// Nothing changes unless every part is present and intact and the passphrase opens it.
    Restore {
        /// Directory or s3://BUCKET/PREFIX.
        location: String,
        /// Backup id (default: the newest).
        id: Option<String>,
        #[command(flatten)]
        passphrase: PassphraseArgs,
        /// Restore over a non-empty data directory, moving what is there to
        /// <data dir>.before-restore-<time>.
        #[arg(long)]
        force: bool,
    },
    /// Delete the backups a retention policy does not keep.
    Prune {
        /// Directory or s3://BUCKET/PREFIX.
        location: String,
        /// Keep one backup for each of this many recent days.
        #[arg(long, default_value_t = 0)]
        keep_daily: u32,
        /// Keep one backup for each of this many recent weeks.
        #[arg(long, default_value_t = 0)]
        keep_weekly: u32,
    },
}

/// `berth ca …`.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Print the local CA's root certificate (PEM), to add to a trust store, e.g.
    /// `berth ca export > berth-ca.pem; curl --cacert berth-ca.pem https://APP.localhost:8443/`.
    Export {
        /// Write it to this file instead of standard output.
        #[arg(long, short)]
        out: Option<PathBuf>,
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
    /// HTTPS port of the edge (listens on all interfaces); 0 turns HTTPS off.
    #[arg(long, env = "BERTH_EDGE_TLS_PORT", default_value_t = berth_control::config::DEFAULT_EDGE_TLS_PORT)]
    pub edge_tls_port: u16,
    /// ACME directory (RFC 8555) that certifies domains, e.g.
    /// https://acme-v02.api.letsencrypt.org/directory. Without it, berth's local CA certifies
    /// every name.
    #[arg(long, env = "BERTH_ACME_DIRECTORY")]
    pub acme_directory: Option<String>,
    /// Contact address for the ACME account (expiry notices).
    #[arg(long, env = "BERTH_ACME_EMAIL", requires = "acme_directory")]
    pub acme_email: Option<String>,
    /// Extra root certificate (PEM) to trust for the ACME directory itself, for private or
    /// test directories.
    #[arg(long, env = "BERTH_ACME_CA_FILE", requires = "acme_directory")]
    pub acme_ca_file: Option<PathBuf>,
    /// How often certificates are checked for renewal, e.g. 1h.
    #[arg(long, env = "BERTH_CERT_CHECK_INTERVAL", default_value = "1h")]
    pub cert_check_interval: String,
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
    #[arg(long, env = "BERTH_DRAIN_GRACE", default_value = "2s")]
    pub drain_grace: String,
    /// Longest a build may run, e.g. 20m.
    #[arg(long, env = "BERTH_BUILD_TIMEOUT", default_value = "20m")]
    pub build_timeout: String,
    /// Free space the data directory's disk must have for a build to start; a deploy is
    /// refused below it (instead of failing half-way).
    #[arg(long, env = "BERTH_MIN_FREE_DISK", default_value = "1G")]
    pub min_free_disk: String,
    /// How often every app's public URLs are probed through the edge (`berth probes APP`).
    #[arg(long, env = "BERTH_PROBE_INTERVAL", default_value = "30s")]
    pub probe_interval: String,
    /// How often the branches of `berth git connect` are polled for pushes no webhook
    /// announced, e.g. 60s; 0 polls never (webhooks only).
    #[arg(long, env = "BERTH_GIT_POLL_INTERVAL", default_value = "60s")]
    pub git_poll_interval: String,
    /// Publish app names in DNS by RFC 2136 dynamic updates (the ExternalDNS role): every
    /// custom domain and APP.<base domain> inside ZONE points at TARGET (addresses: A/AAAA
    /// records; one host name: a CNAME), e.g.
    /// rfc2136://192.0.2.53?zone=example.com&target=203.0.113.10[&ttl=60]. berth only claims
    /// names that hold no records yet, and removes only what it published.
    #[arg(long, env = "BERTH_DNS", verbatim_doc_comment)]
    pub dns: Option<String>,
    /// The TSIG key updates are signed with, [ALGORITHM:]NAME:SECRET as nsupdate -y takes it
    /// (hmac-sha256 by default; the secret in base64).
    #[arg(
        long,
        env = "BERTH_DNS_TSIG_KEY",
        hide_env_values = true,
        requires = "dns"
    )]
    pub dns_tsig_key: Option<String>,
    /// A file holding the TSIG key: [ALGORITHM:]NAME:SECRET, or the key block `tsig-keygen`
    /// (BIND) or `keymgr -t` (Knot) print.
    #[arg(
        long,
        env = "BERTH_DNS_TSIG_KEY_FILE",
        requires = "dns",
        conflicts_with = "dns_tsig_key"
    )]
    pub dns_tsig_key_file: Option<PathBuf>,
    /// Isolation of apps whose berth.toml does not choose: `trusted` (crun: Linux namespaces,
    /// cgroups, seccomp, no capabilities) or `sandbox` (gVisor: the app never talks to the
    /// host's kernel; recommended when apps come from people you do not fully trust).
    #[arg(long, env = "BERTH_DEFAULT_ISOLATION", default_value = "trusted", value_parser = ["trusted", "sandbox"])]
    pub default_isolation: String,
    /// Keyring file that seals secrets (default: <data dir>/keys/secrets.json, created with
    /// mode 0600). Keep it apart from the data when backups must not carry the key.
    #[arg(long, env = "BERTH_SECRETS_KEY_FILE")]
    pub secrets_key_file: Option<PathBuf>,
    /// One base64-encoded 32-byte key that seals secrets, instead of a key file (such a key
    /// cannot be rotated by berth).
    #[arg(
        long,
        env = "BERTH_SECRETS_KEY",
        hide_env_values = true,
        conflicts_with = "secrets_key_file"
    )]
    pub secrets_key: Option<String>,
    /// Scale every SLO window by this factor (for drills: 0.01 makes 1h 36s); 1 in
    /// production.
    #[arg(long, env = "BERTH_SLO_TIME_SCALE", default_value_t = 1.0)]
    pub slo_time_scale: f64,
    /// How often the edge's counters are sampled for SLOs, e.g. 10s.
    #[arg(long, env = "BERTH_SLO_SAMPLE_INTERVAL", default_value = "10s")]
    pub slo_sample_interval: String,
    /// Do not write the edge's access log (each app's `access` log stream). It costs the
    /// edge about a quarter of its peak request rate on a 2-core machine (bench/).
    #[arg(long, env = "BERTH_NO_ACCESS_LOG")]
    pub no_access_log: bool,
    /// A proxy or load balancer in front of the edge, as a CIDR range (10.0.0.0/8,
    /// 192.0.2.7/32, 2001:db8::/32); repeat the flag or separate ranges by commas. The edge
    /// replaces every client's X-Forwarded-For, X-Real-IP, X-Forwarded-Host/-Proto/-Port and
    /// Forwarded headers with what it saw itself (so apps cannot be lied to about who
    /// called); from a trusted proxy it keeps them and appends the proxy's address to
    /// X-Forwarded-For and Forwarded. Trust only addresses clients cannot reach the edge
    /// from.
    #[arg(
        long,
        env = "BERTH_TRUSTED_PROXY",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub trusted_proxy: Vec<berth_edge::policy::Cidr>,
    /// Address ranges neither apps nor builds may reach, besides what berth always refuses
    /// (the host, other apps, cloud metadata, SMTP), e.g. an office network:
    /// 10.20.0.0/16, 192.168.0.0/16; repeat the flag or separate ranges by commas. Apps'
    /// connections there are refused by the firewall; builds' by the build proxy, whatever
    /// name resolves there.
    #[arg(
        long,
        env = "BERTH_EGRESS_BLOCK",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub egress_block: Vec<berth_edge::policy::Cidr>,
    /// How long apps' log lines are kept (berth.toml `[logs] retention` overrides), e.g. 7d.
    #[arg(long, env = "BERTH_LOG_RETENTION", default_value = "7d")]
    pub log_retention: String,
    /// Largest an app's log grows before its oldest lines go (berth.toml `[logs] max_size`
    /// overrides), e.g. 1G.
    #[arg(long, env = "BERTH_LOG_MAX_SIZE", default_value = "1G")]
    pub log_max_size: String,
    /// How long a condition (app down, crash loop, disk filling, …) must hold before it
    /// alerts, e.g. 30s.
    #[arg(long, env = "BERTH_ALERT_FOR", default_value = "30s")]
    pub alert_for: String,
    /// Alertmanager to deliver alerts to (v2 API), e.g. http://127.0.0.1:9093. Firing alerts
    /// are sent again at every evaluation, so one that was down catches up.
    #[arg(long, env = "BERTH_ALERTMANAGER")]
    pub alertmanager: Option<String>,
    /// Webhook that gets a signed JSON delivery for every alert raised and resolved
    /// (headers X-Berth-Timestamp and X-Berth-Signature: sha256=HMAC(secret, "<timestamp>.<body>")).
    #[arg(
        long,
        env = "BERTH_ALERT_WEBHOOK",
        requires = "alert_webhook_secret_file"
    )]
    pub alert_webhook: Option<String>,
    /// File holding the webhook's signing secret (at least 16 characters).
    #[arg(long, env = "BERTH_ALERT_WEBHOOK_SECRET_FILE")]
    pub alert_webhook_secret_file: Option<PathBuf>,
    /// Loki to push every app's log to (its push API), e.g. http://127.0.0.1:3100. Lines
    /// carry project, app, release, process, instance, stream and commit as labels; what
    /// Loki has not taken yet is sent when it is back.
    #[arg(long, env = "BERTH_LOKI_URL")]
    pub loki_url: Option<String>,
    /// Tenant (X-Scope-OrgID) for a multi-tenant Loki.
    #[arg(long, env = "BERTH_LOKI_TENANT", requires = "loki_url")]
    pub loki_tenant: Option<String>,
    /// OTLP/HTTP endpoint (base URL, e.g. http://127.0.0.1:4318) for traces of berth's
    /// deploys, rollbacks and changes (a span per step). Apps get it as
    /// OTEL_EXPORTER_OTLP_ENDPOINT, with OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES set;
    /// give an address the apps may reach (their network policy applies).
    #[arg(long, env = "BERTH_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// An OpenID Connect provider people sign in with (`berth login`), by issuer URL, e.g.
    /// https://accounts.example.com. berth accepts the ID tokens it issues to
    /// --oidc-client-id; what each person may do is the role an admin gives them (`berth
    /// people add alice@example.com --role deployer`).
    #[arg(long, env = "BERTH_OIDC_ISSUER", requires = "oidc_client_id")]
    pub oidc_issuer: Option<String>,
    /// berth's client id at the OIDC provider (a public client: authorization code with
    /// PKCE, redirect to http://127.0.0.1 on any port).
    #[arg(long, env = "BERTH_OIDC_CLIENT_ID", requires = "oidc_issuer")]
    pub oidc_client_id: Option<String>,
    /// An OCI registry every built image is pushed to, tagged with its git commit (or
    /// source digest), with the digest berth runs: HOST[:PORT][/PATH] over HTTPS, or
    /// http://HOST:PORT[/PATH] for one without TLS. A push that fails fails the deploy.
    #[arg(long, env = "BERTH_REGISTRY")]
    pub registry: Option<String>,
    /// A registry that mirrors Docker Hub: images named without a host (`debian:bookworm`,
    /// in `FROM` or --image) are pulled from it instead, as HOST[:PORT].
    #[arg(long, env = "BERTH_REGISTRY_MIRROR", value_name = "HOST")]
    pub registry_mirror: Option<String>,
    /// Where apps run: `embedded` (containers on this machine behind berth's edge) or
    /// `kubernetes` (a Deployment per process type, a Service, an Ingress and the app's
    /// Secret in a cluster, by server-side apply; deploys wait for the rollout, `berth logs`
    /// reads the pods). The Kubernetes backend needs --registry: the nodes pull from it.
    ///   berth up --backend kubernetes --kubeconfig ~/.kube/config --registry reg.example.com/team
    #[arg(long, env = "BERTH_BACKEND", default_value = "embedded", value_parser = ["embedded", "kubernetes"])]
    pub backend: String,
    /// With --backend kubernetes: the kubeconfig (default: $KUBECONFIG, else
    /// ~/.kube/config).
    #[arg(long, env = "BERTH_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// With --backend kubernetes: a context of the kubeconfig (default: its current one).
    #[arg(long, env = "BERTH_KUBE_CONTEXT", value_name = "NAME")]
    pub kube_context: Option<String>,
    /// With --backend kubernetes: the StorageClass of apps' volumes (`berth volumes
    /// create` makes a PersistentVolumeClaim of it; default: the cluster's default class).
    #[arg(long, env = "BERTH_KUBE_STORAGE_CLASS", value_name = "NAME")]
    pub kube_storage_class: Option<String>,
    /// Start only images whose signature verifies with the platform's key (every image
    /// berth builds or pulls is signed; see `berth images APP`). Deploys, rollbacks and
    /// restarts of anything else are refused.
    #[arg(long, env = "BERTH_REQUIRE_SIGNED")]
    pub require_signed: bool,
    /// A vulnerability database to check every new image's SBOM against: a directory of
    /// OSV JSON records (osv.dev's schema; e.g. the per-ecosystem all.zip exports of
    /// osv.dev, unpacked: Debian, Alpine, PyPI, npm, crates.io). Images with findings at or
    /// above --vuln-gate are refused.
    #[arg(long, env = "BERTH_VULN_DB", value_name = "DIR")]
    pub vuln_db: Option<PathBuf>,
    /// The least severity that fails a deploy: low, medium, high or critical. A record
    /// without a severity counts as critical.
    #[arg(
        long,
        env = "BERTH_VULN_GATE",
        default_value = "high",
        requires = "vuln_db"
    )]
    pub vuln_gate: String,
    /// A file holding berth's client secret at the provider, when the provider wants one:
    /// berth exchanges sign-in codes itself, so the secret never leaves this machine.
    #[arg(long, env = "BERTH_OIDC_CLIENT_SECRET_FILE", requires = "oidc_issuer")]
    pub oidc_client_secret_file: Option<PathBuf>,
    /// Back the platform up on a schedule to this directory or s3://BUCKET/PREFIX (see
    /// `berth backup create --help`); needs --backup-passphrase-file.
    #[arg(long, env = "BERTH_BACKUP_TO", requires = "backup_passphrase_file")]
    pub backup_to: Option<String>,
    /// How often scheduled backups run, e.g. 24h.
    #[arg(long, env = "BERTH_BACKUP_EVERY", default_value = "24h")]
    pub backup_every: String,
    /// File holding the passphrase of scheduled backups (read at each backup).
    #[arg(long, env = "BERTH_BACKUP_PASSPHRASE_FILE")]
    pub backup_passphrase_file: Option<PathBuf>,
    /// Scheduled backups keep one backup for each of this many recent days …
    #[arg(long, env = "BERTH_BACKUP_KEEP_DAILY", default_value_t = 7)]
    pub backup_keep_daily: u32,
    /// … and one for each of this many recent weeks.
    #[arg(long, env = "BERTH_BACKUP_KEEP_WEEKLY", default_value_t = 4)]
    pub backup_keep_weekly: u32,
    /// The platform's config file: these settings in TOML, `api-port = 7070` (default:
    /// <data dir>/berth.toml, else /etc/berth/berth.toml). Flags and environment variables
    /// override it.
    #[arg(long, env = "BERTH_CONFIG")]
    pub config: Option<PathBuf>,
}

/// A drill phase's length: `10s`, `2m`, `500ms`.
fn parse_phase(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (e.g. 10s, 2m)"))
}

/// A platform definition and how its apps are named in a cluster.
#[derive(Debug, Args)]
pub struct Definition {
    #[arg(short = 'f', long = "file", value_name = "DIR")]
    pub dir: PathBuf,
    /// The project (namespace) of the apps.
    #[arg(long, default_value = "default")]
    pub project: String,
    /// Apps answer at APP.DOMAIN.
    #[arg(long, default_value = "localhost")]
    pub base_domain: String,
    /// Where built images are pushed.
    #[arg(long, default_value = "registry.localhost:5000")]
    pub registry: String,
    /// The cert-manager ClusterIssuer apps' certificates are asked of, where the cluster
    /// has cert-manager.
    #[arg(long, default_value = "letsencrypt", value_name = "NAME")]
    pub cluster_issuer: String,
    /// The StorageClass volumes' claims ask for (default: the cluster's default class).
    #[arg(long, value_name = "NAME")]
    pub storage_class: Option<String>,
}

/// Which cluster.
#[derive(Debug, Args)]
pub struct ClusterTarget {
    /// The kubeconfig (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// A context of the kubeconfig (default: its current one).
    #[arg(long)]
    pub context: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum KubeCommand {
    /// What applying DIR would change in the cluster. Exit status 0: nothing; 2: changes.
    Plan {
        #[command(flatten)]
        definition: Definition,
        #[command(flatten)]
        target: ClusterTarget,
        /// Also show what `apply --prune` would delete.
        #[arg(long)]
        prune: bool,
    },
    /// Make the cluster what DIR declares.
    Apply {
        #[command(flatten)]
        definition: Definition,
        #[command(flatten)]
        target: ClusterTarget,
        /// Also delete what berth made in the project's namespace that DIR no longer has.
        #[arg(long)]
        prune: bool,
        /// Take back fields another manager changed (a change made by hand is undone).
        #[arg(long)]
        force_conflicts: bool,
        /// Wait until every Deployment has rolled out (its new pods ready), saying how far
        /// each is; a pod that cannot start (image, crash) fails the apply with its reason.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// What changed in the cluster by hand since the platform (`berth up --backend
    /// kubernetes`) applied its apps: fields another manager set, objects deleted, objects
    /// left over. Exit status 0: nothing; 2: drift. Secret values are never shown.
    ///   berth kube drift              # every app
    ///   berth kube drift shop --json
    Drift {
        /// One app (default: every app).
        app: Option<String>,
    },
    /// Put an app's objects back as its serving release has them (changes by hand taken
    /// back, objects made again, leftovers deleted) and wait for the rollout.
    Restore { app: String },
}
