//! End-to-end: images berth did not build from a language — an image deployed from a
//! registry, and a Dockerfile built by buildah — against a real registry on loopback
//! (Debian's `docker-registry`, wanting a password) holding a base image this test makes
//! from busybox with buildah. Such images bring their own root filesystem (no host `/usr`),
//! run as berth's unprivileged user whatever they ask for, and anything wrong with them —
//! no credentials, a missing tag, another CPU architecture, a failing or privileged build
//! step, a base nobody can resolve — is refused with the reason while the serving release
//! keeps serving.

use crate::common;

use common::registry::{login, registry, RegistryServer, PASSWORD, PUSHER};
use common::Platform;
use std::path::Path;
use std::process::Command;

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A busybox image (httpd, a shell, a CGI script that says who runs it) as an OCI layout,
/// made for `arch`, asking to run as root; its reference for skopeo.
fn busybox_image(work: &Path, arch: &str) -> String {
    let root = work.join(format!("rootfs-{arch}"));
    std::fs::create_dir_all(root.join("bin")).expect("rootfs");
    std::fs::create_dir_all(root.join("www/cgi-bin")).expect("rootfs");
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("busybox (scripts/install-deps installs busybox-static)");
    for applet in [
        "sh", "httpd", "id", "echo", "mkdir", "cat", "ls", "printf", "chmod",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("applet");
    }
    std::fs::write(root.join("www/index.html"), "hello from the registry\n").expect("page");
    let cgi = root.join("www/cgi-bin/whoami");
    std::fs::write(
        &cgi,
        "#!/bin/sh\necho Content-Type: text/plain\necho\nid -u\n",
    )
    .expect("cgi");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cgi, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::create_dir_all(root.join("etc")).expect("etc");
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
    std::fs::write(root.join("etc/group"), "root:x:0:\n").expect("group");
    // What the SBOM reads: the image's package database.
    std::fs::create_dir_all(root.join("var/lib/dpkg")).expect("dpkg");
    std::fs::write(
        root.join("var/lib/dpkg/status"),
        "Package: busybox-static\nStatus: install ok installed\nSource: busybox\nArchitecture: amd64\nVersion: 1:1.35.0-4\n",
    )
    .expect("dpkg status");
    // buildah (as root, with storage of its own) turns the tree into an OCI image.
    let storage = work.join("buildah");
    let buildah = || {
        let mut c = Command::new("buildah");
        c.arg("--root")
            .arg(storage.join("root"))
            .arg("--runroot")
            .arg(storage.join("run"))
            .args(["--storage-driver", "vfs"]);
        c
    };
    let out = buildah()
        .args(["from", "scratch"])
        .output()
        .expect("buildah");
    assert!(out.status.success(), "{out:?}");
    let container = String::from_utf8_lossy(&out.stdout).trim().to_string();
    run(buildah().args(["copy", &container]).arg(&root).arg("/"));
    run(buildah().args([
        "config",
        "--arch",
        arch,
        "--os",
        "linux",
        "--user",
        "root",
        "--workingdir",
        "/www",
        "--port",
        "8080/tcp",
        "--cmd",
        r#"["httpd", "-f", "-p", "8080", "-h", "/www"]"#,
        &container,
    ]));
    let layout = work.join(format!("layout-{arch}"));
    let reference = format!("oci:{}:1", layout.display());
    run(buildah().args([
        "commit", "--quiet", "--format", "oci", &container, &reference,
    ]));
    run(buildah().args(["rm", &container]));
    reference
}

/// Pushes a layout's image to the test registry as `path`.
fn push(reg: &RegistryServer, source: &str, path: &str) -> String {
    let reference = format!("127.0.0.1:{}/{path}", reg.port);
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("--dest-creds={PUSHER}:{PASSWORD}"))
        .arg(source)
        .arg(format!("docker://{reference}")));
    reference
}

fn registry_digest(reference: &str) -> String {
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("--creds={PUSHER}:{PASSWORD}"))
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo");
    assert!(out.status.success(), "{out:?}");
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).expect("inspect JSON");
    seen["Digest"].as_str().expect("digest").to_string()
}

/// Runs a berth command that must succeed; all it printed.
fn deploys(p: &Platform, args: &[&str]) -> String {
    let out = p.berth(args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "berth {args:?}: {text}\n{}",
        p.up_log()
    );
    text
}

