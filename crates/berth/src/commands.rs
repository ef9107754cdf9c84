//! One function per command.

use crate::cli::{Cli, Command, EnvCommand, Global, UpArgs};
use crate::client::{data_dir, ApiFailure, Client};
use crate::output;
use anyhow::{anyhow, bail, Context, Result};
use berth_core::api::{AppSummary, DeployEvent, InstanceView, ReleaseView};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

/// Runs a parsed command line; returns the exit code.
pub fn run(cli: Cli) -> Result<i32> {
    // The container init must stay a plain single-threaded process.
    if let Command::ContainerInit {
        status_file,
        wait_for_network,
        secrets_env,
        command,
    } = &cli.command
    {
        return Ok(berth_runtime::init::run(
            status_file,
            command,
            *wait_for_network,
            secrets_env.as_deref(),
        ));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(cli))
}

async fn run_async(cli: Cli) -> Result<i32> {
    let g = &cli.global;
    match cli.command {
        Command::Up(args) => up(g, *args).await,
        Command::Down => {
            let mut cfg = berth_control::PlatformConfig::new(data_dir(g));
            // `berth up` recorded which bridge and subnet it used. Without that record no
            // platform ever ran from this data directory: nothing of anyone else's (a
            // bridge of the same name, say) is touched.
            let Ok(text) = std::fs::read_to_string(cfg.api_info_path()) else {
                println!(
                    "no platform ran from {} (no berth up recorded there): nothing to stop",
                    cfg.data_dir.display()
                );
                return Ok(0);
            };
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            // The control plane first, or its supervisor restarts what is stopped here.
            if let Some(pid) =
                berth_control::control_plane::stop(&cfg, std::time::Duration::from_secs(15))
            {
                println!("stopped the control plane (pid {pid})");
            }
            if let Some(b) = v["bridge"].as_str() {
                cfg.bridge = b.to_string();
            }
            if let Some(s) = v["subnet"].as_str().and_then(|s| s.parse().ok()) {
                cfg.subnet = s;
            }
            tokio::task::spawn_blocking(move || berth_control::platform::Platform::teardown(&cfg))
                .await?;
            println!("stopped every app container and the edge");
            Ok(0)
        }
        Command::Edge {
            listen,
            routes,
            applied,
            tls_listen,
            certs,
            metrics,
            access_log,
            handover,
            take_over,
            no_io_uring,
            trusted_proxy,
        } => {
            edge(
                berth_edge::server::EdgeConfig {
                    listen,
                    routes_file: routes,
                    applied_file: applied,
                    tls: tls_listen.zip(certs).map(|(listen, certs_file)| {
                        berth_edge::server::TlsSettings { listen, certs_file }
                    }),
                    metrics_file: metrics,
                    access_log,
                    handover,
                    io_uring: !no_io_uring,
                    trusted_proxies: berth_edge::policy::TrustedProxies::new(trusted_proxy),
                },
                take_over,
            )
            .await
        }
        Command::ServeStatic { dir, port } => {
            berth_edge::static_files::serve(dir, port).await?;
            Ok(0)
        }
        Command::ContainerInit { .. } => Ok(0),
        Command::Deploy {
            path,
            git,
            git_ref,
            image,
            app,
            project,
        } => {
            let (app, project) = match app {
                Some(a) => {
                    let (p, a) = qualified(&a, project)?;
                    (Some(a), p)
                }
                None => (None, project),
            };
            match (git, image) {
                (Some(url), _) => deploy_git(g, &url, git_ref, app, project).await,
                (None, Some(image)) => deploy_image(g, &path, &image, app, project).await,
                (None, None) => deploy(g, &path, app, project).await,
            }
        }
        Command::Apps => apps(g).await,
        Command::Ps { app } => ps(g, &app).await,
        Command::Releases { app } => releases(g, &app).await,
        Command::Images { app } => images(g, &app).await,
        Command::Status => crate::ops::status(g),
        Command::Gc { dry_run } => crate::ops::gc(g, dry_run).await,
        Command::Probes { app } => crate::ops::probes(g, &app).await,
        Command::Dns => crate::domains::dns(g).await,
        Command::Grafana(crate::cli::GrafanaCommand::Dashboards { out }) => {
            grafana_dashboards(g, &out)
        }
        Command::Config { config } => crate::ops::config(g, config.as_deref()),
        Command::Doctor {
            api_port,
            edge_port,
            edge_tls_port,
        } => crate::ops::doctor(g, api_port, edge_port, edge_tls_port),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut crate::cli::Cli::command(),
                "berth",
                &mut std::io::stdout(),
            );
            Ok(0)
        }
        Command::Man { out } => crate::ops::man_pages(&out),
        Command::Install { root, bin } => crate::install::install(g, root.as_deref(), bin),
        Command::Uninstall { root } => crate::install::uninstall(root.as_deref()),
        Command::Redeploy { app } => {
            let client = crate::client::discover(g)?;
            stream_workflow(
                g,
                &client,
                reqwest::Method::POST,
                &berth_client::app_path(&app, "/redeploy"),
                None,
                None,
            )
            .await
        }
        Command::Kill { app, instance } => {
            let client = crate::client::discover(g)?;
            let killed: serde_json::Value = client
                .post_json(
                    &berth_client::app_path(
                        &app,
                        &format!("/instances/{}/kill", berth_client::path_segment(&instance)),
                    ),
                    &serde_json::json!({}),
                )
                .await?;
            if g.json {
                output::json(&killed);
            } else {
                println!(
                    "killed {app} {instance} ({}); the supervisor restarts it",
                    killed["instance"].as_str().unwrap_or("?")
                );
            }
            Ok(0)
        }
        Command::Drill {
            app,
            phase,
            concurrency,
            rate,
            path,
        } => {
            crate::drill::drill(
                g,
                &app,
                crate::drill::DrillSettings {
                    phase,
                    concurrency,
                    rate,
                    path,
                },
            )
            .await
        }
        Command::Promote { app } => canary_command(g, &app, "promote").await,
        Command::Abort { app } => canary_command(g, &app, "abort").await,
        Command::Scale { app, counts } => {
            let mut processes = std::collections::BTreeMap::new();
            for pair in &counts {
                let (kind, count) = pair
                    .split_once('=')
                    .and_then(|(k, c)| c.parse::<u32>().ok().map(|c| (k.to_string(), c)))
                    .ok_or_else(|| anyhow!("{pair:?} is not TYPE=COUNT, e.g. web=3"))?;
                processes.insert(kind, count);
            }
            let client = crate::client::discover(g)?;
            stream_workflow(
                g,
                &client,
                reqwest::Method::POST,
                &berth_client::app_path(&app, "/scale"),
                None,
                Some(serde_json::json!({ "processes": processes })),
            )
            .await
        }
        Command::Sbom { app, release } => sbom(g, &app, release).await,
        Command::Rollback { app, to } => {
            let client = crate::client::discover(g)?;
            let body = serde_json::json!({ "to": to });
            stream_workflow(
                g,
                &client,
                reqwest::Method::POST,
                &berth_client::app_path(&app, "/rollback"),
                None,
                Some(body),
            )
            .await
        }
        Command::Logs {
            app,
            follow,
            build,
            lines,
            filter,
        } => logs(g, &app, follow, build, lines, filter).await,
        Command::Env(cmd) => env(g, cmd).await,
        Command::Create {
            app,
            domains,
            secrets,
            volumes,
            database,
            idempotency_key,
            project,
        } => {
            let (project, app) = qualified(&app, project)?;
            let args = crate::app_state::CreateArgs {
                app: &app,
                domains: &domains,
                secrets: &secrets,
                volumes: &volumes,
                database,
                idempotency_key: idempotency_key.as_deref(),
                project: project.as_deref(),
            };
            crate::app_state::create(g, args).await
        }
        Command::Secrets(cmd) => crate::app_state::secrets(g, cmd).await,
        Command::Volumes(cmd) => crate::app_state::volumes(g, cmd).await,
        Command::Db(cmd) => crate::app_state::db(g, cmd).await,
        Command::Domains(cmd) => crate::domains::domains(g, cmd).await,
        Command::Git(crate::cli::GitCommand::Remote { app, add }) => {
            crate::git::remote(g, &app, add).await
        }
        Command::Git(crate::cli::GitCommand::Credential { operation }) => {
            crate::git::credential(g, &operation).await
        }
        Command::Git(crate::cli::GitCommand::Connect { app, url, branch }) => {
            crate::git::connect(g, &app, &url, &branch).await
        }
        Command::Git(crate::cli::GitCommand::Status { app }) => crate::git::status(g, &app).await,
        Command::Git(crate::cli::GitCommand::Key { app, rotate }) => {
            crate::git::key(g, &app, rotate).await
        }
        Command::Git(crate::cli::GitCommand::Disconnect { app }) => {
            crate::git::disconnect(g, &app).await
        }
        Command::GitHook => crate::git::hook(g).await,
        Command::Gitops(cmd) => crate::declarative::gitops(g, cmd).await,
        Command::Plan { dir, prune } => crate::declarative::plan(g, &dir, prune).await,
        Command::Render {
            definition,
            stack,
            out,
            repo,
            revision,
            repo_path,
        } => {
            let git = repo.map(|repo| {
                let path = repo_path.unwrap_or_else(|| {
                    if out.is_relative() {
                        out.to_string_lossy().trim_start_matches("./").to_string()
                    } else {
                        ".".to_string()
                    }
                });
                berth_kube::stack::GitSource {
                    repo,
                    revision,
                    path,
                }
            });
            crate::render::render(g, &definition, &stack, git, &out)
        }
        Command::Kube(cmd) => crate::render::kube(g, cmd).await,
        Command::Apply { dir, prune } => crate::declarative::apply(g, &dir, prune).await,
        Command::Ca(cmd) => crate::domains::ca(g, cmd).await,
        Command::Backup(cmd) => crate::backups::backup(g, cmd).await,
        Command::Dora {
            app,
            project,
            window,
        } => dora(g, app, project, window).await,
        Command::Slo { app, rules, out } => crate::slo::slo(g, app, rules, out).await,
        Command::Alerts { all } => crate::slo::alerts(g, all).await,
        Command::Tokens(cmd) => crate::teams::tokens(g, cmd).await,
        Command::Projects(cmd) => crate::teams::projects(g, cmd).await,
        Command::Tenants(cmd) => crate::teams::tenants(g, cmd).await,
        Command::Login {
            no_browser,
            callback_port,
        } => crate::login::login(g, no_browser, callback_port).await,
        Command::Logout => crate::login::logout(g).await,
        Command::Whoami => crate::login::whoami(g).await,
        Command::People(cmd) => crate::login::people(g, cmd).await,
        Command::Registry(cmd) => crate::teams::registry(g, cmd).await,
        Command::Mcp => {
            let mut target = crate::client::target(g);
            target.client = "mcp".into();
            berth_mcp::serve_stdio(berth_client::Client::discover(&target)?).await?;
            Ok(0)
        }
        Command::Audit {
            since,
            actor,
            app,
            lines,
        } => crate::teams::audit(g, since, actor, app, lines).await,
        Command::Destroy { app } => {
            let client = crate::client::discover(g)?;
            client.delete(&berth_client::app_path(&app, "")).await?;
            println!("destroyed {app}");
            Ok(0)
        }
    }
}

fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .map(|n| n * mult)
        .map_err(|_| anyhow!("{s:?} is not a size; use bytes or a K, M or G suffix, e.g. 256M"))
}

async fn up(g: &Global, a: UpArgs) -> Result<i32> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut cfg = berth_control::PlatformConfig::new(data_dir(g));
    cfg.api_listen.set_port(a.api_port);
    cfg.edge_listen.set_port(a.edge_port);
    cfg.edge_tls_listen = (a.edge_tls_port != 0)
        .then(|| std::net::SocketAddr::new(cfg.edge_listen.ip(), a.edge_tls_port));
    cfg.acme = a
        .acme_directory
        .map(|directory| berth_edge::acme::AcmeSettings {
            directory,
            email: a.acme_email,
            ca_file: a.acme_ca_file.map(|f| {
                if f.is_absolute() {
                    f
                } else {
                    std::env::current_dir().map(|d| d.join(&f)).unwrap_or(f)
                }
            }),
        });
    cfg.cert_check_interval =
        humantime::parse_duration(&a.cert_check_interval).context("--cert-check-interval")?;
    cfg.bridge = a.bridge;
    cfg.subnet = a
        .subnet
        .parse()
        .map_err(|e: String| anyhow!("--subnet: {e}"))?;
    cfg.base_domain = a.base_domain;
    cfg.upload_limit = parse_size(&a.upload_limit).context("--upload-limit")?;
    cfg.drain_grace = humantime::parse_duration(&a.drain_grace).context("--drain-grace")?;
    cfg.build_timeout = humantime::parse_duration(&a.build_timeout).context("--build-timeout")?;
    cfg.min_free_disk = berth_core::limits::parse_memory(&a.min_free_disk)
        .map_err(|e| anyhow!("--min-free-disk: {e}"))?;
    cfg.probe_interval =
        humantime::parse_duration(&a.probe_interval).context("--probe-interval")?;
    cfg.git_poll_interval =
        humantime::parse_duration(&a.git_poll_interval).context("--git-poll-interval")?;
    cfg.dns = match a.dns {
        Some(url) => {
            let mut settings = berth_edge::dns_update::DnsSettings::parse(&url)?;
            settings.key = match (a.dns_tsig_key, a.dns_tsig_key_file) {
                (Some(k), _) => Some(berth_edge::dns_update::TsigKey::parse(&k)?),
                (None, Some(f)) => Some(berth_edge::dns_update::TsigKey::from_file_text(
                    &std::fs::read_to_string(&f)
                        .with_context(|| format!("--dns-tsig-key-file {}", f.display()))?,
                )?),
                (None, None) => None,
            };
            Some(settings)
        }
        None => None,
    };
    cfg.default_isolation = berth_core::policy::Isolation::parse(&a.default_isolation)
        .map_err(|e| anyhow!("--default-isolation: {e}"))?;
    cfg.secrets_key = match (a.secrets_key_file, a.secrets_key) {
        (Some(f), _) => Some(berth_data::secrets::KeySource::File(if f.is_absolute() {
            f
        } else {
            std::env::current_dir()?.join(f)
        })),
        (None, Some(k)) => Some(berth_data::secrets::KeySource::Env(k)),
        (None, None) => None,
    };
    cfg.alert_targets = berth_control::notify::AlertTargets {
        alertmanager: a.alertmanager,
        webhook: match (a.alert_webhook, a.alert_webhook_secret_file) {
            (Some(url), Some(file)) => {
                let secret = std::fs::read_to_string(&file)
                    .with_context(|| format!("--alert-webhook-secret-file {}", file.display()))?;
                Some((url, zeroize::Zeroizing::new(secret.trim().to_string())))
            }
            _ => None,
        },
    };
    cfg.alert_for = humantime::parse_duration(&a.alert_for).context("--alert-for")?;
    cfg.loki = a.loki_url.map(|url| berth_observe::loki::LokiTarget {
        url,
        tenant: a.loki_tenant,
    });
    cfg.otlp_endpoint = a.otlp_endpoint;
    cfg.oidc = a.oidc_issuer.zip(a.oidc_client_id);
    cfg.registry = a
        .registry
        .as_deref()
        .map(berth_factory::registry::Registry::parse)
        .transpose()
        .map_err(|e| anyhow!("--registry: {e}"))?;
    cfg.registry_mirror = a
        .registry_mirror
        .map(|m| {
            berth_core::registries::parse_reference(&format!("{m}/probe"))
                .ok()
                .filter(|r| r.registry == m)
                .map(|_| m.clone())
                .ok_or_else(|| {
                    anyhow!("--registry-mirror: {m:?} is not a registry host: give HOST[:PORT]")
                })
        })
        .transpose()?;
    cfg.require_signed = a.require_signed;
    cfg.kube = match a.backend.as_str() {
        "kubernetes" => Some(berth_control::kube_backend::KubeTarget {
            kubeconfig: a.kubeconfig,
            context: a.kube_context,
            storage_class: a.kube_storage_class,
        }),
        _ if a.kubeconfig.is_some() || a.kube_context.is_some() || a.kube_storage_class.is_some() => {
            return Err(anyhow!(
                "--kubeconfig, --kube-context and --kube-storage-class are for --backend kubernetes (this platform runs apps itself)"
            ))
        }
        _ => None,
    };
    cfg.vuln_gate = match a.vuln_db {
        Some(db) => Some(berth_factory::builder::VulnGate {
            db,
            threshold: berth_factory::vulns::Severity::parse(&a.vuln_gate).ok_or_else(|| {
                anyhow!(
                    "--vuln-gate: {:?} is not a severity: use low, medium, high or critical",
                    a.vuln_gate
                )
            })?,
        }),
        None => None,
    };
    cfg.oidc_client_secret = a
        .oidc_client_secret_file
        .map(|f| {
            std::fs::read_to_string(&f)
                .map(|s| s.trim().to_string())
                .with_context(|| format!("--oidc-client-secret-file {}", f.display()))
        })
        .transpose()?;
    cfg.access_log = !a.no_access_log;
    cfg.trusted_proxies = a.trusted_proxy;
    cfg.egress_block = a.egress_block;
    cfg.log_retention = berth_observe::Retention {
        max_age_ms: humantime::parse_duration(&a.log_retention)
            .context("--log-retention")?
            .as_millis() as i64,
        max_bytes: berth_core::limits::parse_memory(&a.log_max_size)
            .map_err(|e| anyhow!("--log-max-size: {e}"))?,
    };
    cfg.slo_time_scale = a.slo_time_scale;
    cfg.slo_sample_interval =
        humantime::parse_duration(&a.slo_sample_interval).context("--slo-sample-interval")?;
    cfg.backup = match a.backup_to {
        Some(to) => Some(berth_control::backups::create::BackupSchedule {
            to: match berth_data::backup::location::Location::parse(&to, &std::env::current_dir()?)
            {
                Ok(berth_data::backup::location::Location::Dir(d)) => d.display().to_string(),
                _ => to,
            },
            every: humantime::parse_duration(&a.backup_every).context("--backup-every")?,
            passphrase_file: a.backup_passphrase_file.unwrap_or_default(),
            retention: berth_data::backup::retention::Retention {
                keep_daily: a.backup_keep_daily,
                keep_weekly: a.backup_keep_weekly,
            },
        }),
        None => None,
    };
    let problems = cfg.validate();
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    if !nix::unistd::Uid::effective().is_root() {
        bail!("berth up needs root to create containers and network namespaces\nhint: run it with sudo");
    }
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(cfg.api_listen)
        .await
        .map_err(|e| {
            anyhow!(
                "cannot listen on {} for the API: {e}\nhint: another berth may be running; stop it or pass --api-port",
                cfg.api_listen
            )
        })?;
    let platform = berth_control::platform::Platform::start(cfg.clone())
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let url = format!("http://{}", cfg.api_listen);
    std::fs::write(
        cfg.api_info_path(),
        serde_json::to_vec(&serde_json::json!({
            "url": url,
            "bridge": cfg.bridge,
            "subnet": cfg.subnet.to_string(),
            "edge_port": cfg.edge_listen.port(),
            "edge_tls_port": cfg.edge_tls_listen.map(|l| l.port()),
            "default_isolation": cfg.default_isolation.as_str(),
            "cluster": platform.kube.as_ref().map(|k| k.cluster.url.clone()),
            // Who serves it: `berth down` stops this process with the platform.
            "pid": std::process::id(),
            "start_ticks": berth_runtime::proc::ProcessIdentity::of(std::process::id())
                .map(|id| id.start_ticks),
        }))?,
    )
    .context("writing api.json")?;
    let supervisor = tokio::spawn(berth_control::supervisor::run(platform.clone()));
    let pod_logs = tokio::spawn(berth_control::kube_backend::run_pod_logs(platform.clone()));
    let renewals = tokio::spawn(berth_control::certificates::run_renewals(platform.clone()));
    let slos = tokio::spawn(berth_control::slo::run_slo(platform.clone()));
    let backups = tokio::spawn(berth_control::backups::create::run_schedule(
        platform.clone(),
    ));
    let loki = tokio::spawn(berth_control::export::run_loki(platform.clone()));
    let idle = tokio::spawn(berth_control::idle::run_idle(platform.clone()));
    let autoscale = tokio::spawn(berth_control::autoscale::run_autoscale(platform.clone()));
    let gc = tokio::spawn(berth_control::gc::run_gc(platform.clone()));
    let dns = tokio::spawn(berth_control::dns_records::run_dns(platform.clone()));
    let git_poll = tokio::spawn(berth_control::git_connect::run_git_poll(
        platform.clone(),
        cfg.git_poll_interval,
    ));
    let probes = tokio::spawn(berth_control::probes::run_probes(
        platform.clone(),
        cfg.probe_interval,
    ));
    let https = cfg
        .edge_tls_listen
        .map(|l| format!(" and https://<app>.localhost:{}", l.port()))
        .unwrap_or_default();
    if platform.kube.is_some() {
        eprintln!(
            "berth is up: API {url} (data in {})",
            cfg.data_dir.display()
        );
    } else {
        eprintln!(
            "berth is up: API {url}, edge http://<app>.localhost:{}{https} (data in {}; apps run {} by default)",
            cfg.edge_listen.port(),
            cfg.data_dir.display(),
            cfg.default_isolation.as_str()
        );
    }
    if let Some(kube) = &platform.kube {
        eprintln!(
            "apps run in the Kubernetes cluster at {} (namespaces berth-<project>, served by its Ingress controller at http://<app>.{}/; found: {})",
            kube.cluster.url,
            cfg.base_domain.as_deref().unwrap_or("localhost"),
            match kube.stack.names() {
                n if n.is_empty() => "no add-ons".to_string(),
                n => n.join(", "),
            }
        );
    }
    eprintln!(
        "dashboard: {}ui (sign in with the token in {})",
        cfg.platform_url().unwrap_or_else(|| format!("{url}/")),
        cfg.token_path().display()
    );
    let shutdown = platform.shutdown.clone();
    let app = berth_control::api::router(platform.clone());
    let serve = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        wait_for_signal().await;
        shutdown.cancel();
    });
    serve.await.context("serving the API")?;
    platform.tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(15), platform.tasks.wait()).await;
    let _ = supervisor.await;
    let _ = pod_logs.await;
    let _ = renewals.await;
    let _ = backups.await;
    let _ = slos.await;
    let _ = loki.await;
    let _ = idle.await;
    let _ = autoscale.await;
    let _ = gc.await;
    let _ = probes.await;
    let _ = dns.await;
    let _ = git_poll.await;
    if let Some(t) = &platform.traces {
        t.shutdown();
    }
    eprintln!("control plane stopped; apps and the edge keep serving");
    Ok(0)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn edge(cfg: berth_edge::server::EdgeConfig, take_over: bool) -> Result<i32> {
    use berth_edge::listen::Listeners;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    // A graceful upgrade: the listeners of the running edge, shared with it.
    let (predecessor, mut taken) = match (&cfg.handover, take_over) {
        (Some(path), true) => match berth_edge::handover::Successor::take_over(path) {
            Ok((p, listeners)) => (Some(p), listeners),
            Err(e) => {
                tracing::warn!(error = %e, "binding the listeners afresh");
                (None, Vec::new())
            }
        },
        _ => (None, Vec::new()),
    };
    // What was taken over serves as it is: every socket of the running edge's groups.
    let mut listen_on = |addr: std::net::SocketAddr| match Listeners::take(&mut taken, addr) {
        Some(group) => Ok(group),
        None => Listeners::bind(addr, berth_edge::server::workers()),
    };
    let listeners = listen_on(cfg.listen)?;
    let tls_listeners = match cfg.tls.as_ref().map(|t| t.listen) {
        Some(addr) => Some(listen_on(addr)?),
        None => None,
    };
    drop(taken);
    let shutdown = tokio_util_token();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        stop.cancel();
    });
    berth_edge::server::run_after(cfg, listeners, tls_listeners, predecessor, shutdown).await?;
    Ok(0)
}

