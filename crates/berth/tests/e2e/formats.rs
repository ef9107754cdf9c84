//! End-to-end: Heroku's app.json beside (or instead of) berth.toml. Its env, formation and
//! postdeploy script take effect (the script once, on the first deploy); a variable it
//! requires must be set before a deploy; what berth cannot honour is refused by name and
//! nothing is created.

use crate::common;

use common::{copy_dir, fixture, Platform};

/// Heroku's example from the app.json schema article, with this app's own values.
const APP_JSON: &str = r#"{
  "name": "heroku-style",
  "description": "This app does one little thing, and does it well.",
  "keywords": ["productivity", "HTML5", "scalpel"],
  "website": "https://small-sharp-tool.com/",
  "repository": "https://github.com/jane-doe/small-sharp-tool",
  "logo": "https://small-sharp-tool.com/logo.svg",
  "success_url": "/welcome",
  "scripts": { "postdeploy": "echo seeded-by-postdeploy-$BERTH_APP" },
  "env": {
    "SECRET_TOKEN": { "description": "A secret key for verifying the integrity of signed cookies." },
    "WEB_CONCURRENCY": { "description": "The number of processes to run.", "value": "5" }
  },
  "formation": { "web": { "quantity": 2, "size": "standard-1X" } }
}"#;

#[test]
fn app_json_env_formation_and_postdeploy_take_effect() {
    let p = Platform::start();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("src");
    copy_dir(&fixture("stateful"), &dir);
    std::fs::write(dir.join("app.json"), APP_JSON).unwrap();
    let path = dir.display().to_string();

    // SECRET_TOKEN is required and has no value: refused, nothing made.
    let err = p.fails(&["deploy", &path, "--app", "heroku"]);
    assert!(err.contains("app.json requires SECRET_TOKEN"), "{err}");
    assert!(
        err.contains("berth secrets set heroku SECRET_TOKEN"),
        "{err}"
    );
    assert!(p.json(&["apps"]).as_array().unwrap().is_empty());

    p.ok(&["create", "heroku", "--secret", "SECRET_TOKEN=s3cr3t"]);
    let out = p.berth(&["deploy", &path, "--app", "heroku"]);
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{said}");
    assert!(said.contains("step: postdeploy"), "{said}");
    let build_log = p.ok(&["logs", "heroku", "--build"]);
    assert!(
        build_log.contains("seeded-by-postdeploy-heroku"),
        "the script ran: {build_log}"
    );
    assert_eq!(p.answer("heroku", "/env?name=WEB_CONCURRENCY"), "5");
    assert_eq!(p.answer("heroku", "/env?name=SECRET_TOKEN"), "s3cr3t");
    let ps = p.json(&["ps", "heroku"]);
    let web = ps
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["process"] == "web")
        .count();
    assert_eq!(web, 2, "formation.web.quantity: {ps}");

    // The postdeploy script runs on the first deploy only.
    std::fs::write(dir.join("version.txt"), "2\n").unwrap();
    let out = p.berth(&["deploy", &path, "--app", "heroku"]);
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{said}");
    assert!(!said.contains("step: postdeploy"), "{said}");
    let build_log = p.ok(&["logs", "heroku", "--build"]);
    assert!(!build_log.contains("seeded-by-postdeploy"), "{build_log}");

    // berth.toml wins where both speak.
    std::fs::write(dir.join("berth.toml"), "[env]\nWEB_CONCURRENCY = \"3\"\n").unwrap();
    p.ok(&["deploy", &path, "--app", "heroku"]);
    assert_eq!(p.answer("heroku", "/env?name=WEB_CONCURRENCY"), "3");
}

#[test]
fn what_berth_cannot_honour_in_app_json_is_refused_by_name() {
    let p = Platform::start();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("src");
    copy_dir(&fixture("stateful"), &dir);
    std::fs::write(
        dir.join("app.json"),
        r#"{"name": "addons", "addons": ["heroku-postgresql"], "buildpacks": [{"url": "heroku/python"}],
            "env": {"KEY": {"generator": "secret"}}, "colour": "red"}"#,
    )
    .unwrap();
    let err = p.fails(&["deploy", &dir.display().to_string(), "--app", "refused"]);
    for needle in [
        "addons are not supported",
        "berth db create",
        "buildpacks are not supported",
        "env.KEY.generator",
        "unknown field \"colour\"",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    assert!(p.json(&["apps"]).as_array().unwrap().is_empty());
}

/// Score's getting-started example (docs.score.dev), with a volume, a probe and this
/// app's own route added.
const SCORE: &str = r#"apiVersion: score.dev/v1b1
metadata:
  name: scored
  team: payments
containers:
  main:
    image: .
    variables:
      PG_CONNECTION_STRING: "postgresql://${resources.db.username}:${resources.db.password}@${resources.db.host}:${resources.db.port}/${resources.db.database}?sslmode=disable"
      PUBLIC_HOST: ${resources.dns.host}
      GREETING: hello from ${metadata.name} of ${metadata.team}
    volumes:
      /data:
        source: ${resources.data}
    readinessProbe:
      httpGet:
        path: /env
service:
  ports:
    web:
      port: 8080
resources:
  db:
    type: postgres
  dns:
    type: dns
  data:
    type: volume
    params:
      size: 64M
  route:
    type: route
    params:
      host: www.scored.test
      path: /
      port: 8080
"#;

