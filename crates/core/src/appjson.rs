//! Heroku's `app.json` (<https://devcenter.heroku.com/articles/app-json-schema>), read beside
//! or instead of berth.toml: `name`, `env` (values, and variables that must be set before a
//! deploy), `formation` (instances and dyno sizes as memory), `scripts.postdeploy` (run once,
//! on the app's first deploy). Descriptive fields are accepted and have no effect; fields
//! berth cannot honour (`addons`, `buildpacks`, `environments`, `image`, secret generators,
//! `pr-predestroy`) and unknown ones are refused by name, never dropped.

use crate::spec::{BerthToml, ProcessToml, SizeToml};
use serde_json::Value;
use std::collections::BTreeMap;

/// What berth takes from an app.json.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppJson {
    pub name: Option<String>,
    /// Variables with a value.
    pub env: BTreeMap<String, String>,
    /// Variables that must be set (`required`, no value) before a deploy.
    pub required: Vec<String>,
    /// Process type → (instances, memory).
    pub formation: BTreeMap<String, (Option<u32>, Option<String>)>,
    /// `scripts.postdeploy`.
    pub postdeploy: Option<String>,
}

/// Heroku dyno sizes as memory limits.
const SIZES: [(&str, &str); 10] = [
    ("free", "512M"),
    ("eco", "512M"),
    ("hobby", "512M"),
    ("basic", "512M"),
    ("standard-1x", "512M"),
    ("standard-2x", "1G"),
    ("performance-m", "2560M"),
    ("performance-l", "14G"),
    ("private-m", "2560M"),
    ("private-l", "14G"),
];

const DESCRIPTIVE: [&str; 7] = [
    "description",
    "keywords",
    "website",
    "repository",
    "logo",
    "success_url",
    "stack",
];

impl AppJson {
    /// Reads an app.json; every problem at once.
    pub fn parse(text: &str) -> Result<Self, Vec<String>> {
        let v: Value = serde_json::from_str(text).map_err(|e| vec![format!("app.json: {e}")])?;
        let Some(top) = v.as_object() else {
            return Err(vec!["app.json: the top level is not an object".into()]);
        };
        let mut out = AppJson::default();
        let mut problems = Vec::new();
        for (key, value) in top {
            match key.as_str() {
                "name" => match value.as_str() {
                    Some(n) => out.name = Some(n.to_string()),
                    None => problems.push("app.json: name is not a string".into()),
                },
                k if DESCRIPTIVE.contains(&k) => {}
                "env" => out.read_env(value, &mut problems),
                "formation" => out.read_formation(value, &mut problems),
                "scripts" => out.read_scripts(value, &mut problems),
                "addons" => {
                    if value.as_array().is_none_or(|a| !a.is_empty()) {
                        problems.push("app.json: addons are not supported: berth has no add-on marketplace; a PostgreSQL database is `berth db create APP` (the app gets DATABASE_URL)".into());
                    }
                }
                "buildpacks" => problems.push("app.json: buildpacks are not supported: berth detects the build itself (Procfile, requirements.txt, package.json, Cargo.toml, Dockerfile); remove them".into()),
                "environments" => problems.push("app.json: environments (review apps, CI) are not supported; remove them".into()),
                "image" => problems.push("app.json: image is not supported; set image in berth.toml".into()),
                other => problems.push(format!("app.json: unknown field {other:?}")),
            }
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(problems)
        }
    }

    fn read_env(&mut self, value: &Value, problems: &mut Vec<String>) {
        let Some(vars) = value.as_object() else {
            problems.push("app.json: env is not an object".into());
            return;
        };
        for (name, spec) in vars {
            match spec {
                Value::String(s) => {
                    self.env.insert(name.clone(), s.clone());
                }
                Value::Object(o) => {
                    for k in o.keys() {
                        if !["description", "value", "required", "generator"].contains(&k.as_str())
                        {
                            problems.push(format!("app.json: env.{name}.{k} is an unknown field"));
                        }
                    }
                    if o.contains_key("generator") {
                        problems.push(format!("app.json: env.{name}.generator is not supported: set the secret yourself with `berth secrets set APP {name}=…`"));
                    }
                    match o.get("value") {
                        Some(Value::String(s)) => {
                            self.env.insert(name.clone(), s.clone());
                        }
                        Some(_) => {
                            problems.push(format!("app.json: env.{name}.value is not a string"))
                        }
                        None => {
                            if o.get("required").and_then(Value::as_bool).unwrap_or(true) {
                                self.required.push(name.clone());
                            }
                        }
                    }
                }
                _ => problems.push(format!(
                    "app.json: env.{name} is neither a string nor an object"
                )),
            }
        }
    }