fn tokio_util_token() -> tokio_util::sync::CancellationToken {
    tokio_util::sync::CancellationToken::new()
}

/// An app named `PROJECT/APP` and a `--project` flag, as one project and the app's name.
fn qualified(app: &str, flag: Option<String>) -> Result<(Option<String>, String)> {
    if let (Some(project), name) = berth_core::names::split_qualified(app) {
        let both_labels = berth_core::projects::check_project_name(project).is_ok()
            && berth_core::AppName::parse(name).is_ok();
        if !both_labels {
            bail!("{app:?} is not an app name: use APP or PROJECT/APP, each a DNS label (lowercase letters, digits and '-')");
        }
    }
    match (berth_core::names::split_qualified(app), flag) {
        ((Some(named), _), Some(flag)) if named != flag => bail!(
            "{app:?} names project {named:?} but --project says {flag:?}\nhint: give the project once"
        ),
        ((Some(named), name), _) => Ok((Some(named.to_string()), name.to_string())),
        ((None, name), flag) => Ok((flag, name.to_string())),
    }
}

/// `berth deploy --git URL [--ref REF]`: the commit fetched here, then deployed like a
/// directory (named after the repository unless told otherwise).
async fn deploy_git(
    g: &Global,
    url: &str,
    git_ref: Option<String>,
    app: Option<String>,
    project: Option<String>,
) -> Result<i32> {
    let git_ref = git_ref.unwrap_or_else(|| "HEAD".into());
    let dir = tempfile::tempdir().context("a work directory")?;
    if !g.json {
        eprintln!("Fetching {url} {git_ref}");
    }
    {
        let (url, git_ref, into) = (url.to_string(), git_ref.clone(), dir.path().to_path_buf());
        tokio::task::spawn_blocking(move || {
            berth_factory::git::fetch(&url, &git_ref, &into, Duration::from_secs(300))
        })
        .await??;
    }
    let app = app.or_else(|| berth_factory::git::suggested_app_name(url));
    deploy(g, dir.path(), app, project).await
}

