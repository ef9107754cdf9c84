//! End-to-end: projects. An admin makes two projects, one with quotas, and a deployer token
//! limited to each. Each token deploys into its own project and cannot see or touch the
//! other's apps — asked about them, the API answers as if they did not exist — nor use
//! platform-wide endpoints; a deploy past a quota is refused with the limit named and
//! nothing is left behind.

use crate::common;

use common::{copy_dir, Platform};

fn out(o: &std::process::Output) -> (bool, String, String) {
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

#[test]
fn project_tokens_see_and_touch_only_their_project_within_its_quota() {
    let p = Platform::start();
    p.ok(&[
        "projects",
        "create",
        "shop",
        "--max-apps",
        "1",
        "--max-memory",
        "600M",
    ]);
    p.ok(&["projects", "create", "blog"]);
    let err = p.fails(&["projects", "create", "shop"]);
    assert!(err.contains("exists"), "{err}");
    let err = p.fails(&["projects", "create", "Not_A_Label"]);
    assert!(err.contains("project name"), "{err}");
    let err = p.fails(&[
        "tokens",
        "create",
        "x",
        "--role",
        "deployer",
        "--project",
        "nope",
    ]);
    assert!(err.contains("no project named"), "{err}");
    let shop = p
        .ok(&[
            "tokens",
            "create",
            "shop-ci",
            "--role",
            "deployer",
            "--project",
            "shop",
        ])
        .trim()
        .to_string();
    let blog = p
        .ok(&[
            "tokens",
            "create",
            "blog-ci",
            "--role",
            "deployer",
            "--project",
            "blog",
        ])
        .trim()
        .to_string();

    let work = tempfile::tempdir().expect("tempdir");
    let app_dir = |name: &str| {
        let dir = work.path().join(name);
        copy_dir(&common::fixture("stateful"), &dir);
        dir.display().to_string()
    };
    let cart = app_dir("cart");
    let (ok, _, err) = out(&p.as_token(&shop, &["deploy", &cart]));
    assert!(ok, "{err}");
    let posts = app_dir("posts");
    let (ok, _, err) = out(&p.as_token(&blog, &["deploy", &posts]));
    assert!(ok, "{err}");

    // Each sees its own.
    let apps = |token: &str| {
        let (ok, stdout, err) = out(&p.as_token(token, &["--json", "apps"]));
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(&stdout).expect("json");
        v.as_array()
            .expect("apps")
            .iter()
            .map(|a| {
                format!(
                    "{}/{}",
                    a["project"].as_str().unwrap_or(""),
                    a["name"].as_str().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(apps(&shop), ["shop/cart"]);
    assert_eq!(apps(&blog), ["blog/posts"]);
    let all = p.json(&["apps"]);
    assert_eq!(all.as_array().expect("apps").len(), 2, "{all}");

    // The other project's app does not exist for them, read or write — the same answer
    // as an app that does not exist at all.
    for args in [
        vec!["logs", "posts"],
        vec!["releases", "posts"],
        vec!["env", "set", "posts", "X=1"],
        vec!["rollback", "posts"],
        vec!["destroy", "posts"],
    ] {
        let (ok, _, err) = out(&p.as_token(&shop, &args));
        assert!(!ok, "{args:?}");
        assert!(
            err.contains("app \"posts\" does not exist"),
            "{args:?}: {err}"
        );
    }
    let (_, _, missing) = out(&p.as_token(&shop, &["logs", "nosuchapp"]));
    assert!(
        missing.contains("app \"nosuchapp\" does not exist"),
        "{missing}"
    );
    // A deploy under the other project's app name is refused too, and changes nothing.
    let (ok, _, err) = out(&p.as_token(&shop, &["deploy", &posts]));
    assert!(!ok && err.contains("does not exist"), "{err}");
    // Platform-wide endpoints are not theirs.
    let (ok, _, err) = out(&p.as_token(&shop, &["alerts"]));
    assert!(!ok && err.contains("platform-wide"), "{err}");
    let (ok, _, err) = out(&p.as_token(&shop, &["dora"]));
    assert!(!ok, "{err}");
    let (ok, _, err) = out(&p.as_token(&shop, &["dora", "cart"]));
    assert!(ok, "{err}");
    // Nor may they put apps in another project.
    let (ok, _, err) =
        out(&p.as_token(&shop, &["deploy", &app_dir("sneaky"), "--project", "blog"]));
    assert!(!ok && err.contains("limited to project"), "{err}");

    // Quotas: shop has room for one app.
    let (ok, _, err) = out(&p.as_token(&shop, &["deploy", &app_dir("second")]));
    assert!(!ok, "a second app in shop");
    assert!(
        err.contains("quota") && err.contains("2 apps, the quota is 1"),
        "{err}"
    );
    assert_eq!(apps(&shop), ["shop/cart"], "nothing left behind");
    // … and for 600 MiB of memory: two instances of 512 MiB do not fit.
    let cart_dir = work.path().join("cart");
    std::fs::write(
        cart_dir.join("berth.toml"),
        "[processes.web]\ninstances = 2\n",
    )
    .expect("toml");
    let (ok, _, err) = out(&p.as_token(&shop, &["deploy", &cart]));
    assert!(!ok, "two instances fit?");
    assert!(err.contains("MiB of memory"), "{err}");
    let releases = p.json(&["releases", "cart"]);
    assert_eq!(
        releases.as_array().expect("releases").len(),
        1,
        "{releases}"
    );
    assert_eq!(p.answer("cart", "/env?name=BERTH_APP"), "cart");

    // The projects as each sees them.
    let listed = p.json(&["projects", "list"]);
    let shop_row = listed
        .as_array()
        .expect("projects")
        .iter()
        .find(|r| r["name"] == "shop")
        .expect("shop")
        .clone();
    assert_eq!(shop_row["usage"]["apps"], 1);
    assert_eq!(shop_row["quota"]["max_apps"], 1);
    let (ok, stdout, err) = out(&p.as_token(&blog, &["--json", "projects", "list"]));
    assert!(ok, "{err}");
    assert!(
        stdout.contains("\"blog\"") && !stdout.contains("\"shop\""),
        "{stdout}"
    );
    // `berth create` puts an app in a project too, and a project token cannot create
    // elsewhere.
    p.ok(&["create", "drafts", "--project", "blog"]);
    assert!(
        apps(&blog).contains(&"blog/drafts".to_string()),
        "{:?}",
        apps(&blog)
    );
    let (ok, _, err) = out(&p.as_token(&shop, &["create", "elsewhere", "--project", "blog"]));
    assert!(!ok && err.contains("limited to project"), "{err}");
    // Making projects is an admin's.
    let (ok, _, err) = out(&p.as_token(&shop, &["projects", "create", "mine"]));
    assert!(!ok && err.contains("admin"), "{err}");
}
