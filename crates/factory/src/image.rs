//! berth's local image store: one OCI image layout per app (`<root>/<app>/`, with
//! `oci-layout`, `index.json` and `blobs/sha256/`), readable by any OCI tool
//! (`skopeo inspect oci:<root>/<app>:<tag>`).
//!
//! An image berth builds itself holds one layer with the app under `/app` (it runs on the
//! host's `/usr`); the image config carries the web command as `Cmd`, the environment, and
//! every process type as labels. Images from Dockerfile builds and registries bring their
//! own root filesystem and say how to run in the usual config fields (`Entrypoint`, `Cmd`,
//! `WorkingDir`, `ExposedPorts`, `User`).

use crate::source::append_entry;
use berth_core::model::ImageRef;
use flate2::write::GzEncoder;
use flate2::Compression;
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, Digest, ImageConfiguration,
    ImageConfigurationBuilder, ImageIndex, ImageIndexBuilder, ImageManifest, ImageManifestBuilder,
    MediaType, Os, RootFsBuilder,
};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Annotation naming a tag in `index.json`.
const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Label prefix of process commands in the image config.
const PROCESS_LABEL: &str = "dev.berth.process.";
/// Label of the release command.
const RELEASE_LABEL: &str = "dev.berth.release-command";
const TEST_LABEL: &str = "dev.berth.test-command";
/// Label of berth's own builds, which run on the host's `/usr`.
const HOST_STACK_LABEL: &str = "dev.berth.host-stack";
/// Label of berth's own builds given the host files they need (`with_stack`): they run
/// anywhere, with the app in `/app`.
const OWN_STACK_LABEL: &str = "dev.berth.own-stack";
/// Whiteout file name prefix of OCI layers: the named entry of a lower layer is deleted.
const WHITEOUT: &str = ".wh.";
/// Opaque whiteout: the directory's entries from lower layers are deleted.
const OPAQUE: &str = ".wh..wh..opq";

/// Errors of the image store.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {0} not found in the local image store")]
    NotFound(String),
    #[error("image layer of type {0} cannot be unpacked (tar, tar+gzip and tar+zstd can)")]
    LayerType(String),
    #[error("OCI image data: {0}")]
    Oci(#[from] oci_spec::OciSpecError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageError {
    let context = context.into();
    move |source| ImageError::Io { context, source }
}

/// What an image says about running it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageMeta {
    /// Process type → command.
    pub processes: BTreeMap<String, String>,
    /// Release command, if any.
    pub release_command: Option<String>,
    /// The app's tests, if any.
    pub test_command: Option<String>,
    /// `KEY=VALUE` environment.
    pub env: Vec<String>,
    /// Set when the image brings its own root filesystem: its working directory.
    pub own_root: Option<berth_core::model::OwnRoot>,
    /// The TCP ports the image exposes (`EXPOSE`).
    pub ports: Vec<u16>,
    /// The user the image asks to run as (`User`), which berth never honours for root.
    pub user: Option<String>,
}

impl ImageMeta {
    /// The metadata of an image berth built from a plan.
    pub fn host_stack(
        processes: BTreeMap<String, String>,
        release_command: Option<String>,
        test_command: Option<String>,
        env: Vec<String>,
    ) -> Self {
        Self {
            processes,
            release_command,
            test_command,
            env,
            own_root: None,
            ports: Vec::new(),
            user: None,
        }
    }
}

/// An artifact's payload and its layer's annotations.
pub type Artifact = (Vec<u8>, HashMap<String, String>);

/// What an image was made for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`, …
    pub architecture: String,
}

/// What a garbage collection of one layout dropped (or would drop).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Collected {
    /// The images dropped: tag, manifest digest, and the bytes of the blobs only it used.
    pub images: Vec<(String, String, u64)>,
    /// The bytes of all the blobs removed (also artifacts' and orphans').
    pub bytes: u64,
}

/// The store.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn sha256_digest(hex: &str) -> Result<Digest, ImageError> {
    Ok(Digest::from_str(&format!("sha256:{hex}"))?)
}

impl ImageStore {
    /// A store rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The OCI layout directory of an app's images.
    pub fn layout(&self, repository: &str) -> PathBuf {
        self.root.join(repository)
    }

    fn blob_path(&self, repository: &str, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.layout(repository).join("blobs/sha256").join(hex)
    }

    fn read_index(&self, repository: &str) -> Result<Option<ImageIndex>, ImageError> {
        let path = self.layout(repository).join("index.json");
        if !path.exists() {
            return Ok(None);
        }
        Ok(Some(ImageIndex::from_file(&path)?))
    }