/// The user id the image's CGI script reports (the edge may answer it chunked).
fn uid_serving(p: &Platform, app: &str) -> String {
    let body = p.answer(app, "/cgi-bin/whoami");
    body.lines()
        .map(str::trim)
        .find(|l| l.len() > 1 && l.chars().all(|c| c.is_ascii_digit()))
        .unwrap_or_else(|| panic!("no user id in {body:?}"))
        .to_string()
}

/// Checks the image's cosign-format signature with openssl and the platform's public key:
/// the signature artifact's payload names the image's digest and verifies.
fn signature_verifies_with_openssl(p: &Platform, app: &str, digest: &str) {
    let layout = p.data.path().join("images").join(app);
    let tag = format!("{}.sig", digest.replace(':', "-"));
    let out = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:{tag}", layout.display()))
        .output()
        .expect("skopeo");
    assert!(out.status.success(), "no signature artifact: {out:?}");
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).expect("manifest");
    let layer = &manifest["layers"][0];
    assert_eq!(
        layer["mediaType"],
        "application/vnd.dev.cosign.simplesigning.v1+json"
    );
    let blob = layout.join("blobs/sha256").join(
        layer["digest"]
            .as_str()
            .expect("digest")
            .trim_start_matches("sha256:"),
    );
    let payload: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&blob).expect("payload")).expect("payload JSON");
    assert_eq!(
        payload["critical"]["image"]["docker-manifest-digest"], digest,
        "{payload}"
    );
    use base64::Engine as _;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(
            layer["annotations"]["dev.cosignproject.cosign/signature"]
                .as_str()
                .expect("signature"),
        )
        .expect("base64");
    let sig_file = p.data.path().join("sig.der");
    std::fs::write(&sig_file, sig).expect("sig");
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(p.data.path().join("signing/cosign.pub"))
        .arg("-signature")
        .arg(&sig_file)
        .arg(&blob)
        .output()
        .expect("openssl");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Verified OK"),
        "{out:?}"
    );
}

#[test]
fn an_image_from_a_registry_runs_pinned_by_digest_at_both_isolation_levels() {
    let reg = registry(true);
    let work = tempfile::tempdir().expect("tempdir");
    let web = push(&reg, &busybox_image(work.path(), "amd64"), "team/web:1");
    let arm = push(&reg, &busybox_image(work.path(), "arm64"), "team/web:arm");
    let p = Platform::start();

    // Without credentials the registry refuses, and nothing is made.
    let err = p.fails(&["deploy", "--image", &web, "--app", "web"]);
    assert!(
        err.contains("refused access") && err.contains("berth registry login 127.0.0.1:"),
        "{err}"
    );
    assert!(p.json(&["apps"]).as_array().expect("apps").is_empty());

    // Credentials kept for one project's deploys are used by that project's only.
    p.ok(&["projects", "create", "alpha"]);
    p.ok(&["projects", "create", "beta"]);
    let host = format!("127.0.0.1:{}", reg.port);
    let out = p.berth_env(
        &[
            "registry",
            "login",
            &host,
            "--username",
            PUSHER,
            "--project",
            "beta",
        ],
        &[("BERTH_REGISTRY_PASSWORD", PASSWORD)],
    );
    assert!(out.status.success(), "{out:?}");
    let listed = p.ok(&["registry", "list"]);
    assert!(listed.contains("project:beta"), "{listed}");
    let err = p.fails(&[
        "deploy",
        "--image",
        &web,
        "--app",
        "other",
        "--project",
        "alpha",
    ]);
    assert!(err.contains("refused access"), "{err}");
    assert!(p.json(&["apps"]).as_array().expect("apps").is_empty());
    deploys(
        &p,
        &[
            "deploy",
            "--image",
            &web,
            "--app",
            "scoped",
            "--project",
            "beta",
        ],
    );
    assert_eq!(p.answer("scoped", "/"), "hello from the registry\n");
    p.ok(&["destroy", "scoped"]);
    p.ok(&["registry", "logout", &host, "--project", "beta"]);

    login(&p, &reg);
    let out = deploys(&p, &["deploy", "--image", &web, "--app", "web"]);
    assert!(
        out.contains("runs every app as the unprivileged user 10001"),
        "{out}"
    );
    assert_eq!(p.answer("web", "/"), "hello from the registry\n");
    // Asked for root, runs as berth's app user.
    assert_eq!(uid_serving(&p, "web"), "10001");
    let listed = p.releases("web");
    let digest = registry_digest(&web);
    assert_eq!(listed[0]["image"]["digest"], digest.as_str(), "{listed:?}");
    let description = listed[0]["description"].as_str().expect("description");
    assert!(
        description.contains(&format!("team/web@{digest}")),
        "{description}"
    );

    // A tag that does not exist, an image for another CPU, a malformed reference:
    // refused, v1 keeps serving.
    let missing = web.replace(":1", ":404");
    let err = p.fails(&["deploy", "--image", &missing, "--app", "web"]);
    assert!(err.contains("not found"), "{err}");
    let err = p.fails(&["deploy", "--image", &arm, "--app", "web"]);
    assert!(
        err.contains("linux/arm64") && err.contains("linux/amd64"),
        "{err}"
    );
    let err = p.fails(&["deploy", "--image", "http://Bad Ref", "--app", "web"]);
    assert!(err.contains("not an image reference"), "{err}");
    assert_eq!(p.releases("web").len(), 1);
    assert_eq!(p.answer("web", "/"), "hello from the registry\n");

    // The same image in gVisor, with berth.toml beside it.
    let dir = work.path().join("sandboxed");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("berth.toml"),
        "name = \"boxed\"\nisolation = \"sandbox\"\n",
    )
    .expect("berth.toml");
    deploys(&p, &["deploy", &dir.display().to_string(), "--image", &web]);
    assert_eq!(p.answer("boxed", "/"), "hello from the registry\n");
    assert_eq!(uid_serving(&p, "boxed"), "10001");

    // Or named in berth.toml: a plain `berth deploy DIR` deploys the image.
    let dir = work.path().join("declared");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("berth.toml"),
        format!("name = \"declared\"\nimage = \"{web}\"\n"),
    )
    .expect("berth.toml");
    deploys(&p, &["deploy", &dir.display().to_string()]);
    assert_eq!(p.answer("declared", "/"), "hello from the registry\n");
    assert_eq!(
        p.releases("declared")[0]["image"]["digest"],
        digest.as_str()
    );
    assert_eq!(p.json(&["apps"]).as_array().expect("apps").len(), 3);
}

