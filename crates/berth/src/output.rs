//! Printing: tables, times, errors with hints.

use crate::client::ApiFailure;

/// Prints an error and its hint to stderr.
pub fn print_error(e: &anyhow::Error) {
    if let Some(f) = e.downcast_ref::<ApiFailure>() {
        eprintln!("error: {}", f.body.message);
        if let Some(h) = &f.body.hint {
            eprintln!("hint: {h}");
        }
        return;
    }
    let mut text = format!("{e}");
    for cause in e.chain().skip(1) {
        text.push_str(&format!(": {cause}"));
    }
    eprintln!("error: {text}");
}

/// Prints rows as aligned columns under a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A duration in its largest whole unit: "42s", "3m", "5h", "12d".
pub fn span(secs: i64) -> String {
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m", secs / 60),
        3600..=86399 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

/// "3m ago" style age of a Unix timestamp.
pub fn ago(unix: i64) -> String {
    format!("{} ago", span((unix_now() - unix).max(0)))
}

/// "in 89d" style time until a Unix timestamp ("expired" once past).
pub fn until(unix: i64) -> String {
    match unix - unix_now() {
        left if left <= 0 => "expired".into(),
        left => format!("in {}", span(left)),
    }
}

/// Prints JSON, pretty.
pub fn json<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}