/// Percent-encodes a query value.
fn encoded(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn score_yaml_provides_its_resources_and_resolves_its_placeholders() {
    let p = Platform::start();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("src");
    copy_dir(&fixture("stateful"), &dir);
    std::fs::write(dir.join("score.yaml"), SCORE).unwrap();
    let path = dir.display().to_string();

    // The workload's name names the app; its volume, database and route are made.
    p.ok(&["deploy", &path]);
    assert!(
        p.answer("scored", "/").starts_with("count=1"),
        "the volume is at /data"
    );
    assert_eq!(p.answer("scored", "/env?name=PORT"), "8080");
    assert_eq!(
        p.answer("scored", "/env?name=GREETING"),
        "hello from scored of payments"
    );
    assert_eq!(
        p.answer("scored", "/env?name=PUBLIC_HOST"),
        "scored.localhost"
    );
    let url = p.answer("scored", "/env?name=PG_CONNECTION_STRING");
    assert!(url.starts_with("postgresql://app_scored:"), "{url}");
    assert_eq!(
        p.answer(
            "scored",
            &format!("/sql?url={}&q=select%2042", encoded(&url))
        ),
        "42\n",
        "the connection string composed of the outputs opens the database"
    );
    let volumes = p.json(&["volumes", "list", "scored"]);
    assert_eq!(volumes[0]["name"], "data", "{volumes}");
    assert_eq!(volumes[0]["mount"], "/data", "{volumes}");
    assert_eq!(volumes[0]["size_bytes"], 64 << 20, "params.size: {volumes}");
    let secrets = p.ok(&["--json", "secrets", "list", "scored"]);
    assert!(
        secrets.contains("PG_CONNECTION_STRING"),
        "the password makes it a secret: {secrets}"
    );
    assert!(!secrets.contains("PUBLIC_HOST"), "{secrets}");
    let domains = p.ok(&["--json", "domains", "list", "scored"]);
    assert!(domains.contains("www.scored.test"), "{domains}");
    // The route's host is the app's at the edge (sent on to HTTPS, as every domain is).
    let (status, _) = common::http_get(p.edge_port, "www.scored.test", "/").unwrap();
    assert_eq!(status, 308);
    let (status, _) = common::http_get(p.edge_port, "www.unrouted.test", "/").unwrap();
    assert_ne!(status, 308);

    // Deploying again reuses everything: the same volume (its count goes on), the secret
    // not sealed again.
    std::fs::write(dir.join("version.txt"), "2\n").unwrap();
    p.ok(&["deploy", &path]);
    assert!(p.answer("scored", "/").starts_with("count=2"));
    let listed = p.json(&["secrets", "list", "scored"]);
    let version = |name: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .map(|s| s["version"].clone())
    };
    assert_eq!(version("PG_CONNECTION_STRING"), Some(1.into()), "{listed}");

    // A placeholder that resolves to nothing: refused, the release unchanged.
    let releases = p.json(&["releases", "scored"]).as_array().unwrap().len();
    let with_env = SCORE
        .replace(
            "      GREETING:",
            "      MODE: ${resources.env.MODE}\n      GREETING:",
        )
        .replace(
            "resources:\n  db:",
            "resources:\n  env:\n    type: environment\n  db:",
        );
    std::fs::write(dir.join("score.yaml"), &with_env).unwrap();
    let err = p.fails(&["deploy", &path]);
    assert!(
        err.contains(
            "${resources.env.MODE} resolves to nothing: scored has no variable or secret MODE"
        ),
        "{err}"
    );
    assert_eq!(
        p.json(&["releases", "scored"]).as_array().unwrap().len(),
        releases
    );
    p.ok(&["env", "set", "scored", "MODE=blue"]);
    p.ok(&["deploy", &path]);
    assert_eq!(p.answer("scored", "/env?name=MODE"), "blue");

    // A placeholder naming nothing is refused before anything is sent.
    std::fs::write(
        dir.join("score.yaml"),
        SCORE.replace("${resources.dns.host}", "${resources.dns.hostname}"),
    )
    .unwrap();
    let err = p.fails(&["deploy", &path]);
    assert!(
        err.contains("${resources.dns.hostname} resolves to nothing: a dns resource has host"),
        "{err}"
    );
}

#[test]
fn a_score_app_whose_first_deploy_fails_leaves_nothing_behind() {
    let p = Platform::start();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("src");
    copy_dir(&fixture("stateful"), &dir);
    let path = dir.display().to_string();
    // An environment variable no one set: refused before anything is made.
    std::fs::write(
        dir.join("score.yaml"),
        "apiVersion: score.dev/v1b1\nmetadata: {name: ghost}\ncontainers:\n  main:\n    image: .\n    variables: {TOKEN: '${resources.env.TOKEN}'}\n    volumes: {/data: {source: '${resources.data}'}}\nresources:\n  env: {type: environment}\n  data: {type: volume}\n",
    )
    .unwrap();
    let err = p.fails(&["deploy", &path]);
    assert!(
        err.contains("ghost has no variable or secret TOKEN"),
        "{err}"
    );
    assert!(p.json(&["apps"]).as_array().unwrap().is_empty());
    // A health check that never passes: the volume made for it goes with the app.
    std::fs::write(
        dir.join("score.yaml"),
        "apiVersion: score.dev/v1b1\nmetadata: {name: ghost}\ncontainers:\n  main:\n    image: .\n    volumes: {/data: {source: '${resources.data}'}}\n    readinessProbe: {httpGet: {path: /no-such-page}}\nresources:\n  data: {type: volume}\n",
    )
    .unwrap();
    std::fs::write(dir.join("berth.toml"), "[health]\ntimeout_secs = 5\n").unwrap();
    let err = p.fails(&["deploy", &path]);
    assert!(err.contains("health"), "{err}");
    assert!(p.json(&["apps"]).as_array().unwrap().is_empty());
    assert!(p.fails(&["volumes", "list", "ghost"]).contains("ghost"));
}