    fn read_formation(&mut self, value: &Value, problems: &mut Vec<String>) {
        let Some(types) = value.as_object() else {
            problems.push("app.json: formation is not an object".into());
            return;
        };
        for (kind, spec) in types {
            let Some(o) = spec.as_object() else {
                problems.push(format!("app.json: formation.{kind} is not an object"));
                continue;
            };
            let mut quantity = None;
            let mut memory = None;
            for (k, v) in o {
                match k.as_str() {
                    "quantity" => match v.as_u64().filter(|q| *q <= 100) {
                        Some(q) => quantity = Some(q as u32),
                        None => problems.push(format!(
                            "app.json: formation.{kind}.quantity is not a whole number from 0 to 100"
                        )),
                    },
                    "size" => {
                        let size = v.as_str().unwrap_or_default().to_ascii_lowercase();
                        match SIZES.iter().find(|(n, _)| *n == size) {
                            Some((_, m)) => memory = Some(m.to_string()),
                            None => problems.push(format!(
                                "app.json: formation.{kind}.size {v} is not a size berth knows: use one of {}",
                                SIZES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                            )),
                        }
                    }
                    other => problems.push(format!(
                        "app.json: formation.{kind}.{other} is an unknown field"
                    )),
                }
            }
            self.formation.insert(kind.clone(), (quantity, memory));
        }
    }

    fn read_scripts(&mut self, value: &Value, problems: &mut Vec<String>) {
        let Some(scripts) = value.as_object() else {
            problems.push("app.json: scripts is not an object".into());
            return;
        };
        for (name, script) in scripts {
            match name.as_str() {
                "postdeploy" => {
                    let command = script
                        .as_str()
                        .or_else(|| script.get("command").and_then(Value::as_str));
                    match command {
                        Some(c) if !c.trim().is_empty() => self.postdeploy = Some(c.to_string()),
                        _ => problems.push("app.json: scripts.postdeploy is not a command".into()),
                    }
                }
                "pr-predestroy" => problems.push(
                    "app.json: scripts.pr-predestroy is not supported (berth has no review apps)"
                        .into(),
                ),
                other => problems.push(format!("app.json: scripts.{other} is an unknown script")),
            }
        }
    }

    /// Fills what berth.toml leaves unset (berth.toml wins where both say something).
    pub fn apply_to(&self, toml: &mut BerthToml) {
        if toml.name.is_none() {
            toml.name = self.name.clone();
        }
        for (k, v) in &self.env {
            toml.env.entry(k.clone()).or_insert_with(|| v.clone());
        }
        for (kind, (quantity, memory)) in &self.formation {
            let p: &mut ProcessToml = toml.processes.entry(kind.clone()).or_default();
            if p.instances.is_none() {
                p.instances = *quantity;
            }
            if p.memory.is_none() {
                p.memory = memory.clone().map(SizeToml::Text);
            }
        }
        if toml.deploy.postdeploy.is_none() {
            toml.deploy.postdeploy = self.postdeploy.clone();
        }
        for r in &self.required {
            if !toml.required_env.contains(r) && !toml.env.contains_key(r) {
                toml.required_env.push(r.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Heroku's own example from the app.json schema article (trimmed of nothing berth
    /// refuses).
    const HEROKU_EXAMPLE: &str = include_str!("../tests/fixtures/heroku-app.json");

    #[test]
    fn herokus_example_is_read() {
        let a = AppJson::parse(HEROKU_EXAMPLE).unwrap();
        assert_eq!(a.name.as_deref(), Some("Small Sharp Tool"));
        assert_eq!(a.env["WEB_CONCURRENCY"], "5");
        assert_eq!(a.required, ["SECRET_TOKEN"]);
        assert_eq!(a.formation["web"], (Some(1), Some("512M".into())));
        assert_eq!(a.postdeploy.as_deref(), Some("bundle exec rake bootstrap"));
        let mut toml = BerthToml::parse("[env]\nWEB_CONCURRENCY = \"2\"\n").unwrap();
        a.apply_to(&mut toml);
        assert_eq!(toml.env["WEB_CONCURRENCY"], "2", "berth.toml wins");
        assert_eq!(toml.processes["web"].instances, Some(1));
        assert_eq!(toml.required_env, ["SECRET_TOKEN"]);
        assert_eq!(
            toml.deploy.postdeploy.as_deref(),
            Some("bundle exec rake bootstrap")
        );
    }

    #[test]
    fn what_berth_cannot_honour_is_named() {
        let text = r#"{"addons": ["heroku-postgresql"], "buildpacks": [{"url": "heroku/ruby"}],
            "environments": {"test": {}}, "colour": "red",
            "env": {"K": {"generator": "secret"}, "J": 3},
            "formation": {"web": {"size": "huge", "quantity": -1, "autoscale": true}},
            "scripts": {"pr-predestroy": "x", "prebuild": "y"}}"#;
        let problems = AppJson::parse(text).unwrap_err().join("\n");
        for needle in [
            "addons are not supported",
            "buildpacks are not supported",
            "environments",
            "unknown field \"colour\"",
            "env.K.generator",
            "env.J is neither",
            "size \"huge\"",
            "quantity",
            "formation.web.autoscale",
            "pr-predestroy",
            "scripts.prebuild",
        ] {
            assert!(problems.contains(needle), "{needle}: {problems}");
        }
        assert!(AppJson::parse("[]").is_err());
        assert!(AppJson::parse("{").unwrap_err()[0].contains("app.json"));
    }
}
