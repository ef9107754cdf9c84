//! Score (<https://score.dev>, `score.dev/v1b1`): a portable workload spec, read beside or
//! instead of berth.toml. One container becomes the app's `web` process (`image: .` builds
//! the directory, any other image is deployed as it is); `service.ports` gives its port,
//! `variables` its environment, `resources.limits` its limits, an HTTP probe its health
//! check. Resources map to berth's own: `postgres` (the app's database), `volume` (a volume,
//! mounted where the container says), `dns` (the app's host name), `route` (a domain routed to
//! it) and `environment` (the app's variables and secrets). `${metadata.…}` and
//! `${resources.NAME.OUTPUT}` placeholders are checked here, when the file is read, and
//! resolved when berth deploys (a value that comes from a secret stays a secret). What berth
//! cannot honour is refused by name, never dropped.

use crate::spec::{BerthToml, CpusToml, SizeToml};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The resource types berth provides, and the outputs each has.
const TYPES: [(&str, &[&str]); 5] = [
    (
        "postgres",
        &["host", "port", "name", "database", "username", "password"],
    ),
    ("volume", &[]),
    ("dns", &["host"]),
    ("route", &[]),
    ("environment", &[]),
];

/// The default size of a volume a score.yaml asks for (`params.size` changes it).
pub const DEFAULT_VOLUME_SIZE: &str = "1G";

/// One piece of a value with placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Text(String),
    /// `${a.b.c}` as its segments.
    Ref(Vec<String>),
}

/// Looks a placeholder up: its value, and whether that came from a secret.
pub type Lookup<'a> = dyn Fn(&[String]) -> Option<(String, bool)> + 'a;

/// A string with `${…}` placeholders (`$${` writes a literal `${`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(pub Vec<Part>);

impl Template {
    /// Splits `text` into text and placeholders.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut buf = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            buf.push_str(&rest[..at]);
            let after = &rest[at..];
            if let Some(escaped) = after.strip_prefix("$${") {
                buf.push_str("${");
                rest = escaped;
            } else if let Some(inner) = after.strip_prefix("${") {
                let Some(end) = inner.find('}') else {
                    return Err(format!("{text:?} has a placeholder with no closing }}"));
                };
                let path = &inner[..end];
                let segments: Vec<String> = path.split('.').map(str::to_string).collect();
                if segments
                    .iter()
                    .any(|s| s.trim().is_empty() || s.trim() != s)
                {
                    return Err(format!("${{{path}}} is not a placeholder Score knows"));
                }
                if !buf.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut buf)));
                }
                parts.push(Part::Ref(segments));
                rest = &inner[end + 1..];
            } else {
                buf.push('$');
                rest = &after[1..];
            }
        }
        buf.push_str(rest);
        if !buf.is_empty() {
            parts.push(Part::Text(buf));
        }
        Ok(Template(parts))
    }

    /// The placeholders in it.
    pub fn refs(&self) -> impl Iterator<Item = &Vec<String>> {
        self.0.iter().filter_map(|p| match p {
            Part::Ref(r) => Some(r),
            Part::Text(_) => None,
        })
    }

    /// True when no placeholder names a resource (its value is known when the file is read).
    pub fn is_static(&self) -> bool {
        self.refs().all(|r| r[0] != "resources")
    }

    /// Its value, each placeholder looked up (`(value, from a secret)`); the first that
    /// resolves to nothing is the error. The answer is secret when any part was.
    pub fn resolve(&self, lookup: &Lookup) -> Result<(String, bool), String> {
        let mut out = String::new();
        let mut secret = false;
        for part in &self.0 {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Ref(r) => match lookup(r) {
                    Some((v, s)) => {
                        out.push_str(&v);
                        secret |= s;
                    }
                    None => {
                        return Err(format!("${{{}}} resolves to nothing", r.join(".")));
                    }
                },
            }
        }
        Ok((out, secret))
    }
}

/// A resource the workload depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// The app's PostgreSQL database.
    Postgres,
    /// A volume of this size.
    Volume { size: String },
    /// The app's own host name.
    Dns,
    /// A host routed to the app (at the port it names, which must be the service's).
    Route { host: Template, port: Option<u64> },
    /// The app's variables and secrets.
    Environment,
}

