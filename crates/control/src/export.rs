//! Export of the platform's logs to a Loki, when one is configured.

use crate::platform::Platform;
use berth_observe::loki::LokiExporter;
use std::sync::Arc;
use std::time::Duration;

/// Pushes new log lines to Loki about once a second until shutdown; while Loki is
/// unavailable, retries with a growing pause (up to 30 s) and says so once.
pub async fn run_loki(platform: Arc<Platform>) {
    let Some(target) = platform.cfg.loki.clone() else {
        return;
    };
    let mut exporter = match LokiExporter::open(platform.logs.clone(), target) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "the Loki export cannot start");
            return;
        }
    };
    let mut pause = Duration::from_secs(1);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = platform.shutdown.cancelled() => break,
            _ = tokio::time::sleep(pause) => {}
        }
        match exporter.push_pending().await {
            Ok(_) => {
                if failing {
                    tracing::info!("Loki takes log lines again");
                }
                failing = false;
                pause = Duration::from_secs(1);
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "pushing logs to Loki failed; retrying");
                }
                failing = true;
                pause = (pause * 2).min(Duration::from_secs(30));
            }
        }
    }
    // What the last lines of a stopping platform said.
    let _ = exporter.push_pending().await;
}
