//! End-to-end: an app's tests run in the freshly built image before it is rolled out. The
//! tests of a good release pass and it serves; failing tests, or tests that hang past their
//! time, fail the deploy with their output, and the serving release goes on untouched.
//! Tests see the release's environment but none of the app's secrets.

use crate::common;

use common::{copy_dir, Platform};

fn write(dir: &std::path::Path, procfile: &str, toml: &str) {
    std::fs::write(dir.join("Procfile"), procfile).expect("Procfile");
    std::fs::write(dir.join("berth.toml"), toml).expect("berth.toml");
}

#[test]
fn tests_gate_a_deploy_and_the_serving_release_stays_when_they_fail() {
    let p = Platform::start();
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("checked");
    copy_dir(&common::fixture("stateful"), &dir);
    let deploy = dir.display().to_string();
    p.ok(&["create", "checked", "--secret", "API_KEY=sk-live-123456789"]);

    // v1: a Procfile `test:` line that passes (and sees no secret).
    write(
        &dir,
        "web: python3 app.py\ntest: python3 -c \"import os; assert 'API_KEY' not in os.environ; assert os.environ['STAGE'] == 'one'; print('5 tests passed')\"\n",
        "[env]\nSTAGE = \"one\"\n",
    );
    let out = p.berth(&["deploy", &deploy]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("running the tests") && text.contains("5 tests passed"),
        "{text}"
    );
    assert_eq!(p.answer("checked", "/env?name=STAGE"), "one");

    // v2: berth.toml's test fails; v1 keeps serving, the output says why.
    write(
        &dir,
        "web: python3 app.py\n",
        "[env]\nSTAGE = \"two\"\n[deploy]\ntest = \"python3 -c \\\"import sys; print('1 failed, 4 passed'); sys.exit(3)\\\"\"\n",
    );
    let err = p.fails(&["deploy", &deploy]);
    assert!(
        err.contains("the tests failed (exit code 3)") && err.contains("1 failed, 4 passed"),
        "{err}"
    );
    assert_eq!(p.answer("checked", "/env?name=STAGE"), "one");
    let releases = p.json(&["releases", "checked"]);
    assert_eq!(releases[0]["status"], "failed", "{releases}");
    assert_eq!(releases[1]["status"], "active", "{releases}");
    let build_log = p.ok(&["logs", "checked", "--stream", "build"]);
    assert!(build_log.contains("1 failed, 4 passed"), "{build_log}");

    // v3: tests that hang are stopped at their time limit.
    write(
        &dir,
        "web: python3 app.py\ntest: sleep 120\n",
        "[env]\nSTAGE = \"three\"\n[deploy]\ntest_timeout = \"3s\"\n",
    );
    let err = p.fails(&["deploy", &deploy]);
    assert!(err.contains("the tests ran longer than 3s"), "{err}");
    assert_eq!(p.answer("checked", "/env?name=STAGE"), "one");
    let ps = p.json(&["ps", "checked"]);
    assert!(
        ps.as_array()
            .expect("instances")
            .iter()
            .all(|i| i["release"] == 1),
        "{ps}"
    );

    // A time limit past the maximum is refused before anything is built.
    write(
        &dir,
        "web: python3 app.py\n",
        "[deploy]\ntest = \"true\"\ntest_timeout = \"2h\"\n",
    );
    let err = p.fails(&["deploy", &deploy]);
    assert!(err.contains("deploy.test_timeout"), "{err}");
    assert_eq!(p.answer("checked", "/env?name=STAGE"), "one");
}
