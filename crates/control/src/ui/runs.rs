//! Workflows started from the dashboard that outlive their request (a deploy from git):
//! their steps and output kept in memory so that a page can follow them, the newest 50.

use berth_core::api::DeployEvent;
use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

/// How many runs are remembered, and lines per run.
const KEEP_RUNS: usize = 50;
const KEEP_LINES: usize = 2000;

/// One run as a page shows it.
#[derive(Debug, Clone)]
pub struct Run {
    pub app: String,
    /// What it does (`deploy https://… main`).
    pub what: String,
    pub lines: Vec<String>,
    /// Lines dropped from the front (past the newest 2000): `lines[i]` is line
    /// `dropped + i` of the run.
    pub dropped: usize,
    /// `Ok(summary)` or `Err(reason)` once it ended.
    pub outcome: Option<Result<String, String>>,
}

fn runs() -> &'static Mutex<BTreeMap<String, Run>> {
    static RUNS: OnceLock<Mutex<BTreeMap<String, Run>>> = OnceLock::new();
    RUNS.get_or_init(|| Mutex::new(BTreeMap::new()))
}

fn with<T>(f: impl FnOnce(&mut BTreeMap<String, Run>) -> T) -> T {
    let mut guard = runs().lock().unwrap_or_else(|e| e.into_inner());
    f(&mut guard)
}

/// Starts remembering a run; its id (sortable by start).
pub fn start(app: &str, what: String) -> String {
    let id = format!("{:x}-{}", crate::now_secs(), crate::random_id(6));
    with(|m| {
        while m.len() >= KEEP_RUNS {
            let Some(oldest) = m.keys().next().cloned() else {
                break;
            };
            m.remove(&oldest);
        }
        m.insert(
            id.clone(),
            Run {
                app: app.into(),
                what,
                lines: Vec::new(),
                dropped: 0,
                outcome: None,
            },
        );
    });
    id
}

/// Adds what a workflow reported.
pub fn record(id: &str, event: &DeployEvent) {
    let line = match event {
        DeployEvent::Step { step } => format!("==> {step}"),
        DeployEvent::Log { line } => line.clone(),
        other => match serde_json::to_value(other) {
            Ok(v) => format!("==> {}", v["event"].as_str().unwrap_or("event")),
            Err(_) => return,
        },
    };
    with(|m| {
        if let Some(r) = m.get_mut(id) {
            if r.lines.len() >= KEEP_LINES {
                r.lines.remove(0);
                r.dropped += 1;
            }
            r.lines.push(line);
        }
    });
}

/// Ends a run.
pub fn finish(id: &str, outcome: Result<String, String>) {
    with(|m| {
        if let Some(r) = m.get_mut(id) {
            r.outcome = Some(outcome);
        }
    });
}

/// A run as it is now.
pub fn get(id: &str) -> Option<Run> {
    with(|m| m.get(id).cloned())
}

/// A run's lines from line `from` on (those still kept), the number of the next line, and
/// its outcome if it ended.
pub type Since = (Vec<String>, usize, Option<Result<String, String>>);

/// What a follower has not seen yet of run `id`.
pub fn since(id: &str, from: usize) -> Option<Since> {
    with(|m| {
        m.get(id).map(|r| {
            let skip = from.saturating_sub(r.dropped);
            let lines: Vec<String> = r.lines.iter().skip(skip).cloned().collect();
            let next = r.dropped + r.lines.len();
            (lines, next, r.outcome.clone())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_gets_each_line_once_and_then_the_outcome() {
        let id = start("shop", "deploy".into());
        record(
            &id,
            &DeployEvent::Step {
                step: "build".into(),
            },
        );
        let (lines, next, outcome) = since(&id, 0).unwrap();
        assert_eq!(
            (lines, next, outcome),
            (vec!["==> build".to_string()], 1, None)
        );
        record(
            &id,
            &DeployEvent::Log {
                line: "compiling".into(),
            },
        );
        finish(&id, Ok("v2 serves".into()));
        let (lines, next, outcome) = since(&id, 1).unwrap();
        assert_eq!(lines, vec!["compiling".to_string()]);
        assert_eq!(next, 2);
        assert_eq!(outcome, Some(Ok("v2 serves".into())));
        assert!(since("no-such-run", 0).is_none());
    }
}
