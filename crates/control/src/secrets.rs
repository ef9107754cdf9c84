//! Secrets as the control plane handles them: values sealed by the keyring before they
//! reach the store, opened only to start an instance (into RAM, see `berth_data::secret_files`)
//! and to rotate the key. Each change is a new release with zero downtime, like `env set`;
//! the API and CLI list names, versions, who and when, never values.

use crate::deploy::{DeployFailure, Events, STORED_ONLY};
use crate::error::ApiError;
use crate::launcher::ResolvedSecrets;
use crate::platform::Platform;
use crate::store::SecretRow;
use berth_core::api::DeployEvent;
use berth_core::model::ReleaseConfig;
use berth_core::state::{self, SecretChange, SecretView};
use berth_data::secrets::Sealed;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The associated data a secret version is sealed with: it opens only in its own slot.
fn context(app: &str, name: &str, version: u32) -> String {
    format!("{app}/{name}/{version}")
}

/// An app's build secrets opened for one build; dropping it removes their files.
pub(crate) struct OpenBuildSecrets {
    /// What the build gets.
    pub secrets: berth_factory::builder::BuildSecrets,
    /// Where they were written, to remove.
    written: Option<(berth_data::secret_files::SecretFiles, String)>,
}

impl OpenBuildSecrets {
    /// What hides their values in the build's log.
    pub(crate) fn redactor(&self) -> berth_observe::redact::Redactor {
        berth_observe::redact::Redactor::new(
            self.secrets
                .env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
    }
}

impl Drop for OpenBuildSecrets {
    fn drop(&mut self) {
        if let Some((files, slot)) = &self.written {
            files.remove(slot);
        }
    }
}

/// The names a change sets or removes, sorted, for messages.
fn changed_names(change: &SecretChange) -> String {
    let mut names: Vec<&str> = change
        .set
        .keys()
        .chain(change.unset.iter())
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    names.join(", ")
}

/// What `rotate-key` did.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RotationReport {
    /// The key now sealing every value.
    pub key_id: String,
    /// How many stored secret values were re-sealed.
    pub resealed: usize,
    /// How many TLS private keys (certificates, local CA, ACME accounts) were re-sealed.
    pub tls_keys: usize,
    /// How many registry passwords were re-sealed.
    #[serde(default)]
    pub registry_credentials: usize,
    /// How many image signing keys were re-sealed.
    #[serde(default)]
    pub signing_keys: usize,
    /// How many webhook secrets (git connections, GitOps sources) were re-sealed.
    #[serde(default)]
    pub webhook_secrets: usize,
    /// How many git deploy keys were re-sealed.
    #[serde(default)]
    pub deploy_keys: usize,
}

impl Platform {
    /// Opens the secrets a release runs with, and hides their values from the app's logs
    /// from now on.
    pub async fn resolve_secrets(
        &self,
        app: &str,
        config: &ReleaseConfig,
    ) -> Result<ResolvedSecrets, ApiError> {
        let mut out = ResolvedSecrets::default();
        for (name, plain) in self.open_versions(app, &config.secrets).await? {
            if config.secret_as_file(&name) {
                out.files.push((name, plain));
            } else {
                let text = zeroize::Zeroizing::new(String::from_utf8_lossy(&plain).to_string());
                out.env.push((name, text));
            }
        }
        if let Ok(mut ing) = self.ingester.lock() {
            ing.set_redactor(app, out.redactor());
        }
        Ok(out)
    }

    /// The current value of one of the app's secrets, if it has it.
    pub(crate) async fn open_secret(
        &self,
        app: &str,
        name: &str,
    ) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, ApiError> {
        let Some(version) = self.store.app_secrets(app).await?.get(name).copied() else {
            return Ok(None);
        };
        let which = BTreeMap::from([(name.to_string(), version)]);
        Ok(self
            .open_versions(app, &which)
            .await?
            .into_iter()
            .next()
            .map(|(_, v)| v))
    }

    /// Opens the named versions of the app's secrets: (name, value) each.
    async fn open_versions(
        &self,
        app: &str,
        which: &BTreeMap<String, u32>,
    ) -> Result<Vec<(String, zeroize::Zeroizing<Vec<u8>>)>, ApiError> {
        let rows = self.store.secret_rows(app, which).await?;
        let ring = self.keyring.read().await;
        rows.into_iter()
            .map(|r| {
                let plain = ring
                    .open_sealed(
                        &context(app, &r.name, r.version),
                        &Sealed {
                            key_id: r.key_id.clone(),
                            data: r.sealed.clone(),
                        },
                    )
                    .map_err(|e| {
                        ApiError::internal(&format!("opening secret {} of {app}", r.name), e)
                    })?;
                Ok((r.name, plain))
            })
            .collect()
    }