impl Resource {
    pub fn kind(&self) -> &'static str {
        match self {
            Resource::Postgres => "postgres",
            Resource::Volume { .. } => "volume",
            Resource::Dns => "dns",
            Resource::Route { .. } => "route",
            Resource::Environment => "environment",
        }
    }
}

/// A volume mount: the volume resource and where the container sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub resource: String,
    pub target: String,
}

/// What berth takes from a score.yaml.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// `metadata.name`.
    pub name: String,
    /// The image; `None` for `image: .` (build the directory).
    pub image: Option<String>,
    /// `command` and `args` as one shell command.
    pub command: Option<String>,
    /// The port the container listens on.
    pub port: Option<u16>,
    /// The HTTP probe's path.
    pub health_path: Option<String>,
    pub memory: Option<String>,
    pub cpus: Option<f64>,
    /// Variables whose value is known now.
    pub env: BTreeMap<String, String>,
    /// Variables whose value comes from resources (resolved at deploy).
    pub variables: BTreeMap<String, Template>,
    pub mounts: Vec<Mount>,
    pub resources: BTreeMap<String, Resource>,
}

/// The problems of a score.yaml, each naming its field.
type Problems = Vec<String>;

fn quoted(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c))
    {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

fn strings(v: &Value, field: &str, problems: &mut Problems) -> Vec<String> {
    match v.as_array() {
        Some(items) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect(),
        _ => {
            problems.push(format!("score.yaml: {field} is not a list of strings"));
            Vec::new()
        }
    }
}

/// Kubernetes CPU quantities: `500m`, `0.5`, `2`.
fn cpu_quantity(text: &str) -> Option<f64> {
    let v = match text.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().ok()? / 1000.0,
        None => text.parse::<f64>().ok()?,
    };
    (v.is_finite() && v > 0.0).then_some(v)
}

