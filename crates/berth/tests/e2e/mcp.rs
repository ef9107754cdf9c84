//! End-to-end: an AI agent drives berth over MCP. With a deployer token of its own, an MCP
//! client (the SDK's, and the MCP Inspector's CLI — a client berth does not implement)
//! lists the tools, deploys a directory, changes env and secrets, reads logs and rolls
//! back; errors come back with the API's stable codes; a viewer token is refused changes;
//! secret values never come out; and the audit log shows the agent's calls as client `mcp`.

use crate::common;

use common::{copy_dir, Platform};
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::TokioChildProcess;
use rmcp::ServiceExt;
use serde_json::{json, Value};

/// Where `scripts/install-deps` puts the MCP Inspector.
const INSPECTOR: &str = "/var/lib/berth-tools/inspector/node_modules/.bin/mcp-inspector";

async fn connect(p: &Platform, token: &str) -> RunningService<RoleClient, ()> {
    let mut cmd = tokio::process::Command::new(common::berth_bin());
    cmd.arg("--data-dir")
        .arg(p.data.path())
        .arg("mcp")
        .env_remove("BERTH_API_URL")
        .env("BERTH_TOKEN", token);
    ().serve(TokioChildProcess::new(cmd).expect("spawn berth mcp"))
        .await
        .expect("MCP handshake")
}

async fn call(client: &RunningService<RoleClient, ()>, tool: &str, args: Value) -> CallToolResult {
    let Value::Object(args) = args else {
        panic!("arguments must be an object")
    };
    client
        .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args))
        .await
        .unwrap_or_else(|e| panic!("{tool}: {e}"))
}

fn ok(r: &CallToolResult) -> Value {
    assert_ne!(r.is_error, Some(true), "{r:?}");
    r.structured_content.clone().expect("structured content")
}

fn err(r: &CallToolResult) -> Value {
    assert_eq!(r.is_error, Some(true), "{r:?}");
    r.structured_content.clone().expect("structured error")
}

