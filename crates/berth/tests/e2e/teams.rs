//! End-to-end: tokens with roles and the audit log. An admin makes a deployer token (for CI)
//! and a viewer token; each can do what its role allows and is refused the rest with a
//! clear error; a revoked token stops working at once; and `berth audit` shows every call
//! that changed something or tried to — who, what, on what, from where, with which request
//! id, how it ended and which release and image it made — and nothing can delete it.

use crate::common;

use common::{copy_dir, Platform};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn roles_limit_tokens_and_the_audit_log_records_every_change() {
    let mut p = Platform::start();
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("shop");
    copy_dir(&common::fixture("stateful"), &dir);
    p.ok(&["deploy", &dir.display().to_string()]);

    // Tokens are shown once; the list never shows them.
    let ci = p
        .ok(&["tokens", "create", "ci", "--role", "deployer"])
        .trim()
        .to_string();
    let watcher = p
        .ok(&["tokens", "create", "watcher", "--role", "viewer"])
        .trim()
        .to_string();
    assert!(ci.starts_with("berth_") && ci.len() > 40, "{ci}");
    let err = p.fails(&["tokens", "create", "ci", "--role", "viewer"]);
    assert!(err.contains("exists"), "{err}");
    let err = p.fails(&["tokens", "create", "x", "--role", "root"]);
    assert!(err.contains("viewer, deployer or admin"), "{err}");
    let list = p.ok(&["--json", "tokens", "list"]);
    assert!(!list.contains(&ci) && !list.contains(&watcher), "{list}");
    let db = std::fs::read(p.data.path().join("berth.db")).expect("the state store");
    assert!(!db.is_empty());
    for file in ["berth.db", "berth.db-wal"] {
        let bytes = std::fs::read(p.data.path().join(file)).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(&ci[6..]),
            "a token is stored in the clear in {file}"
        );
    }

    // The viewer reads, and is refused changes with a reason.
    assert!(p.as_token(&watcher, &["apps"]).status.success());
    assert!(p.as_token(&watcher, &["logs", "shop"]).status.success());
    let denied = p.as_token(&watcher, &["env", "set", "shop", "WORD=viewer"]);
    assert!(!denied.status.success());
    assert!(
        stderr(&denied).contains("may not POST") && stderr(&denied).contains("deployer"),
        "{}",
        stderr(&denied)
    );
    for admin_only in [vec!["tokens", "list"], vec!["audit"]] {
        let o = p.as_token(&watcher, &admin_only);
        assert!(!o.status.success(), "{admin_only:?}");
    }

    // The deployer changes apps, not the platform's tokens.
    let changed = p.as_token(&ci, &["env", "set", "shop", "WORD=from-ci"]);
    assert!(changed.status.success(), "{}", stderr(&changed));
    assert_eq!(p.answer("shop", "/env?name=WORD"), "from-ci");
    let o = p.as_token(&ci, &["tokens", "create", "escalate", "--role", "admin"]);
    assert!(
        !o.status.success() && stderr(&o).contains("may not"),
        "{}",
        stderr(&o)
    );
    let releases = p.json(&["releases", "shop"]);
    assert!(
        releases
            .as_array()
            .expect("releases")
            .iter()
            .any(|r| r["actor"].as_str().is_some_and(|a| a.starts_with("ci"))),
        "the release names the token that made it: {releases}"
    );

    // A request id given by the client comes back and is logged.
    let (status, answer) = common::curl(
        &p,
        &ci,
        "POST",
        "/v1/apps/shop/rollback",
        &[
            "-H",
            "X-Request-Id: rollback-42",
            "-H",
            "Content-Type: application/json",
            "-d",
            "{}",
        ],
    );
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("x-request-id: rollback-42"),
        "{answer}"
    );
    assert!(answer.contains("\"done\""), "{answer}");

    // Revoked: refused at once, and the attempt is on record.
    p.ok(&["tokens", "revoke", "ci"]);
    let after = p.as_token(&ci, &["env", "set", "shop", "WORD=late"]);
    assert!(!after.status.success());
    assert!(stderr(&after).contains("revoked"), "{}", stderr(&after));

    // The log: every change and every refused attempt, with its refs.
    let audit = p.json(&["audit"]);
    let entries = audit.as_array().expect("entries");
    let find = |actor: &str, action: &str, outcome: &str| {
        entries
            .iter()
            .find(|e| e["actor"] == actor && e["action"] == action && e["outcome"] == outcome)
            .unwrap_or_else(|| panic!("no {actor} {action} {outcome} in {audit:#}"))
            .clone()
    };
    let env = find("ci", "POST /v1/apps/{app}/env", "succeeded");
    assert_eq!(env["target"], "shop");
    assert_eq!(env["refs"]["release"], 2);
    assert!(
        env["refs"]["image"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")),
        "{env}"
    );
    assert_eq!(env["source"], "127.0.0.1");
    assert!(
        env["client"].as_str().is_some_and(|c| !c.is_empty()),
        "{env}"
    );
    let rollback = find("ci", "POST /v1/apps/{app}/rollback", "succeeded");
    assert_eq!(rollback["request_id"], "rollback-42");
    assert_eq!(rollback["refs"]["release"], 3);
    let refused = find("watcher", "POST /v1/apps/{app}/env", "denied");
    assert_eq!(refused["status"], 403);
    let revoked = find("ci", "POST /v1/apps/{app}/env", "denied");
    assert_eq!(revoked["status"], 401);
    find("ci", "POST /v1/tokens", "denied");
    assert!(
        entries.iter().any(|e| e["actor"] == "admin"
            && e["action"] == "POST /v1/tokens"
            && e["outcome"] == "ok"
            && e["target"] == "ci"),
        "{audit:#}"
    );
    find("admin", "DELETE /v1/tokens/{name}", "ok");
    let bad = find("admin", "POST /v1/tokens", "refused");
    assert!(
        bad["detail"]
            .as_str()
            .is_some_and(|d| d.contains("exists") || d.contains("role")),
        "{bad}"
    );
    assert!(
        entries
            .iter()
            .all(|e| e["request_id"].as_str().is_some_and(|r| !r.is_empty())),
        "{audit:#}"
    );
    // Reads are not logged.
    assert!(!entries
        .iter()
        .any(|e| e["action"].as_str().is_some_and(|a| a.starts_with("GET"))));

    // Filters.
    let by_ci = p.json(&["audit", "--actor", "ci"]);
    assert!(by_ci
        .as_array()
        .expect("entries")
        .iter()
        .all(|e| e["actor"] == "ci"));
    assert!(p.ok(&["audit", "--app", "shop"]).contains("rollback-42"));
    let err = p.fails(&["audit", "--since", "yesterday-ish"]);
    assert!(err.contains("since"), "{err}");

    // Nothing deletes it, and it outlives a crash of the control plane.
    let token = std::fs::read_to_string(p.data.path().join("api-token")).expect("token");
    let (status, _) = common::curl(&p, token.trim(), "DELETE", "/v1/audit", &[]);
    assert_eq!(status, 405);
    let before = entries.len();
    p.kill_control_plane();
    p.up();
    let again = p.json(&["audit", "-n", "10000"]);
    assert!(again.as_array().expect("entries").len() >= before);
}