    /// Whether the OCI layout at `layout` has an image tagged `tag`.
    pub fn has_tag(layout: &Path, tag: &str) -> bool {
        ImageIndex::from_file(layout.join("index.json")).is_ok_and(|index| {
            index.manifests().iter().any(|d| {
                d.annotations()
                    .as_ref()
                    .and_then(|a| a.get(REF_NAME))
                    .is_some_and(|r| r == tag)
            })
        })
    }

    /// The image tagged `tag`, if the store has it.
    pub fn find(&self, repository: &str, tag: &str) -> Result<Option<ImageRef>, ImageError> {
        let Some(index) = self.read_index(repository)? else {
            return Ok(None);
        };
        Ok(index
            .manifests()
            .iter()
            .find(|d| {
                d.annotations()
                    .as_ref()
                    .and_then(|a| a.get(REF_NAME))
                    .is_some_and(|r| r == tag)
            })
            .filter(|d| self.blob_path(repository, d.digest().as_ref()).exists())
            .map(|d| ImageRef {
                repository: repository.to_string(),
                tag: tag.to_string(),
                digest: d.digest().to_string(),
            }))
    }

    fn write_blob(&self, repository: &str, bytes: &[u8]) -> Result<(String, u64), ImageError> {
        let hex = hex::encode(Sha256::digest(bytes));
        let path = self.blob_path(repository, &hex);
        if !path.exists() {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, bytes).map_err(io(format!("writing {}", tmp.display())))?;
            std::fs::rename(&tmp, &path).map_err(io(format!("writing {}", path.display())))?;
        }
        Ok((hex, bytes.len() as u64))
    }

    /// Packs `app_dir` as `/app` into a new image tagged `tag` and records the tag in
    /// `index.json` (replacing an older image with the same tag).
    pub fn write(
        &self,
        repository: &str,
        tag: &str,
        app_dir: &Path,
        meta: &ImageMeta,
    ) -> Result<ImageRef, ImageError> {
        let layout = self.layout(repository);
        let blobs = layout.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).map_err(io(format!("creating {}", blobs.display())))?;
        std::fs::write(
            layout.join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .map_err(io("writing oci-layout"))?;

        // Layer: tar of app_dir under app/.
        let (diff_id, layer_hex, layer_size) =
            write_layer(&blobs, |tar| append_tree(tar, app_dir, Path::new("app")))?;

        let mut labels: HashMap<String, String> = meta
            .processes
            .iter()
            .map(|(k, v)| (format!("{PROCESS_LABEL}{k}"), v.clone()))
            .collect();
        labels.insert(HOST_STACK_LABEL.into(), "true".into());
        if let Some(r) = &meta.release_command {
            labels.insert(RELEASE_LABEL.into(), r.clone());
        }
        if let Some(t) = &meta.test_command {
            labels.insert(TEST_LABEL.into(), t.clone());
        }
        let mut cfg = ConfigBuilder::default()
            .env(meta.env.clone())
            .working_dir("/app")
            .labels(labels);
        if let Some(web) = meta.processes.get("web") {
            cfg = cfg.cmd(vec!["/bin/sh".to_string(), "-c".into(), web.clone()]);
        }
        let config = ImageConfigurationBuilder::default()
            .architecture(Arch::Amd64)
            .os(Os::Linux)
            .config(cfg.build()?)
            .rootfs(
                RootFsBuilder::default()
                    .typ("layers")
                    .diff_ids(vec![format!("sha256:{diff_id}")])
                    .build()?,
            )
            .build()?;
        let layer = DescriptorBuilder::default()
            .media_type(MediaType::ImageLayerGzip)
            .digest(sha256_digest(&layer_hex)?)
            .size(layer_size)
            .build()?;
        let (manifest_hex, manifest_size) =
            self.write_manifest(repository, &canonical_json(&config)?, vec![layer])?;

        let digest = format!("sha256:{manifest_hex}");
        self.add_to_index(repository, tag, &digest, manifest_size)?;
        Ok(ImageRef {
            repository: repository.to_string(),
            tag: tag.to_string(),
            digest,
        })
    }

    /// A berth build (`/app` over the host's `/usr`) made to run on its own, tagged `tag`: a
    /// layer of the host `files` it needs (with the directories above them) and `extra`
    /// files (path, content) under the app's own layer, which stays the same blob. Runs as
    /// berth's app user.
    pub fn with_stack(
        &self,
        image: &ImageRef,
        tag: &str,
        files: &[(PathBuf, PathBuf)],
        extra: &[(&str, &[u8])],
    ) -> Result<ImageRef, ImageError> {
        let manifest = self.manifest(image)?;
        let mut config = self.config(image)?;
        let blobs = self.layout(&image.repository).join("blobs/sha256");
        let (diff_id, layer_hex, layer_size) = write_layer(&blobs, |tar| {
            let mut dirs = std::collections::BTreeSet::new();
            for (f, _) in files {
                for a in f.ancestors().skip(1) {
                    if a != Path::new("/") {
                        dirs.insert(a.to_path_buf());
                    }
                }
            }
            for (path, _) in extra {
                for a in Path::new(path).ancestors().skip(1) {
                    if a != Path::new("/") {
                        dirs.insert(a.to_path_buf());
                    }
                }
            }
            let sources: BTreeMap<&Path, &Path> = files
                .iter()
                .map(|(image, host)| (image.as_path(), host.as_path()))
                .collect();
            let mut all: std::collections::BTreeSet<&Path> =
                dirs.iter().map(PathBuf::as_path).collect();
            all.extend(sources.keys().copied());
            for p in all {
                let name = p.strip_prefix("/").unwrap_or(p);
                if let Some(host) = sources.get(p).filter(|_| !dirs.contains(p)) {
                    append_entry(tar, host, name)?;
                } else {
                    let mut header = tar::Header::new_gnu();
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(0o755);
                    header.set_mtime(0);
                    header.set_size(0);
                    tar.append_data(&mut header, name, std::io::empty())?;
                }
            }
            for (path, content) in extra {
                let mut header = tar::Header::new_gnu();
                header.set_mode(0o644);
                header.set_mtime(0);
                header.set_size(content.len() as u64);
                let name = path.trim_start_matches('/');
                tar.append_data(&mut header, name, *content)?;
            }
            Ok(())
        })?;
        let mut cfg = config.config().clone().unwrap_or_default();
        let mut labels = cfg.labels().clone().unwrap_or_default();
        labels.remove(HOST_STACK_LABEL);
        labels.insert(OWN_STACK_LABEL.into(), "true".into());
        cfg.set_labels(Some(labels));
        cfg.set_user(Some(format!(
            "{}:{}",
            berth_runtime::bundle::APP_UID,
            berth_runtime::bundle::APP_GID
        )));
        // On this machine berth's init sets PATH; elsewhere the image says it.
        let mut env = cfg.env().clone().unwrap_or_default();
        if !env.iter().any(|kv| kv.starts_with("PATH=")) {
            env.push("PATH=/usr/local/bin:/usr/bin:/bin".into());
        }
        cfg.set_env(Some(env));
        config.set_config(Some(cfg));
        let mut diff_ids = vec![format!("sha256:{diff_id}")];
        diff_ids.extend(config.rootfs().diff_ids().iter().cloned());
        config.set_rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(diff_ids)
                .build()?,
        );
        let mut layers = vec![DescriptorBuilder::default()
            .media_type(MediaType::ImageLayerGzip)
            .digest(sha256_digest(&layer_hex)?)
            .size(layer_size)
            .build()?];
        layers.extend(manifest.layers().iter().cloned());
        let (manifest_hex, manifest_size) =
            self.write_manifest(&image.repository, &canonical_json(&config)?, layers)?;
        let digest = format!("sha256:{manifest_hex}");
        self.add_to_index(&image.repository, tag, &digest, manifest_size)?;
        Ok(ImageRef {
            repository: image.repository.clone(),
            tag: tag.to_string(),
            digest,
        })
    }

    /// Gives `image` another tag in its repository; the image under that tag.
    pub fn tag(&self, image: &ImageRef, tag: &str) -> Result<ImageRef, ImageError> {
        let size = std::fs::metadata(self.blob_path(&image.repository, &image.digest))
            .map_err(io(format!("reading {}", image.digest)))?
            .len();
        self.add_to_index(&image.repository, tag, &image.digest, size)?;
        Ok(ImageRef {
            tag: tag.to_string(),
            ..image.clone()
        })
    }

    /// Stores `payload` as a one-layer OCI artifact tagged `tag` (a signature, an SBOM),
    /// the layer of media type `media_type` carrying `annotations`.
    pub fn write_artifact(
        &self,
        repository: &str,
        tag: &str,
        media_type: &str,
        payload: &[u8],
        annotations: &[(&str, &str)],
    ) -> Result<(), ImageError> {
        let layout = self.layout(repository);
        std::fs::create_dir_all(layout.join("blobs/sha256"))
            .map_err(io(format!("creating {}", layout.display())))?;
        let (payload_hex, payload_size) = self.write_blob(repository, payload)?;
        let config = serde_json::json!({
            "architecture": "",
            "os": "",
            "config": {},
            "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{payload_hex}")] },
        });
        let layer = DescriptorBuilder::default()
            .media_type(MediaType::Other(media_type.to_string()))
            .digest(sha256_digest(&payload_hex)?)
            .size(payload_size)
            .annotations(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<HashMap<String, String>>(),
            )
            .build()?;
        let (manifest_hex, manifest_size) =
            self.write_manifest(repository, &canonical_json(&config)?, vec![layer])?;
        self.add_to_index(
            repository,
            tag,
            &format!("sha256:{manifest_hex}"),
            manifest_size,
        )
    }

    /// The payload and layer annotations of the artifact tagged `tag`, if there is one.
    pub fn read_artifact(
        &self,
        repository: &str,
        tag: &str,
    ) -> Result<Option<Artifact>, ImageError> {
        let Some(found) = self.find(repository, tag)? else {
            return Ok(None);
        };
        let manifest = self.manifest(&found)?;
        let Some(layer) = manifest.layers().first() else {
            return Ok(None);
        };
        let payload = std::fs::read(self.blob_path(repository, layer.digest().as_ref()))
            .map_err(io(format!("reading {}", layer.digest())))?;
        Ok(Some((
            payload,
            layer.annotations().clone().unwrap_or_default(),
        )))
    }

    /// The image's size: its manifest, config and layers as stored (compressed).
    pub fn size(&self, image: &ImageRef) -> Result<u64, ImageError> {
        let manifest = self.manifest(image)?;
        Ok(manifest.config().size() + manifest.layers().iter().map(|l| l.size()).sum::<u64>())
    }

    /// The packages the image's layers hold (for its SBOM).
    pub fn inventory(&self, image: &ImageRef) -> Result<crate::sbom::Inventory, ImageError> {
        let manifest = self.manifest(image)?;
        let mut inv = crate::sbom::Inventory::default();
        for layer in manifest.layers() {
            let reader = self.layer_reader(&image.repository, layer)?;
            inv.add_layer(reader)
                .map_err(io(format!("reading layer {}", layer.digest())))?;
        }
        Ok(inv)
    }

    fn layer_reader(
        &self,
        repository: &str,
        layer: &Descriptor,
    ) -> Result<Box<dyn std::io::Read>, ImageError> {
        let f = std::fs::File::open(self.blob_path(repository, layer.digest().as_ref()))
            .map_err(io("opening layer"))?;
        Ok(match layer.media_type() {
            MediaType::ImageLayerGzip | MediaType::ImageLayerNonDistributableGzip => {
                Box::new(flate2::read::MultiGzDecoder::new(f))
            }
            MediaType::ImageLayer | MediaType::ImageLayerNonDistributable => Box::new(f),
            MediaType::ImageLayerZstd | MediaType::ImageLayerNonDistributableZstd => {
                Box::new(zstd::stream::read::Decoder::new(f).map_err(io("reading a zstd layer"))?)
            }
            MediaType::Other(t) if t.ends_with("tar.gzip") || t.ends_with("tar+gzip") => {
                Box::new(flate2::read::MultiGzDecoder::new(f))
            }
            other => return Err(ImageError::LayerType(other.to_string())),
        })
    }

    /// Writes an image manifest of `config` and one `layer`; its digest (hex) and size.
    fn write_manifest(
        &self,
        repository: &str,
        config: &[u8],
        layers: Vec<Descriptor>,
    ) -> Result<(String, u64), ImageError> {
        let (config_hex, config_size) = self.write_blob(repository, config)?;
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(
                DescriptorBuilder::default()
                    .media_type(MediaType::ImageConfig)
                    .digest(sha256_digest(&config_hex)?)
                    .size(config_size)
                    .build()?,
            )
            .layers(layers)
            .build()?;
        self.write_blob(repository, &canonical_json(&manifest)?)
    }

    /// Records `tag` → the manifest `digest` in `index.json` (replacing an older `tag`).
    /// Garbage-collects an app's layout: drops the images whose manifest digest is not in
    /// `keep` (with their signature and SBOM artifacts), then every blob no kept manifest
    /// reaches. With `dry_run`, only says what would go. The caller holds the app's lock
    /// (no build may be writing blobs meanwhile).
    pub fn collect(
        &self,
        repository: &str,
        keep: &std::collections::HashSet<String>,
        dry_run: bool,
    ) -> Result<Collected, ImageError> {
        let Some(index) = self.read_index(repository)? else {
            return Ok(Collected::default());
        };
        let tag_of = |d: &Descriptor| {
            d.annotations()
                .as_ref()
                .and_then(|a| a.get(REF_NAME))
                .cloned()
                .unwrap_or_default()
        };
        // An artifact (`sha256-<hex>.sig`, `.sbom`) goes with the image it describes.
        let described = |tag: &str| -> Option<String> {
            let stem = tag
                .strip_suffix(".sig")
                .or_else(|| tag.strip_suffix(".sbom"))?;
            Some(stem.replacen('-', ":", 1))
        };
        let (kept, dropped): (Vec<Descriptor>, Vec<Descriptor>) =
            index.manifests().iter().cloned().partition(|d| {
                let tag = tag_of(d);
                match described(&tag) {
                    Some(image) => keep.contains(&image),
                    None => keep.contains(d.digest().as_ref()),
                }
            });
        let mut collected = Collected::default();
        // Every blob a kept manifest reaches.
        let mut reachable = std::collections::HashSet::new();
        for d in &kept {
            let digest = d.digest().to_string();
            if let Ok(m) = ImageManifest::from_file(self.blob_path(repository, &digest)) {
                reachable.insert(m.config().digest().to_string());
                for l in m.layers() {
                    reachable.insert(l.digest().to_string());
                }
            }
            reachable.insert(digest);
        }
        let blobs = self.layout(repository).join("blobs/sha256");
        let entries =
            std::fs::read_dir(&blobs).map_err(io(format!("reading {}", blobs.display())))?;
        let mut doomed = Vec::new();
        let mut doomed_sizes: HashMap<String, u64> = HashMap::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !reachable.contains(&format!("sha256:{name}")) {
                let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                collected.bytes += size;
                doomed_sizes.insert(format!("sha256:{name}"), size);
                doomed.push(e.path());
            }
        }
        // Each dropped image with the bytes of the removed blobs it reached (a blob two
        // dropped images shared counts for the first).
        for d in &dropped {
            let tag = tag_of(d);
            if described(&tag).is_some() {
                continue;
            }
            let digest = d.digest().to_string();
            let mut blobs = vec![digest.clone()];
            if let Ok(m) = ImageManifest::from_file(self.blob_path(repository, &digest)) {
                blobs.push(m.config().digest().to_string());
                blobs.extend(m.layers().iter().map(|l| l.digest().to_string()));
            }
            let bytes = blobs.iter().filter_map(|b| doomed_sizes.remove(b)).sum();
            collected.images.push((tag, digest, bytes));
        }
        if dry_run || (dropped.is_empty() && doomed.is_empty()) {
            return Ok(collected);
        }
        // The index first: a blob is never removed while the index still names it.
        let index = ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(kept)
            .build()?;
        let layout = self.layout(repository);
        let tmp = layout.join("index.json.tmp");
        std::fs::write(&tmp, canonical_json(&index)?).map_err(io("writing index.json"))?;
        std::fs::rename(&tmp, layout.join("index.json")).map_err(io("writing index.json"))?;
        for path in doomed {
            std::fs::remove_file(&path).map_err(io(format!("removing {}", path.display())))?;
        }
        Ok(collected)
    }

    /// Whether the store still holds `image` (its manifest).
    pub fn holds(&self, image: &ImageRef) -> bool {
        self.blob_path(&image.repository, &image.digest).exists()
    }

    fn add_to_index(
        &self,
        repository: &str,
        tag: &str,
        digest: &str,
        size: u64,
    ) -> Result<(), ImageError> {
        let layout = self.layout(repository);
        let mut manifests: Vec<Descriptor> = self
            .read_index(repository)?
            .map(|i| i.manifests().clone())
            .unwrap_or_default();
        manifests.retain(|d| {
            d.annotations()
                .as_ref()
                .and_then(|a| a.get(REF_NAME))
                .is_none_or(|r| r != tag)
        });
        let mut ann = HashMap::new();
        ann.insert(REF_NAME.to_string(), tag.to_string());
        manifests.push(
            DescriptorBuilder::default()
                .media_type(MediaType::ImageManifest)
                .digest(Digest::from_str(digest)?)
                .size(size)
                .annotations(ann)
                .build()?,
        );
        let index = ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(manifests)
            .build()?;
        let tmp = layout.join("index.json.tmp");
        std::fs::write(&tmp, canonical_json(&index)?).map_err(io("writing index.json"))?;
        std::fs::rename(&tmp, layout.join("index.json")).map_err(io("writing index.json"))?;
        Ok(())
    }

    fn manifest(&self, image: &ImageRef) -> Result<ImageManifest, ImageError> {
        let path = self.blob_path(&image.repository, &image.digest);
        if !path.exists() {
            return Err(ImageError::NotFound(format!(
                "{}@{}",
                image.repository, image.digest
            )));
        }
        Ok(ImageManifest::from_file(path)?)
    }

    fn config(&self, image: &ImageRef) -> Result<ImageConfiguration, ImageError> {
        let manifest = self.manifest(image)?;
        Ok(ImageConfiguration::from_file(self.blob_path(
            &image.repository,
            manifest.config().digest().as_ref(),
        ))?)
    }

    /// The OS and CPU architecture an image was made for.
    pub fn platform(&self, image: &ImageRef) -> Result<Platform, ImageError> {
        let config = self.config(image)?;
        Ok(Platform {
            os: config.os().to_string(),
            architecture: config.architecture().to_string(),
        })
    }

    /// Reads how to run an image: berth's labels for its own builds, the usual config
    /// fields (`Entrypoint` + `Cmd` as the web process) for any other image.
    pub fn meta(&self, image: &ImageRef) -> Result<ImageMeta, ImageError> {
        let cfg = self.config(image)?.config().clone().unwrap_or_default();
        let labels = cfg.labels().clone().unwrap_or_default();
        let processes: BTreeMap<String, String> = labels
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(PROCESS_LABEL)
                    .map(|p| (p.to_string(), v.clone()))
            })
            .collect();
        let env = cfg.env().clone().unwrap_or_default();
        if labels.contains_key(OWN_STACK_LABEL) {
            let mut meta = ImageMeta::host_stack(
                processes,
                labels.get(RELEASE_LABEL).cloned(),
                labels.get(TEST_LABEL).cloned(),
                env,
            );
            meta.own_root = Some(berth_core::model::OwnRoot {
                workdir: "/app".into(),
            });
            return Ok(meta);
        }
        if labels.contains_key(HOST_STACK_LABEL) || !processes.is_empty() {
            return Ok(ImageMeta::host_stack(
                processes,
                labels.get(RELEASE_LABEL).cloned(),
                labels.get(TEST_LABEL).cloned(),
                env,
            ));
        }
        let argv: Vec<String> = cfg
            .entrypoint()
            .iter()
            .flatten()
            .chain(cfg.cmd().iter().flatten())
            .cloned()
            .collect();
        let mut processes = BTreeMap::new();
        if !argv.is_empty() {
            let command =
                shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_else(|_| argv.join(" "));
            processes.insert(berth_core::model::WEB_PROCESS.to_string(), command);
        }
        let mut ports: Vec<u16> = cfg
            .exposed_ports()
            .iter()
            .flatten()
            .filter_map(|p| match p.split_once('/') {
                Some((n, "tcp")) => n.parse().ok(),
                Some(_) => None,
                None => p.parse().ok(),
            })
            .collect();
        ports.sort_unstable();
        let workdir = cfg
            .working_dir()
            .clone()
            .filter(|w| w.starts_with('/'))
            .unwrap_or_else(|| "/".into());
        Ok(ImageMeta {
            processes,
            release_command: None,
            test_command: None,
            env,
            own_root: Some(berth_core::model::OwnRoot { workdir }),
            ports,
            user: cfg.user().clone().filter(|u| !u.is_empty()),
        })
    }

    /// Copies the image tagged `tag` in another OCI layout (`src`) into `repository`,
    /// tagged `sha256-<manifest digest>`: the digest does not change.
    pub fn import(&self, repository: &str, src: &Path, tag: &str) -> Result<ImageRef, ImageError> {
        let index = ImageIndex::from_file(src.join("index.json"))?;
        let entry = index
            .manifests()
            .iter()
            .find(|d| {
                d.annotations()
                    .as_ref()
                    .and_then(|a| a.get(REF_NAME))
                    .is_some_and(|r| r == tag)
            })
            .ok_or_else(|| ImageError::NotFound(format!("{}:{tag}", src.display())))?
            .clone();
        let src_blob = |digest: &str| {
            src.join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:"))
        };
        let manifest = ImageManifest::from_file(src_blob(entry.digest().as_ref()))?;
        let layout = self.layout(repository);
        let blobs = layout.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).map_err(io(format!("creating {}", blobs.display())))?;
        std::fs::write(
            layout.join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .map_err(io("writing oci-layout"))?;
        let digests = manifest
            .layers()
            .iter()
            .chain(std::iter::once(manifest.config()))
            .map(|d| d.digest().to_string())
            .chain(std::iter::once(entry.digest().to_string()));
        for digest in digests {
            let to = self.blob_path(repository, &digest);
            if to.exists() {
                continue;
            }
            let tmp = to.with_extension("tmp");
            std::fs::copy(src_blob(&digest), &tmp).map_err(io(format!("copying blob {digest}")))?;
            std::fs::rename(&tmp, &to).map_err(io(format!("storing blob {digest}")))?;
        }
        let new_tag = format!("sha256-{}", entry.digest().digest());
        self.add_to_index(repository, &new_tag, entry.digest().as_ref(), entry.size())?;
        Ok(ImageRef {
            repository: repository.to_string(),
            tag: new_tag,
            digest: entry.digest().to_string(),
        })
    }

    /// Unpacks an image's layers into `dest` (a root filesystem), in order, applying each
    /// layer's whiteouts to the layers below. Device nodes are never created, and nothing
    /// is written outside `dest` whatever the layers' paths and links say.
    pub fn unpack(&self, image: &ImageRef, dest: &Path) -> Result<(), ImageError> {
        let manifest = self.manifest(image)?;
        std::fs::create_dir_all(dest).map_err(io(format!("creating {}", dest.display())))?;
        let root = dest
            .canonicalize()
            .map_err(io(format!("reading {}", dest.display())))?;
        for layer in manifest.layers() {
            let reader = self.layer_reader(&image.repository, layer)?;
            apply_layer(reader, &root).map_err(io(format!("unpacking into {}", dest.display())))?;
        }
        Ok(())
    }

    /// Removes an app's whole layout.
    pub fn remove_repository(&self, repository: &str) -> Result<(), ImageError> {
        let dir = self.layout(repository);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io(format!("removing {}", dir.display())))?;
        }
        Ok(())
    }
}

