//! Dockerfile builds with buildah, run unprivileged: buildah runs as the app's own build
//! identity ([`crate::build_user`]) in a user namespace of its own (`--isolation chroot`,
//! rootless storage over the app's own subordinate ids), never as root. berth resolves every `FROM` itself — pulled with the platform's registry
//! credentials into a local OCI layout the build reads (`--pull-never`) — so that no
//! credential ever reaches the build and a base nobody can resolve fails before it starts.
//! Intermediate layers are cached per app (`--layers`).

use crate::build_user::BuildIdentity;
use crate::builder::{log_step, BuildError, BuildOutput, BuildRequest};
use crate::foreign::{self, PULL_TIMEOUT};
use crate::image::ImageStore;
use crate::registry;
use crate::tool::{run_logged, Ran};
use berth_runtime::ownership::{chown_tree, private_dir, shared_with_group};
use dockerfile_parser::{Dockerfile, Instruction};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Where the build user's directories live (one tree per data directory).
pub const BUILD_USER_AREA: &str = "/var/cache/berth";
/// The OCI layout of the pulled bases, in the app's build cache.
const BASES: &str = "bases";

/// The Dockerfile a directory is built with, when it is built with one (a default name
/// counts only as a regular file inside the directory, never through a link out of it).
pub fn dockerfile_of(dir: &Path, toml: &berth_core::spec::BerthToml) -> Option<PathBuf> {
    match &toml.build.dockerfile {
        Some(f) => Some(dir.join(f)),
        None => {
            let tree = crate::tree::SourceTree::open(dir).ok()?;
            ["Dockerfile", "Containerfile"]
                .iter()
                .find(|f| tree.is_file(f))
                .map(|f| dir.join(f))
        }
    }
}