/// `berth deploy --image REF`: the platform pulls the image; berth.toml of `path`, when
/// there is one, comes along.
async fn deploy_image(
    g: &Global,
    path: &Path,
    image: &str,
    app: Option<String>,
    project: Option<String>,
) -> Result<i32> {
    let reference = berth_core::registries::parse_reference(image).map_err(|e| anyhow!(e))?;
    let toml_path = path.join("berth.toml");
    // Read beneath `path`: a regular file of at most 1 MiB, never a link out of it.
    let text = match berth_factory::tree::SourceTree::open(path)
        .and_then(|tree| tree.read_spec("berth.toml"))
    {
        Ok(text) => text,
        Err(berth_factory::tree::TreeError::Io { .. }) => None,
        Err(e) => bail!("{}: {e}", path.display()),
    };
    let berth_toml = match text {
        Some(text) => {
            let parsed = berth_core::spec::BerthToml::parse(&text)
                .map_err(|e| anyhow!("{}: {e}", toml_path.display()))?;
            Some((text, parsed.name))
        }
        None => None,
    };
    let app = app
        .or_else(|| berth_toml.as_ref().and_then(|(_, n)| n.clone()))
        .unwrap_or_else(|| reference.name().to_string());
    berth_core::names::AppName::parse(&app).map_err(|e| {
        anyhow!(
            "{e}; the image's name {:?} is no app name, give one with --app",
            reference.name()
        )
    })?;
    let client = crate::client::discover(g)?;
    if !g.json {
        eprintln!("Deploying image {} as {app}", reference.whole());
    }
    let body = serde_json::json!({
        "image": image,
        "project": project,
        "berth_toml": berth_toml.map(|(t, _)| t),
    });
    stream_workflow(
        g,
        &client,
        reqwest::Method::POST,
        &berth_client::app_path(&app, "/deploys/image"),
        None,
        Some(body),
    )
    .await
}

