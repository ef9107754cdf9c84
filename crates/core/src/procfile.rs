//! The Procfile format: one `type: command` per line, `#` comments and blank lines ignored.

use crate::names::validate_process_type;
use std::collections::BTreeMap;

/// A Procfile line that could not be read; names the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Procfile line {line}: {message}")]
pub struct ProcfileError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

/// Parses a Procfile into process type → command.
pub fn parse(text: &str) -> Result<BTreeMap<String, String>, ProcfileError> {
    let mut out = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let Some((kind, command)) = trimmed.split_once(':') else {
            return Err(ProcfileError {
                line,
                message: format!("expected `type: command`, found {trimmed:?}"),
            });
        };
        let kind = kind.trim();
        let command = command.trim();
        validate_process_type(kind).map_err(|message| ProcfileError { line, message })?;
        if command.is_empty() {
            return Err(ProcfileError {
                line,
                message: format!("process type {kind:?} has an empty command"),
            });
        }
        if out.insert(kind.to_string(), command.to_string()).is_some() {
            return Err(ProcfileError {
                line,
                message: format!("process type {kind:?} is defined twice"),
            });
        }
    }
    if out.is_empty() {
        return Err(ProcfileError {
            line: 1,
            message: "no process types defined".into(),
        });
    }
    Ok(out)
}

/// The argv that runs a Procfile command: the words themselves when the command is a plain
/// program with arguments (one process less at every start), else `/bin/sh -c COMMAND`.
pub fn command_argv(command: &str) -> Vec<String> {
    const SHELL_WORDS: &[&str] = &[
        "exec", "cd", "export", "set", ".", "source", "ulimit", "umask", "trap", "eval", "if",
        "for", "while", "case", "until",
    ];
    let plain = |c: char| c.is_ascii_alphanumeric() || "_./:=,@%+-".contains(c);
    let words: Vec<&str> = command.split_whitespace().collect();
    let simple = command.chars().all(|c| plain(c) || c == ' ')
        && words
            .first()
            .is_some_and(|w| !w.contains('=') && !SHELL_WORDS.contains(w));
    if simple {
        words.into_iter().map(str::to_string).collect()
    } else {
        vec!["/bin/sh".into(), "-c".into(), command.to_string()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_types_and_skips_comments() {
        let p = parse(
            "# app\nweb: python3 app.py --port $PORT\n\nworker:  ./work\nrelease: ./migrate\n",
        )
        .unwrap();
        assert_eq!(p["web"], "python3 app.py --port $PORT");
        assert_eq!(p["worker"], "./work");
        assert_eq!(p["release"], "./migrate");
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("web: ok\nthis is not a process\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.to_string().starts_with("Procfile line 2:"), "{e}");
        let e = parse("web: a\nweb: b\n").unwrap_err();
        assert!(e.message.contains("twice"));
        let e = parse("Web Server: a\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = parse("web:\n").unwrap_err();
        assert!(e.message.contains("empty command"));
    }

    #[test]
    fn plain_commands_run_directly_and_shell_syntax_goes_through_sh() {
        assert_eq!(
            command_argv("python3 app.py --port=8000"),
            ["python3", "app.py", "--port=8000"]
        );
        assert_eq!(command_argv("/app/server"), ["/app/server"]);
        for shell in [
            "python3 app.py --port $PORT",
            "FOO=1 node server.js",
            "exec gunicorn app:app",
            "cd web && npm start",
            "echo 'hi there'",
            "run > /tmp/log",
        ] {
            assert_eq!(command_argv(shell), ["/bin/sh", "-c", shell], "{shell}");
        }
    }
}
