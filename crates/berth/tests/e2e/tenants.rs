//! End-to-end: tenants above projects. An admin makes a tenant with a quota over all of its
//! projects, two projects in it and a token limited to it. That token works across the
//! tenant's projects and nowhere else — another tenant's app is as unknown as a missing
//! one, platform-wide endpoints are refused — makes projects only in its tenant, and a
//! change past the tenant's quota — a new app, or a rollback to a bigger release — is
//! refused with the tenant named and nothing left behind.

use crate::common;

use common::{copy_dir, Platform};

#[test]
fn a_tenant_token_reaches_its_projects_only_within_the_tenant_quota() {
    let p = Platform::start();
    p.ok(&["tenants", "create", "acme", "--max-apps", "2"]);
    let err = p.fails(&["tenants", "create", "acme"]);
    assert!(err.contains("exists"), "{err}");
    let err = p.fails(&["tenants", "create", "Not_A_Label"]);
    assert!(err.contains("tenant name"), "{err}");
    p.ok(&["projects", "create", "shop", "--tenant", "acme"]);
    p.ok(&["projects", "create", "blog", "--tenant", "acme"]);
    let err = p.fails(&["projects", "create", "lost", "--tenant", "nope"]);
    assert!(err.contains("no tenant named"), "{err}");
    let err = p.fails(&[
        "tokens",
        "create",
        "both",
        "--tenant",
        "acme",
        "--project",
        "shop",
    ]);
    assert!(err.contains("cannot be used with"), "{err}");
    let acme = p
        .ok(&[
            "tokens",
            "create",
            "acme-admin",
            "--role",
            "admin",
            "--tenant",
            "acme",
        ])
        .trim()
        .to_string();
    // An app outside the tenant.
    p.ok(&["create", "outside"]);

    // Across the tenant's projects, up to its quota.
    let (ok, text) = p.try_as(&acme, &["create", "one", "--project", "shop"]);
    assert!(ok, "{text}");
    let (ok, text) = p.try_as(&acme, &["create", "two", "--project", "blog"]);
    assert!(ok, "{text}");
    let (ok, text) = p.try_as(&acme, &["create", "three", "--project", "shop"]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("tenant \"acme\" would have 3 apps, the quota is 2"),
        "{text}"
    );
    let (ok, text) = p.try_as(&acme, &["create", "four"]);
    assert!(
        !ok && text.contains("must say which of its projects"),
        "{text}"
    );
    let (ok, text) = p.try_as(&acme, &["create", "five", "--project", "default"]);
    assert!(!ok && text.contains("has no project named"), "{text}");

    // It sees its own and nothing else.
    let (ok, text) = p.try_as(&acme, &["--json", "apps"]);
    assert!(ok, "{text}");
    let apps: serde_json::Value = serde_json::from_str(&text).expect("apps JSON");
    let mut names: Vec<&str> = apps
        .as_array()
        .expect("apps")
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["one", "two"], "{apps}");
    let (ok, text) = p.try_as(&acme, &["env", "list", "outside"]);
    assert!(!ok && text.contains("does not exist"), "{text}");
    let (ok, text) = p.try_as(&acme, &["env", "list", "one"]);
    assert!(ok, "{text}");
    // An app named with its project is the same app; in another project it is unknown; a
    // name sent percent-encoded is the same name, and as far out of reach.
    let (ok, text) = p.try_as(&acme, &["--json", "releases", "shop/one"]);
    assert!(ok && text.trim() == "[]", "{text}");
    let (ok, text) = p.try_as(&acme, &["env", "list", "blog/one"]);
    assert!(!ok && text.contains("app \"one\" does not exist"), "{text}");
    let (ok, text) = p.try_as(&acme, &["env", "list", "default/outside"]);
    assert!(!ok && text.contains("does not exist"), "{text}");
    let (status, text) = common::curl(&p, &acme, "GET", "/v1/apps/%6Futside/env", &[]);
    assert_eq!(status, 404, "{text}");
    let (ok, text) = p.try_as(&acme, &["--json", "projects", "list"]);
    assert!(ok, "{text}");
    let projects: serde_json::Value = serde_json::from_str(&text).expect("projects JSON");
    assert!(
        projects
            .as_array()
            .expect("projects")
            .iter()
            .all(|p| p["tenant"] == "acme"),
        "{projects}"
    );
    for platform_wide in [
        &["tokens", "list"][..],
        &["tenants", "list"][..],
        &["audit"][..],
    ] {
        let (ok, text) = p.try_as(&acme, platform_wide);
        assert!(
            !ok && text.contains("platform-wide"),
            "{platform_wide:?}: {text}"
        );
    }

    // Projects it makes are in its tenant, and only there.
    let (ok, text) = p.try_as(&acme, &["projects", "create", "docs"]);
    assert!(ok && text.contains("in tenant acme"), "{text}");
    let (ok, text) = p.try_as(&acme, &["projects", "create", "x", "--tenant", "default"]);
    assert!(!ok && text.contains("makes projects in it only"), "{text}");

    // The platform admin sees the tenant whole; nothing refused was left behind.
    let tenants = p.json(&["tenants", "list"]);
    let acme_view = tenants
        .as_array()
        .expect("tenants")
        .iter()
        .find(|t| t["name"] == "acme")
        .expect("acme")
        .clone();
    assert_eq!(acme_view["usage"]["apps"], 2, "{acme_view}");
    assert_eq!(
        acme_view["projects"],
        serde_json::json!(["blog", "docs", "shop"])
    );
    let all = p.json(&["apps"]).to_string();
    for refused in ["three", "four", "five"] {
        assert!(!all.contains(&format!("\"{refused}\"")), "{all}");
    }
    let audit = p.ok(&["audit", "--actor", "acme-admin"]);
    assert!(audit.contains("quota") || audit.contains("422"), "{audit}");
}

#[test]
fn a_rollback_that_would_pass_the_tenant_memory_quota_is_refused() {
    let p = Platform::start();
    p.ok(&["tenants", "create", "small", "--max-memory", "600M"]);
    p.ok(&["projects", "create", "front", "--tenant", "small"]);
    p.ok(&["projects", "create", "back", "--tenant", "small"]);
    let work = tempfile::tempdir().expect("tempdir");
    let app = |name: &str, memory: &str| {
        let dir = work.path().join(name);
        if !dir.exists() {
            copy_dir(&common::fixture("stateful"), &dir);
        }
        std::fs::write(
            dir.join("berth.toml"),
            format!("name = \"{name}\"\n[processes.web]\nmemory = \"{memory}\"\n"),
        )
        .expect("berth.toml");
        dir.display().to_string()
    };
    // web: v1 at 512 MiB, then v2 at 128 MiB; api: 384 MiB beside it (512 in all).
    p.ok(&["deploy", &app("web", "512M"), "--project", "front"]);
    p.ok(&["deploy", &app("web", "128M")]);
    p.ok(&["deploy", &app("api", "384M"), "--app", "back/api"]);
    // Back to v1 would make 896 MiB.
    let err = p.fails(&["rollback", "front/web"]);
    assert!(
        err.contains("tenant \"small\" would have 896 MiB of memory, the quota is 600 MiB"),
        "{err}"
    );
    let releases = p.json(&["releases", "web"]);
    assert_eq!(
        releases.as_array().expect("releases").len(),
        2,
        "{releases}"
    );
    assert_eq!(releases[0]["version"], 2, "{releases}");
    assert_eq!(releases[0]["status"], "active", "{releases}");
}