/// Reads berth.toml of a directory, naming the file in errors.
async fn deploy(
    g: &Global,
    path: &Path,
    app: Option<String>,
    project: Option<String>,
) -> Result<i32> {
    let limit = std::env::var("BERTH_UPLOAD_LIMIT")
        .ok()
        .and_then(|s| parse_size(&s).ok())
        .unwrap_or(berth_factory::source::DEFAULT_UPLOAD_LIMIT);
    let dir = path.to_path_buf();
    let upload =
        tokio::task::spawn_blocking(move || berth_client::upload::prepare(&dir, app, limit))
            .await??;
    let client = crate::client::discover(g)?;
    if !g.json {
        eprintln!(
            "Deploying {} as {} ({} KiB{})",
            path.display(),
            upload.app,
            upload.archive.len().div_ceil(1024),
            upload
                .commit
                .as_deref()
                .map(|c| format!(", commit {}", &c[..12]))
                .unwrap_or_default()
        );
    }
    let mut path = upload.path.clone();
    if let Some(p) = project {
        path.push_str(if path.contains('?') { "&" } else { "?" });
        path.push_str(&format!("project={p}"));
    }
    stream_workflow(
        g,
        &client,
        reqwest::Method::POST,
        &path,
        Some((reqwest::Body::from(upload.archive), "application/gzip")),
        None,
    )
    .await
}