/// Applies one layer (a tar stream) on top of `root` (canonical).
fn apply_layer(reader: impl std::io::Read, root: &Path) -> std::io::Result<()> {
    let mut tar = tar::Archive::new(reader);
    tar.set_preserve_permissions(true);
    tar.set_overwrite(true);
    // What this layer itself put in place: an opaque whiteout hides only lower layers.
    let mut added: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
    let mut opaque: Vec<PathBuf> = Vec::new();
    for entry in tar.entries()? {
        let mut entry = entry?;
        let rel: PathBuf = entry
            .path()?
            .components()
            .filter(|c| matches!(c, std::path::Component::Normal(_)))
            .collect();
        let Some(name) = rel.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            continue;
        };
        let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        if name == OPAQUE {
            opaque.push(parent);
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT) {
            remove_inside(root, &parent.join(hidden))?;
            continue;
        }
        if matches!(
            entry.header().entry_type(),
            tar::EntryType::Char | tar::EntryType::Block
        ) {
            continue;
        }
        added.insert(rel.clone());
        entry.unpack_in(root)?;
    }
    for dir in opaque {
        let Some(full) = inside(root, &dir)? else {
            continue;
        };
        let Ok(entries) = std::fs::read_dir(&full) else {
            continue;
        };
        for e in entries.flatten() {
            let rel = dir.join(e.file_name());
            if !added.iter().any(|a| a.starts_with(&rel)) {
                remove_inside(root, &rel)?;
            }
        }
    }
    Ok(())
}

