//! The Kubernetes backend (`berth up --backend kubernetes`): releases become objects in a
//! cluster instead of containers on this machine. A rollout applies the release's objects
//! by server-side apply (the kube plane's `Cluster`), follows the Deployments until the new
//! pods are ready and then prunes what the release no longer has; a rollout that fails puts
//! the serving release's objects back. The app's secret values go to its `<app>-secrets`
//! Secret, the registry's credentials (when berth holds some) to a pull secret. Pods' logs
//! are read into berth's log store, so `berth logs` works as on the embedded runtime.

use crate::deploy::{DeployFailure, Events, TestStep};
use crate::platform::Platform;
use crate::ApiError;
use axum::http::StatusCode;
use berth_core::api::{DeployEvent, DriftView, ReleaseView};
use berth_kube::cluster::{Cluster, ClusterError};
use berth_kube::render::OneOff;
use berth_kube::stack::Stack;
use berth_kube::{KubeApp, KubeProcess, KubeVolume, Manifest};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What a rollout runs before the new pods start.
struct OneOffs<'a> {
    tests: Option<&'a TestStep>,
    /// The app's first deploy (its postdeploy script runs).
    first: bool,
    events: &'a Events,
    deploy_id: &'a str,
}

/// The pull secret berth writes in each project's namespace.
pub const PULL_SECRET: &str = "berth-registry";
/// How long a rollout may take before it fails (at least; longer when the app's health
/// check allows more).
pub const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(180);
/// How often pods' logs are read.
pub const LOG_INTERVAL: Duration = Duration::from_secs(2);

/// Which cluster (`--kubeconfig`, `--kube-context`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeTarget {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// The StorageClass of apps' volumes (none: the cluster's default).
    pub storage_class: Option<String>,
}

/// A connected cluster and what it has of the seeds' stack.
pub struct KubeBackend {
    pub cluster: Cluster,
    pub stack: Stack,
}

impl KubeBackend {
    /// Connects, checks the API server answers, and discovers its stack.
    pub async fn connect(target: &KubeTarget) -> Result<Self, ClusterError> {
        let cluster =
            Cluster::connect(target.kubeconfig.as_deref(), target.context.as_deref()).await?;
        let stack = cluster.stack(DEFAULT_ISSUER).await?;
        Ok(Self { cluster, stack })
    }
}

/// What a cluster offers for volume snapshots and database backups.
pub const VOLUME_SNAPSHOT_HINT: &str = "the volume is the PersistentVolumeClaim APP-NAME in the app's namespace: snapshot it with the cluster's storage (a CSI VolumeSnapshot)";
pub const DATABASE_BACKUP_HINT: &str = "the database is CloudNativePG's Cluster APP-db in the app's namespace: back it up with CloudNativePG (a Backup or ScheduledBackup to an object store)";

/// The cert-manager ClusterIssuer apps' certificates are asked of.
pub const DEFAULT_ISSUER: &str = "letsencrypt";

/// A cluster's refusal as the API's error (of an operation on `app`).
fn cluster_error(app: &str, e: ClusterError) -> ApiError {
    if let ClusterError::Conflict { object, message } = &e {
        return ApiError::new(
            StatusCode::CONFLICT,
            "cluster_conflict",
            format!("{object}: {message}"),
        )
        .hint(format!(
            "it was changed in the cluster by hand, and berth does not take it back unasked: `berth kube drift {app}` shows what changed, `berth kube restore {app}` puts back the serving release's objects"
        ));
    }
    if let ClusterError::Canary { aborted, .. } = &e {
        let code = if *aborted {
            "canary_aborted"
        } else {
            "canary_failed"
        };
        return ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, e.to_string()).hint(
            "the stable release keeps serving; deploy again to retry the canary (`berth logs` shows how the new pods did)",
        );
    }
    let status = match &e {
        ClusterError::Unreachable { .. } => StatusCode::BAD_GATEWAY,
        ClusterError::Unauthorized { .. } => StatusCode::BAD_GATEWAY,
        ClusterError::Conflict { .. } | ClusterError::NotOurs(_) => StatusCode::CONFLICT,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    ApiError::new(status, "cluster", e.to_string())
}

