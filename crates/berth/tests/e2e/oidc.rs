//! End-to-end: people sign in with an OpenID Connect provider. A real provider runs on
//! loopback (`oidc-provider-mock` from PyPI: discovery, authorization code with PKCE, RS256
//! ID tokens, JWKS). `berth login` sends "the browser" (this test, speaking HTTP) to the
//! provider, gets the code back on its loopback listener and keeps the ID token; the
//! platform then takes that person for the role an admin gave their identity — none until
//! given, none after it is taken away. A tampered token or one signed with a shared secret
//! is refused; every change the person makes is audited under their identity.

use crate::common;

use common::{free_port, Platform};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The provider, stopped when dropped.
struct Provider {
    child: Child,
    url: String,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn provider() -> Provider {
    let tools = std::env::var("BERTH_TOOLS_DIR").unwrap_or_else(|_| "/var/lib/berth-tools".into());
    let bin = format!("{tools}/oidc/bin/oidc-provider-mock");
    assert!(
        std::path::Path::new(&bin).exists(),
        "{bin} is missing: run scripts/install-deps"
    );
    let port = free_port();
    let child = Command::new(bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the OIDC provider");
    let url = format!("http://127.0.0.1:{port}");
    let p = Provider { child, url };
    let discovery = format!("{}/.well-known/openid-configuration", p.url);
    let started = Instant::now();
    while !curl(&["-sf", &discovery]).0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the OIDC provider did not start"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    p
}

fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl").args(args).output().expect("curl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

/// berth registered at the provider as a client with a secret, whose browser comes back
/// to `http://127.0.0.1:PORT/callback` exactly: its client id, its secret and that port.
fn register(idp: &Provider) -> (String, String, u16) {
    let port = free_port();
    let (id, secret) = register_at(idp, &format!("http://127.0.0.1:{port}/callback"));
    (id, secret, port)
}

/// berth registered at the provider as a client with a secret whose browser comes back to
/// `redirect`: its client id and secret.
fn register_at(idp: &Provider, redirect: &str) -> (String, String) {
    let body = serde_json::json!({
        "redirect_uris": [redirect],
        "token_endpoint_auth_method": "client_secret_basic",
    });
    let (ok, text) = curl(&[
        "-sf",
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        &body.to_string(),
        &format!("{}/oauth2/clients", idp.url),
    ]);
    assert!(ok, "registering the client: {text}");
    let v: serde_json::Value = serde_json::from_str(&text).expect("client JSON");
    (
        v["client_id"].as_str().expect("client_id").to_string(),
        v["client_secret"]
            .as_str()
            .expect("client_secret")
            .to_string(),
    )
}

/// `berth login --no-browser`, with this test as the browser signing in as `who`.
fn sign_in(p: &Platform, port: u16, who: &str) -> (bool, String) {
    let mut cmd = p.command(common::berth_bin());
    cmd.arg("--data-dir")
        .arg(p.data.path())
        .args([
            "login",
            "--no-browser",
            "--callback-port",
            &port.to_string(),
        ])
        .env_remove("BERTH_TOKEN")
        .env_remove("BERTH_API_URL")
        .env("XDG_CONFIG_HOME", p.data.path().join("config"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("berth login");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("berth login printed no address")
            .expect("line");
        if let Some(u) = line.trim().strip_prefix("http") {
            break format!("http{u}");
        }
    };
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    // The provider's sign-in form, then its answer: a redirect back to berth's listener.
    let (ok, form) = curl(&["-sf", &url]);
    assert!(ok && form.contains("<form"), "{form}");
    let (ok, back) = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{redirect_url}",
        "-X",
        "POST",
        "--data-urlencode",
        &format!("sub={who}"),
        &url,
    ]);
    assert!(ok && back.starts_with("http://127.0.0.1:"), "{back}");
    let (ok, page) = curl(&["-s", &back]);
    assert!(ok && page.contains("Signed in"), "{page}");
    let out = child.wait_with_output().expect("berth login");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            rest.join("\n")
        ),
    )
}

/// The person's saved ID token.
fn saved_token(p: &Platform) -> String {
    let text = std::fs::read_to_string(p.data.path().join("config/berth/credentials.json"))
        .expect("credentials");
    let all: serde_json::Value = serde_json::from_str(&text).expect("credentials JSON");
    let (_, login) = all
        .as_object()
        .and_then(|m| m.iter().next())
        .expect("one sign-in");
    login["id_token"].as_str().expect("id_token").to_string()
}

