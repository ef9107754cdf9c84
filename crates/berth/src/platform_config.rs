//! The platform's config file: `berth up`'s settings in TOML, one key per flag
//! (`api-port = 7070`, `edge-tls-port = 0`, `backup-to = "s3://…"`), read from `--config`,
//! else `<data dir>/berth.toml`, else `/etc/berth/berth.toml`. Flags override it, then
//! environment variables, then the file, then berth's defaults. Every problem of a file is
//! reported at once, each with its line, before anything starts.

use crate::cli::Cli;
use clap::{CommandFactory, Parser};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where the system-wide config file lives.
pub const SYSTEM_CONFIG: &str = "/etc/berth/berth.toml";

/// One setting of a config file.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    /// The flag's name (`api-port`).
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// The config file `berth up` reads: the given one, else the data dir's, else the system's.
pub fn path(explicit: Option<&Path>, data_dir: &Path) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    [data_dir.join("berth.toml"), PathBuf::from(SYSTEM_CONFIG)]
        .into_iter()
        .find(|p| p.is_file())
}

/// `berth up`'s settings: flag name → its environment variable.
fn up_settings() -> BTreeMap<String, Option<String>> {
    let cmd = Cli::command();
    let Some(up) = cmd.find_subcommand("up") else {
        return BTreeMap::new();
    };
    up.get_arguments()
        .filter_map(|a| {
            let long = a.get_long()?;
            (long != "config" && long != "help").then(|| {
                (
                    long.to_string(),
                    a.get_env().map(|e| e.to_string_lossy().into_owned()),
                )
            })
        })
        .collect()
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(1, |t| t.matches('\n').count() + 1)
}

/// Reads and checks a config file: its settings, or every problem with its line.
pub fn load(path: &Path) -> Result<Vec<Setting>, Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![format!("cannot read {}: {e}", path.display())])?;
    let table: BTreeMap<String, toml::Spanned<toml::Value>> =
        toml::from_str(&text).map_err(|e| {
            let line = e.span().map_or(1, |s| line_of(&text, s.start));
            vec![format!("line {line}: {}", e.message())]
        })?;
    let known = up_settings();
    let mut settings = Vec::new();
    let mut problems = Vec::new();
    for (raw_key, spanned) in table {
        let line = line_of(&text, spanned.span().start);
        let key = raw_key.replace('_', "-");
        if !known.contains_key(&key) {
            let close = known
                .keys()
                .map(|k| (strsim::damerau_levenshtein(k, &key), k))
                .filter(|(d, _)| *d <= 2)
                .min()
                .map(|(_, k)| format!(" (did you mean {k:?}?)"))
                .unwrap_or_default();
            problems.push((line, format!(
                "line {line}: unknown setting {raw_key:?}{close}; the settings are berth up's flags, see berth up --help"
            )));
            continue;
        }
        let value = match spanned.into_inner() {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                problems.push((
                    line,
                    format!(
                        "line {line}: {key}: a {} is not a value here; give a string, number or boolean",
                        other.type_str()
                    ),
                ));
                continue;
            }
        };
        // Checked as the flag would be.
        let flag = format!("--{key}");
        let args: Vec<&str> = match value.as_str() {
            "true" => vec!["berth", "up", &flag],
            "false" => vec!["berth", "up"],
            v => vec!["berth", "up", &flag, v],
        };
        if let Err(e) = Cli::try_parse_from(args) {
            use clap::error::ErrorKind;
            // Settings that need another one are checked together below.
            if e.kind() != ErrorKind::MissingRequiredArgument {
                let message = e.to_string();
                let first = message
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim_start_matches("error: ");
                problems.push((line, format!("line {line}: {key}: {first}")));
                continue;
            }
        }
        settings.push(Setting { key, value, line });
    }
    if problems.is_empty() {
        Ok(settings)
    } else {
        problems.sort();
        Err(problems.into_iter().map(|(_, p)| p).collect())
    }
}

/// Hands a file's settings to `berth up` through the environment variables of their flags,
/// for each one neither a flag (which overrides environment variables anyway) nor the
/// environment sets. Called before any thread starts.
pub fn apply(settings: &[Setting]) {
    let known = up_settings();
    for s in settings {
        if let Some(Some(env)) = known.get(&s.key) {
            if std::env::var_os(env).is_none() {
                std::env::set_var(env, &s.value);
            }
        }
    }
}

/// One line of `berth config`.
#[derive(Debug, Serialize)]
pub struct Effective {
    pub key: String,
    pub value: Option<String>,
    /// `environment (BERTH_API_PORT)`, `file:LINE`, or `default`.
    pub source: String,
}

/// The settings `berth up` would run with, given a config file's settings.
pub fn effective(settings: &[Setting], file: Option<&Path>) -> Vec<Effective> {
    let cmd = Cli::command();
    let Some(up) = cmd.find_subcommand("up") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for a in up.get_arguments() {
        let Some(long) = a.get_long() else { continue };
        if long == "help" {
            continue;
        }
        let env = a.get_env().map(|e| e.to_string_lossy().into_owned());
        let hidden = a.is_hide_env_values_set();
        let from_env = env
            .as_ref()
            .and_then(|e| std::env::var(e).ok().map(|v| (e.clone(), v)));
        let (value, source) = if let Some((name, v)) = from_env {
            (Some(v), format!("environment ({name})"))
        } else if let Some(s) = settings.iter().find(|s| s.key == long) {
            (
                Some(s.value.clone()),
                format!(
                    "{}:{}",
                    file.map_or_else(|| "file".to_string(), |f| f.display().to_string()),
                    s.line
                ),
            )
        } else {
            let default = a
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(",");
            (
                (!default.is_empty()).then_some(default),
                "default".to_string(),
            )
        };
        out.push(Effective {
            key: long.to_string(),
            value: if hidden && value.is_some() {
                Some("(hidden)".into())
            } else {
                value
            },
            source,
        });
    }
    out
}

/// Re-reads the command line once a config file's settings are in the environment.
pub fn reparse() -> Cli {
    Cli::parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("berth.toml");
        std::fs::write(&p, text).unwrap();
        (d, p)
    }

    #[test]
    fn a_good_file_gives_settings_with_their_lines() {
        let (_d, p) = write("api-port = 7171\n# HTTPS off\nedge_tls_port = 0\nno-access-log = true\ndrain-grace = \"5s\"\n");
        let s = load(&p).unwrap();
        let get = |k: &str| s.iter().find(|x| x.key == k).unwrap();
        assert_eq!(get("api-port").value, "7171");
        assert_eq!(get("api-port").line, 1);
        assert_eq!(get("edge-tls-port").line, 3);
        assert_eq!(get("no-access-log").value, "true");
        assert_eq!(get("drain-grace").value, "5s");
    }

    #[test]
    fn every_problem_is_named_with_its_line() {
        let (_d, p) = write(
            "api-port = \"seventy\"\nedge-prot = 8081\ndefault-isolation = \"vm\"\nsubnet = [1, 2]\n",
        );
        let problems = load(&p).unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:?}");
        let all = problems.join("\n");
        assert!(all.contains("line 1: api-port"), "{all}");
        assert!(
            all.contains("line 2: unknown setting \"edge-prot\""),
            "{all}"
        );
        assert!(all.contains("line 3: default-isolation"), "{all}");
        assert!(all.contains("line 4: subnet: a array"), "{all}");
        let (_d, p) = write("api-port = \n");
        assert!(load(&p).unwrap_err()[0].starts_with("line 1:"));
    }
}
