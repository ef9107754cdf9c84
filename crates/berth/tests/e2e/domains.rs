//! End-to-end: domains over HTTPS. The edge terminates TLS (SNI, HTTP/2 and HTTP/1.1 by
//! ALPN) with certificates from berth's local CA or from a real ACME server (pebble, with a
//! short certificate lifetime so renewals happen during the test, under load); plain HTTP is
//! redirected per domain; malformed and taken domains are refused and change nothing.

use crate::common;

use common::{copy_dir, eventually, free_port, Platform};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn deploy_app(p: &Platform, root: &Path, app: &str) {
    let dir = root.join(app);
    copy_dir(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stateful"),
        &dir,
    );
    std::fs::write(dir.join("berth.toml"), format!("name = \"{app}\"\n")).expect("toml");
    p.ok(&["deploy", &dir.display().to_string()]);
}

/// What one HTTPS request through curl saw.
#[derive(Debug)]
struct Answer {
    status: u16,
    version: String,
    body: String,
    /// The certificate chain as curl describes it (serials, issuers).
    certs: String,
}

/// One HTTPS request to `host` at the platform's TLS port (resolved to loopback), trusting
/// only `ca`; `extra` are more curl flags (e.g. `--http1.1`).
fn https(
    p: &Platform,
    host: &str,
    path: &str,
    ca: &Path,
    extra: &[&str],
) -> Result<Answer, String> {
    let port = p.tls_port;
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
        .args(extra)
        .args(["-w", "\n@@%{http_code} %{http_version}@@%{certs}"])
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .map_err(|e| format!("curl: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        return Err(format!("{}{}", String::from_utf8_lossy(&out.stderr), text));
    }
    let (body, rest) = text.rsplit_once("\n@@").ok_or_else(|| text.clone())?;
    let (code, certs) = rest.split_once("@@").ok_or_else(|| text.clone())?;
    let (status, version) = code.split_once(' ').unwrap_or((code, ""));
    Ok(Answer {
        status: status.parse().unwrap_or(0),
        version: version.to_string(),
        body: body.to_string(),
        certs: certs.to_string(),
    })
}

/// The leaf certificate's serial number from curl's description of the chain.
fn leaf_serial(certs: &str) -> String {
    certs
        .lines()
        .find_map(|l| l.strip_prefix("Serial Number:"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// A raw HTTP/1.1 request to the edge's plain port; returns the whole response.
fn plain(p: &Platform, host: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", p.edge_port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn domains_are_served_over_https_by_the_local_ca_and_bad_names_change_nothing() {
    let p = Platform::start();
    let work = tempfile::tempdir().expect("tmp");
    deploy_app(&p, work.path(), "shop");
    deploy_app(&p, work.path(), "blog");
    let ca = work.path().join("berth-ca.pem");
    p.ok(&["ca", "export", "--out", ca.to_str().expect("path")]);
    assert!(std::fs::read_to_string(&ca)
        .expect("ca")
        .starts_with("-----BEGIN CERTIFICATE-----"));

    // The app's own host is served over HTTPS too.
    let own =
        https(&p, "shop.localhost", "/env?name=PORT", &ca, &[]).expect("https to shop.localhost");
    assert_eq!(own.status, 200, "{own:?}");

    let out = p.ok(&["domains", "add", "shop", "Shop.Example.TEST"]);
    assert!(
        out.contains("shop.example.test") && out.contains("local CA"),
        "{out}"
    );
    let h2 = https(&p, "shop.example.test", "/env?name=PORT", &ca, &[]).expect("https over h2");
    assert_eq!((h2.status, h2.version.as_str()), (200, "2"), "{h2:?}");
    let h1 = https(
        &p,
        "shop.example.test",
        "/env?name=PORT",
        &ca,
        &["--http1.1"],
    )
    .expect("https over h1");
    assert_eq!((h1.status, h1.version.as_str()), (200, "1.1"), "{h1:?}");
    assert_eq!(h1.body, h2.body);
    assert_ne!(
        leaf_serial(&own.certs),
        leaf_serial(&h2.certs),
        "SNI picks each name's certificate"
    );

    // Plain HTTP to the domain is redirected; the app's own host is not.
    let resp = plain(&p, "shop.example.test", "/a?b=c");
    let location = format!("location: https://shop.example.test:{}/a?b=c", p.tls_port);
    assert!(
        resp.starts_with("HTTP/1.1 308") && resp.to_ascii_lowercase().contains(&location),
        "{resp}"
    );
    assert!(plain(&p, "shop.localhost", "/env?name=PORT").starts_with("HTTP/1.1 200"));
    p.ok(&[
        "domains",
        "add",
        "blog",
        "blog.example.test",
        "--no-redirect",
    ]);
    assert!(plain(&p, "blog.example.test", "/env?name=PORT").starts_with("HTTP/1.1 200"));

    // Bad input: each refused with the reason, exit non-zero, nothing changed.
    let before = p.json(&["domains", "list", "shop"]);
    let err = p.fails(&["domains", "add", "blog", "shop.example.test"]);
    assert!(err.contains("already held by app shop"), "{err}");
    let err = p.fails(&["domains", "add", "blog", "shop.localhost"]);
    assert!(err.contains("already held by app shop"), "{err}");
    for bad in [
        "not a domain",
        "*.example.test",
        "10.1.2.3",
        "x-.example.test",
        "localhost",
    ] {
        let err = p.fails(&["domains", "add", "blog", bad]);
        assert!(err.contains("not a valid host name"), "{bad}: {err}");
    }
    let err = p.fails(&["domains", "add", "nosuchapp", "x.example.test"]);
    assert!(err.contains("does not exist"), "{err}");
    assert_eq!(p.json(&["domains", "list", "shop"]), before);
    assert_eq!(
        p.json(&["domains", "list", "blog"])
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    // Keys are sealed: no private key in plaintext anywhere in the data directory.
    let found = common::files_holding(p.data.path(), "PRIVATE KEY");
    assert!(found.is_empty(), "a private key in plaintext in:\n{found}");

    // Key rotation re-seals the certificates; after a restart the edge serves them again.
    p.ok(&["secrets", "rotate-key"]);
    let mut p = p;
    p.kill_control_plane();
    p.up();
    let again =
        https(&p, "shop.example.test", "/env?name=PORT", &ca, &[]).expect("https after restart");
    assert_eq!(
        leaf_serial(&again.certs),
        leaf_serial(&h2.certs),
        "the same certificate"
    );

    // Removing the domain stops routing it.
    p.ok(&["domains", "remove", "shop", "shop.example.test"]);
    assert!(plain(&p, "shop.example.test", "/").starts_with("HTTP/1.1 404"));
    assert!(
        https(&p, "shop.example.test", "/env?name=PORT", &ca, &[]).is_err(),
        "its certificate is gone"
    );
    let err = p.fails(&["domains", "remove", "shop", "shop.example.test"]);
    assert!(err.contains("no domain"), "{err}");
}

/// A process the test started, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_port(port: u16) {
    assert!(
        eventually(Duration::from_secs(20), || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "nothing listens on {port}"
    );
}

/// pebble (the ACME test server) and its DNS stand-in, on loopback: every name resolves to
/// 127.0.0.1, HTTP-01 validations go to `http_port`, certificates live `lifetime` seconds.
/// Returns the servers, the directory URL, the file with pebble's own TLS root and the root
/// its certificates chain to.
fn pebble(dir: &Path, http_port: u16, lifetime: u64) -> (Vec<Server>, String, PathBuf, PathBuf) {
    let dns = free_port();
    let (acme, mgmt) = (free_port(), free_port());
    let challtest = Command::new("pebble-challtestsrv")
        .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
        .args(["-dns01", &format!("127.0.0.1:{dns}")])
        .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
        .args(["-management", &format!("127.0.0.1:{}", free_port())])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pebble-challtestsrv (apt-get install pebble)");
    let challtest = Server(challtest);
    // pebble's own HTTPS certificate, from a throwaway CA.
    let ca = berth_edge::local_ca::LocalCa::generate("pebble-test").expect("ca");
    let issued = ca
        .issue(&["localhost".into()], Duration::from_secs(3600))
        .expect("issue");
    let (cert, key, root) = (
        dir.join("pebble.pem"),
        dir.join("pebble.key"),
        dir.join("pebble-root.pem"),
    );
    std::fs::write(&cert, &issued.chain_pem).expect("cert");
    std::fs::write(&key, issued.key_pem.as_bytes()).expect("key");
    std::fs::write(&root, ca.cert_pem()).expect("root");
    let config = serde_json::json!({ "pebble": {
        "listenAddress": format!("127.0.0.1:{acme}"),
        "managementListenAddress": format!("127.0.0.1:{mgmt}"),
        "certificate": cert, "privateKey": key,
        "httpPort": http_port, "tlsPort": free_port(),
        "ocspResponderURL": "", "externalAccountBindingRequired": false,
        "certificateValidityPeriod": lifetime,
    }});
    let config_file = dir.join("pebble.json");
    std::fs::write(&config_file, config.to_string()).expect("config");
    let log = std::fs::File::create(dir.join("pebble.log")).expect("log");
    let server = Command::new("pebble")
        .arg("-config")
        .arg(&config_file)
        .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .env("PEBBLE_AUTHZREUSE", "0")
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("pebble (apt-get install pebble)");
    let server = Server(server);
    wait_port(acme);
    wait_port(mgmt);
    // The root pebble's certificates chain to.
    let issuer_root = dir.join("pebble-issuer-root.pem");
    let fetched = Command::new("curl")
        .args(["-sS", "--fail", "--cacert"])
        .arg(&root)
        .args(["-o"])
        .arg(&issuer_root)
        .arg(format!("https://localhost:{mgmt}/roots/0"))
        .args(["--resolve", &format!("localhost:{mgmt}:127.0.0.1")])
        .status()
        .expect("curl");
    assert!(fetched.success(), "fetching pebble's root failed");
    (
        vec![server, challtest],
        format!("https://localhost:{acme}/dir"),
        root,
        issuer_root,
    )
}

#[test]
fn acme_certificates_come_from_pebble_and_renew_under_load_without_dropping_a_request() {
    let work = tempfile::tempdir().expect("tmp");
    let mut p = Platform::unstarted(None, &[], &[]);
    let lifetime = 15;
    let (_servers, directory, pebble_root, issuer_root) =
        pebble(work.path(), p.edge_port, lifetime);
    p.extra.extend(
        [
            "--acme-directory",
            &directory,
            "--acme-email",
            "ops@example.test",
            "--acme-ca-file",
            pebble_root.to_str().expect("path"),
            "--cert-check-interval",
            "1s",
        ]
        .map(String::from),
    );
    p.up();
    deploy_app(&p, work.path(), "shop");

    let out = p.ok(&["domains", "add", "shop", "shop.example.test"]);
    assert!(
        out.contains("certificate from the ACME directory"),
        "{out}\n{}",
        p.up_log()
    );
    let list = p.json(&["domains", "list", "shop"]);
    assert_eq!(list[0]["certificate"]["source"], "acme", "{list}");
    assert!(list[0]["error"].is_null(), "{list}");
    let first = https(&p, "shop.example.test", "/env?name=PORT", &issuer_root, &[])
        .expect("https with pebble's certificate");
    assert_eq!(
        (first.status, first.version.as_str()),
        (200, "2"),
        "{first:?}"
    );
    assert!(
        first.certs.to_ascii_lowercase().contains("pebble"),
        "{}",
        first.certs
    );

    // Requests on new connections (each a full handshake) while the certificate renews.
    let mut serials = vec![leaf_serial(&first.certs)];
    let mut failures = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3 * lifetime);
    let mut sent = 0;
    while Instant::now() < deadline && sent < 2000 {
        sent += 1;
        match https(&p, "shop.example.test", "/env?name=PORT", &issuer_root, &[]) {
            Ok(a) if a.status == 200 => {
                let s = leaf_serial(&a.certs);
                if serials.last() != Some(&s) {
                    serials.push(s);
                }
            }
            other => failures.push(format!("{other:?}")),
        }
        if serials.len() >= 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed: {failures:?}",
        failures.len()
    );
    assert!(
        serials.len() >= 3,
        "renewed twice within {}s: {serials:?}\n{}",
        3 * lifetime,
        p.up_log()
    );
    // The ACME answers the edge served were withdrawn again.
    let forged = plain(
        &p,
        "shop.example.test",
        "/.well-known/acme-challenge/anything",
    );
    assert!(forged.starts_with("HTTP/1.1 404"), "{forged}");
}
