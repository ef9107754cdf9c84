//! End-to-end: a platform definition — a directory with one directory per app — planned
//! and applied. The plan's exit status says whether anything would change (0, 2; 1 for an
//! error); a change of one line shows as exactly that field; a second apply changes
//! nothing; a change made by hand is drift the next apply undoes; an invalid definition
//! changes nothing; prune removes only what an apply made.

use crate::common;

use common::{copy_dir, fixture, Platform};
use std::path::Path;

fn app_dir(root: &Path, dir: &str, toml: &str) {
    let d = root.join(dir);
    copy_dir(&fixture("stateful"), &d);
    std::fs::write(d.join("berth.toml"), toml).unwrap();
}

fn plan(p: &Platform, dir: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["plan", "-f", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = p.berth(&args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn plan_shows_exactly_what_changed_and_apply_converges() {
    let p = Platform::start();
    let def = tempfile::tempdir().unwrap();
    app_dir(
        def.path(),
        "shop",
        "name = \"shop\"\n[env]\nGREETING = \"hello\"\n",
    );
    app_dir(def.path(), "blog", "[env]\nGREETING = \"hi\"\n");

    // Nothing exists: two creates, exit 2.
    let (code, out, err) = plan(&p, def.path(), &[]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.contains("+ create shop (shop/)"), "{out}");
    assert!(out.contains("+ create blog (blog/)"), "{out}");
    assert!(out.contains("+ env.GREETING = \"hello\""), "{out}");
    assert!(out.contains("plan: 2 to create"), "{out}");

    let out = p.ok(&["apply", "-f", def.path().to_str().unwrap()]);
    assert!(out.contains("applied: 2 create"), "{out}");
    assert_eq!(p.answer("shop", "/env?name=GREETING"), "hello");
    assert_eq!(p.answer("blog", "/env?name=GREETING"), "hi");

    // As declared: exit 0, and a second apply deploys nothing.
    let (code, out, _) = plan(&p, def.path(), &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no changes"), "{out}");
    let out = p.ok(&["apply", "-f", def.path().to_str().unwrap()]);
    assert!(out.contains("no changes"), "{out}");
    assert_eq!((p.releases("shop").len(), p.releases("blog").len()), (1, 1));

    // One line changes: the plan shows that field, of that app, and nothing else.
    app_dir(
        def.path(),
        "shop",
        "name = \"shop\"\n[env]\nGREETING = \"good day\"\n",
    );
    let (code, out, _) = plan(&p, def.path(), &["--json"]);
    assert_eq!(code, 2);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["changes"],
        serde_json::json!([{
            "app": "shop", "action": "update", "dir": "shop",
            "fields": [{"field": "env.GREETING", "before": "\"hello\"", "after": "\"good day\""}]
        }]),
        "{v}"
    );
    assert_eq!(v["unchanged"], serde_json::json!(["blog"]));
    let (_, text, _) = plan(&p, def.path(), &[]);
    assert!(
        text.contains("~ env.GREETING: \"hello\" → \"good day\""),
        "{text}"
    );
    p.ok(&["apply", "-f", def.path().to_str().unwrap()]);
    assert_eq!(p.answer("shop", "/env?name=GREETING"), "good day");
    assert_eq!((p.releases("shop").len(), p.releases("blog").len()), (2, 1));

    // Code changes show as the source.
    std::fs::write(def.path().join("blog/version.txt"), "2\n").unwrap();
    let (code, out, _) = plan(&p, def.path(), &[]);
    assert_eq!(code, 2);
    assert!(
        out.contains("~ update blog") && out.contains("~ source:"),
        "{out}"
    );
    assert!(!out.contains("shop"), "{out}");
    p.ok(&["apply", "-f", def.path().to_str().unwrap()]);

    // A change by hand is drift: shown, and undone by the next apply.
    p.ok(&["env", "set", "shop", "GREETING=by hand"]);
    assert_eq!(p.answer("shop", "/env?name=GREETING"), "by hand");
    let (code, out, _) = plan(&p, def.path(), &[]);
    assert_eq!(code, 2);
    assert!(
        out.contains("~ release:") && out.contains("made outside the definition"),
        "{out}"
    );
    assert!(
        out.contains("~ env.GREETING: \"by hand\" (set with berth env) → \"good day\""),
        "{out}"
    );
    p.ok(&["apply", "-f", def.path().to_str().unwrap()]);
    assert_eq!(p.answer("shop", "/env?name=GREETING"), "good day");
    assert_eq!(plan(&p, def.path(), &[]).0, 0);

    // Prune: an app made by hand is never pruned; one the definition dropped is.
    p.ok(&[
        "deploy",
        &fixture("stateful").display().to_string(),
        "--app",
        "handmade",
    ]);
    std::fs::remove_dir_all(def.path().join("blog")).unwrap();
    let (code, out, _) = plan(&p, def.path(), &[]);
    assert_eq!(code, 0, "without --prune a dropped app stays: {out}");
    let (code, out, _) = plan(&p, def.path(), &["--prune"]);
    assert_eq!(code, 2);
    assert!(
        out.contains("- delete blog") && !out.contains("handmade"),
        "{out}"
    );
    p.ok(&["apply", "-f", def.path().to_str().unwrap(), "--prune"]);
    let apps: Vec<String> = p
        .json(&["apps"])
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    assert!(apps.contains(&"shop".to_string()) && apps.contains(&"handmade".to_string()));
    assert!(!apps.contains(&"blog".to_string()), "{apps:?}");
}

#[test]
fn an_invalid_definition_changes_nothing() {
    let p = Platform::start();
    let def = tempfile::tempdir().unwrap();
    app_dir(def.path(), "one", "name = \"same\"\n");
    app_dir(def.path(), "two", "name = \"same\"\n");
    app_dir(def.path(), "three", "isolation = \n");
    app_dir(def.path(), "Bad_Name", "");
    let (code, out, err) = plan(&p, def.path(), &[]);
    assert_eq!(code, 1, "{out}{err}");
    for needle in [
        "one/ and two/ are both app same",
        "three/berth.toml",
        "Bad_Name",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    let out = p.berth(&["apply", "-f", def.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("both app same"));
    assert!(p.json(&["apps"]).as_array().unwrap().is_empty());

    let empty = tempfile::tempdir().unwrap();
    let (code, _, err) = plan(&p, empty.path(), &[]);
    assert_eq!(code, 1);
    assert!(err.contains("holds no app directories"), "{err}");
    let (code, _, err) = plan(&p, &empty.path().join("nope"), &[]);
    assert_eq!(code, 1);
    assert!(err.contains("not a directory"), "{err}");
}

#[test]
fn a_score_yaml_app_is_planned_field_by_field() {
    let p = Platform::start();
    let def = tempfile::tempdir().unwrap();
    let dir = def.path().join("api-dir");
    copy_dir(&fixture("stateful"), &dir);
    let score = |greeting: &str| {
        format!(
            "apiVersion: score.dev/v1b1\nmetadata:\n  name: api\ncontainers:\n  main:\n    image: .\n    variables:\n      GREETING: {greeting}\n    volumes:\n      /data:\n        source: ${{resources.data}}\nresources:\n  data:\n    type: volume\n"
        )
    };
    std::fs::write(dir.join("score.yaml"), score("hello")).unwrap();
    let (code, out, err) = plan(&p, def.path(), &[]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        out.contains("+ create api (api-dir/)"),
        "the workload names the app: {out}"
    );
    p.ok(&["apply", "-f", def.path().to_str().unwrap()]);
    assert_eq!(p.answer("api", "/env?name=GREETING"), "hello");
    // "/" counts its requests in the volume (the health check asks it too).
    let count = |p: &Platform| -> u64 {
        let body = p.answer("api", "/");
        body.trim_start_matches("count=")
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{body}"))
    };
    let first = count(&p);
    let (code, out, _) = plan(&p, def.path(), &[]);
    assert_eq!(code, 0, "{out}");

    std::fs::write(dir.join("score.yaml"), score("bonjour")).unwrap();
    let (code, out, _) = plan(&p, def.path(), &[]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("score.containers.main.variables.GREETING"),
        "{out}"
    );
    assert!(out.contains("\"bonjour\""), "{out}");
    assert!(!out.contains("source"), "only that field: {out}");
    p.ok(&["apply", "-f", def.path().to_str().unwrap()]);
    assert_eq!(p.answer("api", "/env?name=GREETING"), "bonjour");
    assert!(count(&p) > first, "the same volume");

    // A score.yaml berth cannot honour is refused whole, naming its directory and field.
    std::fs::write(
        dir.join("score.yaml"),
        score("hola").replace("type: volume", "type: redis"),
    )
    .unwrap();
    let (code, _, err) = plan(&p, def.path(), &[]);
    assert_eq!(code, 1);
    assert!(err.contains("api-dir"), "{err}");
    assert!(
        err.contains("type \"redis\" is not a resource berth provides"),
        "{err}"
    );
}