/// A digest of the secret versions a release reads (names and versions, never values).
fn secrets_version(release: &ReleaseView) -> Option<String> {
    if release.config.secrets.is_empty() {
        return None;
    }
    Some(
        release
            .config
            .secrets
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    )
}

impl Platform {
    /// The cluster, or a refusal that says this platform runs its apps itself.
    fn kube_or_refuse(&self) -> Result<&KubeBackend, ApiError> {
        self.kube.as_ref().ok_or_else(|| {
            ApiError::invalid(
                "no_cluster",
                "this platform runs its apps itself: there is no cluster to compare with",
            )
            .hint("start berth with --backend kubernetes to run apps in a cluster")
        })
    }

    /// Refuses what the Kubernetes backend does not do yet (rather than doing it on this
    /// machine, where the app's pods would never see it), with what the cluster offers.
    pub(crate) fn not_on_cluster(&self, what: &str, hint: &str) -> Result<(), ApiError> {
        if self.kube.is_none() {
            return Ok(());
        }
        Err(ApiError::invalid(
            "not_on_cluster",
            format!("{what} is not available yet when apps run in a Kubernetes cluster"),
        )
        .hint(hint))
    }

    /// `berth db create` on a cluster: CloudNativePG makes the database (a `Cluster`, from
    /// the app's next release on), its connection reaches the pods from the operator's
    /// Secret. Refused where the cluster has no CloudNativePG.
    pub(crate) async fn create_cluster_database(
        self: &Arc<Self>,
        app: &str,
        actor: String,
        events: Events,
    ) -> Result<(u32, String), DeployFailure> {
        let backend = self.kube()?;
        if !backend.stack.cloudnative_pg {
            return Err(ApiError::invalid(
                "not_on_cluster",
                format!(
                    "a database in the cluster is made by CloudNativePG, and this cluster has none (no CRD {})",
                    berth_kube::stack::CLOUDNATIVE_PG_CRD
                ),
            )
            .hint("install CloudNativePG's operator in the cluster, then start berth again (it looks for it when it starts)")
            .into());
        }
        let cluster = berth_kube::render::database_cluster(app);
        self.store
            .insert_database(app, "app", "app", crate::now_secs())
            .await?;
        let Some(release) = self.serving_release(app).await? else {
            return Ok((
                crate::deploy::STORED_ONLY,
                format!("database {cluster} (CloudNativePG) is made with {app}'s first deploy, which gets DATABASE_URL"),
            ));
        };
        let result = self
            .deploy_config(
                app,
                &release.image,
                release.config.clone(),
                &format!("database {cluster}"),
                &actor,
                &events,
            )
            .await;
        if result.is_err() {
            // The serving release's objects are back; its database record goes too.
            self.store.delete_database(app).await?;
            let namespace = self.kube_namespace(app).await?;
            if let Ok(objects) = self.kube_objects(app, &release).await {
                let _ = backend
                    .cluster
                    .prune_app(&namespace, app, &objects, &backend.stack)
                    .await;
            }
        }
        result
    }

    /// `berth db info` of a database CloudNativePG makes: its service, and whether it is up
    /// (its connection Secret written).
    pub(crate) async fn cluster_database_info(
        &self,
        app: &str,
        database: String,
        role: String,
        created_at: i64,
    ) -> Result<berth_core::state::DatabaseView, ApiError> {
        let backend = self.kube()?;
        let namespace = self.kube_namespace(app).await?;
        let cluster = berth_kube::render::database_cluster(app);
        let running = backend
            .cluster
            .has_secret(&namespace, &format!("{cluster}-app"))
            .await
            .map_err(|e| cluster_error(app, e))?;
        Ok(berth_core::state::DatabaseView {
            app: app.to_string(),
            database,
            role,
            host: format!("{cluster}-rw.{namespace}"),
            port: 5432,
            server_running: running,
            backups: Vec::new(),
            created_at,
        })
    }

