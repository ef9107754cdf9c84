//! Parts of a backup on disk: directories as tar + zstd (ownership, modes and times kept),
//! single files as zstd, each hashed (SHA-256) as it is written so the manifest can name it
//! without reading it twice.

use super::{io, BackupError};
use sha2::{Digest, Sha256};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

/// zstd level: the command line's default, fast and good.
const LEVEL: i32 = 3;
/// Buffer between the archiver and the file.
const BUFFER: usize = 1 << 20;

/// What was written: its size and SHA-256 (hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Bytes in the file.
    pub bytes: u64,
    /// SHA-256 of the file, hex.
    pub sha256: String,
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }
    fn finish(mut self) -> std::io::Result<(W, Written)> {
        self.inner.flush()?;
        Ok((
            self.inner,
            Written {
                bytes: self.bytes,
                sha256: hex::encode(self.hasher.finalize()),
            },
        ))
    }
}

fn encoder(
    out: &Path,
) -> Result<zstd::Encoder<'static, Hashing<BufWriter<std::fs::File>>>, BackupError> {
    let file = std::fs::File::create(out).map_err(io(format!("creating {}", out.display())))?;
    let mut enc = zstd::Encoder::new(Hashing::new(BufWriter::with_capacity(BUFFER, file)), LEVEL)
        .map_err(io("starting zstd"))?;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    // More than one worker compresses while the archiver reads; ignore a libzstd without it.
    let _ = enc.multithread(workers);
    Ok(enc)
}

