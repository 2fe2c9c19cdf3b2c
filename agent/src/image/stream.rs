//! A bottom layer unpacked as it downloads (docs/prebuilds.md "Cold
//! start"): the blob's bytes go to containerd's content store and, at the
//! same time, through a decompressor and a tar reader into the directory of
//! the layer's prepared snapshot, instead of after the download through
//! containerd's applier. The uncompressed bytes are hashed on the way: the
//! snapshot is committed only if they are the config's diff_id.
//!
//! Only a layer without a parent is unpacked so (its snapshot is a plain
//! directory, with nothing below to white out); whiteout entries in it are
//! skipped, as they hide nothing. Files, directories, links, device nodes
//! and FIFOs are made with their owners, modes, times and xattrs.

use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

/// How a layer blob is compressed, from its media type; None for one this
/// does not unpack (encrypted, foreign, unknown): containerd applies it.
pub fn compression(media_type: &str) -> Option<Compression> {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Some(Compression::Gzip),
        "application/vnd.oci.image.layer.v1.tar+zstd" => Some(Compression::Zstd),
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

/// An unpack in progress: the blob's bytes go in through `tx`; once `tx`
/// is dropped, `done` answers with the diff_id of what was unpacked.
pub struct Unpacking {
    pub tx: mpsc::Sender<Bytes>,
    pub done: tokio::task::JoinHandle<io::Result<String>>,
}

/// Starts unpacking a blob compressed with `c` into `dir`.
pub fn start(c: Compression, dir: PathBuf) -> Unpacking {
    let (tx, rx) = mpsc::channel(16);
    let done = tokio::task::spawn_blocking(move || unpack(c, rx, &dir));
    Unpacking { tx, done }
}

/// Reads what the channel brings, as a blocking reader.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    chunk: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(c) => self.chunk = c,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// Hashes what is read through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

fn unpack(c: Compression, rx: mpsc::Receiver<Bytes>, dir: &Path) -> io::Result<String> {
    let blob = io::BufReader::with_capacity(
        1 << 20,
        ChannelReader {
            rx,
            chunk: Bytes::new(),
        },
    );
    let tar: Box<dyn Read> = match c {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(blob)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(blob)?),
        Compression::None => Box::new(blob),
    };
    let mut archive = tar::Archive::new(Hashing {
        inner: tar,
        hash: Sha256::new(),
    });
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if name.is_some_and(|n| n.starts_with(".wh.")) {
            // Nothing below a bottom layer to hide.
            continue;
        }
        let kind = entry.header().entry_type();
        if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            special(&entry, &path, dir)?;
            continue;
        }
        if !entry.unpack_in(dir)? {
            return Err(io::Error::other(format!(
                "{}: a path outside the layer",
                path.display()
            )));
        }
    }
    // The tar's end (zero blocks, padding) is part of what the diff_id covers.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink())?;
    Ok(format!("sha256:{}", hex::encode(rest.hash.finalize())))
}