    fn kube(&self) -> Result<&KubeBackend, ApiError> {
        self.kube
            .as_ref()
            .ok_or_else(|| ApiError::internal("kube backend", "not configured"))
    }

    /// The namespace of an app's project.
    async fn kube_namespace(&self, app: &str) -> Result<String, ApiError> {
        let project = self
            .store
            .app_project(app)
            .await?
            .unwrap_or_else(|| "default".into());
        berth_kube::namespace_of(&project).map_err(|e| ApiError::invalid("invalid_project", e))
    }

    /// Hands `berth promote` (`abort` false) or `berth abort` to `app`'s canary under way
    /// in the cluster (its Argo Rollouts Rollout); false when none is walking its steps.
    pub(crate) async fn kube_canary_command(
        &self,
        app: &str,
        abort: bool,
    ) -> Result<bool, ApiError> {
        let backend = self.kube()?;
        let namespace = self.kube_namespace(app).await?;
        let Some(rollout) = backend
            .cluster
            .canary_under_way(&namespace, app)
            .await
            .map_err(|e| cluster_error(app, e))?
        else {
            return Ok(false);
        };
        backend
            .cluster
            .command_canary(&rollout, abort)
            .await
            .map_err(|e| cluster_error(app, e))?;
        Ok(true)
    }

    /// A release as the objects that run it in the cluster (its Secret with its values).
    async fn kube_objects(
        &self,
        app: &str,
        release: &ReleaseView,
    ) -> Result<Vec<Manifest>, ApiError> {
        Ok(self.kube_release(app, release).await?.1)
    }

