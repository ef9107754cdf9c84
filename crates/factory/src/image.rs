//! berth's local image store: one OCI image layout per app (`<root>/<app>/`, with
//! `oci-layout`, `index.json` and `blobs/sha256/`), readable by any OCI tool
//! (`skopeo inspect oci:<root>/<app>:<tag>`).
//!
//! An image holds one layer with the built app under `/app`; the image config carries the
//! web command as `Cmd`, the environment, and every process type as labels.

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

/// Errors of the image store.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {0} not found in the local image store")]
    NotFound(String),
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

        // Layer: tar of app_dir under app/, hashed before and after compression.
        let tmp_layer = blobs.join(format!("layer-{}.tmp", std::process::id()));
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
        append_tree(&mut tar, app_dir, Path::new("app")).map_err(io("packing the image layer"))?;
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

        let mut labels: HashMap<String, String> = meta
            .processes
            .iter()
            .map(|(k, v)| (format!("{PROCESS_LABEL}{k}"), v.clone()))
            .collect();
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
        let (config_hex, config_size) = self.write_blob(repository, &canonical_json(&config)?)?;
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
            .layers(vec![DescriptorBuilder::default()
                .media_type(MediaType::ImageLayerGzip)
                .digest(sha256_digest(&layer_hex)?)
                .size(layer_size)
                .build()?])
            .build()?;
        let (manifest_hex, manifest_size) =
            self.write_blob(repository, &canonical_json(&manifest)?)?;

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
                .digest(sha256_digest(&manifest_hex)?)
                .size(manifest_size)
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
        Ok(ImageRef {
            repository: repository.to_string(),
            tag: tag.to_string(),
            digest: format!("sha256:{manifest_hex}"),
        })
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

    /// Reads the process commands and environment of an image.
    pub fn meta(&self, image: &ImageRef) -> Result<ImageMeta, ImageError> {
        let manifest = self.manifest(image)?;
        let config = ImageConfiguration::from_file(
            self.blob_path(&image.repository, manifest.config().digest().as_ref()),
        )?;
        let cfg = config.config().clone().unwrap_or_default();
        let labels = cfg.labels().clone().unwrap_or_default();
        Ok(ImageMeta {
            processes: labels
                .iter()
                .filter_map(|(k, v)| {
                    k.strip_prefix(PROCESS_LABEL)
                        .map(|p| (p.to_string(), v.clone()))
                })
                .collect(),
            release_command: labels.get(RELEASE_LABEL).cloned(),
            test_command: labels.get(TEST_LABEL).cloned(),
            env: cfg.env().clone().unwrap_or_default(),
        })
    }

    /// Unpacks an image's layers into `dest` (a root filesystem).
    pub fn unpack(&self, image: &ImageRef, dest: &Path) -> Result<(), ImageError> {
        let manifest = self.manifest(image)?;
        std::fs::create_dir_all(dest).map_err(io(format!("creating {}", dest.display())))?;
        for layer in manifest.layers() {
            let f = std::fs::File::open(self.blob_path(&image.repository, layer.digest().as_ref()))
                .map_err(io("opening layer"))?;
            let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(f));
            tar.set_preserve_permissions(true);
            tar.unpack(dest)
                .map_err(io(format!("unpacking into {}", dest.display())))?;
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
        let meta = ImageMeta {
            processes,
            release_command: Some("./migrate".into()),
            test_command: None,
            env: vec!["A=1".into()],
        };
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
}