/// `root/rel` when its parent directory resolves inside `root` (links included).
fn inside(root: &Path, rel: &Path) -> std::io::Result<Option<PathBuf>> {
    let full = root.join(rel);
    let parent = match full.parent() {
        Some(p) => p,
        None => return Ok(None),
    };
    match parent.canonicalize() {
        Ok(p) if p.starts_with(root) => Ok(Some(p.join(full.file_name().unwrap_or_default()))),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes `root/rel` (a file, link or whole directory) if it is there and inside `root`.
fn remove_inside(root: &Path, rel: &Path) -> std::io::Result<()> {
    let Some(path) = inside(root, rel)? else {
        return Ok(());
    };
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
        Ok(_) => std::fs::remove_file(&path),
        Err(_) => Ok(()),
    }
}

/// JSON with object keys sorted, so that equal images have equal digests (the OCI types keep
/// labels and annotations in hash maps, whose order varies).
fn canonical_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, ImageError> {
    serde_json::to_value(value)
        .and_then(|v| serde_json::to_vec(&v))
        .map_err(|e| ImageError::Io {
            context: "serialising OCI JSON".into(),
            source: std::io::Error::other(e),
        })
}

/// Appends `dir` and everything under it, sorted by name, as `prefix/...`.
/// Writes a gzipped tar layer into `blobs` (what `fill` appends, symlinks kept as links),
/// hashed before and after compression: its diff id, its blob's hex digest and size.
fn write_layer(
    blobs: &Path,
    fill: impl FnOnce(
        &mut tar::Builder<
            HashingWriter<GzEncoder<HashingWriter<std::io::BufWriter<std::fs::File>>>>,
        >,
    ) -> std::io::Result<()>,
) -> Result<(String, String, u64), ImageError> {
    let tmp_layer = blobs.join(format!(
        "layer-{}-{}.tmp",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    let file = std::fs::File::create(&tmp_layer).map_err(io("creating layer"))?;
    let compressed = HashingWriter {
        inner: std::io::BufWriter::new(file),
        hasher: Sha256::new(),
        size: 0,
    };
    let uncompressed = HashingWriter {
        inner: GzEncoder::new(compressed, Compression::fast()),
        hasher: Sha256::new(),
        size: 0,
    };
    let mut tar = tar::Builder::new(uncompressed);
    tar.follow_symlinks(false);
    fill(&mut tar).map_err(io("packing the image layer"))?;
    let uncompressed = tar.into_inner().map_err(io("packing the image layer"))?;
    let diff_id = hex::encode(uncompressed.hasher.finalize());
    let mut compressed = uncompressed
        .inner
        .finish()
        .map_err(io("compressing the layer"))?;
    compressed.flush().map_err(io("writing the layer"))?;
    let layer_hex = hex::encode(compressed.hasher.clone().finalize());
    let layer_size = compressed.size;
    drop(compressed);
    std::fs::rename(&tmp_layer, blobs.join(&layer_hex)).map_err(io("storing the layer"))?;
    Ok((diff_id, layer_hex, layer_size))
}

fn append_tree<W: Write>(
    tar: &mut tar::Builder<W>,
    dir: &Path,
    prefix: &Path,
) -> std::io::Result<()> {
    append_entry(tar, dir, prefix)?;
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let name = prefix.join(e.file_name());
        if e.file_type()?.is_dir() {
            append_tree(tar, &path, &name)?;
        } else {
            append_entry(tar, &path, &name)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_reads_and_unpacks_an_image() {
        let store_dir = tempfile::tempdir().unwrap();
        let app = tempfile::tempdir().unwrap();
        std::fs::write(app.path().join("app.py"), "print('hi')").unwrap();
        std::fs::create_dir(app.path().join("lib")).unwrap();
        std::fs::write(app.path().join("lib/x.py"), "x = 1").unwrap();
        let store = ImageStore::new(store_dir.path());
        let mut processes = BTreeMap::new();
        processes.insert("web".to_string(), "python3 app.py".to_string());
        let meta = ImageMeta::host_stack(
            processes,
            Some("./migrate".into()),
            None,
            vec!["A=1".into()],
        );
        let a = store
            .write("hello", "sha256-abc", app.path(), &meta)
            .unwrap();
        let b = store
            .write("hello", "sha256-abc", app.path(), &meta)
            .unwrap();
        assert_eq!(a.digest, b.digest, "images are reproducible");
        assert_eq!(store.find("hello", "sha256-abc").unwrap(), Some(a.clone()));
        assert_eq!(store.find("hello", "nope").unwrap(), None);
        assert_eq!(store.meta(&a).unwrap(), meta);
        let root = tempfile::tempdir().unwrap();
        store.unpack(&a, root.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.path().join("app/lib/x.py")).unwrap(),
            "x = 1"
        );
        let index: serde_json::Value = serde_json::from_slice(
            &std::fs::read(store.layout("hello").join("index.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn collecting_drops_unkept_images_their_artifacts_and_blobs_only() {
        let store_dir = tempfile::tempdir().unwrap();
        let store = ImageStore::new(store_dir.path());
        let meta = ImageMeta::host_stack(BTreeMap::new(), None, None, vec![]);
        let mut images = Vec::new();
        for n in 0..3 {
            let app = tempfile::tempdir().unwrap();
            std::fs::write(app.path().join("v"), format!("version {n}")).unwrap();
            let image = store
                .write("shop", &format!("sha256-{n}"), app.path(), &meta)
                .unwrap();
            store
                .write_artifact(
                    "shop",
                    &crate::signing::signature_tag(&image.digest),
                    "application/vnd.dev.cosign.simplesigning.v1+json",
                    format!("sig {n}").as_bytes(),
                    &[],
                )
                .unwrap();
            images.push(image);
        }
        let keep: std::collections::HashSet<String> =
            [images[1].digest.clone(), images[2].digest.clone()].into();
        let blobs = || {
            std::fs::read_dir(store.layout("shop").join("blobs/sha256"))
                .unwrap()
                .count()
        };
        let before = blobs();

        let dry = store.collect("shop", &keep, true).unwrap();
        assert_eq!(dry.images.len(), 1);
        let (tag, digest, bytes) = &dry.images[0];
        assert_eq!((tag.as_str(), digest), ("sha256-0", &images[0].digest));
        // Its config and layers, and its manifest.
        let manifest = std::fs::metadata(store.blob_path("shop", &images[0].digest))
            .unwrap()
            .len();
        assert_eq!(*bytes, store.size(&images[0]).unwrap() + manifest);
        assert!(dry.bytes > *bytes, "the signature's blobs go too");
        assert_eq!(blobs(), before, "a dry run removes nothing");
        assert!(store.holds(&images[0]));

        let done = store.collect("shop", &keep, false).unwrap();
        assert_eq!(done, dry);
        assert!(!store.holds(&images[0]));
        assert!(blobs() < before);
        assert_eq!(store.find("shop", "sha256-0").unwrap(), None);
        assert!(store
            .read_artifact("shop", &crate::signing::signature_tag(&images[0].digest))
            .unwrap()
            .is_none());
        // What is kept still reads and unpacks, its signature included.
        for kept in &images[1..] {
            let root = tempfile::tempdir().unwrap();
            store.unpack(kept, root.path()).unwrap();
            assert!(store
                .read_artifact("shop", &crate::signing::signature_tag(&kept.digest))
                .unwrap()
                .is_some());
        }
        assert_eq!(
            store.collect("shop", &keep, false).unwrap(),
            Collected::default(),
            "nothing left to collect"
        );
    }
}