fn as_person(p: &Platform, args: &[&str]) -> (bool, String) {
    let o = p.berth_env(args, &[]);
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

#[test]
fn people_sign_in_with_oidc_and_act_with_the_role_they_were_given() {
    let idp = provider();
    let (client_id, secret, port) = register(&idp);
    let secret_file = tempfile::NamedTempFile::new().expect("secret file");
    std::fs::write(secret_file.path(), &secret).expect("secret");
    let p = Platform::start_with(&[
        "--oidc-issuer",
        &idp.url,
        "--oidc-client-id",
        &client_id,
        "--oidc-client-secret-file",
        &secret_file.path().display().to_string(),
    ]);
    // The secret stays on the platform: how to sign in says nothing of it.
    let (_, info) = curl(&["-s", &format!("http://127.0.0.1:{}/v1/login", p.api_port)]);
    assert!(
        info.contains(&client_id) && !info.contains(&secret),
        "{info}"
    );
    p.ok(&["create", "shop"]);

    // Signed in, but nobody gave alice a role yet.
    let (ok, text) = sign_in(&p, port, "alice@example.com");
    assert!(!ok, "{text}");
    assert!(
        text.contains("signed in as alice@example.com") && text.contains("no role"),
        "{text}"
    );
    let credentials = p.data.path().join("config/berth/credentials.json");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&credentials)
            .expect("credentials")
            .permissions(),
    );
    assert_eq!(mode & 0o077, 0, "credentials readable by others: {mode:o}");
    let (ok, text) = as_person(&p, &["apps"]);
    assert!(
        !ok && text.contains("berth people add alice@example.com"),
        "{text}"
    );

    // A viewer: reads, cannot change. (The admin passes its token: on this machine the
    // CLI now acts as alice.)
    let token = saved_token(&p);
    let admin = common::admin_token(&p);
    let as_admin = |args: &[&str]| {
        let o = p.berth_env(args, &[("BERTH_TOKEN", admin.as_str())]);
        assert!(o.status.success(), "{args:?}: {o:?}");
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    as_admin(&["people", "add", "alice@example.com", "--role", "viewer"]);
    let (ok, text) = as_person(&p, &["whoami"]);
    assert!(
        ok && text.contains("alice@example.com (viewer, platform, by oidc)"),
        "{text}"
    );
    let (ok, text) = as_person(&p, &["apps"]);
    assert!(ok && text.contains("shop"), "{text}");
    let (ok, text) = as_person(&p, &["destroy", "shop"]);
    assert!(
        !ok && text.contains("alice@example.com (viewer) may not DELETE")
            && text.contains("berth people add alice@example.com --role deployer"),
        "{text}"
    );

    // A deployer: changes, audited under the person's identity.
    as_admin(&["people", "add", "alice@example.com", "--role", "deployer"]);
    let (ok, text) = as_person(&p, &["create", "blog"]);
    assert!(ok, "{text}");
    let audit = as_admin(&["audit", "--actor", "alice@example.com"]);
    assert!(
        audit.contains("POST /v1/apps") && audit.contains("blog"),
        "{audit}"
    );

    // Tampered with, or signed with a shared secret: refused.
    let parts: Vec<&str> = token.split('.').collect();
    let forged_claims = {
        use base64::Engine as _;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut claims: serde_json::Value =
            serde_json::from_slice(&engine.decode(parts[1]).expect("claims")).expect("JSON");
        claims["email"] = "root@example.com".into();
        claims["sub"] = "root@example.com".into();
        engine.encode(claims.to_string())
    };
    let tampered = format!("{}.{forged_claims}.{}", parts[0], parts[2]);
    let (status, text) = common::curl(&p, &tampered, "GET", "/v1/apps", &[]);
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("invalid_token"), "{text}");
    let hs256 = {
        use base64::Engine as _;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{forged_claims}.{}",
            engine.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
            engine.encode("not-a-signature")
        )
    };
    let (status, text) = common::curl(&p, &hs256, "GET", "/v1/apps", &[]);
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("public-key"), "{text}");

    // Role taken away: the sign-in no longer gets anywhere; logout forgets it.
    as_admin(&["people", "remove", "alice@example.com"]);
    let (ok, text) = as_person(&p, &["apps"]);
    assert!(!ok && text.contains("no role"), "{text}");
    let (ok, text) = as_person(&p, &["logout"]);
    assert!(ok && text.contains("signed out"), "{text}");
    let (ok, text) = as_person(&p, &["whoami"]);
    assert!(
        ok && text.contains("admin (admin, platform, by token)"),
        "{text}"
    );

    // Someone whose provider account carries alice's address, unverified (the claim
    // missing, or false), signs in as themselves — never as alice, who has a role again.
    as_admin(&["people", "add", "alice@example.com", "--role", "admin"]);
    for (sub, claims) in [
        ("mallory", r#"{"email": "alice@example.com"}"#),
        (
            "mallet",
            r#"{"email": "alice@example.com", "email_verified": false}"#,
        ),
    ] {
        let (ok, _) = curl(&[
            "-sf",
            "-X",
            "PUT",
            "-H",
            "content-type: application/json",
            "--data",
            claims,
            &format!("{}/users/{sub}", idp.url),
        ]);
        assert!(ok, "the provider took {sub}'s claims");
        let (ok, text) = sign_in(&p, port, sub);
        assert!(
            !ok && text.contains(&format!("signed in as {sub}")) && text.contains("no role"),
            "{text}"
        );
        let (ok, text) = as_person(&p, &["apps"]);
        assert!(!ok && !text.contains("shop"), "{text}");
    }
}

