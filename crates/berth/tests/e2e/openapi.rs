//! The API's OpenAPI document, tested against the live API by schemathesis: a real
//! property-based client that reads `/openapi.json`, generates requests (valid and invalid)
//! for every operation and checks that no answer is a server error, and that every status,
//! media type and body is the one the document promises.

use crate::common;

use common::{admin_token, curl, Platform};
use std::process::Command;

fn schemathesis() -> String {
    let tools = std::env::var("BERTH_TOOLS_DIR").unwrap_or_else(|_| "/var/lib/berth-tools".into());
    let bin = format!("{tools}/schemathesis/bin/schemathesis");
    assert!(
        std::path::Path::new(&bin).exists(),
        "{bin} is missing: run scripts/install-deps"
    );
    bin
}

#[test]
fn the_openapi_document_is_public_and_the_live_api_keeps_its_promises() {
    let p = Platform::start();
    let token = admin_token(&p);

    // The document needs no token and is OpenAPI 3.1 with the bearer scheme.
    let (status, text) = curl(&p, "", "GET", "/openapi.json", &[]);
    assert_eq!(status, 200, "{text}");
    let body = text.split("\r\n\r\n").nth(1).expect("body");
    let doc: serde_json::Value = serde_json::from_str(body).expect("JSON");
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["token"]["scheme"],
        "bearer"
    );
    let paths = doc["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/v1/apps", "post"),
        ("/v1/apps/{app}/deploys", "post"),
        ("/v1/apps/{app}/rollback", "post"),
        ("/v1/apps/{app}/logs", "get"),
        ("/v1/tokens", "post"),
        ("/v1/audit", "get"),
        ("/v1/projects", "post"),
    ] {
        let op = &paths[path][method];
        assert!(op.is_object(), "{method} {path} is not documented");
        assert!(op["responses"]["401"].is_object(), "{method} {path}: 401");
    }
    // Changes take an Idempotency-Key.
    let create = &paths["/v1/apps"]["post"]["parameters"];
    assert!(
        create
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["name"] == "Idempotency-Key")),
        "{create}"
    );

    // An app for the generated requests to find, beside the ones they make themselves.
    p.ok(&["create", "known"]);

    // schemathesis against the live API, bounded in examples and time. Left out: platform
    // backups (their destination is any directory or S3 URL the caller names, which a
    // fuzzer must not choose), image deploys and git connections (likewise any registry or
    // repository) and the live tail (a stream that stays open by design).
    let report = tempfile::tempdir().expect("tempdir");
    let out = Command::new(schemathesis())
        .arg("run")
        .arg(format!("http://127.0.0.1:{}/openapi.json", p.api_port))
        .args(["--header"])
        .arg(format!("Authorization: Bearer {token}"))
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "15",
            "--request-timeout",
            "20",
            "--workers",
            "1",
            "--seed",
            "20261129",
            "--exclude-operation-id",
            "backup_create",
            "--exclude-operation-id",
            "log_events",
            // It pulls whatever image the generated reference names, from registries
            // beyond this machine (Docker Hub for a bare name): tests/images.rs covers it.
            "--exclude-operation-id",
            "deploy_image",
            // It reads whatever repository the generated URL names (tests/git_connect.rs
            // covers it with a repository on loopback).
            "--exclude-operation-id",
            "git_connect",
            "--exclude-path-regex",
            "/logs$",
            "--no-color",
        ])
        .current_dir(report.path())
        .output()
        .expect("schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // What it covered, in the test's output.
    let summary: Vec<&str> = stdout.lines().rev().take(25).collect();
    eprintln!(
        "{}",
        summary.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("passed") && !stdout.contains("No operations"),
        "{stdout}"
    );

    // The platform is still whole: the app it had is there and the API answers.
    let apps = p.json(&["apps"]);
    assert!(
        apps.as_array()
            .expect("apps")
            .iter()
            .any(|a| a["name"] == "known"),
        "{apps}"
    );
}