fn finish(
    enc: zstd::Encoder<'static, Hashing<BufWriter<std::fs::File>>>,
    out: &Path,
) -> Result<Written, BackupError> {
    let ctx = || format!("writing {}", out.display());
    let hashing = enc.finish().map_err(io(ctx()))?;
    let (buf, written) = hashing.finish().map_err(io(ctx()))?;
    let file = buf.into_inner().map_err(|e| BackupError::Io {
        context: ctx(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io(ctx()))?;
    Ok(written)
}

/// Packs the contents of `dir` (not `dir` itself) into `out` as tar + zstd.
pub fn pack_dir(dir: &Path, out: &Path) -> Result<Written, BackupError> {
    let enc = encoder(out)?;
    let mut tar = tar::Builder::new(enc);
    tar.follow_symlinks(false);
    tar.mode(tar::HeaderMode::Complete);
    tar.append_dir_all(".", dir)
        .map_err(io(format!("archiving {}", dir.display())))?;
    let enc = tar
        .into_inner()
        .map_err(io(format!("archiving {}", dir.display())))?;
    finish(enc, out)
}

/// A reader that hashes and counts what passes through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Unpacks a [`pack_dir`] archive into `dir` while hashing it, in one read: returns what the
/// archive file is (size, SHA-256) and whether unpacking worked. The caller compares the
/// first with the manifest before trusting the second: a damaged archive shows as a
/// checksum mismatch even when it also failed to unpack.
pub fn unpack_dir_hashed(
    archive: &Path,
    dir: &Path,
) -> Result<(Written, Result<(), BackupError>), BackupError> {
    let file =
        std::fs::File::open(archive).map_err(io(format!("opening {}", archive.display())))?;
    let reader = BufReader::with_capacity(
        BUFFER,
        HashingReader {
            inner: file,
            hasher: Sha256::new(),
            bytes: 0,
        },
    );
    let dec =
        zstd::Decoder::with_buffer(reader).map_err(io(format!("reading {}", archive.display())))?;
    let mut tar = tar::Archive::new(dec);
    tar.set_preserve_permissions(true);
    tar.set_preserve_ownerships(true);
    tar.set_preserve_mtime(true);
    tar.set_unpack_xattrs(false);
    tar.set_overwrite(true);
    let unpacked = tar.unpack(dir).map_err(io(format!(
        "unpacking {} into {}",
        archive.display(),
        dir.display()
    )));
    // Whatever the archiver did not read still counts toward the checksum.
    let mut rest = tar.into_inner().finish();
    std::io::copy(&mut rest, &mut std::io::sink())
        .map_err(io(format!("reading {}", archive.display())))?;
    let hashing = rest.into_inner();
    Ok((
        Written {
            bytes: hashing.bytes,
            sha256: hex::encode(hashing.hasher.finalize()),
        },
        unpacked,
    ))
}

/// Compresses one file into `out`.
pub fn compress_file(src: &Path, out: &Path) -> Result<Written, BackupError> {
    let mut enc = encoder(out)?;
    let mut file = std::fs::File::open(src).map_err(io(format!("opening {}", src.display())))?;
    std::io::copy(&mut file, &mut enc).map_err(io(format!("compressing {}", src.display())))?;
    finish(enc, out)
}

/// Decompresses a [`compress_file`] part into `out`.
pub fn decompress_file(part: &Path, out: &Path) -> Result<(), BackupError> {
    let file = std::fs::File::open(part).map_err(io(format!("opening {}", part.display())))?;
    let mut dec = zstd::Decoder::new(file).map_err(io(format!("reading {}", part.display())))?;
    let mut dest = std::fs::File::create(out).map_err(io(format!("creating {}", out.display())))?;
    std::io::copy(&mut dec, &mut dest).map_err(io(format!("decompressing {}", part.display())))?;
    dest.sync_all()
        .map_err(io(format!("writing {}", out.display())))
}

/// Size and SHA-256 of a file.
pub fn hash_file(path: &Path) -> Result<Written, BackupError> {
    let file = std::fs::File::open(path).map_err(io(format!("opening {}", path.display())))?;
    let mut reader = BufReader::with_capacity(BUFFER, file);
    let mut hashing = Hashing::new(std::io::sink());
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(io(format!("reading {}", path.display())))?;
        if n == 0 {
            break;
        }
        hashing
            .write_all(&buf[..n])
            .map_err(io(format!("reading {}", path.display())))?;
    }
    Ok(hashing.finish().map_err(io("hashing"))?.1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn a_directory_comes_back_with_its_bytes_modes_and_owners() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("a.txt"), b"hello").unwrap();
        std::fs::write(src.join("sub/b.bin"), vec![9u8; 300_000]).unwrap();
        std::fs::set_permissions(src.join("a.txt"), std::fs::Permissions::from_mode(0o640))
            .unwrap();
        std::os::unix::fs::chown(src.join("sub/b.bin"), Some(10_001), Some(10_002)).unwrap();
        std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
        let out = d.path().join("p.tar.zst");
        let w = pack_dir(&src, &out).unwrap();
        assert_eq!(w, hash_file(&out).unwrap());
        assert!(w.bytes < 300_000, "compressed: {}", w.bytes);
        let dest = d.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        let (read, unpacked) = unpack_dir_hashed(&out, &dest).unwrap();
        unpacked.unwrap();
        assert_eq!(read, w, "unpacking reads exactly the archive");
        assert_eq!(std::fs::read(dest.join("a.txt")).unwrap(), b"hello");
        assert_eq!(
            std::fs::read(dest.join("sub/b.bin")).unwrap(),
            vec![9u8; 300_000]
        );
        let m = std::fs::metadata(dest.join("a.txt")).unwrap();
        assert_eq!(m.mode() & 0o777, 0o640);
        let m = std::fs::metadata(dest.join("sub/b.bin")).unwrap();
        assert_eq!((m.uid(), m.gid()), (10_001, 10_002));
        assert_eq!(
            std::fs::read_link(dest.join("link")).unwrap(),
            Path::new("a.txt")
        );
    }

    #[test]
    fn a_file_round_trips_and_damage_is_seen() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("state.db");
        std::fs::write(&src, b"rows ".repeat(10_000)).unwrap();
        let part = d.path().join("state.db.zst");
        let w = compress_file(&src, &part).unwrap();
        let back = d.path().join("back.db");
        decompress_file(&part, &back).unwrap();
        assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&src).unwrap());
        let mut bytes = std::fs::read(&part).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&part, bytes).unwrap();
        assert_ne!(hash_file(&part).unwrap().sha256, w.sha256);
    }
}