/// The text of `dockerfile`, read beneath `app_dir`: a regular file inside it of at most
/// 1 MiB. An error names the file, never bytes of anything else.
pub fn read_dockerfile(app_dir: &Path, dockerfile: &Path) -> Result<String, BuildError> {
    let rel = dockerfile
        .strip_prefix(app_dir)
        .map(|p| p.to_string_lossy().to_string())
        .map_err(|_| {
            BuildError::Dockerfile(format!(
                "{} is not inside the app directory",
                dockerfile.display()
            ))
        })?;
    crate::tree::SourceTree::open(app_dir)
        .and_then(|tree| tree.read_spec(&rel))
        .map_err(|e| BuildError::Dockerfile(e.to_string()))?
        .ok_or_else(|| {
            BuildError::Dockerfile(format!(
                "build.dockerfile names {rel}, which is not in the directory"
            ))
        })
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BuildError {
    let context = context.into();
    move |source| BuildError::Io { context, source }
}

/// Builds `app_dir` with its Dockerfile `dockerfile`; the image, in berth's store.
pub fn build(
    images: &ImageStore,
    cache_root: &Path,
    req: &BuildRequest,
    app_dir: &Path,
    dockerfile: &Path,
    work: &Path,
) -> Result<BuildOutput, BuildError> {
    let started = Instant::now();
    // buildah runs RUN steps on the host's kernel: never for an app that must run — and so
    // be built — under gVisor.
    if req.isolation == berth_core::policy::Isolation::Sandbox {
        return Err(BuildError::Dockerfile(
            "a sandboxed app's Dockerfile is not built here: buildah runs its RUN steps on the host's kernel, not under gVisor; \
             deploy an image built elsewhere (`berth deploy --image`), let berth build the source (without the Dockerfile), or set isolation = \"trusted\""
                .into(),
        ));
    }
    // Parse errors may quote this text: it is a regular file inside the source.
    let text = read_dockerfile(app_dir, dockerfile)?;
    let parsed = Dockerfile::parse(&text)
        .map_err(|e| BuildError::Dockerfile(format!("the Dockerfile does not parse: {e}")))?;
    refuse_privileged(&parsed)?;
    log_step(
        &req.log_file,
        "Building the Dockerfile with buildah (unprivileged)",
    );
    req.identity.ensure()?;
    log_step(&req.log_file, &req.identity.describe());
    let (uid, gid) = (req.identity.uid(), req.identity.gid());

    let cache = cache_root.join(&req.app).join("buildah");
    let bases = cache.join(BASES);
    traversable(&cache)?;
    // buildah's run state lives with its storage (an image removed after the build, in the
    // background, still finds it).
    let run = cache.join("run");
    let out = work.join("out");
    // The app's build identity owns its scratch (with the source) and its storage, and
    // alone may enter them (and read the bases berth pulled for it). A cache some other identity
    // left (an earlier version's shared build user) is not trusted: it starts afresh.
    for d in [cache.join("home"), cache.join("storage"), run.clone()] {
        use std::os::unix::fs::MetadataExt;
        if std::fs::symlink_metadata(&d).is_ok_and(|m| m.uid() != uid || !m.is_dir()) {
            let _ = std::fs::remove_file(&d);
            std::fs::remove_dir_all(&d).map_err(io(format!("clearing {}", d.display())))?;
        }
        private_dir(&d, uid, gid)?;
    }
    // The bases stay root's (root writes them): the build identity reads them through its
    // group, and no one else may.
    shared_with_group(&bases, gid)?;
    let rewritten = resolve_bases(&parsed, &req.toml.build.args, &bases, &cache, &run, req)?;
    let file = work.join("Dockerfile.berth");
    std::fs::write(&file, rewritten).map_err(io("writing the resolved Dockerfile"))?;
    chown_tree(work, uid, gid)?;
    private_dir(work, uid, gid)?;

    let deadline = Instant::now() + req.timeout;
    // One name per app, moved by every build: the images it no longer names stay as the
    // layer cache of the next build (removing them would remove that cache too).
    let tag = format!("localhost/berth-build/{}", req.app);
    let mut bud = buildah(&req.identity, &cache, &run);
    if let Some(net) = &req.network {
        // RUN steps share buildah's network namespace: the build's own, whose only way
        // out is the build proxy (buildah hands them the proxy settings).
        bud = in_namespace(bud, &net.netns);
        bud.envs(net.env());
    }
    bud.args(["bud", "--isolation", "chroot", "--pull-never", "--layers"])
        .args(["--format", "oci"])
        .arg("-f")
        .arg(&file)
        .args(["-t", &tag]);
    for (k, v) in &req.toml.build.args {
        bud.arg("--build-arg").arg(format!("{k}={v}"));
    }
    // Build secrets, for `RUN --mount=type=secret,id=NAME` steps: never in a layer, and
    // handed to buildah in its environment (never its arguments, never a file).
    for (name, value) in &req.secrets.env {
        let var = format!("BERTH_SECRET_{name}");
        bud.arg("--secret")
            .arg(format!("id={name},type=env,src={var}"));
        bud.env(var, value.as_str());
    }
    if let Some(target) = &req.toml.build.target {
        bud.args(["--target", target]);
    }
    bud.arg(app_dir);
    match run_logged(&mut bud, &req.log_file, deadline) {
        Ok(Ran::Succeeded) => {}
        Ok(Ran::Failed(_)) => return Err(BuildError::Failed { code: 1 }),
        Ok(Ran::TimedOut) => return Err(BuildError::TimedOut(req.timeout.as_secs())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BuildError::MissingTool(
                "buildah",
                "apt-get install buildah uidmap",
            ))
        }
        Err(e) => return Err(io("running buildah")(e)),
    }
    let mut push = buildah(&req.identity, &cache, &run);
    push.args(["push", "--quiet", &tag])
        .arg(format!("oci:{}:image", out.display()));
    let pushed = run_logged(&mut push, &req.log_file, deadline);
    match pushed {
        Ok(Ran::Succeeded) => {}
        Ok(Ran::TimedOut) => return Err(BuildError::TimedOut(req.timeout.as_secs())),
        Ok(Ran::Failed(why)) => {
            return Err(BuildError::Dockerfile(format!(
                "storing the built image: {why}"
            )))
        }
        Err(e) => return Err(io("running buildah push")(e)),
    }
    let image = images.import(&req.app, &out, "image")?;
    log_step(
        &req.log_file,
        &format!("Built in {:.1}s", started.elapsed().as_secs_f64()),
    );
    foreign::adopt(images, req, image, false)
}

/// buildah as the app's build identity, with this app's storage.
fn buildah(identity: &BuildIdentity, cache: &Path, run: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid",
        &identity.uid().to_string(),
        "--regid",
        &identity.gid().to_string(),
        "--clear-groups",
        "--",
        "buildah",
        "--storage-driver",
        "vfs",
    ])
    .arg("--root")
    .arg(cache.join("storage"))
    .arg("--runroot")
    .arg(run.join("storage"))
    .env_clear()
    .env(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    )
    .env("HOME", cache.join("home"))
    .env("XDG_RUNTIME_DIR", run)
    .env("BUILDAH_ISOLATION", "chroot")
    // No registries to search: every FROM is resolved by berth beforehand.
    .env("CONTAINERS_REGISTRIES_CONF", "/dev/null")
    .current_dir(cache);
    cmd
}