    /// A release as the cluster has it: the app, and its objects.
    async fn kube_release(
        &self,
        app: &str,
        release: &ReleaseView,
    ) -> Result<(KubeApp, Vec<Manifest>), ApiError> {
        let backend = self.kube()?;
        let registry = self.cfg.registry.as_ref().ok_or_else(|| {
            ApiError::invalid(
                "no_registry",
                "the Kubernetes backend needs a registry the cluster pulls images from",
            )
            .hint("start berth with --registry HOST[:PORT][/PATH]")
        })?;
        if release.config.own_root.is_none() {
            return Err(ApiError::invalid(
                "host_stack_image",
                format!(
                    "v{} of {app} was built to run on this machine's /usr (before the platform ran apps in a cluster); a cluster's nodes need an image with its own root filesystem",
                    release.version
                ),
            )
            .hint("deploy its source again: a build for the cluster carries the files of the stack it needs"));
        }
        let namespace = self.kube_namespace(app).await?;
        let secrets = self.resolve_secrets(app, &release.config).await?;
        let mut hosts = self.cfg.app_hosts(app);
        hosts.extend(
            self.store
                .domains(Some(app))
                .await?
                .into_iter()
                .map(|d| d.name),
        );
        hosts.retain(|h| !h.ends_with(".localhost"));
        if hosts.is_empty() {
            hosts.push(format!("{app}.localhost"));
        }
        let auth = self.registry_auth_file(registry.host()).await?;
        let docker_config = match &auth {
            Some(a) => Some(
                std::fs::read(&a.0).map_err(|e| ApiError::internal("registry credentials", e))?,
            ),
            None => None,
        };
        // The StorageClass of the app's claims (its volumes', its database's).
        let storage_class = self.cfg.kube.as_ref().and_then(|k| k.storage_class.clone());
        let kube_app = KubeApp {
            name: app.to_string(),
            namespace: namespace.clone(),
            image: format!(
                "{}/{}@{}",
                registry.base, release.image.repository, release.image.digest
            ),
            port: release.config.port.unwrap_or(crate::config::APP_PORT),
            processes: release
                .config
                .processes
                .iter()
                .map(|(kind, p)| {
                    (
                        kind.clone(),
                        KubeProcess {
                            command: Some(p.command.clone()).filter(|c| !c.is_empty()),
                            instances: p.instances,
                            limits: p.limits,
                        },
                    )
                })
                .collect(),
            env: release.config.env.clone(),
            has_secrets: !secrets.env.is_empty(),
            secret_files: secrets.files.iter().map(|(k, _)| k.clone()).collect(),
            volumes: self
                .store
                .volumes(Some(app))
                .await?
                .into_iter()
                .map(|v| KubeVolume {
                    name: v.name,
                    mount: v.mount_path,
                    size_bytes: v.size_bytes,
                    storage_class: storage_class.clone(),
                })
                .collect(),
            hosts,
            isolation: release.config.isolation,
            health_path: release.config.health.path.clone(),
            canary: release.config.canary.clone(),
            secrets_version: secrets_version(release),
            pull_secret: docker_config.as_ref().map(|_| PULL_SECRET.to_string()),
            database: self.store.databases().await?.contains_key(app).then(|| {
                berth_kube::render::KubeDatabase {
                    size_bytes: berth_kube::spec::DATABASE_SIZE,
                    storage_class: storage_class.clone(),
                }
            }),
            slo: release.config.slo,
            metrics_path: release.config.metrics_path.clone(),
            derived_env: BTreeMap::new(),
        };
        let project = self
            .store
            .app_project(app)
            .await?
            .unwrap_or_else(|| berth_core::projects::DEFAULT_PROJECT.into());
        let quota = self.store.project_quota(&project).await?;
        let mut objects = berth_kube::project_objects(&namespace, quota.as_ref());
        if let Some(config) = &docker_config {
            objects.push(berth_kube::render::pull_secret_object(
                &namespace,
                PULL_SECRET,
                config,
            ));
        }
        if kube_app.has_secrets {
            let values: BTreeMap<String, Vec<u8>> = secrets
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
                .collect();
            objects.push(berth_kube::render::secret_object(&kube_app, &values));
        }
        if !secrets.files.is_empty() {
            let files: BTreeMap<String, Vec<u8>> = secrets
                .files
                .iter()
                .map(|(k, v)| (k.clone(), v.to_vec()))
                .collect();
            objects.push(berth_kube::render::secret_files_object(&kube_app, &files));
        }
        objects.extend(berth_kube::stack::apply_stack(
            &kube_app,
            &backend.stack,
            berth_kube::app_objects(&kube_app),
        ));
        Ok((kube_app, objects))
    }

    /// Applies a release's objects in the order a rollout needs: the namespace's own, then
    /// the tests (as a Job) before anything of the app changes, then the app's objects but
    /// its workloads, the database's connection Secret waited for (CloudNativePG writes it
    /// once the database is up; a pod started before would fail on the missing Secret), the
    /// release command and postdeploy script (as Jobs), and the workloads last.
    async fn kube_apply_in_order(
        &self,
        app: &str,
        release: &ReleaseView,
        kube_app: &KubeApp,
        objects: &[Manifest],
        one_offs: &OneOffs<'_>,
    ) -> Result<(), DeployFailure> {
        let say = |line: String| {
            let _ = one_offs.events.send(DeployEvent::Log { line });
        };
        let backend = self.kube()?;
        let fail = |e| DeployFailure::from(cluster_error(app, e));
        // The tests first, before anything of the app changes (the namespace may be new).
        let (project, app_objects): (Vec<Manifest>, Vec<Manifest>) = objects
            .iter()
            .cloned()
            .partition(|m| m.object["metadata"]["labels"][berth_kube::cluster::APP_NAME].is_null());
        backend.cluster.apply(&project, false).await.map_err(fail)?;
        if let Some(tests) = one_offs.tests {
            self.kube_one_off(
                app,
                release,
                kube_app,
                OneOff::Tests,
                &tests.command,
                tests.timeout,
                one_offs,
            )
            .await?;
        }
        let (workloads, rest): (Vec<Manifest>, Vec<Manifest>) = app_objects
            .into_iter()
            .partition(|m| matches!(m.kind.as_str(), "Deployment" | "Rollout"));
        backend.cluster.apply(&rest, false).await.map_err(fail)?;
        if let Some(db) = objects
            .iter()
            .find(|m| m.kind == "Cluster" && m.group == "postgresql.cnpg.io")
        {
            let namespace = db.namespace.clone().unwrap_or_default();
            let secret = format!("{}-app", db.name);
            if !backend
                .cluster
                .has_secret(&namespace, &secret)
                .await
                .map_err(fail)?
            {
                say(format!(
                    "       waiting for CloudNativePG to make database {} (its Secret {secret})",
                    db.name
                ));
            }
            backend
                .cluster
                .wait_for_secret(
                    &namespace,
                    &secret,
                    "CloudNativePG writes it once the database is up; `kubectl describe cluster` it",
                    ROLLOUT_TIMEOUT,
                )
                .await
                .map_err(fail)?;
        }
        // The release command and (on the first deploy) the postdeploy script, with what
        // the app's processes have, before they start.
        if let Some(command) = &release.config.release_command {
            self.kube_one_off(
                app,
                release,
                kube_app,
                OneOff::Release,
                command,
                ROLLOUT_TIMEOUT,
                one_offs,
            )
            .await?;
        }
        if let (Some(command), true) = (&release.config.postdeploy, one_offs.first) {
            self.kube_one_off(
                app,
                release,
                kube_app,
                OneOff::Postdeploy,
                command,
                ROLLOUT_TIMEOUT,
                one_offs,
            )
            .await?;
        }
        backend
            .cluster
            .apply(&workloads, false)
            .await
            .map_err(fail)?;
        Ok(())
    }