#[test]
fn an_agent_deploys_reads_logs_and_rolls_back_over_mcp() {
    let p = Platform::start();
    let agent = p
        .ok(&["tokens", "create", "agent", "--role", "deployer"])
        .trim()
        .to_string();
    let peek = p
        .ok(&["tokens", "create", "peek", "--role", "viewer"])
        .trim()
        .to_string();
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("bot");
    copy_dir(&common::fixture("stateful"), &dir);
    let dir_text = dir.display().to_string();
    let rt = tokio::runtime::Runtime::new().expect("runtime");

    rt.block_on(async {
        let client = connect(&p, &agent).await;
        let tools = client.list_all_tools().await.expect("tools");
        let names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
        for want in [
            "list_apps",
            "deploy",
            "logs",
            "rollback",
            "scale",
            "env_change",
            "secrets_list",
            "dora",
            "slo",
        ] {
            assert!(names.iter().any(|n| n == want), "no {want} in {names:?}");
        }
        let deploy = tools.iter().find(|t| t.name == "deploy").expect("deploy");
        assert!(
            deploy.input_schema["properties"]["path"].is_object(),
            "{:?}",
            deploy.input_schema
        );

        let done = ok(&call(&client, "deploy", json!({ "path": dir_text })).await);
        assert_eq!(done["release"], 1, "{done}");
        assert_eq!(done["app"], "bot");
        assert!(
            done["url"].as_str().is_some_and(|u| u.contains("bot")),
            "{done}"
        );

        let env = ok(&call(
            &client,
            "env_change",
            json!({ "app": "bot", "set": { "WORD": "from-agent" } }),
        )
        .await);
        assert_eq!(env["release"], 2, "{env}");
        let secret = ok(&call(
            &client,
            "secrets_change",
            json!({ "app": "bot", "set": { "API_KEY": "sk-agent-0000000000" } }),
        )
        .await);
        assert_eq!(secret["release"], 3, "{secret}");
        let listed = call(&client, "secrets_list", json!({ "app": "bot" })).await;
        let listed_text = format!("{listed:?}");
        assert!(
            listed_text.contains("API_KEY") && !listed_text.contains("sk-agent-0000000000"),
            "{listed_text}"
        );

        let apps = ok(&call(&client, "list_apps", json!({})).await);
        assert!(apps.to_string().contains("\"bot\""), "{apps}");
        // This platform runs its apps itself: no cluster to compare with, and it says so.
        let drift = err(&call(&client, "cluster_drift", json!({ "app": "bot" })).await);
        assert!(
            drift.to_string().contains("runs its apps itself"),
            "{drift}"
        );

        // Each app's spec is a resource: the serving release's processes and environment,
        // its secrets by name only.
        let resources = client.list_all_resources().await.expect("resources");
        assert!(
            resources.iter().any(|r| r.uri == "berth://apps/bot"),
            "{resources:?}"
        );
        let read = client
            .read_resource(rmcp::model::ReadResourceRequestParams::new(
                "berth://apps/bot",
            ))
            .await
            .expect("read");
        let text = match &read.contents[0] {
            rmcp::model::ResourceContents::TextResourceContents { text, .. } => text.clone(),
            other => panic!("{other:?}"),
        };
        let spec: Value = serde_json::from_str(&text).expect("spec JSON");
        assert_eq!(spec["release"]["version"], 3, "{spec}");
        assert_eq!(spec["release"]["env"]["WORD"], "from-agent", "{spec}");
        assert!(spec["release"]["processes"]["web"].is_object(), "{spec}");
        assert_eq!(spec["secrets"], json!(["API_KEY"]), "{spec}");
        assert!(!text.contains("sk-agent-0000000000"), "{text}");
        let unknown = client
            .read_resource(rmcp::model::ReadResourceRequestParams::new(
                "berth://apps/nope",
            ))
            .await;
        assert!(
            unknown
                .as_ref()
                .is_err_and(|e| e.to_string().contains("does not exist")),
            "{unknown:?}"
        );

        // Errors an agent can act on: stable codes and hints.
        let missing = err(&call(&client, "rollback", json!({ "app": "nope" })).await);
        assert_eq!(missing["code"], "app_not_found", "{missing}");
        let bad_regex = err(&call(&client, "logs", json!({ "app": "bot", "grep": "([" })).await);
        assert!(
            bad_regex["message"]
                .as_str()
                .is_some_and(|m| m.contains("regular expression")),
            "{bad_regex}"
        );
        let no_dir = err(&call(&client, "deploy", json!({ "path": "/nonexistent/dir" })).await);
        assert!(
            no_dir["message"]
                .as_str()
                .is_some_and(|m| m.contains("/nonexistent/dir")),
            "{no_dir}"
        );
        let unknown = client
            .call_tool(CallToolRequestParams::new("format_disk"))
            .await;
        assert!(
            unknown.is_err() || unknown.as_ref().is_ok_and(|r| r.is_error == Some(true)),
            "{unknown:?}"
        );
        let no_args = client
            .call_tool(CallToolRequestParams::new("rollback"))
            .await;
        assert!(
            no_args.is_err() || no_args.as_ref().is_ok_and(|r| r.is_error == Some(true)),
            "{no_args:?}"
        );
        client.cancel().await.expect("close");
    });

    // What the agent did is live.
    assert_eq!(p.answer("bot", "/env?name=WORD"), "from-agent");
    assert_eq!(p.get("bot", "/log?name=WORD").0, 200);

    rt.block_on(async {
        let client = connect(&p, &agent).await;
        let mut found = Value::Null;
        for _ in 0..60 {
            found = ok(&call(
                &client,
                "logs",
                json!({ "app": "bot", "grep": "secret is from-agent" }),
            )
            .await);
            if found["lines"].as_array().is_some_and(|l| !l.is_empty()) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        let line = &found["lines"][0];
        assert_eq!(line["line"], "the secret is from-agent", "{found}");
        assert_eq!(line["release"], 3);
        let back = ok(&call(&client, "rollback", json!({ "app": "bot", "to": 1 })).await);
        assert_eq!(back["release"], 4, "{back}");
        client.cancel().await.expect("close");

        // A viewer's agent reads but changes nothing.
        let viewer = connect(&p, &peek).await;
        assert!(
            ok(&call(&viewer, "releases", json!({ "app": "bot" })).await)
                .to_string()
                .contains("rollback to v1")
        );
        let refused = err(&call(
            &viewer,
            "env_change",
            json!({ "app": "bot", "set": { "WORD": "viewer" } }),
        )
        .await);
        assert_eq!(refused["code"], "forbidden", "{refused}");
        viewer.cancel().await.expect("close");
    });
    assert_eq!(
        p.answer("bot", "/env?name=WORD"),
        "<unset>",
        "rolled back to v1"
    );

    // The audit log names the agent's token and its MCP client.
    let audit = p.json(&["audit", "--actor", "agent"]);
    let entries = audit.as_array().expect("entries");
    for action in [
        "POST /v1/apps/{app}/deploys",
        "POST /v1/apps/{app}/env",
        "POST /v1/apps/{app}/rollback",
    ] {
        assert!(
            entries.iter().any(|e| e["action"] == action
                && e["client"].as_str().is_some_and(|c| c.starts_with("mcp"))
                && e["outcome"] == "succeeded"),
            "no audited {action} by the agent over MCP: {audit:#}"
        );
    }
    let peeked = p.json(&["audit", "--actor", "peek"]);
    assert!(peeked.to_string().contains("denied"), "{peeked}");

    // The MCP Inspector's CLI, a client berth does not implement, sees the same server.
    assert!(
        std::path::Path::new(INSPECTOR).exists(),
        "the MCP Inspector is not installed at {INSPECTOR}; run scripts/install-deps"
    );
    let inspector = |args: &[&str]| {
        let out = std::process::Command::new(INSPECTOR)
            .arg("--cli")
            .args(["-e", &format!("BERTH_TOKEN={agent}")])
            .arg(common::berth_bin())
            .arg("--data-dir")
            .arg(p.data.path())
            .arg("mcp")
            .args(args)
            .output()
            .expect("run the MCP Inspector");
        assert!(out.status.success(), "inspector {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let listed = inspector(&["--method", "tools/list"]);
    assert!(
        listed.contains("\"deploy\"") && listed.contains("\"rollback\""),
        "{listed}"
    );
    let apps = inspector(&["--method", "tools/call", "--tool-name", "list_apps"]);
    assert!(apps.contains("bot"), "{apps}");
    let spec = inspector(&["--method", "resources/read", "--uri", "berth://apps/bot"]);
    assert!(
        spec.contains("berth://apps/bot")
            && spec.contains("processes")
            && !spec.contains("sk-agent"),
        "{spec}"
    );
    let logs = inspector(&[
        "--method",
        "tools/call",
        "--tool-name",
        "logs",
        "--tool-arg",
        "app=bot",
        "--tool-arg",
        "grep=from-agent",
    ]);
    assert!(logs.contains("the secret is from-agent"), "{logs}");

    // Over streamable HTTP at /mcp on the API port, with the token in the header: the
    // source comes as an archive (a path on the server is refused), and no token, no talk.
    let url = format!("http://127.0.0.1:{}/mcp", p.api_port);
    let over_http = |token: &str, args: &[&str]| {
        let out = std::process::Command::new(INSPECTOR)
            .arg("--cli")
            .arg(&url)
            .args(["--transport", "http", "--header"])
            .arg(format!("Authorization: Bearer {token}"))
            .args(args)
            .output()
            .expect("run the MCP Inspector");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok_list, listed) = over_http(&agent, &["--method", "tools/list"]);
    assert!(ok_list && listed.contains("\"deploy\""), "{listed}");
    let archive = work.path().join("bot.tar.gz");
    common::tar_gz(&dir, &archive);
    use base64::Engine as _;
    let b64 =
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(&archive).expect("archive"));
    let (_, deployed) = over_http(
        &agent,
        &[
            "--method",
            "tools/call",
            "--tool-name",
            "deploy",
            "--tool-arg",
            "app=remote",
            "--tool-arg",
            &format!("archive_base64={b64}"),
        ],
    );
    assert!(
        deployed.contains("\"release\": 1") || deployed.contains("\"release\":1"),
        "{deployed}"
    );
    assert_eq!(p.answer("remote", "/env?name=BERTH_APP"), "remote");
    let (_, by_path) = over_http(
        &agent,
        &[
            "--method",
            "tools/call",
            "--tool-name",
            "deploy",
            "--tool-arg",
            "path=/etc",
            "--tool-arg",
            "app=etc",
        ],
    );
    assert!(by_path.contains("path_not_allowed"), "{by_path}");
    let (_, viewer_try) = over_http(
        &peek,
        &[
            "--method",
            "tools/call",
            "--tool-name",
            "rollback",
            "--tool-arg",
            "app=remote",
        ],
    );
    assert!(viewer_try.contains("forbidden"), "{viewer_try}");
    let (anonymous, said) = over_http("not-a-token", &["--method", "tools/list"]);
    assert!(!anonymous, "{said}");
    let audit = p.json(&["audit", "--app", "remote"]);
    assert!(
        audit
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["actor"] == "agent"
                && e["outcome"] == "succeeded"
                && e["client"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("mcp-http"))),
        "{audit:#}"
    );
}

#[test]
fn an_agent_deploys_a_commit_of_a_git_repository_and_nothing_but_remote_ones() {
    let p = Platform::start();
    let agent = p
        .ok(&["tokens", "create", "agent", "--role", "deployer"])
        .trim()
        .to_string();
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    copy_dir(&common::fixture("stateful"), &src);
    let sha = common::git_commit_all(&src);
    let repos = work.path().join("repos");
    std::fs::create_dir_all(&repos).expect("repos");
    let cloned = std::process::Command::new("git")
        .args(["clone", "-q", "--bare"])
        .arg(&src)
        .arg(repos.join("shopfront.git"))
        .status()
        .expect("git clone");
    assert!(cloned.success());
    let daemon = common::git_daemon(&repos);
    let url = format!("git://127.0.0.1:{}/shopfront.git", daemon.port);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = connect(&p, &agent).await;
        // The default branch, named after the repository; the release records the commit.
        let done = ok(&call(&client, "deploy", json!({ "git_url": url })).await);
        assert_eq!(done["release"], 1, "{done}");
        assert_eq!(done["app"], "shopfront", "{done}");
        let releases = p.ok(&["--json", "releases", "shopfront"]);
        assert!(releases.contains(&sha), "{releases}");
        // The same commit by its id.
        let again = ok(&call(
            &client,
            "deploy",
            json!({ "git_url": url, "git_ref": sha, "app": "shopfront" }),
        )
        .await);
        assert_eq!(again["release"], 2, "{again}");
        // What does not exist, and what is not a remote repository: refused, nothing made.
        let missing = err(&call(
            &client,
            "deploy",
            json!({ "git_url": url, "git_ref": "no-such-branch" }),
        )
        .await);
        assert_eq!(missing["code"], "git_fetch_failed", "{missing}");
        for bad in [
            format!("file://{}", repos.join("shopfront.git").display()),
            repos.join("shopfront.git").display().to_string(),
            "ext::sh -c touch% /tmp/berth-pwned".to_string(),
        ] {
            let refused =
                err(&call(&client, "deploy", json!({ "git_url": bad, "app": "local" })).await);
            assert_eq!(refused["code"], "invalid_git_url", "{bad}: {refused}");
        }
        let bad_ref = err(&call(
            &client,
            "deploy",
            json!({ "git_url": url, "git_ref": "--upload-pack=touch /tmp/berth-pwned" }),
        )
        .await);
        assert_eq!(bad_ref["code"], "invalid_git_ref", "{bad_ref}");
        client.cancel().await.expect("close");
    });
    assert!(!std::path::Path::new("/tmp/berth-pwned").exists());
    let apps = p.json(&["apps"]).to_string();
    assert!(!apps.contains("\"local\""), "{apps}");
    assert_eq!(p.answer("shopfront", "/env?name=BERTH_APP"), "shopfront");
}