/// Shows a deploy-like workflow's event stream; returns the exit code.
pub(crate) async fn stream_workflow(
    g: &Global,
    client: &Client,
    method: reqwest::Method,
    path: &str,
    body: Option<(reqwest::Body, &'static str)>,
    json: Option<serde_json::Value>,
) -> Result<i32> {
    let tty = std::io::stderr().is_terminal() && !g.json;
    let spinner = tty.then(|| {
        let s = indicatif::ProgressBar::new_spinner();
        s.enable_steady_tick(Duration::from_millis(100));
        s.set_message("starting");
        s
    });
    let as_json = g.json;
    let outcome = client
        .workflow(method, path, body, json, |event| match event {
            DeployEvent::Step { step } => match &spinner {
                Some(s) => s.set_message(step.clone()),
                None if !as_json => eprintln!("-----> step: {step}"),
                None => {}
            },
            DeployEvent::Log { line } if !as_json => match &spinner {
                Some(s) => s.println(line),
                None => eprintln!("{line}"),
            },
            _ => {}
        })
        .await;
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    match outcome? {
        DeployEvent::Done { release, url } => {
            if g.json {
                output::json(&serde_json::json!({ "release": release, "url": url }));
            } else {
                println!("Release v{release} is serving at {url}");
            }
            Ok(0)
        }
        DeployEvent::Stored { message } => {
            if g.json {
                output::json(&serde_json::json!({ "stored": true, "message": message }));
            } else {
                println!("{message}");
            }
            Ok(0)
        }
        DeployEvent::Failed { error, log_tail } => {
            if g.json {
                output::json(&serde_json::json!({ "error": error, "log_tail": log_tail }));
                return Ok(1);
            }
            if !log_tail.is_empty() {
                eprintln!("----- last lines of output -----");
                for l in &log_tail {
                    eprintln!("{l}");
                }
                eprintln!("--------------------------------");
            }
            Err(ApiFailure { body: error }.into())
        }
        other => bail!("unexpected final event from the API: {other:?}"),
    }
}

fn short_duration(secs: Option<f64>) -> String {
    secs.map_or_else(|| "-".into(), |s| output::span(s.round() as i64))
}

async fn dora(
    g: &Global,
    app: Option<String>,
    project: Option<String>,
    window: Option<String>,
) -> Result<i32> {
    let client = crate::client::discover(g)?;
    let path = berth_client::with_query(
        "/v1/dora",
        &[("app", app), ("project", project), ("window", window)],
    );
    let views: Vec<berth_core::dora::DoraView> = client.get_json(&path).await?;
    if g.json {
        output::json(&views);
        return Ok(0);
    }
    let band = |b: Option<berth_core::dora::Band>| b.map_or("-", |b| b.as_str()).to_string();
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            vec![
                v.window.clone(),
                format!(
                    "{} ({:.2}/day, {})",
                    v.deployments,
                    v.deployments_per_day,
                    band(v.bands.deployment_frequency)
                ),
                format!(
                    "{} ({})",
                    short_duration(v.lead_time_seconds),
                    band(v.bands.lead_time)
                ),
                match v.change_failure_rate {
                    Some(r) => format!(
                        "{:.0}% ({}/{}, {})",
                        r * 100.0,
                        v.failures,
                        v.attempts,
                        band(v.bands.change_failure_rate)
                    ),
                    None => "-".into(),
                },
                format!(
                    "{} ({})",
                    short_duration(v.time_to_restore_seconds),
                    band(v.bands.time_to_restore)
                ),
                band(v.bands.overall),
            ]
        })
        .collect();
    let scope = views
        .first()
        .map_or_else(|| "the platform".to_string(), |v| v.scope.clone());
    println!(
        "DORA four keys of {}",
        if scope == "platform" {
            "the platform"
        } else {
            &scope
        }
    );
    output::table(
        &[
            "WINDOW",
            "DEPLOYS",
            "LEAD TIME",
            "FAILURE RATE",
            "RESTORE",
            "BAND",
        ],
        &rows,
    );
    Ok(0)
}