/// A device node or FIFO (the tar crate writes those as regular files).
fn special<R: Read>(entry: &tar::Entry<R>, path: &Path, dir: &Path) -> io::Result<()> {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    if path.components().any(|c| {
        !matches!(
            c,
            std::path::Component::Normal(_) | std::path::Component::CurDir
        )
    }) {
        return Err(io::Error::other(format!(
            "{}: a path outside the layer",
            path.display()
        )));
    }
    let h = entry.header();
    let dst = dir.join(path);
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let _ = std::fs::remove_file(&dst);
    let kind = h.entry_type();
    let flag = match () {
        _ if kind.is_character_special() => SFlag::S_IFCHR,
        _ if kind.is_block_special() => SFlag::S_IFBLK,
        _ => SFlag::S_IFIFO,
    };
    // A FIFO's header may leave the device numbers blank.
    let number = |n: io::Result<Option<u32>>| u64::from(n.ok().flatten().unwrap_or(0));
    let dev = makedev(number(h.device_major()), number(h.device_minor()));
    let mode = h.mode()? & 0o7777;
    mknod(&dst, flag, Mode::from_bits_truncate(mode), dev).map_err(io::Error::from)?;
    std::os::unix::fs::chown(&dst, Some(h.uid()? as u32), Some(h.gid()? as u32))?;
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// A bottom layer whose snapshot `key` is being unpacked into.
pub(super) struct Finishing {
    key: String,
    done: tokio::task::JoinHandle<io::Result<String>>,
    started: std::time::Instant,
}

impl super::ImageStore {
    /// Prepares the snapshot of bottom layer `layer` (chain id `chain_id`)
    /// to be unpacked into as the layer downloads: the sender the blob's
    /// bytes go to, and what finishes it. None when the layer is here
    /// already, its compression is not one read here, or the snapshotter
    /// gives no plain directory (containerd applies it after the download).
    pub(super) async fn stream_bottom(
        &self,
        lease: &str,
        layer: &containerd_client::types::Descriptor,
        chain_id: &str,
    ) -> crate::error::Result<Option<(mpsc::Sender<Bytes>, Finishing)>> {
        let Some(c) = compression(&layer.media_type) else {
            return Ok(None);
        };
        if self.ctd.snapshot_exists(chain_id).await?
            || self.ctd.content_exists(&layer.digest).await?
        {
            return Ok(None);
        }
        let key = format!("berth-extract-{}-{chain_id}", rand::random::<u32>());
        let kind = format!("snapshots/{}", self.ctd.snapshotter());
        self.ctd.lease_add(lease, &kind, chain_id).await?;
        let mounts = self
            .ctd
            .prepare(Some(lease), &key, "", Default::default())
            .await?;
        let dir = match mounts.as_slice() {
            [m] if m.r#type == "bind" => PathBuf::from(&m.source),
            _ => {
                let _ = self.ctd.remove_snapshot(&key).await;
                return Ok(None);
            }
        };
        let u = start(c, dir);
        let started = std::time::Instant::now();
        Ok(Some((
            u.tx,
            Finishing {
                key,
                done: u.done,
                started,
            },
        )))
    }

    /// Ends a bottom layer's unpack once its download ended (`fetched`:
    /// whole and verified): committed as `chain_id` if what was unpacked is
    /// `diff_id` (true). An unpack that failed, or a download that did, is
    /// removed (false: containerd applies the layer, or the pull fails);
    /// a verified blob that unpacks to other bytes than the config names
    /// is an error.
    pub(super) async fn finish_bottom(
        &self,
        lease: &str,
        f: Finishing,
        fetched: bool,
        chain_id: &str,
        diff_id: &str,
    ) -> crate::error::Result<bool> {
        let waited = std::time::Instant::now();
        let unpacked = f
            .done
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
        match unpacked {
            Ok(actual) if fetched && actual == diff_id => {
                self.ctd.commit(lease, chain_id, &f.key).await?;
                // ms: from the first byte asked for to the last one unpacked.
                tracing::info!(
                    chain_id,
                    ms = f.started.elapsed().as_millis() as u64,
                    after_download_ms = waited.elapsed().as_millis() as u64,
                    "layer unpacked as it downloaded"
                );
                Ok(true)
            }
            Ok(actual) if fetched => {
                let _ = self.ctd.remove_snapshot(&f.key).await;
                Err(crate::error::AgentError::DigestMismatch {
                    expected: diff_id.into(),
                    actual,
                })
            }
            other => {
                let _ = self.ctd.remove_snapshot(&f.key).await;
                if let Err(e) = other {
                    tracing::warn!(chain_id, error = %e, "unpack while downloading failed; containerd applies the layer");
                }
                Ok(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: tar::EntryType, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1);
        h.set_size(0);
        h
    }

    fn layer() -> Vec<u8> {
        use tar::EntryType as K;
        let mut b = tar::Builder::new(Vec::new());
        b.append_data(&mut header(K::Directory, 0o755), "etc", io::empty())
            .unwrap();
        let mut h = header(K::Regular, 0o640);
        h.set_uid(1000);
        h.set_gid(1000);
        h.set_size(5);
        b.append_data(&mut h, "etc/hello", &b"hello"[..]).unwrap();
        b.append_link(&mut header(K::Link, 0o640), "etc/again", "etc/hello")
            .unwrap();
        b.append_link(&mut header(K::Symlink, 0o777), "etc/soft", "hello")
            .unwrap();
        b.append_data(&mut header(K::Fifo, 0o600), "etc/pipe", io::empty())
            .unwrap();
        b.append_data(&mut header(K::Regular, 0o644), "etc/.wh.gone", io::empty())
            .unwrap();
        b.into_inner().unwrap()
    }

    async fn run(c: Compression, blob: Vec<u8>, dir: &Path) -> io::Result<String> {
        let u = start(c, dir.to_path_buf());
        for chunk in blob.chunks(1000) {
            u.tx.send(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        drop(u.tx);
        u.done.await.unwrap()
    }

    #[tokio::test]
    async fn unpacks_what_streams_and_hashes_the_tar() {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let tar = layer();
        let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&tar)));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &tar).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&tar[..], 3).unwrap();
        for (c, blob) in [
            (Compression::Gzip, gz),
            (Compression::Zstd, zst),
            (Compression::None, tar.clone()),
        ] {
            let dir = tempfile::tempdir().unwrap();
            assert_eq!(run(c, blob, dir.path()).await.unwrap(), diff_id, "{c:?}");
            let etc = dir.path().join("etc");
            assert_eq!(std::fs::read(etc.join("hello")).unwrap(), b"hello");
            let m = std::fs::metadata(etc.join("hello")).unwrap();
            assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (1000, 1000, 0o640));
            assert_eq!(std::fs::metadata(etc.join("again")).unwrap().ino(), m.ino());
            assert_eq!(
                std::fs::read_link(etc.join("soft")).unwrap(),
                Path::new("hello")
            );
            let p = std::fs::symlink_metadata(etc.join("pipe")).unwrap();
            assert!(p.file_type().is_fifo());
            assert!(!etc.join(".wh.gone").exists() && !etc.join("gone").exists());
        }
    }

    #[tokio::test]
    async fn refuses_escapes_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        assert!(run(Compression::Gzip, b"not gzip".to_vec(), dir.path())
            .await
            .is_err());
        let mut b = tar::Builder::new(Vec::new());
        let mut h = header(tar::EntryType::Fifo, 0o600);
        h.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../escape");
        h.set_cksum();
        b.append(&h, io::empty()).unwrap();
        let blob = b.into_inner().unwrap();
        let inner = dir.path().join("in");
        std::fs::create_dir(&inner).unwrap();
        assert!(run(Compression::None, blob, &inner).await.is_err());
        assert!(!dir.path().join("escape").exists());
        assert_eq!(
            compression("application/vnd.oci.image.layer.v1.tar+gzip+encrypted"),
            None
        );
    }
}
