//! One [`Runtime`] over two: each container starts on the runtime its isolation level asks
//! for (`trusted` → crun, `sandbox` → runsc); later calls by id go to whichever runtime
//! knows the container, so the control plane never has to remember which one it used.

use crate::{ContainerSpec, ContainerState, Runtime, RuntimeError};
use berth_core::policy::Isolation;
use std::sync::Arc;

/// Runtimes by isolation level.
pub struct ByIsolation {
    trusted: Arc<dyn Runtime>,
    sandbox: Arc<dyn Runtime>,
}

impl ByIsolation {
    /// `trusted` runs trusted containers, `sandbox` sandboxed ones.
    pub fn new(trusted: Arc<dyn Runtime>, sandbox: Arc<dyn Runtime>) -> Self {
        Self { trusted, sandbox }
    }

    /// The runtime for `isolation`.
    pub fn runtime_for(&self, isolation: Isolation) -> &Arc<dyn Runtime> {
        match isolation {
            Isolation::Trusted => &self.trusted,
            Isolation::Sandbox => &self.sandbox,
        }
    }

    /// The runtimes that may hold container `id`, trusted first.
    fn holding(&self, id: &str) -> Vec<&Arc<dyn Runtime>> {
        [&self.trusted, &self.sandbox]
            .into_iter()
            .filter(|r| r.may_know(id))
            .collect()
    }
}

/// Runs `f` on each runtime; succeeds if all did, a runtime that is not installed
/// counting as having nothing to do.
fn on_each(
    runtimes: Vec<&Arc<dyn Runtime>>,
    f: impl Fn(&dyn Runtime) -> Result<(), RuntimeError>,
) -> Result<(), RuntimeError> {
    let mut first_error = None;
    for r in runtimes {
        match f(r.as_ref()) {
            Ok(()) | Err(RuntimeError::MissingBinary { .. }) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

impl Runtime for ByIsolation {
    fn name(&self) -> &'static str {
        "crun+runsc"
    }

    /// Checks the trusted runtime; the sandbox runtime is checked when an app asks for it.
    fn preflight(&self) -> Result<(), RuntimeError> {
        self.trusted.preflight()
    }

    fn start(&self, spec: &ContainerSpec) -> Result<ContainerState, RuntimeError> {
        self.runtime_for(spec.isolation).start(spec)
    }

    fn run_to_exit(&self, spec: &ContainerSpec) -> Result<i32, RuntimeError> {
        self.runtime_for(spec.isolation).run_to_exit(spec)
    }

    fn create(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        self.runtime_for(spec.isolation).create(spec)
    }

    fn start_created(
        &self,
        id: &str,
        bundle: &std::path::Path,
    ) -> Result<ContainerState, RuntimeError> {
        match self.holding(id).first() {
            Some(r) => r.start_created(id, bundle),
            None => Err(RuntimeError::Failed {
                runtime: self.name(),
                op: "start",
                id: id.to_string(),
                message: "no runtime holds this container".into(),
            }),
        }
    }

    fn state(&self, id: &str) -> Result<Option<ContainerState>, RuntimeError> {
        for r in self.holding(id) {
            match r.state(id) {
                Ok(Some(s)) => return Ok(Some(s)),
                Ok(None) | Err(RuntimeError::MissingBinary { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    fn kill(&self, id: &str, signal: &str) -> Result<(), RuntimeError> {
        on_each(self.holding(id), |r| r.kill(id, signal))
    }

    fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        on_each(self.holding(id), |r| r.delete(id))
    }

    fn may_know(&self, id: &str) -> bool {
        !self.holding(id).is_empty()
    }

    fn list(&self) -> Result<Vec<String>, RuntimeError> {
        let mut ids = Vec::new();
        for r in [&self.trusted, &self.sandbox] {
            match r.list() {
                Ok(found) => ids.extend(found),
                Err(RuntimeError::MissingBinary { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::RecordingRuntime;

    #[test]
    fn starts_each_container_on_the_runtime_of_its_isolation_level() {
        let trusted = Arc::new(RecordingRuntime::default());
        let sandbox = Arc::new(RecordingRuntime::default());
        let both = ByIsolation::new(trusted.clone(), sandbox.clone());
        let mut spec = crate::bundle::sample_spec("web-1", crate::NetworkMode::Host);
        both.start(&spec).unwrap();
        spec.id = "jail-1".into();
        spec.isolation = Isolation::Sandbox;
        both.start(&spec).unwrap();
        assert_eq!(trusted.list().unwrap(), vec!["web-1".to_string()]);
        assert_eq!(sandbox.list().unwrap(), vec!["jail-1".to_string()]);
        assert!(both.state("jail-1").unwrap().is_some_and(|s| s.running));
        both.delete("jail-1").unwrap();
        assert_eq!(both.state("jail-1").unwrap(), None);
        assert_eq!(both.list().unwrap(), vec!["web-1".to_string()]);
    }
}