async fn apps(g: &Global) -> Result<i32> {
    let client = crate::client::discover(g)?;
    let apps: Vec<AppSummary> = client.get_json("/v1/apps").await?;
    if g.json {
        output::json(&apps);
    } else if apps.is_empty() {
        println!("no apps yet; deploy one with `berth deploy DIR`");
    } else {
        let rows: Vec<Vec<String>> = apps
            .iter()
            .map(|a| {
                vec![
                    a.name.clone(),
                    a.current_release
                        .map(|v| format!("v{v}"))
                        .unwrap_or_else(|| "-".into()),
                    if a.sleeping {
                        "0 (asleep)".to_string()
                    } else {
                        a.running.to_string()
                    },
                    a.isolation.clone().unwrap_or_else(|| "-".into()),
                    a.url.clone(),
                ]
            })
            .collect();
        output::table(&["APP", "RELEASE", "RUNNING", "ISOLATION", "URL"], &rows);
    }
    Ok(0)
}

async fn ps(g: &Global, app: &str) -> Result<i32> {
    let client = crate::client::discover(g)?;
    let list: Vec<InstanceView> = client
        .get_json(&berth_client::app_path(app, "/instances"))
        .await?;
    if g.json {
        output::json(&list);
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|i| {
            vec![
                format!("{}.{}", i.process, i.index),
                format!("v{}", i.release),
                i.state.as_str().to_string(),
                i.restarts.to_string(),
                match (i.last_exit_reason.as_deref(), i.last_exit) {
                    (Some("oom_killed"), _) => "OOMKilled".to_string(),
                    (_, Some(c)) => c.to_string(),
                    _ => "-".into(),
                },
                output::ago(i.started_at),
                i.address.clone(),
            ]
        })
        .collect();
    output::table(
        &[
            "PROCESS",
            "RELEASE",
            "STATE",
            "RESTARTS",
            "LAST EXIT",
            "STARTED",
            "ADDRESS",
        ],
        &rows,
    );
    Ok(0)
}

async fn releases(g: &Global, app: &str) -> Result<i32> {
    let client = crate::client::discover(g)?;
    let list: Vec<ReleaseView> = client
        .get_json(&berth_client::app_path(app, "/releases"))
        .await?;
    if g.json {
        output::json(&list);
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            let digest = r.image.digest.trim_start_matches("sha256:");
            vec![
                format!("v{}", r.version),
                r.status.as_str().to_string(),
                format!("sha256:{}", &digest[..digest.len().min(12)]),
                r.description.chars().take(60).collect(),
                r.actor.clone(),
                output::ago(r.created_at),
            ]
        })
        .collect();
    output::table(
        &["VERSION", "STATUS", "IMAGE", "SOURCE", "BY", "CREATED"],
        &rows,
    );
    Ok(0)
}

async fn canary_command(g: &Global, app: &str, action: &str) -> Result<i32> {
    let client = crate::client::discover(g)?;
    let answer: serde_json::Value = client
        .post_json(
            &berth_client::app_path(app, &format!("/canary/{action}")),
            &serde_json::json!({}),
        )
        .await?;
    if g.json {
        output::json(&answer);
    } else {
        println!(
            "{} handed to the canary of {app}; its deploy says what happened",
            if action == "promote" {
                "Promotion"
            } else {
                "Abort"
            }
        );
    }
    Ok(0)
}

