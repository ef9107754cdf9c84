//! DNS records for app names by RFC 2136 dynamic updates, against a real authoritative
//! server (Knot DNS, on loopback, with its own zone and TSIG key), checked with `dig`.
//! berth publishes app names and custom domains in its zone, never takes a name that holds
//! records it did not make, withdraws what it no longer serves, and when the server refuses
//! (bad key) or is down, the names keep working through the edge while the failure is
//! reported and retried.

use crate::common;

use berth_edge::dns_update::{DnsError, DnsSettings, DnsUpdater, TsigKey};
use common::{copy_dir, eventually, fixture, free_port, http_get, Platform};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const ZONE: &str = "example.test";
const TARGET: &str = "203.0.113.10";

/// Knot DNS serving `example.test` on a loopback port, updatable with one TSIG key.
struct Knot {
    child: Child,
    port: u16,
    key: String,
    dir: tempfile::TempDir,
}

impl Knot {
    /// Starts knotd; `port` 0 picks a free one.
    fn start(port: u16, key: Option<&str>) -> Knot {
        let dir = tempfile::Builder::new()
            .prefix("knot")
            .tempdir()
            .expect("tempdir");
        eprintln!("knot in {}", dir.path().display());
        let port = if port == 0 { free_port() } else { port };
        let key = key.map(str::to_string).unwrap_or_else(|| {
            use base64::Engine;
            let secret: [u8; 32] = rand::random();
            format!(
                "hmac-sha256:berth:{}",
                base64::engine::general_purpose::STANDARD.encode(secret)
            )
        });
        let secret = key.rsplit(':').next().expect("secret");
        std::fs::write(
            dir.path().join(format!("{ZONE}.zone")),
            format!(
                "$ORIGIN {ZONE}.\n$TTL 60\n@ SOA ns.{ZONE}. hostmaster.{ZONE}. 1 3600 600 86400 60\n\
                 @ NS ns.{ZONE}.\nns A 127.0.0.1\n\
                 taken A 198.51.100.7\n"
            ),
        )
        .expect("zone");
        std::fs::create_dir(dir.path().join("db")).expect("db dir");
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("knot.conf"),
            format!(
                "server:\n  listen: 127.0.0.1@{port}\n  rundir: {d}\n  user: root:root\n\
                 database:\n  storage: {d}/db\n\
                 log:\n  - target: stderr\n    any: info\n\
                 key:\n  - id: berth\n    algorithm: hmac-sha256\n    secret: {secret}\n\
                 acl:\n  - id: berth-update\n    key: berth\n    action: update\n\
                 template:\n  - id: default\n    storage: {d}\n    file: \"%s.zone\"\n    zonefile-sync: -1\n    journal-content: changes\n\
                 zone:\n  - domain: {ZONE}\n    acl: berth-update\n"
            ),
        )
        .expect("knot.conf");
        let log = std::fs::File::create(dir.path().join("knotd.log")).expect("log");
        let child = Command::new("knotd")
            .arg("-c")
            .arg(dir.path().join("knot.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("knotd (apt-get install knot; scripts/install-deps installs it)");
        let knot = Knot {
            child,
            port,
            key,
            dir,
        };
        assert!(
            eventually(Duration::from_secs(10), || knot.dig("ns.example.test", "A")
                == ["127.0.0.1"]),
            "knotd did not start:\n{}",
            knot.log()
        );
        knot
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("knotd.log")).unwrap_or_default()
    }