#[test]
fn a_dockerfile_builds_unprivileged_on_a_base_from_the_registry() {
    let reg = registry(true);
    let work = tempfile::tempdir().expect("tempdir");
    let image = busybox_image(work.path(), "amd64");
    let base = push(&reg, &image, "base/busybox:1");
    // The same registry mirrors Docker Hub: `FROM busybox-mirrored:1` is pulled from it.
    push(&reg, &image, "library/busybox-mirrored:1");
    let p = Platform::start_with(&["--registry-mirror", &format!("127.0.0.1:{}", reg.port)]);
    login(&p, &reg);

    let dir = work.path().join("site");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("message.txt"), "from the context\n").expect("file");
    std::fs::write(dir.join("secret.txt"), "never in the image\n").expect("file");
    std::fs::write(dir.join(".dockerignore"), "secret.txt\n").expect("file");
    // The base exposes 8080 and this image 9090 too: berth asks which one serves.
    let dockerfile = |last_step: &str| {
        format!(
            "ARG BASE={base}\n\
             FROM ${{BASE}} AS build\n\
             COPY . /ctx\n\
             RUN mkdir -p /out/cgi-bin && echo \"built as $(id -u)\" > /out/index.html \\\n\
             \x20 && ls /ctx > /out/files.txt \\\n\
             \x20 && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\nid -u\\n' > /out/cgi-bin/whoami \\\n\
             \x20 && chmod 755 /out/cgi-bin/whoami\n\
             {last_step}\n\
             FROM busybox-mirrored:1\n\
             COPY --from=build /out /site\n\
             USER root\n\
             EXPOSE 9090\n\
             WORKDIR /site\n\
             CMD [\"httpd\", \"-f\", \"-p\", \"9090\", \"-h\", \"/site\"]\n"
        )
    };
    std::fs::write(dir.join("Dockerfile"), dockerfile("")).expect("Dockerfile");
    let err = p.fails(&["deploy", &dir.display().to_string()]);
    assert!(err.contains("exposes ports [8080, 9090]"), "{err}");
    std::fs::write(dir.join("berth.toml"), "port = 9090\n").expect("berth.toml");
    let out = deploys(&p, &["deploy", &dir.display().to_string()]);
    assert!(out.contains("buildah (unprivileged)"), "{out}");
    assert!(out.contains("Pulling base image 127.0.0.1:"), "{out}");
    assert!(
        out.contains(&format!(
            "Pulling base image 127.0.0.1:{}/library/busybox-mirrored:1",
            reg.port
        )),
        "a Docker Hub name goes to the mirror: {out}"
    );
    assert!(
        out.contains("runs every app as the unprivileged user 10001"),
        "{out}"
    );
    // Built as root inside the build's own user namespace; serving as the app user, on the
    // port the image exposes, from its working directory.
    assert_eq!(p.answer("site", "/"), "built as 0\n");
    assert_eq!(uid_serving(&p, "site"), "10001");
    let files = p.answer("site", "/files.txt");
    assert!(
        files.contains("message.txt") && files.contains("Dockerfile"),
        "{files}"
    );
    assert!(
        !files.contains("secret.txt"),
        ".dockerignore honoured: {files}"
    );
    let release = &p.releases("site")[0];
    assert_eq!(release["config"]["port"], 9090, "{release}");

    // Every image shows its SBOM and its signature.
    let images = p.json(&["images", "site"]);
    assert_eq!(images[0]["signature"], "verified", "{images}");
    assert_eq!(images[0]["sbom_packages"], 1, "{images}");
    let digest = release["image"]["digest"].as_str().expect("digest");
    assert_eq!(images[0]["digest"], digest, "{images}");
    let sbom: serde_json::Value = serde_json::from_str(&p.ok(&["sbom", "site"])).expect("SPDX");
    assert_eq!(sbom["spdxVersion"], "SPDX-2.3");
    assert_eq!(
        sbom["packages"][0]["externalRefs"][0]["referenceLocator"],
        "pkg:deb/debian/busybox-static@1%3A1.35.0-4?arch=amd64",
        "{sbom}"
    );
    signature_verifies_with_openssl(&p, "site", digest);

    // Broken builds are refused with their reason; v1 keeps serving.
    for (step, expected) in [
        ("RUN false", "build command failed"),
        (
            "RUN --security=insecure mount -t tmpfs none /mnt",
            "--security=insecure",
        ),
    ] {
        std::fs::write(dir.join("Dockerfile"), dockerfile(step)).expect("Dockerfile");
        let err = p.fails(&["deploy", &dir.display().to_string()]);
        assert!(err.contains(expected), "{step}: {err}");
    }
    std::fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM 127.0.0.1:{}/nobody/has-this:1\nCMD [\"true\"]\n",
            reg.port
        ),
    )
    .expect("Dockerfile");
    let err = p.fails(&["deploy", &dir.display().to_string()]);
    assert!(
        err.contains("FROM 127.0.0.1:") && err.contains("not found"),
        "{err}"
    );
    assert_eq!(p.releases("site").len(), 1);
    assert_eq!(p.answer("site", "/"), "built as 0\n");

    // Each app builds as a uid of its own, over subordinate ids of its own; a build secret
    // reaches a RUN step that mounts it, and neither the image nor the log.
    let token = "bt-9c8d7e6f5a4b3c2d";
    let err = p.fails(&[
        "secrets",
        "set",
        "other",
        "--build",
        &format!("TOKEN={token}"),
    ]);
    assert!(err.contains("\"other\" does not exist"), "{err}");
    p.ok(&["create", "other"]);
    let set = p.ok(&[
        "secrets",
        "set",
        "other",
        "--build",
        &format!("TOKEN={token}"),
    ]);
    assert!(set.contains("next build"), "{set}");
    let other = work.path().join("other");
    std::fs::create_dir_all(&other).expect("dir");
    std::fs::write(other.join("berth.toml"), "port = 9090\n").expect("berth.toml");
    std::fs::write(
        other.join("Dockerfile"),
        format!(
            "FROM {base}\n\
             RUN --mount=type=secret,id=TOKEN mkdir -p /site/cgi-bin \\\n\
             \x20 && echo \"the step sees $(cat /run/secrets/TOKEN)\" \\\n\
             \x20 && test -s /run/secrets/TOKEN && echo yes > /site/had-token \\\n\
             \x20 && echo \"map: $(head -n1 /proc/self/uid_map)\" \\\n\
             \x20 && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\ncat /run/secrets/TOKEN 2>/dev/null || echo absent\\n' > /site/cgi-bin/token \\\n\
             \x20 && chmod 755 /site/cgi-bin/token\n\
             EXPOSE 9090\n\
             CMD [\"httpd\", \"-f\", \"-p\", \"9090\", \"-h\", \"/site\"]\n"
        ),
    )
    .expect("Dockerfile");
    let built = deploys(&p, &["deploy", &other.display().to_string()]);
    assert!(
        !built.contains(token),
        "the build log shows a build secret: {built}"
    );
    assert!(
        built.contains("the step sees [secret TOKEN]"),
        "the step read the secret, redacted in the log: {built}"
    );
    assert_eq!(p.answer("other", "/had-token"), "yes\n");
    assert!(
        p.answer("other", "/cgi-bin/token").contains("absent"),
        "no image layer holds the secret"
    );
    let listed = p.json(&["secrets", "list", "other"]);
    assert_eq!(listed[0]["name"], "TOKEN", "{listed}");
    assert_eq!(listed[0]["injected_as"], "build", "{listed}");
    assert!(p.releases("other")[0]["config"]["secrets"]
        .as_object()
        .is_none_or(|m| m.is_empty()));
    let found = common::files_holding(p.data.path(), token);
    assert!(found.is_empty(), "the token in plaintext in:\n{found}");

    // The uid berth names is the one the RUN step ran as on the host.
    let build_uid = |log: &str| -> u32 {
        let line = log
            .lines()
            .find(|l| l.contains("Building as uid "))
            .unwrap_or_else(|| panic!("no build uid in {log}"));
        line.split("Building as uid ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{line}"))
    };
    let other_uid = build_uid(&built);
    let site_uid = build_uid(&out);
    assert_ne!(other_uid, site_uid);
    assert!(
        built.lines().any(|l| l.contains("map:")
            && l.split_whitespace().collect::<Vec<_>>().ends_with(&[
                "0",
                &other_uid.to_string(),
                "1"
            ])),
        "{built}"
    );
    // One app's build identity cannot enter another's build storage.
    let digest = {
        let mut c = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sha256sum");
        use std::io::Write as _;
        c.stdin
            .take()
            .expect("stdin")
            .write_all(p.data.path().as_os_str().as_encoded_bytes())
            .expect("write");
        String::from_utf8(c.wait_with_output().expect("sha256sum").stdout).expect("utf-8")
    };
    let storage = |app: &str| {
        std::path::PathBuf::from("/var/cache/berth")
            .join(format!("builds-{}", &digest[..12]))
            .join("cache")
            .join(app)
            .join("buildah/storage")
    };
    let list_as = |uid: u32, dir: &std::path::Path| {
        std::process::Command::new("setpriv")
            .args([
                "--reuid",
                &uid.to_string(),
                "--regid",
                &uid.to_string(),
                "--clear-groups",
                "ls",
            ])
            .arg(dir)
            .output()
            .expect("setpriv")
    };
    let own = list_as(other_uid, &storage("other"));
    assert!(own.status.success(), "{own:?}");
    let across = list_as(site_uid, &storage("other"));
    assert!(
        !across.status.success()
            && String::from_utf8_lossy(&across.stderr).contains("Permission denied"),
        "{across:?}"
    );
    let across = list_as(other_uid, &storage("site"));
    assert!(!across.status.success(), "{across:?}");

    // The bases berth pulled stay root's (root writes there), readable by the build's
    // group alone.
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let bases = storage("other").with_file_name("bases");
        let meta = std::fs::symlink_metadata(&bases).expect("bases");
        assert_eq!(
            (meta.uid(), meta.gid(), meta.permissions().mode() & 0o7777),
            (0, other_uid, 0o750),
            "{}",
            bases.display()
        );
    }

    // A first build that fails keeps no build identity: its account is gone at once.
    let broken = work.path().join("broken");
    std::fs::create_dir_all(&broken).expect("dir");
    std::fs::write(
        broken.join("Dockerfile"),
        format!("FROM {base}\nRUN false\n"),
    )
    .expect("Dockerfile");
    let err = p.fails(&["deploy", &broken.display().to_string()]);
    let broken_uid = build_uid(&err);
    let passwd = std::fs::read_to_string("/etc/passwd").expect("passwd");
    assert!(
        !passwd
            .lines()
            .any(|l| l.split(':').nth(2) == Some(broken_uid.to_string().as_str())),
        "{passwd}"
    );

    // Gone with its app: the account its builds ran as.
    p.ok(&["destroy", "other"]);
    let passwd = std::fs::read_to_string("/etc/passwd").expect("passwd");
    assert!(
        !passwd
            .lines()
            .any(|l| l.split(':').nth(2) == Some(other_uid.to_string().as_str())),
        "{passwd}"
    );
}