async fn images(g: &Global, app: &str) -> Result<i32> {
    let client = crate::client::discover(g)?;
    let list: Vec<berth_core::api::ImageView> = client
        .get_json(&berth_client::app_path(app, "/images"))
        .await?;
    if g.json {
        output::json(&list);
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|i| {
            let digest = i.digest.trim_start_matches("sha256:");
            vec![
                format!("sha256:{}", &digest[..digest.len().min(12)]),
                format!("{:.1} MiB", i.size as f64 / (1024.0 * 1024.0)),
                i.releases
                    .iter()
                    .map(|v| format!("v{v}"))
                    .collect::<Vec<_>>()
                    .join(","),
                i.sbom_packages
                    .map_or_else(|| "-".to_string(), |n| format!("{n} packages")),
                i.signature.clone(),
            ]
        })
        .collect();
    output::table(&["IMAGE", "SIZE", "RELEASES", "SBOM", "SIGNATURE"], &rows);
    Ok(0)
}

async fn sbom(g: &Global, app: &str, release: Option<u32>) -> Result<i32> {
    let client = crate::client::discover(g)?;
    let version = match release {
        Some(v) => v,
        None => {
            let list: Vec<ReleaseView> = client
                .get_json(&berth_client::app_path(app, "/releases"))
                .await?;
            list.iter()
                .find(|r| r.status == berth_core::model::ReleaseStatus::Active)
                .map(|r| r.version)
                .ok_or_else(|| anyhow!("{app} has no serving release; name one with --release N"))?
        }
    };
    let doc: serde_json::Value = client
        .get_json(&berth_client::app_path(
            app,
            &format!("/releases/{version}/sbom"),
        ))
        .await?;
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(0)
}

async fn logs(
    g: &Global,
    app: &str,
    follow: bool,
    build: bool,
    lines: usize,
    filter: crate::cli::LogFilterArgs,
) -> Result<i32> {
    let client = crate::client::discover(g)?;
    if build {
        let text = client
            .get_text(&berth_client::app_path(app, "/builds/latest/log"))
            .await?;
        print!("{text}");
        return Ok(0);
    }
    let path = berth_client::with_query(
        &berth_client::app_path(app, "/logs"),
        &[
            ("lines", Some(lines.to_string())),
            ("follow", Some(follow.to_string())),
            ("since", filter.since),
            ("until", filter.until),
            ("release", filter.release.map(|r| r.to_string())),
            ("grep", filter.grep),
            ("process", filter.process),
            ("stream", filter.stream),
        ],
    );
    let as_json = g.json;
    client
        .get_lines(&path, |line| {
            if as_json {
                println!("{line}");
            } else {
                let rec: berth_observe::LogRecord = serde_json::from_str(line)?;
                println!("{}", rec.render());
            }
            Ok(())
        })
        .await?;
    Ok(0)
}

async fn env(g: &Global, cmd: EnvCommand) -> Result<i32> {
    let client = crate::client::discover(g)?;
    match cmd {
        EnvCommand::List { app } => {
            let env: BTreeMap<String, String> = client
                .get_json(&berth_client::app_path(&app, "/env"))
                .await?;
            if g.json {
                output::json(&env);
            } else {
                for (k, v) in env {
                    println!("{k}={v}");
                }
            }
            Ok(0)
        }
        EnvCommand::Set { app, pairs } => {
            let mut set = BTreeMap::new();
            for p in &pairs {
                let (k, v) = p
                    .split_once('=')
                    .ok_or_else(|| anyhow!("{p:?} is not KEY=VALUE"))?;
                berth_core::names::validate_env_key(k).map_err(|e| anyhow!(e))?;
                set.insert(k.to_string(), v.to_string());
            }
            let body = serde_json::json!({ "set": set });
            stream_workflow(
                g,
                &client,
                reqwest::Method::POST,
                &berth_client::app_path(&app, "/env"),
                None,
                Some(body),
            )
            .await
        }
        EnvCommand::Unset { app, keys } => {
            for k in &keys {
                berth_core::names::validate_env_key(k).map_err(|e| anyhow!(e))?;
            }
            let body = serde_json::json!({ "unset": keys });
            stream_workflow(
                g,
                &client,
                reqwest::Method::POST,
                &berth_client::app_path(&app, "/env"),
                None,
                Some(body),
            )
            .await
        }
    }
}

/// `berth grafana dashboards --out DIR`.
fn grafana_dashboards(g: &Global, out: &Path) -> Result<i32> {
    std::fs::create_dir_all(out).with_context(|| format!("making {}", out.display()))?;
    let mut written = Vec::new();
    for (file, dashboard) in berth_observe::grafana::dashboards() {
        let path = out.join(file);
        let text = serde_json::to_string_pretty(&dashboard)?;
        std::fs::write(&path, text + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    if g.json {
        crate::output::json(&serde_json::json!({ "written": written }));
    } else {
        for p in &written {
            println!("{}", p.display());
        }
        eprintln!("hint: provision them with a file provider (or import them); each asks for its Prometheus data source");
    }
    Ok(0)
}
