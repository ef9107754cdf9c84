//! End-to-end: Heroku's app.json beside (or instead of) berth.toml. Its env, formation and
//! postdeploy script take effect (the script once, on the first deploy); a variable it
//! requires must be set before a deploy; what berth cannot honour is refused by name and
//! nothing is created.

mod common;

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
