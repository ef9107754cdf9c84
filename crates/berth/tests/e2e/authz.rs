//! The authorization matrix: every API endpoint × every kind of token — viewer, deployer
//! and admin for the whole platform, a deployer limited to the app's project, and one
//! limited to another project — is allowed or refused as the roles say. A refusal is
//! `403 forbidden`, or, for an app of another project, the same `404 app_not_found` as an
//! app that does not exist (names do not leak). Changes are sent with bodies the endpoint
//! refuses after authorization (or aimed at an app that does not exist), so nothing changes.

use crate::common;

use common::{admin_token, copy_dir, curl, Platform};

/// Who may call an endpoint at least.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Min {
    Viewer,
    Deployer,
    Admin,
}

/// (method, path, body, least role, whether a project token may call it at all)
fn endpoints() -> Vec<(&'static str, String, Option<&'static str>, Min, bool)> {
    let app = "/v1/apps/real";
    let ghost = "/v1/apps/ghost";
    let bad = Some("{not json");
    vec![
        ("GET", "/v1/apps".into(), None, Min::Viewer, true),
        ("POST", "/v1/apps".into(), bad, Min::Deployer, true),
        ("GET", format!("{app}/releases"), None, Min::Viewer, true),
        ("GET", format!("{app}/instances"), None, Min::Viewer, true),
        (
            "GET",
            format!("{app}/logs?lines=1"),
            None,
            Min::Viewer,
            true,
        ),
        (
            "GET",
            format!("{app}/builds/latest/log"),
            None,
            Min::Viewer,
            true,
        ),
        ("GET", format!("{app}/env"), None, Min::Viewer, true),
        ("POST", format!("{app}/env"), bad, Min::Deployer, true),
        ("GET", format!("{app}/secrets"), None, Min::Viewer, true),
        ("POST", format!("{app}/secrets"), bad, Min::Deployer, true),
        ("GET", format!("{app}/domains"), None, Min::Viewer, true),
        ("POST", format!("{app}/domains"), bad, Min::Deployer, true),
        (
            "DELETE",
            format!("{app}/domains/nope.example.com"),
            None,
            Min::Deployer,
            true,
        ),
        ("GET", format!("{app}/volumes"), None, Min::Viewer, true),
        ("POST", format!("{app}/volumes"), bad, Min::Deployer, true),
        (
            "DELETE",
            format!("{app}/volumes/nope"),
            None,
            Min::Deployer,
            true,
        ),
        (
            "POST",
            format!("{app}/volumes/nope/snapshots"),
            None,
            Min::Deployer,
            true,
        ),
        (
            "POST",
            format!("{app}/volumes/nope/restore"),
            bad,
            Min::Deployer,
            true,
        ),
        ("GET", format!("{app}/database"), None, Min::Viewer, true),
        (
            "POST",
            format!("{ghost}/database"),
            None,
            Min::Deployer,
            true,
        ),
        (
            "POST",
            format!("{app}/database/backups"),
            None,
            Min::Deployer,
            true,
        ),
        (
            "POST",
            format!("{app}/database/restore"),
            bad,
            Min::Deployer,
            true,
        ),
        ("GET", format!("{app}/slo"), None, Min::Viewer, true),
        (
            "POST",
            format!("{app}/rollback"),
            Some("{\"to\": 999}"),
            Min::Deployer,
            true,
        ),
        ("POST", format!("{app}/deploys"), None, Min::Deployer, true),
        ("DELETE", ghost.into(), None, Min::Deployer, true),
        ("GET", "/v1/dora?app=real".into(), None, Min::Viewer, true),
        ("GET", "/v1/dora".into(), None, Min::Viewer, false),
        ("GET", "/v1/alerts".into(), None, Min::Viewer, false),
        ("GET", "/v1/slo/rules".into(), None, Min::Viewer, false),
        ("GET", "/v1/ca".into(), None, Min::Viewer, false),
        ("GET", "/metrics".into(), None, Min::Viewer, false),
        ("GET", "/v1/projects".into(), None, Min::Viewer, true),
        ("POST", "/v1/projects".into(), bad, Min::Admin, false),
        ("GET", "/v1/tokens".into(), None, Min::Admin, false),
        ("POST", "/v1/tokens".into(), bad, Min::Admin, false),
        ("DELETE", "/v1/tokens/ghost".into(), None, Min::Admin, false),
        ("GET", "/v1/audit".into(), None, Min::Admin, false),
        ("GET", "/v1/tenants".into(), None, Min::Admin, false),
        ("POST", "/v1/tenants".into(), bad, Min::Admin, false),
        ("GET", "/v1/people".into(), None, Min::Admin, false),
        ("POST", "/v1/people".into(), bad, Min::Admin, false),
        ("DELETE", "/v1/people/ghost".into(), None, Min::Admin, false),
        ("GET", "/v1/whoami".into(), None, Min::Viewer, true),
        ("GET", "/v1/registries".into(), None, Min::Admin, false),
        ("POST", "/v1/registries".into(), bad, Min::Admin, false),
        (
            "DELETE",
            "/v1/registries/ghost.example.com".into(),
            None,
            Min::Admin,
            false,
        ),
        ("POST", "/v1/backups".into(), bad, Min::Admin, false),
        (
            "POST",
            "/v1/secrets/rotate-key".into(),
            None,
            Min::Admin,
            false,
        ),
    ]
}