    /// Runs one of a deploy's one-offs as a Job in the cluster; its output joins the
    /// deploy's, and its failure fails the deploy as on berth's own runtime.
    #[allow(clippy::too_many_arguments)]
    async fn kube_one_off(
        &self,
        app: &str,
        release: &ReleaseView,
        kube_app: &KubeApp,
        kind: OneOff,
        command: &str,
        timeout: Duration,
        one_offs: &OneOffs<'_>,
    ) -> Result<(), DeployFailure> {
        let backend = self.kube()?;
        let events = one_offs.events;
        let step = match kind {
            OneOff::Tests => "tests",
            OneOff::Release => "release_command",
            OneOff::Postdeploy => "postdeploy",
        };
        self.store.deploy_step(one_offs.deploy_id, step).await?;
        crate::deploy::step(events, step);
        let job = berth_kube::render::one_off_job(
            kube_app,
            release.version,
            kind,
            command,
            timeout.as_secs(),
        );
        let _ = events.send(DeployEvent::Log {
            line: format!(
                "-----> running {} in the cluster: {command} (Job {})",
                kind.name(),
                job.name
            ),
        });
        let outcome = backend
            .cluster
            .run_job(&job, timeout + Duration::from_secs(60), |line| {
                let _ = events.send(DeployEvent::Log {
                    line: format!("       {line}"),
                });
            })
            .await
            .map_err(|e| cluster_error(app, e))?;
        let lines: Vec<String> = outcome.output.lines().map(str::to_string).collect();
        for line in &lines {
            let _ = events.send(DeployEvent::Log {
                line: format!("       {line}"),
            });
        }
        if outcome.succeeded {
            if kind == OneOff::Tests {
                let _ = events.send(DeployEvent::Log {
                    line: "-----> the tests passed".into(),
                });
            }
            return Ok(());
        }
        let tail: Vec<String> = lines
            .iter()
            .skip(lines.len().saturating_sub(crate::deploy::TAIL_LINES))
            .cloned()
            .collect();
        let how = match (&outcome.exit_code, &outcome.reason) {
            (_, Some(r)) if r == "DeadlineExceeded" => {
                format!("ran longer than {}", humantime::format_duration(timeout))
            }
            (Some(code), _) => format!("exited with code {code}"),
            (None, Some(r)) => format!("could not run ({r})"),
            (None, None) => "failed".to_string(),
        };
        let (code, message, hint) = match kind {
            OneOff::Tests if outcome.reason.as_deref() == Some("DeadlineExceeded") => (
                "tests_timed_out",
                format!("the tests {how}"),
                "the previous release keeps serving; make the tests faster, or raise test_timeout under [deploy] in berth.toml",
            ),
            OneOff::Tests => (
                "tests_failed",
                format!("the tests failed: they {how}"),
                "the previous release keeps serving; their output is above",
            ),
            OneOff::Release => (
                "release_command_failed",
                format!("the release command {how}"),
                "the previous release keeps serving; fix the release command and deploy again",
            ),
            OneOff::Postdeploy => (
                "postdeploy_failed",
                format!("the postdeploy script {how}"),
                "nothing was rolled out; fix scripts.postdeploy (app.json) or [deploy] postdeploy (berth.toml) and deploy again — it runs on the app's first deploy only",
            ),
        };
        Err(DeployFailure {
            error: ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message).hint(hint),
            log_tail: tail,
        })
    }

    /// Rolls a release out to the cluster: apply, wait for its pods, prune; on failure the
    /// serving release's objects are applied again.
    pub(crate) async fn kube_rollout(
        self: &Arc<Self>,
        app: &str,
        version: u32,
        tests: Option<TestStep>,
        canary: bool,
        events: &Events,
        deploy_id: &str,
    ) -> Result<(u32, String), DeployFailure> {
        let say = |line: String| {
            let _ = events.send(DeployEvent::Log { line });
        };
        let release = self
            .store
            .release(app, version)
            .await?
            .ok_or_else(|| ApiError::internal("release lookup", "release missing"))?;
        let (kube_app, objects) = self.kube_release(app, &release).await?;
        let backend = self.kube()?;
        // With Argo Rollouts, an app whose berth.toml asks for a canary has its web pods as a
        // Rollout (whatever the change: a variable, a rollback), walked step by step.
        let argo_canary = kube_app
            .canary
            .as_ref()
            .filter(|_| backend.stack.argo_rollouts && kube_app.processes.contains_key("web"));
        match argo_canary {
            Some(spec) => say(format!(
                "-----> canary through Argo Rollouts: {} of the web pods, {}s each; `berth promote {app}` gives it everything now, `berth abort {app}` rolls it back",
                spec.steps
                    .iter()
                    .map(|w| format!("{w}%"))
                    .collect::<Vec<_>>()
                    .join(" → "),
                spec.step_secs
            )),
            None if canary => say("-----> canary: the cluster has no Argo Rollouts (its CRD rollouts.argoproj.io), so the web pods roll as a Deployment's rolling update, without steps or analysis".into()),
            None => {}
        }
        let canary_secs =
            argo_canary.map_or(0, |c| c.step_secs.saturating_mul(c.steps.len() as u64));
        let one_offs = OneOffs {
            tests: tests.as_ref(),
            first: self
                .store
                .app(app)
                .await?
                .is_none_or(|a| a.current_release.is_none()),
            events,
            deploy_id,
        };
        self.store.deploy_step(deploy_id, "apply").await?;
        crate::deploy::step(events, "apply");
        say(format!(
            "-----> applying v{version} to the cluster at {} ({} objects)",
            backend.cluster.url,
            objects.len()
        ));
        let applied = self
            .kube_apply_in_order(app, &release, &kube_app, &objects, &one_offs)
            .await;
        let waited = match applied {
            Ok(_) => {
                self.store.deploy_step(deploy_id, "rollout").await?;
                crate::deploy::step(events, "rollout");
                let timeout = ROLLOUT_TIMEOUT.max(Duration::from_secs(
                    release.config.health.timeout_secs.saturating_mul(2),
                )) + Duration::from_secs(canary_secs);
                backend
                    .cluster
                    .wait_rolled_out(&objects, timeout, |line| say(format!("       {line}")))
                    .await
                    .map_err(|e| {
                        let mut error = cluster_error(app, e);
                        if error.hint.is_none() {
                            error = error.hint("the serving release keeps serving; `kubectl describe` the pod named above for more");
                        }
                        DeployFailure::from(error)
                    })
            }
            Err(e) => Err(e),
        };
        if let Err(e) = waited {
            // The serving release takes its place again.
            let serving = self.store.app(app).await?.and_then(|a| a.current_release);
            if let Some(previous) = serving.filter(|v| *v != version) {
                say(format!("-----> putting v{previous} back"));
                if let Some(prev) = self.store.release(app, previous).await? {
                    match self.kube_objects(app, &prev).await {
                        Ok(prev_objects) => {
                            if let Err(e) = backend.cluster.apply(&prev_objects, false).await {
                                tracing::error!(%app, previous, error = %e, "putting the previous release back failed");
                            }
                        }
                        Err(e) => {
                            tracing::error!(%app, previous, error = %e.message, "putting the previous release back failed")
                        }
                    }
                }
            }
            return Err(e);
        }
        let namespace = self.kube_namespace(app).await?;
        let pruned = backend
            .cluster
            .prune_app(&namespace, app, &objects, &backend.stack)
            .await
            .map_err(|e| cluster_error(app, e))?;
        for p in pruned {
            say(format!("       deleted {p} (no longer declared)"));
        }
        self.store.deploy_step(deploy_id, "switch").await?;
        crate::deploy::step(events, "switch");
        self.store.activate_release(app, version).await?;
        Ok((version, self.cfg.app_url(app)))
    }

    /// An app's instances as `berth ps` shows them: its containers here, or its pods in
    /// the cluster.
    pub async fn instance_views(
        &self,
        app: &str,
    ) -> Result<Vec<berth_core::api::InstanceView>, ApiError> {
        if self.kube.is_some() {
            return self.kube_instances(app).await;
        }
        Ok(self
            .store
            .instances(Some(app))
            .await?
            .iter()
            .filter(|i| i.state != berth_core::model::InstanceState::Stopped)
            .map(|i| i.view())
            .collect())
    }

    /// An app's pods as instances (`berth ps`): the serving release's, indexed per process
    /// type; a pod whose container waits to be restarted is `crashed`.
    pub async fn kube_instances(
        &self,
        app: &str,
    ) -> Result<Vec<berth_core::api::InstanceView>, ApiError> {
        use berth_core::model::InstanceState;
        let backend = self.kube()?;
        let namespace = self.kube_namespace(app).await?;
        let release = self
            .store
            .app(app)
            .await?
            .and_then(|a| a.current_release)
            .unwrap_or(0);
        let pods = backend
            .cluster
            .app_pods(&namespace, app)
            .await
            .map_err(|e| cluster_error(app, e))?;
        let mut index: BTreeMap<String, u32> = BTreeMap::new();
        Ok(pods
            .into_iter()
            .map(|pod| {
                let i = index.entry(pod.process.clone()).or_default();
                let view = berth_core::api::InstanceView {
                    id: pod.name,
                    release,
                    process: pod.process,
                    index: *i,
                    state: match pod.waiting.as_deref() {
                        Some("CrashLoopBackOff") => InstanceState::Crashed,
                        Some(_) => InstanceState::Starting,
                        None if pod.ready => InstanceState::Running,
                        None => InstanceState::Starting,
                    },
                    address: pod.address,
                    restarts: u32::try_from(pod.restarts).unwrap_or(0),
                    last_exit: pod.last_exit,
                    last_exit_reason: pod
                        .last_reason
                        .filter(|r| r == "OOMKilled")
                        .map(|_| "oom_killed".to_string()),
                    started_at: pod.started_at,
                };
                *i += 1;
                view
            })
            .collect())
    }

    /// What differs between the cluster and the app's serving release: fields changed by
    /// hand, objects deleted, objects berth made that the release does not have.
    pub async fn kube_drift(&self, app: &str) -> Result<Vec<DriftView>, ApiError> {
        let backend = self.kube_or_refuse()?;
        let release = self.serving_or_refuse(app).await?;
        let objects = self.kube_objects(app, &release).await?;
        let namespace = self.kube_namespace(app).await?;
        let mut drift: Vec<DriftView> = backend
            .cluster
            .plan(&objects)
            .await
            .map_err(|e| cluster_error(app, e))?
            .into_iter()
            .map(|c| DriftView {
                object: c.object,
                action: c.action,
                fields: c.fields,
            })
            .collect();
        drift.extend(
            backend
                .cluster
                .app_unkept(&namespace, app, &objects, &backend.stack)
                .await
                .map_err(|e| cluster_error(app, e))?
                .into_iter()
                .map(|object| DriftView {
                    object,
                    action: "delete".into(),
                    fields: Vec::new(),
                }),
        );
        Ok(drift)
    }

    /// Puts the app's objects back as its serving release has them (fields another manager
    /// took are taken back), waits for the rollout, and deletes what the release does not
    /// have; what it restored.
    pub async fn kube_restore(&self, app: &str) -> Result<Vec<DriftView>, ApiError> {
        let lock = self.app_lock(app);
        let _guard = lock.lock().await;
        let drift = self.kube_drift(app).await?;
        if drift.is_empty() {
            return Ok(drift);
        }
        let backend = self.kube_or_refuse()?;
        let release = self.serving_or_refuse(app).await?;
        let objects = self.kube_objects(app, &release).await?;
        let namespace = self.kube_namespace(app).await?;
        backend
            .cluster
            .apply(&objects, true)
            .await
            .map_err(|e| cluster_error(app, e))?;
        backend
            .cluster
            .wait_rolled_out(&objects, ROLLOUT_TIMEOUT, |_| {})
            .await
            .map_err(|e| cluster_error(app, e))?;
        backend
            .cluster
            .prune_app(&namespace, app, &objects, &backend.stack)
            .await
            .map_err(|e| cluster_error(app, e))?;
        Ok(drift)
    }

    /// Deletes every object of an app from the cluster (before its records go).
    pub(crate) async fn kube_remove(&self, app: &str) -> Result<Vec<String>, ApiError> {
        let backend = self.kube()?;
        let namespace = self.kube_namespace(app).await?;
        backend
            .cluster
            .prune_app(&namespace, app, &[], &backend.stack)
            .await
            .map_err(|e| cluster_error(app, e))
    }
}