/// `cmd` run inside the network namespace at `netns` (by `nsenter`, as root, before it
/// drops to the build user).
fn in_namespace(cmd: Command, netns: &Path) -> Command {
    let mut wrapped = Command::new("nsenter");
    wrapped
        .arg(format!("--net={}", netns.display()))
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .env_clear();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            wrapped.env(k, v);
        }
    }
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped
}

/// A build step that asks for more than an unprivileged build has is refused up front.
fn refuse_privileged(df: &Dockerfile) -> Result<(), BuildError> {
    for ins in &df.instructions {
        if let Instruction::Run(run) = ins {
            let text = &df.content[run.span.start..run.span.end.min(df.content.len())];
            for flag in ["--security=insecure", "--device", "--privileged"] {
                if text.contains(flag) {
                    let line = df.content[..run.span.start].lines().count() + 1;
                    return Err(BuildError::Privileged(format!(
                        "line {line}: RUN {flag}: berth builds without privileges; remove it"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Replaces each `FROM` (and `COPY --from`) naming an image with a local copy of it,
/// pulled by berth; stage names and `scratch` stay.
fn resolve_bases(
    df: &Dockerfile,
    build_args: &BTreeMap<String, String>,
    bases: &Path,
    cache: &Path,
    run: &Path,
    req: &BuildRequest,
) -> Result<String, BuildError> {
    let mut args: BTreeMap<String, String> = df
        .global_args
        .iter()
        .filter_map(|a| {
            a.value
                .as_ref()
                .map(|v| (a.name.content.clone(), v.content.clone()))
        })
        .collect();
    args.extend(build_args.clone());
    let mut stages: HashSet<String> = HashSet::new();
    let mut splices: Vec<(dockerfile_parser::Span, String)> = Vec::new();
    let mut pulled: BTreeMap<String, String> = BTreeMap::new();
    let mut base_of =
        |image: &str, splices_at: dockerfile_parser::Span| -> Result<(), BuildError> {
            let name = substitute(image, &args)?;
            let local = match pulled.get(&name) {
                Some(l) => l.clone(),
                None => {
                    let reference = foreign::resolve(&name, &req.access)
                        .map_err(|e| BuildError::Dockerfile(format!("FROM {name}: {e}")))?;
                    // One tag per reference: a base already here is used as it is (like
                    // `docker build`'s default), unless it is pinned to another digest.
                    let tag = base_tag(&reference.whole());
                    let have = crate::image::ImageStore::has_tag(bases, &tag);
                    if have {
                        log_step(
                            &req.log_file,
                            &format!("Base image {} (already pulled)", reference.whole()),
                        );
                    } else {
                        log_step(
                            &req.log_file,
                            &format!("Pulling base image {}", reference.whole()),
                        );
                        registry::pull(
                            &reference,
                            bases,
                            &tag,
                            &req.access,
                            PULL_TIMEOUT.min(req.timeout),
                        )
                        .map_err(|e| BuildError::Base {
                            image: name.clone(),
                            reason: e.to_string(),
                        })?;
                    }
                    // Into buildah's own storage once (from the layout, no network), under
                    // a name of its own: later builds find it there, as `docker build` finds
                    // a base it pulled before.
                    let local = format!("localhost/berth-base:{tag}");
                    let mut inspect = buildah(&req.identity, cache, run);
                    inspect.args(["inspect", "--type", "image", &local]);
                    let stored = matches!(
                        crate::tool::run_until(
                            &mut inspect,
                            Instant::now() + std::time::Duration::from_secs(60)
                        ),
                        Ok(Ran::Succeeded)
                    );
                    if !have || !stored {
                        store_base(&req.identity, cache, run, &tag, &local).map_err(|reason| {
                            BuildError::Base {
                                image: name.clone(),
                                reason,
                            }
                        })?;
                    }
                    pulled.insert(name.clone(), local.clone());
                    local
                }
            };
            splices.push((splices_at, local));
            Ok(())
        };
    for ins in &df.instructions {
        match ins {
            Instruction::From(from) => {
                let image = from.image.content.as_str();
                if !stages.contains(image) && image != "scratch" {
                    base_of(image, from.image.span)?;
                }
                if let Some(alias) = &from.alias {
                    stages.insert(alias.content.clone());
                }
            }
            Instruction::Copy(copy) => {
                for flag in &copy.flags {
                    let value = flag.value.content.as_str();
                    if flag.name.content == "from"
                        && !stages.contains(value)
                        && value.parse::<usize>().is_err()
                    {
                        base_of(value, flag.value.span)?;
                    }
                }
            }
            _ => {}
        }
    }
    let mut splicer = df.splicer();
    // Later spans first, so earlier offsets stay valid.
    splices.sort_by_key(|(span, _)| std::cmp::Reverse(span.start));
    for (span, replacement) in splices {
        splicer.splice(&span, &replacement);
    }
    Ok(splicer.content)
}

/// Copies the base tagged `tag` in the bases layout into buildah's storage as `local`.
fn store_base(
    identity: &BuildIdentity,
    cache: &Path,
    run: &Path,
    tag: &str,
    local: &str,
) -> Result<(), String> {
    // Relative to buildah's working directory (the app's build cache): buildah names an
    // OCI layout after its path, which must be lowercase.
    let out = buildah(identity, cache, run)
        .args(["pull", "--quiet", "--policy", "always"])
        .arg(format!("oci:{BASES}:{tag}"))
        .output()
        .map_err(|e| format!("running buildah: {e}"))?;
    let id = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    if !out.status.success() || id.is_empty() {
        return Err(format!(
            "buildah could not store it: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let tagged = buildah(identity, cache, run)
        .args(["tag", &id, local])
        .output()
        .map_err(|e| format!("running buildah: {e}"))?;
    if !tagged.status.success() {
        return Err(format!(
            "buildah could not name it: {}",
            String::from_utf8_lossy(&tagged.stderr).trim()
        ));
    }
    Ok(())
}

/// The tag a base image is kept under in the app's bases layout.
fn base_tag(reference: &str) -> String {
    use sha2::Digest as _;
    format!(
        "b-{}",
        &hex::encode(sha2::Sha256::digest(reference.as_bytes()))[..16]
    )
}

/// `$NAME` and `${NAME}` in a `FROM` from the build's arguments.
fn substitute(text: &str, args: &BTreeMap<String, String>) -> Result<String, BuildError> {
    let mut out = text.to_string();
    for (k, v) in args {
        out = out
            .replace(&format!("${{{k}}}"), v)
            .replace(&format!("${k}"), v);
    }
    if out.contains('$') {
        return Err(BuildError::Dockerfile(format!(
            "FROM {text}: an argument it uses has no value; give it in [build.args] of berth.toml or as ARG NAME=default before the first FROM"
        )));
    }
    Ok(out)
}

/// Creates `dir` (under `/var/cache/berth`) and its parents there, each traversable by
/// the build user (mode 0711: it may pass through, not list).
pub fn traversable(dir: &Path) -> Result<(), BuildError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    for d in dir.ancestors() {
        if !d.starts_with(BUILD_USER_AREA) {
            break;
        }
        let Ok(meta) = std::fs::metadata(d) else {
            continue;
        };
        if meta.permissions().mode() & 0o001 == 0 {
            std::fs::set_permissions(
                d,
                std::fs::Permissions::from_mode(meta.permissions().mode() | 0o711),
            )
            .map_err(io(format!(
                "letting the build user through {}",
                d.display()
            )))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privileged_steps_are_refused_with_their_line() {
        let df = Dockerfile::parse(
            "FROM base\nRUN echo ok\nRUN --security=insecure mount -t tmpfs x /mnt\n",
        )
        .unwrap();
        let e = refuse_privileged(&df).unwrap_err().to_string();
        assert!(
            e.contains("line 3") && e.contains("--security=insecure"),
            "{e}"
        );
        let df = Dockerfile::parse("FROM base\nRUN echo fine\n").unwrap();
        assert!(refuse_privileged(&df).is_ok());
    }

    #[test]
    fn base_arguments_are_substituted_or_named() {
        let mut args = BTreeMap::new();
        args.insert("BASE".to_string(), "reg.local/base:1".to_string());
        assert_eq!(substitute("${BASE}", &args).unwrap(), "reg.local/base:1");
        assert_eq!(substitute("$BASE", &args).unwrap(), "reg.local/base:1");
        assert!(substitute("${OTHER}", &args).is_err());
    }
}