impl Score {
    /// Reads a score.yaml; every problem at once.
    pub fn parse(text: &str) -> Result<Self, Problems> {
        let doc: Value =
            serde_yaml_ng::from_str(text).map_err(|e| vec![format!("score.yaml: {e}")])?;
        let Some(top) = doc.as_object() else {
            return Err(vec!["score.yaml: the top level is not a mapping".into()]);
        };
        let mut problems = Vec::new();
        match top.get("apiVersion").and_then(Value::as_str) {
            Some("score.dev/v1b1") => {}
            Some(other) => problems.push(format!(
                "score.yaml: apiVersion {other:?} is not one berth reads: use score.dev/v1b1"
            )),
            None => problems.push("score.yaml: apiVersion is missing (score.dev/v1b1)".into()),
        }
        for key in top.keys() {
            if ![
                "apiVersion",
                "metadata",
                "service",
                "containers",
                "resources",
            ]
            .contains(&key.as_str())
            {
                problems.push(format!("score.yaml: unknown field {key:?}"));
            }
        }
        let metadata = top.get("metadata").and_then(Value::as_object);
        let name = match metadata.and_then(|m| m.get("name")).and_then(Value::as_str) {
            Some(n) => n.to_string(),
            None => {
                problems.push("score.yaml: metadata.name is missing".into());
                String::new()
            }
        };
        let mut out = Score {
            name,
            image: None,
            command: None,
            port: None,
            health_path: None,
            memory: None,
            cpus: None,
            env: BTreeMap::new(),
            variables: BTreeMap::new(),
            mounts: Vec::new(),
            resources: BTreeMap::new(),
        };
        if let Some(res) = top.get("resources") {
            out.read_resources(res, &mut problems);
        }
        if let Some(service) = top.get("service") {
            out.read_service(service, &mut problems);
        }
        match top.get("containers").and_then(Value::as_object) {
            Some(c) if c.len() == 1 => {
                if let Some((cname, container)) = c.iter().next() {
                    out.read_container(cname, container, &mut problems);
                }
            }
            Some(c) if c.is_empty() => problems.push("score.yaml: containers is empty".into()),
            Some(c) => problems.push(format!(
                "score.yaml: containers has {} ({}): berth runs one container per workload; give each its own score.yaml and app",
                c.len(),
                c.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
            None => problems.push("score.yaml: containers is missing".into()),
        }
        out.check_refs(metadata, &mut problems);
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(problems)
        }
    }

    fn read_resources(&mut self, value: &Value, problems: &mut Problems) {
        let Some(resources) = value.as_object() else {
            problems.push("score.yaml: resources is not a mapping".into());
            return;
        };
        for (name, spec) in resources {
            let field = format!("score.yaml: resources.{name}");
            let Some(o) = spec.as_object() else {
                problems.push(format!("{field} is not a mapping"));
                continue;
            };
            for k in o.keys() {
                match k.as_str() {
                    "type" | "params" | "metadata" => {}
                    "class" => {
                        if o.get("class").and_then(Value::as_str) != Some("default") {
                            problems.push(format!("{field}.class: berth has one class of each resource type (default)"));
                        }
                    }
                    "properties" => {
                        if o.get("properties").is_some_and(|p| !p.is_null()) {
                            problems.push(format!("{field}.properties is deprecated in Score and not read by berth; reference outputs with ${{resources.{name}.OUTPUT}}"));
                        }
                    }
                    "id" => problems.push(format!(
                        "{field}.id: shared resources are not supported; each app has its own"
                    )),
                    other => problems.push(format!("{field}: unknown field {other:?}")),
                }
            }
            let params = o
                .get("params")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            if o.get("params").is_some_and(|p| !p.is_object()) {
                problems.push(format!("{field}.params is not a mapping"));
            }
            let allowed: &[&str] = match o.get("type").and_then(Value::as_str) {
                Some("volume") => &["size"],
                Some("route") => &["host", "path", "port"],
                _ => &[],
            };
            for k in params.keys() {
                if !allowed.contains(&k.as_str()) {
                    problems.push(format!("{field}.params.{k} is not a parameter berth reads"));
                }
            }
            let param = |k: &str| params.get(k).and_then(Value::as_str).map(str::to_string);
            let resource = match o.get("type").and_then(Value::as_str) {
                Some("postgres") => Resource::Postgres,
                Some("volume") => Resource::Volume {
                    size: param("size").unwrap_or_else(|| DEFAULT_VOLUME_SIZE.into()),
                },
                Some("dns") => Resource::Dns,
                Some("environment") => Resource::Environment,
                Some("route") => {
                    if let Some(path) = params.get("path") {
                        if path.as_str() != Some("/") {
                            problems.push(format!(
                                "{field}.params.path {path}: berth routes whole host names; use /"
                            ));
                        }
                    }
                    let port = params.get("port").map(|p| p.as_u64().unwrap_or(0));
                    if port == Some(0) {
                        problems.push(format!("{field}.params.port is not a port number"));
                    }
                    match param("host").map(|h| Template::parse(&h)) {
                        Some(Ok(host)) => Resource::Route { host, port },
                        Some(Err(e)) => {
                            problems.push(format!("{field}.params.host: {e}"));
                            continue;
                        }
                        None => {
                            problems.push(format!(
                                "{field}.params.host is missing: a route names its host"
                            ));
                            continue;
                        }
                    }
                }
                Some(other) => {
                    problems.push(format!(
                        "{field}: type {other:?} is not a resource berth provides (it has {})",
                        TYPES.iter().map(|(t, _)| *t).collect::<Vec<_>>().join(", ")
                    ));
                    continue;
                }
                None => {
                    problems.push(format!("{field}.type is missing"));
                    continue;
                }
            };
            self.resources.insert(name.clone(), resource);
        }
        let databases: Vec<&String> = self
            .resources
            .iter()
            .filter(|(_, r)| **r == Resource::Postgres)
            .map(|(n, _)| n)
            .collect();
        if databases.len() > 1 {
            problems.push(format!(
                "score.yaml: resources {} are all postgres: an app has one database; reference it from every variable that needs it",
                databases.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
    }
}

impl Score {
    fn read_service(&mut self, value: &Value, problems: &mut Problems) {
        let Some(service) = value.as_object() else {
            problems.push("score.yaml: service is not a mapping".into());
            return;
        };
        for k in service.keys().filter(|k| k.as_str() != "ports") {
            problems.push(format!("score.yaml: service: unknown field {k:?}"));
        }
        let Some(ports) = service.get("ports").and_then(Value::as_object) else {
            return;
        };
        if ports.len() > 1 {
            problems.push(format!(
                "score.yaml: service.ports has {} ({}): berth routes one HTTP port per app",
                ports.len(),
                ports.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
            return;
        }
        for (name, spec) in ports {
            let field = format!("score.yaml: service.ports.{name}");
            let Some(o) = spec.as_object() else {
                problems.push(format!("{field} is not a mapping"));
                continue;
            };
            for k in o.keys() {
                if !["port", "targetPort", "protocol"].contains(&k.as_str()) {
                    problems.push(format!("{field}: unknown field {k:?}"));
                }
            }
            if let Some(p) = o.get("protocol").and_then(Value::as_str) {
                if !p.eq_ignore_ascii_case("tcp") {
                    problems.push(format!("{field}.protocol {p}: berth routes HTTP over TCP"));
                }
            }
            let port = o
                .get("targetPort")
                .or_else(|| o.get("port"))
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0);
            match port {
                Some(p) => self.port = Some(p),
                None => problems.push(format!(
                    "{field}: port (or targetPort) is not a port number"
                )),
            }
        }
    }

    fn read_container(&mut self, cname: &str, value: &Value, problems: &mut Problems) {
        let field = format!("score.yaml: containers.{cname}");
        let Some(c) = value.as_object() else {
            problems.push(format!("{field} is not a mapping"));
            return;
        };
        for k in c.keys() {
            match k.as_str() {
                "image" | "command" | "args" | "variables" | "volumes" | "resources"
                | "livenessProbe" | "readinessProbe" => {}
                "files" => problems.push(format!(
                    "{field}.files are not supported: put the file in the app's source (or give its content as a variable)"
                )),
                other => problems.push(format!("{field}: unknown field {other:?}")),
            }
        }
        match c.get("image").and_then(Value::as_str) {
            Some(".") => {}
            Some(image) if !image.trim().is_empty() => self.image = Some(image.to_string()),
            _ => problems.push(format!(
                "{field}.image is missing: give an image, or . to build this directory"
            )),
        }
        let command = c
            .get("command")
            .map(|v| strings(v, &format!("containers.{cname}.command"), problems));
        let args = c
            .get("args")
            .map(|v| strings(v, &format!("containers.{cname}.args"), problems));
        match (command, args) {
            (Some(cmd), args) => {
                let words: Vec<String> = cmd
                    .iter()
                    .chain(args.iter().flatten())
                    .map(|w| quoted(w))
                    .collect();
                if !words.is_empty() {
                    self.command = Some(words.join(" "));
                }
            }
            (None, Some(_)) => problems.push(format!(
                "{field}.args without command: berth runs a whole command; give command too"
            )),
            (None, None) => {}
        }
        if let Some(vars) = c.get("variables") {
            match vars.as_object() {
                Some(vars) => {
                    for (k, v) in vars {
                        let text = match v {
                            Value::String(s) => s.clone(),
                            Value::Number(n) => n.to_string(),
                            Value::Bool(b) => b.to_string(),
                            _ => {
                                problems.push(format!("{field}.variables.{k} is not a string"));
                                continue;
                            }
                        };
                        match Template::parse(&text) {
                            Ok(t) => {
                                self.variables.insert(k.clone(), t);
                            }
                            Err(e) => problems.push(format!("{field}.variables.{k}: {e}")),
                        }
                    }
                }
                None => problems.push(format!("{field}.variables is not a mapping")),
            }
        }
        if let Some(v) = c.get("volumes") {
            self.read_volumes(&field, v, problems);
        }
        if let Some(r) = c.get("resources") {
            self.read_limits(&field, r, problems);
        }
        for probe in ["readinessProbe", "livenessProbe"] {
            let Some(p) = c.get(probe) else { continue };
            let pfield = format!("{field}.{probe}");
            let Some(get) = p.get("httpGet").and_then(Value::as_object) else {
                problems.push(format!(
                    "{pfield}: berth checks health over HTTP; give httpGet with a path"
                ));
                continue;
            };
            for k in p.as_object().into_iter().flat_map(|o| o.keys()) {
                if k != "httpGet" {
                    problems.push(format!(
                        "{pfield}.{k} is not supported: berth checks health over HTTP (httpGet)"
                    ));
                }
            }
            for k in get.keys() {
                if !["path", "port", "scheme"].contains(&k.as_str()) {
                    problems.push(format!("{pfield}.httpGet.{k} is not supported"));
                }
            }
            if get
                .get("scheme")
                .and_then(Value::as_str)
                .is_some_and(|s| s != "HTTP")
            {
                problems.push(format!(
                    "{pfield}.httpGet.scheme: berth checks the app over plain HTTP"
                ));
            }
            if let (Some(asked), Some(port)) = (get.get("port").and_then(Value::as_u64), self.port)
            {
                if asked != u64::from(port) {
                    problems.push(format!(
                        "{pfield}.httpGet.port {asked}: berth checks the service port ({port})"
                    ));
                }
            }
            match get.get("path").and_then(Value::as_str) {
                Some(path) if path.starts_with('/') => match &self.health_path {
                    Some(other) if other != path => problems.push(format!(
                        "{pfield}.httpGet.path {path} differs from the other probe's {other}: berth has one health check"
                    )),
                    _ => self.health_path = Some(path.to_string()),
                },
                _ => problems.push(format!("{pfield}.httpGet.path is not a path (/…)")),
            }
        }
    }

    fn read_volumes(&mut self, field: &str, value: &Value, problems: &mut Problems) {
        // Score's current form maps each target to its mount; the older one lists them.
        let entries: Vec<(Option<String>, &Map<String, Value>)> = match value {
            Value::Object(m) => m
                .iter()
                .filter_map(|(target, spec)| match spec.as_object() {
                    Some(o) => Some((Some(target.clone()), o)),
                    None => {
                        problems.push(format!("{field}.volumes.{target} is not a mapping"));
                        None
                    }
                })
                .collect(),
            Value::Array(items) => items
                .iter()
                .filter_map(|spec| match spec.as_object() {
                    Some(o) => Some((None, o)),
                    None => {
                        problems.push(format!(
                            "{field}.volumes has an entry that is not a mapping"
                        ));
                        None
                    }
                })
                .collect(),
            _ => {
                problems.push(format!("{field}.volumes is neither a mapping nor a list"));
                return;
            }
        };
        for (target, o) in entries {
            let target =
                target.or_else(|| o.get("target").and_then(Value::as_str).map(str::to_string));
            let Some(target) = target else {
                problems.push(format!("{field}.volumes: an entry has no target"));
                continue;
            };
            let vfield = format!("{field}.volumes.{target}");
            for k in o.keys() {
                match k.as_str() {
                    "source" | "target" => {}
                    "read_only" | "readOnly" => {
                        if o.get(k).and_then(Value::as_bool) == Some(true) {
                            problems.push(format!("{vfield}.{k}: berth mounts volumes read-write"));
                        }
                    }
                    "path" => problems.push(format!(
                        "{vfield}.path: berth mounts a whole volume; sub-paths are not supported"
                    )),
                    other => problems.push(format!("{vfield}: unknown field {other:?}")),
                }
            }
            let source = o.get("source").and_then(Value::as_str).unwrap_or_default();
            let resource = Template::parse(source)
                .ok()
                .and_then(|t| match t.0.as_slice() {
                    [Part::Ref(r)] if r.len() == 2 && r[0] == "resources" => Some(r[1].clone()),
                    _ => None,
                });
            match resource {
                Some(name)
                    if matches!(self.resources.get(&name), Some(Resource::Volume { .. })) =>
                {
                    self.mounts.push(Mount {
                        resource: name,
                        target,
                    });
                }
                Some(name) => problems.push(format!(
                    "{vfield}.source ${{resources.{name}}} is not a volume resource of this file"
                )),
                None => problems.push(format!(
                    "{vfield}.source {source:?}: name a volume resource, like ${{resources.data}}"
                )),
            }
        }
    }

    fn read_limits(&mut self, field: &str, value: &Value, problems: &mut Problems) {
        let Some(o) = value.as_object() else {
            problems.push(format!("{field}.resources is not a mapping"));
            return;
        };
        for k in o.keys() {
            match k.as_str() {
                "limits" => {}
                "requests" => problems.push(format!(
                    "{field}.resources.requests: berth reserves nothing ahead; give limits (the most an instance may use)"
                )),
                other => problems.push(format!("{field}.resources: unknown field {other:?}")),
            }
        }
        let Some(limits) = o.get("limits").and_then(Value::as_object) else {
            return;
        };
        for (k, v) in limits {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => String::new(),
            };
            match k.as_str() {
                "memory" => match crate::limits::parse_memory(&text) {
                    Ok(_) => self.memory = Some(text),
                    Err(e) => problems.push(format!("{field}.resources.limits.memory: {e}")),
                },
                "cpu" => match cpu_quantity(&text) {
                    Some(c) => self.cpus = Some(c),
                    None => problems.push(format!(
                        "{field}.resources.limits.cpu {text:?} is not a CPU quantity (500m, 0.5, 2)"
                    )),
                },
                other => {
                    problems.push(format!("{field}.resources.limits: unknown field {other:?}"))
                }
            }
        }
    }

    /// Checks every placeholder names something that exists, and resolves those that need
    /// no resource.
    fn check_refs(&mut self, metadata: Option<&Map<String, Value>>, problems: &mut Problems) {
        let meta = |path: &[String]| -> Option<String> {
            let mut v = metadata?.get(path.first()?)?;
            for seg in &path[1..] {
                v = v.get(seg)?;
            }
            match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                _ => None,
            }
        };
        let check = |r: &[String]| -> Result<(), String> {
            let shown = format!("${{{}}}", r.join("."));
            match r[0].as_str() {
                "metadata" => meta(&r[1..]).map(|_| ()).ok_or_else(|| {
                    format!("{shown} resolves to nothing: metadata has no such key")
                }),
                "resources" => {
                    let Some(name) = r.get(1) else {
                        return Err(format!("{shown} names no resource"));
                    };
                    let Some(res) = self.resources.get(name) else {
                        return Err(format!(
                            "{shown} resolves to nothing: there is no resource {name:?}"
                        ));
                    };
                    let outputs = TYPES
                        .iter()
                        .find(|(t, _)| *t == res.kind())
                        .map(|(_, o)| *o)
                        .unwrap_or_default();
                    match (res, &r[2..]) {
                        (Resource::Environment, [_key]) => Ok(()),
                        (_, [out]) if outputs.contains(&out.as_str()) => Ok(()),
                        (Resource::Volume { .. }, _) => Err(format!(
                            "{shown}: a volume is mounted with the container's volumes, it has no outputs"
                        )),
                        _ if outputs.is_empty() => Err(format!(
                            "{shown} resolves to nothing: a {} resource has no outputs", res.kind()
                        )),
                        _ => Err(format!(
                            "{shown} resolves to nothing: a {} resource has {}",
                            res.kind(),
                            outputs.join(", ")
                        )),
                    }
                }
                _ => Err(format!(
                    "{shown} is not a placeholder Score knows (metadata.… or resources.…)"
                )),
            }
        };
        for (k, t) in &self.variables {
            for r in t.refs() {
                if let Err(e) = check(r) {
                    problems.push(format!("score.yaml: variables.{k}: {e}"));
                }
            }
        }
        for (name, res) in &self.resources {
            if let Resource::Route { host, port } = res {
                for r in host.refs() {
                    if let Err(e) = check(r) {
                        problems.push(format!("score.yaml: resources.{name}.params.host: {e}"));
                    }
                }
                if let (Some(asked), Some(served)) = (port, self.port) {
                    if *asked != u64::from(served) {
                        problems.push(format!(
                            "score.yaml: resources.{name}.params.port {asked} is not the service's port ({served})"
                        ));
                    }
                }
            }
            if matches!(res, Resource::Volume { .. }) {
                if !self.mounts.iter().any(|m| &m.resource == name) {
                    problems.push(format!(
                        "score.yaml: resources.{name} is a volume no container mounts: mount it under the container's volumes"
                    ));
                }
                if let Resource::Volume { size } = res {
                    if let Err(e) = crate::limits::parse_memory(size) {
                        problems.push(format!("score.yaml: resources.{name}.params.size: {e}"));
                    }
                }
            }
        }
        // Metadata is known now: its placeholders become text.
        let fill = |t: &mut Template| {
            for part in t.0.iter_mut() {
                if let Part::Ref(r) = part {
                    if r[0] == "metadata" {
                        if let Some(v) = meta(&r[1..]) {
                            *part = Part::Text(v);
                        }
                    }
                }
            }
        };
        self.variables.values_mut().for_each(fill);
        for res in self.resources.values_mut() {
            if let Resource::Route { host, .. } = res {
                fill(host);
            }
        }
        let statics: Vec<String> = self
            .variables
            .iter()
            .filter(|(_, t)| t.is_static())
            .map(|(k, _)| k.clone())
            .collect();
        for k in statics {
            if let Some(t) = self.variables.remove(&k) {
                if let Ok((v, _)) = t.resolve(&|_: &[String]| None) {
                    self.env.insert(k, v);
                }
            }
        }
    }

    /// Fills what berth.toml leaves unset (berth.toml wins where both say something), and
    /// keeps the resources and variables for the deploy.
    pub fn apply_to(&self, toml: &mut BerthToml) {
        if toml.name.is_none() {
            toml.name = Some(self.name.clone());
        }
        if toml.image.is_none() {
            toml.image = self.image.clone();
        }
        if toml.port.is_none() {
            toml.port = self.port;
        }
        if toml.health.path.is_none() {
            toml.health.path = self.health_path.clone();
        }
        let web = toml.processes.entry("web".into()).or_default();
        if web.command.is_none() {
            web.command = self.command.clone();
        }
        if web.memory.is_none() {
            web.memory = self.memory.clone().map(SizeToml::Text);
        }
        if web.cpus.is_none() {
            web.cpus = self.cpus.map(CpusToml::Fraction);
        }
        if web == &Default::default() {
            toml.processes.remove("web");
        }
        for (k, v) in &self.env {
            toml.env.entry(k.clone()).or_insert_with(|| v.clone());
        }
        toml.score = Some(self.clone());
    }

    /// Which variables a deploy resolves: those berth.toml does not set itself.
    pub fn pending_variables<'a>(
        &'a self,
        toml: &'a BerthToml,
    ) -> impl Iterator<Item = (&'a String, &'a Template)> {
        self.variables
            .iter()
            .filter(move |(k, _)| !toml.env.contains_key(*k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Score's getting-started example (docs.score.dev/docs/get-started).
    const SAMPLE: &str = include_str!("../tests/fixtures/score-getting-started.yaml");

    /// Score's volume example (docs.score.dev/examples/score/specification/volumes).
    const VOLUMES: &str = include_str!("../tests/fixtures/score-volumes.yaml");

    #[test]
    fn the_getting_started_example_is_read() {
        let s = Score::parse(SAMPLE).unwrap();
        assert_eq!(s.name, "sample");
        assert_eq!(s.image, None, "image . builds the directory");
        assert_eq!(s.port, Some(8080));
        assert_eq!(s.resources["db"], Resource::Postgres);
        assert_eq!(s.resources["dns"], Resource::Dns);
        assert!(matches!(
            s.resources["route"],
            Resource::Route {
                port: Some(8080),
                ..
            }
        ));
        let t = &s.variables["PG_CONNECTION_STRING"];
        let lookup = |r: &[String]| -> Option<(String, bool)> {
            match r[2].as_str() {
                "password" => Some(("pw".into(), true)),
                other => Some((other.to_uppercase(), false)),
            }
        };
        assert_eq!(
            t.resolve(&lookup).unwrap(),
            (
                "postgresql://USERNAME:pw@HOST:PORT/DATABASE?sslmode=disable".into(),
                true
            )
        );
        let mut toml = BerthToml::default();
        s.apply_to(&mut toml);
        assert_eq!(toml.name.as_deref(), Some("sample"));
        assert_eq!(toml.port, Some(8080));
        assert!(toml.score.is_some());
    }

    #[test]
    fn the_volumes_example_is_read_in_both_forms() {
        let s = Score::parse(VOLUMES).unwrap();
        assert_eq!(s.image.as_deref(), Some("busybox"));
        assert_eq!(
            s.command.as_deref(),
            Some("/bin/sh -c 'while true; do echo Hello volumes; sleep 5; done'")
        );
        assert_eq!(
            s.mounts,
            [Mount {
                resource: "data".into(),
                target: "/data".into()
            }]
        );
        let listed = VOLUMES.replace(
            "      /data:\n        source: ${resources.data}\n",
            "      - source: ${resources.data}\n        target: /data\n",
        );
        assert_eq!(Score::parse(&listed).unwrap().mounts, s.mounts);
    }

    #[test]
    fn metadata_and_literal_values_are_resolved_when_read() {
        let text = r#"
apiVersion: score.dev/v1b1
metadata:
  name: shop
  team: payments
containers:
  web:
    image: .
    variables:
      GREETING: "hello from ${metadata.name} of ${metadata.team}"
      PRICE: "$${not a placeholder}"
      WORKERS: 4
    resources:
      limits: { memory: 256Mi, cpu: 500m }
    readinessProbe:
      httpGet: { path: /healthz, port: 8000 }
service:
  ports:
    www: { port: 80, targetPort: 8000 }
"#;
        let s = Score::parse(text).unwrap();
        assert_eq!(s.env["GREETING"], "hello from shop of payments");
        assert_eq!(s.env["PRICE"], "${not a placeholder}");
        assert_eq!(s.env["WORKERS"], "4");
        assert!(s.variables.is_empty());
        assert_eq!(s.port, Some(8000));
        assert_eq!(s.health_path.as_deref(), Some("/healthz"));
        assert_eq!(s.cpus, Some(0.5));
        let mut toml = BerthToml::parse("[env]\nWORKERS = \"2\"\n").unwrap();
        s.apply_to(&mut toml);
        assert_eq!(toml.env["WORKERS"], "2", "berth.toml wins");
        assert_eq!(toml.health.path.as_deref(), Some("/healthz"));
        assert!(toml.validate().is_empty(), "{:?}", toml.validate());
        assert_eq!(toml.limits("web").unwrap().memory_bytes, 256 << 20);
    }

    #[test]
    fn what_berth_cannot_honour_or_resolve_is_named() {
        let text = r#"
apiVersion: score.dev/v1b1
metadata:
  name: bad
colour: red
containers:
  a:
    image: .
    files:
      - target: /etc/x
        content: hi
    variables:
      TYPO: ${resources.db.hots}
      NOBODY: ${resources.cache.host}
      META: ${metadata.owner}
      ENVIRON: ${env.HOME}
    resources:
      requests: { memory: 1Gi }
    volumes:
      /data:
        source: ${resources.db}
        path: sub
resources:
  db:
    type: postgres
  db2:
    type: postgres
  cache:
    type: redis
  spare:
    type: volume
  web:
    type: route
    params: { host: example.com, path: /api }
"#;
        let problems = Score::parse(text).unwrap_err().join("\n");
        for needle in [
            "unknown field \"colour\"",
            "files are not supported",
            "${resources.db.hots} resolves to nothing: a postgres resource has host, port",
            "variables.NOBODY: ${resources.cache.host} resolves to nothing: there is no resource \"cache\"",
            "type \"redis\" is not a resource berth provides",
            "${metadata.owner} resolves to nothing",
            "${env.HOME} is not a placeholder Score knows",
            "requests: berth reserves nothing",
            "path: berth mounts a whole volume",
            "source ${resources.db} is not a volume resource",
            "db, db2 are all postgres",
            "resources.spare is a volume no container mounts",
            "params.path \"/api\": berth routes whole host names",
        ] {
            assert!(problems.contains(needle), "{needle}:\n{problems}");
        }
        let two = "apiVersion: score.dev/v1b1\nmetadata: {name: x}\ncontainers: {a: {image: .}, b: {image: nginx}}";
        assert!(Score::parse(two).unwrap_err()[0]
            .contains("containers has 2 (a, b): berth runs one container"));
        assert!(Score::parse(
            "apiVersion: score.dev/v2\nmetadata: {name: x}\ncontainers: {a: {image: .}}"
        )
        .unwrap_err()[0]
            .contains("apiVersion"));
        assert!(Score::parse("- a").unwrap_err()[0].contains("not a mapping"));
        assert!(Score::parse("a: [").unwrap_err()[0].starts_with("score.yaml: "));
    }
}
