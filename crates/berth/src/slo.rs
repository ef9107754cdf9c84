//! `berth slo` and `berth alerts`.

use crate::cli::Global;
use crate::output;
use anyhow::{anyhow, Context, Result};
use berth_core::alerts::AlertView;
use berth_core::slo::SloView;
use std::path::PathBuf;

fn percent(share: f64) -> String {
    format!("{:.3}%", share * 100.0)
}

/// `berth slo [APP] [--rules [--out FILE]]`.
pub async fn slo(
    g: &Global,
    app: Option<String>,
    rules: bool,
    out: Option<PathBuf>,
) -> Result<i32> {
    let client = crate::client::discover(g)?;
    if rules {
        let path = match &app {
            Some(a) => format!("/v1/slo/rules?app={a}"),
            None => "/v1/slo/rules".into(),
        };
        let text = client.get_text(&path).await?;
        match out {
            Some(f) => {
                std::fs::write(&f, text).with_context(|| format!("writing {}", f.display()))?;
                eprintln!(
                    "wrote {} (check it with `promtool check rules {}`)",
                    f.display(),
                    f.display()
                );
            }
            None => print!("{text}"),
        }
        return Ok(0);
    }
    let app = app.ok_or_else(|| {
        anyhow!("which app?\nhint: berth slo APP, or berth slo --rules for every app")
    })?;
    let v: SloView = client
        .get_json(&berth_client::app_path(&app, "/slo"))
        .await?;
    if g.json {
        output::json(&v);
        return Ok(0);
    }
    println!(
        "{}: {}% of responses not 5xx; {} of responses under {} ms{}",
        v.app,
        v.spec.availability,
        percent(v.spec.latency_p),
        v.spec.latency_ms,
        if v.time_scale < 1.0 {
            format!(" (windows scaled by {})", v.time_scale)
        } else {
            String::new()
        }
    );
    let windows: Vec<String> = v
        .slis
        .first()
        .map(|s| {
            s.burn_rates
                .iter()
                .map(|(w, _)| format!("BURN {w}"))
                .collect()
        })
        .unwrap_or_default();
    let mut header = vec!["SLO", "OBJECTIVE", "BUDGET LEFT (30d)"];
    header.extend(windows.iter().map(String::as_str));
    header.push("ALERT");
    let rows: Vec<Vec<String>> = v
        .slis
        .iter()
        .map(|s| {
            let mut row = vec![
                s.sli.as_str().to_string(),
                percent(s.objective),
                s.budget_remaining.map_or("-".into(), percent),
            ];
            row.extend(
                s.burn_rates
                    .iter()
                    .map(|(_, b)| b.map_or("-".into(), |b| format!("{b:.2}×"))),
            );
            row.push(if s.firing.is_empty() {
                "-".into()
            } else {
                s.firing
                    .iter()
                    .map(|f| f.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            });
            row
        })
        .collect();
    output::table(&header, &rows);
    Ok(0)
}

/// `berth alerts [--all]`.
pub async fn alerts(g: &Global, all: bool) -> Result<i32> {
    let client = crate::client::discover(g)?;
    let path = if all {
        "/v1/alerts?all=true"
    } else {
        "/v1/alerts"
    };
    let alerts: Vec<AlertView> = client.get_json(path).await?;
    if g.json {
        output::json(&alerts);
        return Ok(0);
    }
    if alerts.is_empty() {
        println!("no alerts firing");
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = alerts
        .iter()
        .map(|a| {
            vec![
                a.app.clone(),
                a.name.clone(),
                a.severity.clone(),
                match a.resolved_at {
                    Some(t) => format!("resolved {}", output::ago(t)),
                    None => format!("firing since {}", output::ago(a.started_at)),
                },
                a.summary.clone(),
            ]
        })
        .collect();
    output::table(&["APP", "ALERT", "SEVERITY", "STATE", "SUMMARY"], &rows);
    Ok(0)
}