/// The values of header `name` in a response's head (names compared without case).
fn header_values(head: &str, name: &str) -> Vec<String> {
    head.lines()
        .filter_map(|l| l.split_once(": "))
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

/// The value of cookie `name` a response sets, if any.
fn set_cookie(head: &str, name: &str) -> Option<String> {
    header_values(head, "set-cookie")
        .iter()
        .filter_map(|c| c.strip_prefix(&format!("{name}=")))
        .map(|c| c.split(';').next().unwrap_or_default().to_string())
        .find(|v| !v.is_empty())
}

/// A GET with headers shown: (status, headers lowercased, body).
fn get(url: &str, cookies: &str) -> (u16, String, String) {
    let out = Command::new("curl")
        .args(["-s", "-D", "-", "-H", &format!("Cookie: {cookies}"), url])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head.to_string(), body.to_string())
}

#[test]
fn people_sign_in_to_the_dashboard_with_the_provider() {
    let idp = provider();
    let mut p = Platform::unstarted(None, &[], &[]);
    // berth's client, whose browser comes back to the dashboard on the API port.
    let (client_id, client_secret) = register_at(
        &idp,
        &format!("http://127.0.0.1:{}/ui/login/callback", p.api_port),
    );
    let secret_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret_file.path(), &client_secret).unwrap();
    p.extra.extend([
        "--oidc-issuer".to_string(),
        idp.url.clone(),
        "--oidc-client-id".into(),
        client_id,
        "--oidc-client-secret-file".into(),
        secret_file.path().display().to_string(),
    ]);
    p.up();
    p.ok(&["create", "shop"]);
    let admin = common::admin_token(&p);
    p.berth_env(
        &["people", "add", "carol@example.com", "--role", "viewer"],
        &[("BERTH_TOKEN", admin.as_str())],
    );
    let base = format!("http://127.0.0.1:{}", p.api_port);

    // The sign-in page offers the provider.
    let (_, _, page) = get(&format!("{base}/ui/login"), "");
    assert!(page.contains("/ui/login/oidc"), "{page}");

    // Off to the provider with a PKCE challenge; the state waits in a cookie.
    let (code, head, _) = get(&format!("{base}/ui/login/oidc"), "");
    assert_eq!(code, 303, "{head}");
    let pending = set_cookie(&head, "berth_oidc").expect("the sign-in's cookie");
    let location = header_values(&head, "location").pop().expect("location");
    assert!(
        location.contains("code_challenge_method=S256"),
        "{location}"
    );

    // The provider's form, then its redirect back to the dashboard.
    let (ok, back) = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{redirect_url}",
        "-X",
        "POST",
        "--data-urlencode",
        "sub=carol@example.com",
        &location,
    ]);
    assert!(
        ok && back.starts_with(&format!("{base}/ui/login/callback")),
        "{back}"
    );

    // Coming back without the cookie (another browser, a forged link): refused.
    let (code, _, body) = get(&back, "");
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("was not started here"), "{body}");

    // With it: the session, and carol's pages with her role.
    let (code, head, body) = get(&back, &format!("berth_oidc={pending}"));
    assert_eq!(code, 303, "{head}{body}");
    let session = set_cookie(&head, "berth_session").expect("the session cookie");
    assert_eq!(session.split('.').count(), 3, "an ID token");
    let (code, _, page) = get(&format!("{base}/ui"), &format!("berth_session={session}"));
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("carol@example.com (viewer)"), "{page}");
    assert!(page.contains("/ui/apps/shop"), "{page}");
    assert!(
        !page.contains("Deploy from a git repository"),
        "a viewer gets no forms"
    );
}