    /// The answers to one query (`dig +short`).
    fn dig(&self, name: &str, rtype: &str) -> Vec<String> {
        let out = Command::new("dig")
            .args([
                "@127.0.0.1",
                "-p",
                &self.port.to_string(),
                "+short",
                "+tries=1",
                "+time=2",
            ])
            .args([name, rtype])
            .output()
            .expect("dig (apt-get install bind9-dnsutils)");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with(";;"))
            .map(str::to_string)
            .collect()
    }

    fn url(&self) -> String {
        format!(
            "rfc2136://127.0.0.1:{}?zone={ZONE}&target={TARGET}",
            self.port
        )
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("knotd's log:\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn updater(knot: &Knot, key: &str) -> DnsUpdater {
    let mut s = DnsSettings::parse(&knot.url()).expect("settings");
    s.key = Some(TsigKey::parse(key).expect("key"));
    DnsUpdater::new(s).expect("updater")
}

#[tokio::test]
async fn signed_updates_publish_and_withdraw_and_never_take_a_name_held_by_others() {
    let knot = Knot::start(0, None);
    let dns = updater(&knot, &knot.key);

    dns.publish("shop.example.test", true)
        .await
        .expect("publish");
    assert_eq!(knot.dig("shop.example.test", "A"), [TARGET]);
    // Publishing again (berth's own name) changes nothing and is not refused.
    dns.publish("shop.example.test", false)
        .await
        .expect("republish");
    assert_eq!(knot.dig("shop.example.test", "A"), [TARGET]);

    // A name someone else keeps records at is not claimed, and its records stay.
    let e = dns.publish("taken.example.test", true).await.unwrap_err();
    assert!(matches!(e, DnsError::Refused { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("YXDOMAIN") && text.contains("did not create"),
        "{text}"
    );
    assert_eq!(knot.dig("taken.example.test", "A"), ["198.51.100.7"]);

    // A name outside the zone is refused before anything is sent.
    let e = dns.publish("shop.example.org", true).await.unwrap_err();
    assert!(
        e.to_string().contains("not in the zone example.test"),
        "{e}"
    );

    // A wrong key is refused by the server, and the zone is unchanged.
    let forged = updater(&knot, "hmac-sha256:berth:c2VjcmV0LWJ1dC13cm9uZw==");
    let e = forged.publish("evil.example.test", true).await.unwrap_err();
    let text = e.to_string();
    eprintln!("{text}");
    assert!(
        text.contains("NOTAUTH") && text.contains("--dns-tsig-key"),
        "{text}"
    );
    assert!(knot.dig("evil.example.test", "A").is_empty());
    assert!(forged.withdraw("shop.example.test").await.is_err());
    assert_eq!(knot.dig("shop.example.test", "A"), [TARGET]);

    // An alias target is a CNAME.
    let mut s = DnsSettings::parse(&format!(
        "rfc2136://127.0.0.1:{}?zone={ZONE}&target=lb.example.net&ttl=120",
        knot.port
    ))
    .expect("settings");
    s.key = Some(TsigKey::parse(&knot.key).expect("key"));
    let alias = DnsUpdater::new(s).expect("updater");
    alias
        .publish("shop.example.test", false)
        .await
        .expect("to a CNAME");
    assert_eq!(knot.dig("shop.example.test", "CNAME"), ["lb.example.net."]);
    // (dig follows the CNAME; the A record itself is gone.)
    assert_eq!(knot.dig("shop.example.test", "A"), ["lb.example.net."]);

    dns.withdraw("shop.example.test").await.expect("withdraw");
    assert!(knot.dig("shop.example.test", "ANY").is_empty());
    assert_eq!(knot.dig("taken.example.test", "A"), ["198.51.100.7"]);

    // A server that does not answer is named.
    let mut s = DnsSettings::parse(&format!(
        "rfc2136://127.0.0.1:{}?zone={ZONE}&target={TARGET}",
        free_port()
    ))
    .expect("settings");
    s.key = Some(TsigKey::parse(&knot.key).expect("key"));
    let e = DnsUpdater::new(s)
        .unwrap()
        .publish("a.example.test", true)
        .await
        .unwrap_err();
    assert!(matches!(e, DnsError::Unreachable { .. }), "{e}");
}

fn key_file(dir: &Path, key: &str) -> PathBuf {
    // As BIND's tsig-keygen writes it.
    let mut parts = key.splitn(3, ':');
    let (alg, name, secret) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let path = dir.join("berth.key");
    std::fs::write(
        &path,
        format!("key \"{name}\" {{\n\talgorithm {alg};\n\tsecret \"{secret}\";\n}};\n"),
    )
    .unwrap();
    path
}

#[test]
fn app_names_and_domains_in_the_zone_follow_the_platform() {
    let knot = Knot::start(0, None);
    let keys = tempfile::tempdir().unwrap();
    let file = key_file(keys.path(), &knot.key);
    let p = Platform::start_with(&[
        "--base-domain",
        "apps.example.test",
        "--dns",
        &knot.url(),
        "--dns-tsig-key-file",
        &file.display().to_string(),
    ]);
    p.ok(&["create", "shop", "--domain", "www.example.test"]);
    let published =
        |name: &str| eventually(Duration::from_secs(20), || knot.dig(name, "A") == [TARGET]);
    assert!(published("shop.apps.example.test"), "{}", p.up_log());
    assert!(published("www.example.test"), "{}", p.up_log());

    let dns = p.json(&["dns"]);
    assert_eq!(dns["zone"], ZONE);
    assert_eq!(dns["key"], "berth (hmac-sha256)");
    let names: Vec<(String, String)> = dns["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_string(),
                n["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            (
                "shop.apps.example.test".to_string(),
                "published".to_string()
            ),
            ("www.example.test".to_string(), "published".to_string())
        ]
    );
    let text = p.ok(&["dns"]);
    assert!(
        text.contains(&format!("A {TARGET}")) && text.contains("published"),
        "{text}"
    );

    // A domain outside the zone is served, and said to be outside.
    p.ok(&["domains", "add", "shop", "shop.other.test"]);
    let domains = p.json(&["domains", "list", "shop"]);
    let other = domains
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "shop.other.test")
        .expect("listed");
    assert_eq!(other["dns"]["state"], "outside zone");
    let www = domains
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "www.example.test")
        .expect("listed");
    assert_eq!(www["dns"]["state"], "published");
    assert_eq!(www["dns"]["records"][0], format!("A {TARGET}"));

    // A name someone else holds is not taken; the failure is reported, not hidden.
    p.ok(&["domains", "add", "shop", "taken.example.test"]);
    assert!(eventually(Duration::from_secs(20), || {
        p.json(&["domains", "list", "shop"])
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == "taken.example.test" && d["dns"]["state"] == "failed")
    }));
    assert_eq!(knot.dig("taken.example.test", "A"), ["198.51.100.7"]);
    let out = p.berth(&["dns"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failing name makes `berth dns` exit 1"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("YXDOMAIN"));
    let status = p.json(&["status"]);
    let check = status["checks"]
        .as_array()
        .or_else(|| status.as_array())
        .unwrap()
        .iter()
        .find(|c| c["name"] == "dns records")
        .cloned()
        .unwrap_or_else(|| panic!("no dns check in {status}"));
    assert!(check.to_string().contains("taken.example.test"), "{check}");
    p.ok(&["domains", "remove", "shop", "taken.example.test"]);

    // Removing a domain withdraws its record; destroying the app withdraws the rest.
    p.ok(&["domains", "remove", "shop", "www.example.test"]);
    assert!(eventually(Duration::from_secs(20), || knot
        .dig("www.example.test", "A")
        .is_empty()));
    assert_eq!(knot.dig("shop.apps.example.test", "A"), [TARGET]);
    p.ok(&["destroy", "shop"]);
    assert!(eventually(Duration::from_secs(20), || knot
        .dig("shop.apps.example.test", "A")
        .is_empty()));
    assert_eq!(knot.dig("taken.example.test", "A"), ["198.51.100.7"]);
    assert!(eventually(Duration::from_secs(10), || p.json(&["dns"])
        ["names"]
        .as_array()
        .unwrap()
        .is_empty()));
}

#[test]
fn a_refused_or_unreachable_server_leaves_the_domain_working_and_is_retried() {
    // The server is not up yet when berth starts, and berth holds a wrong key at first.
    let port = free_port();
    let key = {
        use base64::Engine;
        let secret: [u8; 32] = rand::random();
        format!(
            "hmac-sha256:berth:{}",
            base64::engine::general_purpose::STANDARD.encode(secret)
        )
    };
    let url = format!("rfc2136://127.0.0.1:{port}?zone={ZONE}&target={TARGET}");
    let mut p = Platform::start_with(&[
        "--dns",
        &url,
        "--dns-tsig-key",
        "hmac-sha256:berth:d3Jvbmcta2V5LXdyb25nLWtleQ==",
    ]);
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("shop");
    copy_dir(&fixture("stateful"), &dir);
    std::fs::write(dir.join("berth.toml"), "name = \"shop\"\n").unwrap();
    p.ok(&["deploy", &dir.display().to_string()]);
    p.ok(&[
        "domains",
        "add",
        "shop",
        "www.example.test",
        "--no-redirect",
    ]);

    let failure = |needle: &str| {
        eventually(Duration::from_secs(30), || {
            let v = p.json(&["domains", "list", "shop"]);
            let d = &v[0]["dns"];
            d["state"] == "failed" && d["error"].as_str().unwrap_or("").contains(needle)
        })
    };
    assert!(failure(&format!("127.0.0.1:{port}")), "{}", p.up_log());
    // The domain works through the edge all the same.
    let (code, body) = http_get(p.edge_port, "www.example.test", "/env").expect("edge");
    assert_eq!(code, 200, "{body}");

    // The server comes up, but refuses berth's key: named as such.
    let knot = Knot::start(port, Some(&key));
    assert!(failure("NOTAUTH"), "{}", p.up_log());
    assert!(knot.dig("www.example.test", "A").is_empty());
    assert!(p.up_log().contains("publishing DNS records failed"));

    // berth restarted with the right key (as a config file sets it): published, and the
    // earlier failures are gone.
    p.kill_control_plane();
    p.extra = vec!["--dns".into(), url.clone()];
    std::fs::write(
        p.data.path().join("berth.toml"),
        format!("dns-tsig-key = \"{key}\"\n"),
    )
    .unwrap();
    p.up();
    assert!(
        eventually(Duration::from_secs(30), || knot
            .dig("www.example.test", "A")
            == [TARGET]),
        "{}",
        p.up_log()
    );
    let v = p.json(&["domains", "list", "shop"]);
    assert_eq!(v[0]["dns"]["state"], "published", "{v}");
    assert!(v[0]["dns"]["error"].is_null(), "{v}");
    // Shown in the effective config without the secret.
    let config = p.ok(&["config"]);
    assert!(
        !config.contains(key.rsplit(':').next().unwrap()),
        "{config}"
    );
}

#[test]
fn bad_dns_settings_are_refused_before_anything_starts() {
    for (args, why) in [
        (
            vec![
                "--dns",
                "dns://127.0.0.1?zone=example.test&target=203.0.113.10",
            ],
            "only rfc2136://",
        ),
        (
            vec!["--dns", "rfc2136://127.0.0.1?target=203.0.113.10"],
            "no zone",
        ),
        (
            vec!["--dns", "rfc2136://127.0.0.1?zone=example.test"],
            "no target",
        ),
        (
            vec![
                "--dns",
                "rfc2136://127.0.0.1?zone=example.test&target=203.0.113.10",
                "--dns-tsig-key",
                "hmac-md5:k:c2VjcmV0",
            ],
            "not supported",
        ),
        (
            vec![
                "--dns",
                "rfc2136://127.0.0.1?zone=example.test&target=203.0.113.10",
                "--dns-tsig-key",
                "k:%%%",
            ],
            "not base64",
        ),
    ] {
        let mut p = Platform::unstarted(None, &args, &[]);
        let out = p
            .command(common::berth_bin())
            .args(p.up_args())
            .output()
            .expect("berth up");
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{args:?}: {err}");
        assert!(
            !p.data.path().join("berth.db").exists(),
            "{args:?} left state"
        );
        p.extra.clear();
    }
}