#[test]
fn with_require_signed_an_image_whose_signature_is_gone_never_starts() {
    let reg = registry(true);
    let work = tempfile::tempdir().expect("tempdir");
    let one = push(&reg, &busybox_image(work.path(), "amd64"), "team/web:1");
    let p = Platform::start_with(&["--require-signed"]);
    login(&p, &reg);
    let out = deploys(&p, &["deploy", "--image", &one, "--app", "web"]);
    assert!(out.contains("signature of sha256:"), "{out}");
    let listed = p.releases("web");
    let digest = listed[0]["image"]["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    signature_verifies_with_openssl(&p, "web", &digest);

    // Someone with write access to the image store drops the signature of the image v1
    // runs: a new release of it (an env change) is refused, and v1 keeps serving.
    let index_path = p.data.path().join("images/web/index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).expect("index")).expect("index JSON");
    let sig_tag = format!("{}.sig", digest.replace(':', "-"));
    index["manifests"]
        .as_array_mut()
        .expect("manifests")
        .retain(|m| m["annotations"]["org.opencontainers.image.ref.name"] != sig_tag.as_str());
    std::fs::write(&index_path, index.to_string()).expect("index");
    let images = p.json(&["images", "web"]);
    assert_eq!(images[0]["signature"], "unsigned", "{images}");
    let err = p.fails(&["env", "set", "web", "COLOUR=blue"]);
    assert!(err.contains("not signed"), "{err}");
    assert_eq!(p.releases("web").len(), 2);
    assert_eq!(p.releases("web")[0]["status"], "failed");
    assert_eq!(p.answer("web", "/"), "hello from the registry\n");
}

#[test]
fn the_vulnerability_gate_refuses_an_image_with_a_known_critical_vulnerability() {
    let reg = registry(true);
    let work = tempfile::tempdir().expect("tempdir");
    let web = push(&reg, &busybox_image(work.path(), "amd64"), "team/web:1");
    // An offline OSV database, as Debian's OSV export writes its records (source package,
    // ECOSYSTEM range, CVSS vector), with one record fixed long ago beside it.
    let db = work.path().join("osv");
    std::fs::create_dir_all(db.join("Debian")).expect("db");
    std::fs::write(
        db.join("Debian/DEBIAN-CVE-2022-48174.json"),
        r#"{"id": "DEBIAN-CVE-2022-48174", "aliases": ["CVE-2022-48174"],
            "summary": "stack overflow in ash of busybox",
            "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
            "affected": [{"package": {"ecosystem": "Debian:12", "name": "busybox"},
              "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1:1.35.0-4+deb12u1"}]}]}]}"#,
    )
    .expect("record");
    std::fs::write(
        db.join("Debian/DEBIAN-CVE-2011-5325.json"),
        r#"{"id": "DEBIAN-CVE-2011-5325", "affected": [{"package": {"ecosystem": "Debian:12", "name": "busybox"},
              "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1:1.22.0-1"}]}]}]}"#,
    )
    .expect("record");
    let p = Platform::start_with(&[
        "--vuln-db",
        &db.display().to_string(),
        "--vuln-gate",
        "high",
    ]);
    login(&p, &reg);

    let err = p.fails(&["deploy", "--image", &web, "--app", "web"]);
    assert!(
        err.contains(
            "CVE-2022-48174 (critical) in busybox-static 1:1.35.0-4, fixed in 1:1.35.0-4+deb12u1"
        ),
        "{err}"
    );
    assert!(!err.contains("CVE-2011-5325"), "{err}");
    assert!(p.json(&["apps"]).as_array().expect("apps").is_empty());

    // Judged and accepted in berth.toml: it deploys, and the deploy says what it let through.
    let dir = work.path().join("accepted");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("berth.toml"),
        "name = \"web\"\n[security]\naccept_vulnerabilities = [\"CVE-2022-48174\"]\n",
    )
    .expect("berth.toml");
    let out = deploys(&p, &["deploy", &dir.display().to_string(), "--image", &web]);
    assert!(
        out.contains("Vulnerability: CVE-2022-48174 (critical)")
            && out.contains("(accepted in berth.toml)"),
        "{out}"
    );
    assert_eq!(p.answer("web", "/"), "hello from the registry\n");

    // A gate that is not a severity stops `berth up` with the reason.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let out = Command::new(common::berth_bin())
        .arg("--data-dir")
        .arg(elsewhere.path())
        .args(["up", "--vuln-db"])
        .arg(&db)
        .args(["--vuln-gate", "severe"])
        .output()
        .expect("berth up");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a severity"),
        "{out:?}"
    );
}