#[test]
fn every_endpoint_answers_every_kind_of_token_as_its_role_says() {
    let p = Platform::start();
    p.ok(&["projects", "create", "alpha"]);
    p.ok(&["projects", "create", "beta"]);
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("real");
    copy_dir(&common::fixture("stateful"), &dir);
    p.ok(&["deploy", &dir.display().to_string(), "--project", "alpha"]);
    let make = |name: &str, role: &str, project: Option<&str>| {
        let mut args = vec!["tokens", "create", name, "--role", role];
        if let Some(pr) = project {
            args.extend(["--project", pr]);
        }
        p.ok(&args).trim().to_string()
    };
    // (token, its role, its project: None = platform, Some(true) = the app's, Some(false) = another)
    let tokens = [
        (make("v", "viewer", None), Min::Viewer, None),
        (make("d", "deployer", None), Min::Deployer, None),
        (admin_token(&p), Min::Admin, None),
        (
            make("own", "deployer", Some("alpha")),
            Min::Deployer,
            Some(true),
        ),
        (
            make("other", "deployer", Some("beta")),
            Min::Deployer,
            Some(false),
        ),
    ];
    let before = p.json(&["releases", "real"]);
    let mut wrong = Vec::new();
    for (method, path, body, min, for_projects) in endpoints() {
        for (token, role, project) in &tokens {
            let mut extra = vec!["-H", "Content-Type: application/json"];
            if let Some(b) = body {
                extra.extend(["-d", b]);
            }
            let (status, answer) = curl(&p, token, method, &path, &extra);
            let on_real_app = path.contains("/apps/real") || path.contains("app=real");
            let expect_denied = *role < min
                || (project.is_some() && !for_projects)
                || (project == &Some(false) && on_real_app);
            let denied = status == 403
                || status == 401
                || (status == 404 && on_real_app && answer.contains("app_not_found"));
            if expect_denied != denied {
                wrong.push(format!(
                    "{method} {path} as {role:?}/{project:?}: {status} {}",
                    answer.lines().last().unwrap_or_default()
                ));
            }
            if expect_denied && project == &Some(false) && on_real_app {
                // Another project's app is as unknown as one that does not exist.
                if !(status == 404 && answer.contains("app \\\"real\\\" does not exist")) {
                    wrong.push(format!(
                        "{method} {path} leaks to another project: {status} {answer}"
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong answers:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert_eq!(p.json(&["releases", "real"]), before, "nothing changed");
    assert!(p.json(&["apps"]).to_string().contains("\"real\""));
}
