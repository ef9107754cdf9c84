//! A [`Runtime`] that records what it is asked to do and pretends containers run, for unit
//! tests of the planes that drive runtimes.

use crate::{ContainerSpec, ContainerState, Runtime, RuntimeError};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Records every call as a line such as `start hello-v1-web-0`.
#[derive(Debug, Default)]
pub struct RecordingRuntime {
    calls: Mutex<Vec<String>>,
    running: Mutex<BTreeMap<String, ContainerSpec>>,
    /// Exit code `run_to_exit` reports.
    pub exit_code: i32,
}

impl RecordingRuntime {
    /// The calls made so far.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn record(&self, line: String) {
        if let Ok(mut c) = self.calls.lock() {
            c.push(line);
        }
    }
}

impl Runtime for RecordingRuntime {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn preflight(&self) -> Result<(), RuntimeError> {
        Ok(())
    }

    fn start(&self, spec: &ContainerSpec) -> Result<ContainerState, RuntimeError> {
        self.record(format!("start {}", spec.id));
        if let Ok(mut r) = self.running.lock() {
            r.insert(spec.id.clone(), spec.clone());
        }
        Ok(ContainerState {
            id: spec.id.clone(),
            pid: Some(std::process::id()),
            running: true,
            bundle: spec.bundle_dir.clone(),
        })
    }

    fn run_to_exit(&self, spec: &ContainerSpec) -> Result<i32, RuntimeError> {
        self.record(format!("run {} {}", spec.id, spec.args.join(" ")));
        Ok(self.exit_code)
    }

    fn state(&self, id: &str) -> Result<Option<ContainerState>, RuntimeError> {
        Ok(self.running.lock().ok().and_then(|r| {
            r.get(id).map(|s| ContainerState {
                id: id.to_string(),
                pid: Some(std::process::id()),
                running: true,
                bundle: s.bundle_dir.clone(),
            })
        }))
    }

    fn kill(&self, id: &str, signal: &str) -> Result<(), RuntimeError> {
        self.record(format!("kill {id} {signal}"));
        Ok(())
    }

    fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        self.record(format!("delete {id}"));
        if let Ok(mut r) = self.running.lock() {
            r.remove(id);
        }
        Ok(())
    }

    fn list(&self) -> Result<Vec<String>, RuntimeError> {
        Ok(self
            .running
            .lock()
            .map(|r| r.keys().cloned().collect())
            .unwrap_or_default())
    }
}