/// Reads the pods' logs of every app into berth's log store until shutdown.
pub async fn run_pod_logs(platform: Arc<Platform>) {
    let Some(backend) = platform.kube.as_ref() else {
        return;
    };
    let mut seen: BTreeMap<String, BTreeMap<(String, String), jiff::Timestamp>> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = platform.shutdown.cancelled() => return,
            _ = tokio::time::sleep(LOG_INTERVAL) => {}
        }
        let apps = match platform.store.apps().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "listing apps for their pods' logs");
                continue;
            }
        };
        seen.retain(|app, _| apps.iter().any(|a| &a.name == app));
        for a in apps {
            let Ok(namespace) = platform.kube_namespace(&a.name).await else {
                continue;
            };
            let project = namespace.trim_start_matches("berth-").to_string();
            let cursor = seen.entry(a.name.clone()).or_default();
            let lines = match backend.cluster.app_logs(&namespace, &a.name, cursor).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!(app = %a.name, error = %e, "reading pods' logs");
                    continue;
                }
            };
            if lines.is_empty() {
                continue;
            }
            let records: Vec<berth_observe::LogRecord> = lines
                .into_iter()
                .map(|l| berth_observe::LogRecord {
                    ts: l.at.as_millisecond(),
                    project: project.clone(),
                    app: a.name.clone(),
                    commit: None,
                    release: a.current_release.unwrap_or(0),
                    process: l.process,
                    index: 0,
                    stream: "stdout".into(),
                    source: None,
                    line: l.line,
                })
                .collect();
            if let Err(e) = platform.logs.append(&records) {
                tracing::warn!(app = %a.name, error = %e, "keeping pods' logs");
            }
        }
    }
}
