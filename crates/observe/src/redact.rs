//! Keeps secret values out of stored logs: every occurrence of a secret's value in a
//! captured line becomes `[secret NAME]`. Values shorter than [`MIN_REDACTED_LEN`] are left
//! alone (redacting "1" would mangle every line); multi-line values (keys, certificates) are
//! redacted line by line too.

/// Shortest value that is redacted.
pub const MIN_REDACTED_LEN: usize = 4;

/// The values to hide in one app's lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redactor {
    /// (value, name), longest value first so that a value containing another wins.
    needles: Vec<(String, String)>,
}

impl Redactor {
    /// A redactor for `(name, value)` pairs.
    pub fn new<'a>(secrets: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut needles = Vec::new();
        for (name, value) in secrets {
            let mut parts = vec![value.trim_end_matches(['\n', '\r'])];
            if value.contains('\n') {
                parts.extend(value.lines().map(|l| l.trim_end_matches('\r')));
            }
            for p in parts {
                if p.len() >= MIN_REDACTED_LEN && !needles.iter().any(|(v, _)| v == p) {
                    needles.push((p.to_string(), name.to_string()));
                }
            }
        }
        needles.sort_by_key(|n| std::cmp::Reverse(n.0.len()));
        Self { needles }
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// The line with every secret value replaced by its name.
    pub fn apply(&self, line: &str) -> String {
        let mut out = line.to_string();
        for (value, name) in &self.needles {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), &format!("[secret {name}]"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_become_names() {
        let r = Redactor::new([("API_KEY", "s3cr3t-value"), ("PIN", "12")]);
        assert_eq!(
            r.apply("using s3cr3t-value and s3cr3t-value, pin 12"),
            "using [secret API_KEY] and [secret API_KEY], pin 12"
        );
        let pem = Redactor::new([("KEY", "-----BEGIN-----\nAAAABBBBCCCC\n-----END-----\n")]);
        assert_eq!(pem.apply("line AAAABBBBCCCC"), "line [secret KEY]");
        let nested = Redactor::new([("SHORT", "abcd"), ("LONG", "abcdefgh")]);
        assert_eq!(nested.apply("abcdefgh"), "[secret LONG]");
        assert!(Redactor::new([("X", "ab")]).is_empty());
    }
}