    /// Names, versions, who and when of the secrets the app's next release gets, then of
    /// its build secrets.
    pub async fn list_secrets(&self, app: &str) -> Result<Vec<SecretView>, ApiError> {
        let current = self.store.app_secrets(app).await?;
        let build = self.store.app_build_secrets(app).await?;
        let files = self
            .serving_release(app)
            .await?
            .map(|r| r.config)
            .unwrap_or_default();
        let view = |r: SecretRow, injected_as: String| SecretView {
            injected_as,
            name: r.name,
            version: r.version,
            updated_by: r.actor,
            updated_at: r.created_at,
        };
        let mut out: Vec<SecretView> = self
            .store
            .secret_rows(app, &current)
            .await?
            .into_iter()
            .map(|r| {
                let how = if files.secret_as_file(&r.name) {
                    format!("file {}/{}", state::SECRET_FILES_DIR, r.name)
                } else {
                    "env".into()
                };
                view(r, how)
            })
            .collect();
        out.extend(
            self.store
                .secret_rows(app, &build)
                .await?
                .into_iter()
                .map(|r| view(r, "build".into())),
        );
        Ok(out)
    }

    /// Opens the app's build secrets for one build: written, readable by the build's
    /// identity alone, into the RAM-backed secrets directory. Dropping the result removes
    /// them.
    pub(crate) async fn open_build_secrets(
        &self,
        app: &str,
        build_id: &str,
        identity: &berth_factory::build_user::BuildIdentity,
    ) -> Result<OpenBuildSecrets, ApiError> {
        let which = self.store.app_build_secrets(app).await?;
        let mut open = OpenBuildSecrets {
            secrets: berth_factory::builder::BuildSecrets::default(),
            written: None,
        };
        if which.is_empty() {
            return Ok(open);
        }
        let Some(files) = self.launcher.build_files() else {
            return Err(ApiError::invalid(
                "no_secrets_directory",
                format!("{app} has build secrets, but this platform has no RAM-backed directory to open them into"),
            ));
        };
        let plain = self.open_versions(app, &which).await?;
        let slot = format!("build-{build_id}");
        let written = files
            .write(&slot, b"", &plain, identity.uid(), identity.gid())
            .map_err(|e| {
                // What was written before the failure goes too.
                files.remove(&slot);
                ApiError::internal("writing build secrets", e)
            })?;
        open.written = Some((files.clone(), slot));
        open.secrets.files_dir = Some(written.files_dir);
        open.secrets.env = plain
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    zeroize::Zeroizing::new(String::from_utf8_lossy(&v).to_string()),
                )
            })
            .collect();
        Ok(open)
    }

    /// Sets and removes secrets: new sealed versions, then (when a release serves) a new
    /// release with zero downtime. Nothing changes if the deploy fails.
    pub async fn change_secrets(
        self: &Arc<Self>,
        app: &str,
        change: SecretChange,
        actor: String,
        events: Events,
    ) -> Result<(u32, String), DeployFailure> {
        let mut problems = Vec::new();
        for k in change.set.keys().chain(change.unset.iter()) {
            if let Err(e) = state::validate_secret_name(k) {
                problems.push(e);
            }
        }
        for (k, v) in &change.set {
            if let Err(e) = state::validate_secret_value(k, v) {
                problems.push(e);
            }
        }
        if let Some(k) = change.unset.iter().find(|k| change.set.contains_key(*k)) {
            problems.push(format!("{k} is both set and unset"));
        }
        if change.build {
            for k in change.set.keys() {
                if berth_factory::builder::is_build_env(k) {
                    problems.push(format!(
                        "{k}: berth sets it for every build; a build secret needs a name of its own"
                    ));
                }
            }
        }
        if change.set.is_empty() && change.unset.is_empty() {
            problems
                .push("nothing to change: give NAME=VALUE pairs to set or NAME to unset".into());
        }
        if !problems.is_empty() {
            return Err(ApiError::invalid("invalid_secret", problems.join("; ")).into());
        }
        let lock = self.app_lock(app);
        let _guard = lock.lock().await;
        if change.build {
            return self.change_build_secrets_locked(app, change, actor).await;
        }
        self.change_secrets_locked(app, change, actor, events).await
    }

    /// Sets and removes build secrets: new sealed versions the next build gets. No release
    /// changes: a running app never sees them.
    async fn change_build_secrets_locked(
        &self,
        app: &str,
        change: SecretChange,
        actor: String,
    ) -> Result<(u32, String), DeployFailure> {
        let current = self.store.app_build_secrets(app).await?;
        let mut wanted = self
            .planned_secrets(app, &change, current, "build secret")
            .await?;
        let sealed = self.seal_versions(app, &change, &actor).await?;
        wanted.extend(sealed.iter().map(|r| (r.name.clone(), r.version)));
        self.store.set_app_build_secrets(app, &wanted).await?;
        Ok((
            STORED_ONLY,
            format!(
                "build secrets {} stored; {app}'s next build gets them (the running release is unchanged)",
                changed_names(&change)
            ),
        ))
    }

    /// The set of secret versions a change leaves (before its new versions are added), the
    /// app and each removed name checked to exist and the count to stay within the limit.
    async fn planned_secrets(
        &self,
        app: &str,
        change: &SecretChange,
        mut wanted: BTreeMap<String, u32>,
        what: &str,
    ) -> Result<BTreeMap<String, u32>, ApiError> {
        if self.store.app(app).await?.is_none() {
            return Err(ApiError::app_not_found(app));
        }
        for k in &change.unset {
            if wanted.remove(k).is_none() {
                return Err(ApiError::invalid(
                    "secret_not_set",
                    format!("{what} {k} is not set on {app}"),
                )
                .hint(format!("see `berth secrets list {app}`")));
            }
        }
        let added = change
            .set
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .count();
        if wanted.len() + added > state::MAX_SECRETS_PER_APP {
            return Err(ApiError::invalid(
                "too_many_secrets",
                format!(
                    "an app holds at most {} {what}s",
                    state::MAX_SECRETS_PER_APP
                ),
            ));
        }
        Ok(wanted)
    }

    /// Seals and stores each value the change sets, as the next version of its name (the
    /// app lock keeps numbers stable).
    async fn seal_versions(
        &self,
        app: &str,
        change: &SecretChange,
        actor: &str,
    ) -> Result<Vec<SecretRow>, ApiError> {
        let mut sealed = Vec::new();
        {
            let ring = self.keyring.read().await;
            for (name, value) in &change.set {
                let version = self.store.max_secret_version(app, name).await? + 1;
                let s = ring
                    .seal(&context(app, name, version), value.as_bytes())
                    .map_err(|e| ApiError::internal("sealing a secret", e))?;
                sealed.push(SecretRow {
                    app: app.to_string(),
                    name: name.clone(),
                    version,
                    key_id: s.key_id,
                    sealed: s.data,
                    actor: actor.to_string(),
                    created_at: crate::now_secs(),
                });
            }
        }
        self.store.insert_secret_versions(&sealed).await?;
        Ok(sealed)
    }

    /// [`Platform::change_secrets`] for a caller that holds the app's lock and has checked
    /// the change.
    pub(crate) async fn change_secrets_locked(
        self: &Arc<Self>,
        app: &str,
        change: SecretChange,
        actor: String,
        events: Events,
    ) -> Result<(u32, String), DeployFailure> {
        let current = self.store.app_secrets(app).await?;
        let mut wanted = self
            .planned_secrets(app, &change, current, "secret")
            .await?;
        let sealed = self.seal_versions(app, &change, &actor).await?;
        let added: BTreeMap<String, u32> =
            sealed.iter().map(|r| (r.name.clone(), r.version)).collect();
        wanted.extend(added.clone());
        let names = changed_names(&change);
        let Some(release) = self.serving_release(app).await? else {
            self.store.set_app_secrets(app, &wanted).await?;
            return Ok((
                STORED_ONLY,
                format!("secrets {names} stored; {app} has no release yet, they apply at its first deploy"),
            ));
        };
        let config = ReleaseConfig {
            secrets: wanted.clone(),
            ..release.config.clone()
        };
        let _ = events.send(DeployEvent::Step {
            step: "release".into(),
        });
        let result = self
            .deploy_config(
                app,
                &release.image,
                config,
                &format!("secrets {names}"),
                &actor,
                &events,
            )
            .await;
        match &result {
            Ok(_) => self.store.set_app_secrets(app, &wanted).await?,
            Err(_) => self.store.delete_secret_versions(app, &added).await?,
        }
        result
    }

    /// Re-seals every stored secret under a new key and retires the old keys. The store
    /// changes in one transaction; the key file keeps the old key until it has.
    pub async fn rotate_secrets_key(&self) -> Result<RotationReport, ApiError> {
        let rows = self.store.all_secret_rows().await?;
        let mut ring = self.keyring.write().await;
        let key_id = ring.begin_rotation().map_err(|e| {
            ApiError::invalid("key_not_rotatable", e.to_string()).hint(
                "with BERTH_SECRETS_KEY, rotate by re-encrypting outside berth; or use the default key file",
            )
        })?;
        let mut resealed = Vec::new();
        for r in &rows {
            let s = ring
                .reseal(
                    &context(&r.app, &r.name, r.version),
                    &Sealed {
                        key_id: r.key_id.clone(),
                        data: r.sealed.clone(),
                    },
                )
                .map_err(|e| ApiError::internal("re-sealing a secret", e))?;
            resealed.push(SecretRow {
                key_id: s.key_id,
                sealed: s.data,
                ..r.clone()
            });
        }
        // The write lock is held throughout: nothing seals or opens with a half-rotated ring.
        let n = resealed.len();
        self.store.reseal_secrets(&resealed).await?;
        let tls_keys = self.reseal_tls(&ring).await?;
        let registry_credentials = self.reseal_registry_credentials(&ring).await?;
        let signing_keys = self.reseal_signing_key(&ring).await?;
        let webhook_secrets =
            self.reseal_webhook_secrets(&ring).await? + self.reseal_gitops_secrets(&ring).await?;
        let deploy_keys = self.reseal_deploy_keys(&ring).await?;
        ring.retire_all_but_active()
            .map_err(|e| ApiError::internal("retiring the old key", e))?;
        Ok(RotationReport {
            key_id,
            resealed: n,
            tls_keys,
            registry_credentials,
            signing_keys,
            webhook_secrets,
            deploy_keys,
        })
    }
}
