//! Prebuild layers between nodes (docs/prebuilds.md): a layer is pushed to
//! a registry as an OCI artifact (artifactType
//! `application/vnd.berth.prebuild.v1`, tagged with its key): one
//! `tar+zstd` layer of its tree, made and uploaded as it is read, and a
//! config recording what it was built from. A node that lacks it pulls the
//! manifest by digest, makes a fresh ext4 image sized from the manifest's
//! annotations, and unpacks the blob into it as it streams; the blob's
//! digest is checked before the image becomes the layer, so a registry that
//! serves other bytes leaves nothing behind.

use super::Layers;
use crate::error::{AgentError, Result};
use crate::image::Session;
use bytes::Bytes;
use futures::StreamExt;
use oci_spec::image::{Descriptor, ImageManifest, ImageManifestBuilder, MediaType};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub const ARTIFACT_TYPE: &str = "application/vnd.berth.prebuild.v1";
pub const CONFIG_TYPE: &str = "application/vnd.berth.prebuild.config.v1+json";
const KEY: &str = "dev.berth.prebuild.key";
const FILES: &str = "dev.berth.prebuild.files";
const BYTES: &str = "dev.berth.prebuild.bytes";
/// Chunks sent to the registry (and handed to the unpacker).
const CHUNK: usize = 256 << 10;
/// Most entries a layer's tar may have (a pull refuses more).
const MAX_FILES: u64 = 50_000_000;

/// What a layer was built from, recorded in its config.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    pub key: String,
    pub repo_url: String,
    pub commit: String,
    pub config_hash: String,
    pub folder: String,
}

/// A push's outcome.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The manifest's digest.
    pub digest: String,
    pub blob_bytes: u64,
    pub ms: u64,
}

/// A pull's outcome.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub blob_bytes: u64,
    pub ms: u64,
}

#[derive(Debug, serde::Serialize)]
struct Config<'a> {
    #[serde(flatten)]
    meta: &'a Meta,
    files: u64,
    bytes: u64,
    /// sha256 of the uncompressed tar.
    diff_id: String,
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn reg_err(s: &Session, message: impl Into<String>) -> AgentError {
    AgentError::Registry {
        registry: s.registry().to_string(),
        message: message.into(),
    }
}

/// Writes into a channel in chunks (from a blocking thread to the upload).
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "upload ended"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// Reads what a channel brings (the download, in a blocking thread).
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len());
        out[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

/// Hashes what passes through.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(data)?;
        self.hash.update(&data[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Makes the tar+zstd of `tree` into `tx`; returns the tar's digest.
fn write_layer(
    tree: &Path,
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
) -> std::io::Result<String> {
    let sink = ChannelWriter {
        tx,
        buf: Vec::with_capacity(CHUNK),
    };
    let enc = zstd::Encoder::new(sink, 1)?;
    let mut tar = tar::Builder::new(Hashing {
        inner: enc,
        hash: Sha256::new(),
        bytes: 0,
    });
    tar.follow_symlinks(false);
    tar.mode(tar::HeaderMode::Complete);
    tar.append_dir_all(".", tree)?;
    let hashing = tar.into_inner()?;
    let diff_id = format!("sha256:{}", hex::encode(hashing.hash.finalize()));
    let mut sink = hashing.inner.finish()?;
    sink.flush()?;
    Ok(diff_id)
}

/// Pushes layer `meta.key` (mounted) to `session`'s repository, tagged
/// with its key.
pub async fn push(layers: &Layers, session: &mut Session, meta: &Meta) -> Result<Pushed> {
    let t = Instant::now();
    layers.ensure_mounted(&meta.key).await?;
    let tree = layers.tree(&meta.key);
    let (files, bytes) = (layers.files(&meta.key), layers.bytes(&meta.key));
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let writer = tokio::task::spawn_blocking(move || write_layer(&tree, tx));
    let seen = Arc::new(Mutex::new((Sha256::new(), 0u64)));
    let body = tokio_stream::wrappers::ReceiverStream::new(rx).map({
        let seen = seen.clone();
        move |chunk: std::io::Result<Bytes>| {
            if let Ok(b) = &chunk {
                let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
                s.0.update(b);
                s.1 += b.len() as u64;
            }
            chunk
        }
    });
    let upload = session
        .upload_stream(reqwest::Body::wrap_stream(body))
        .await;
    // The tar's end (or its error) before the upload is committed: a
    // failed read must not become a truncated layer. A failed upload is
    // said first (the tar then stops on the closed channel).
    let written = writer
        .await
        .map_err(|e| AgentError::Volume(format!("push of {}: {e}", meta.key)))?;
    let location = upload?;
    let diff_id = written.map_err(AgentError::io(format!("tar of prebuild {}", meta.key)))?;
    let (blob_digest, blob_bytes) = {
        let s = seen.lock().unwrap_or_else(|e| e.into_inner());
        (
            format!("sha256:{}", hex::encode(s.0.clone().finalize())),
            s.1,
        )
    };
    session.finish_upload(&location, &blob_digest).await?;
    let config = serde_json::to_vec(&Config {
        meta,
        files,
        bytes,
        diff_id,
    })
    .map_err(|e| reg_err(session, e.to_string()))?;
    let config_digest = sha256(&config);
    session
        .push_blob(Bytes::from(config.clone()), &config_digest)
        .await?;
    let digest = |d: &str| {
        d.parse::<oci_spec::image::Digest>()
            .map_err(|e| reg_err(session, format!("digest {d}: {e}")))
    };
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .artifact_type(MediaType::Other(ARTIFACT_TYPE.into()))
        .config(Descriptor::new(
            MediaType::Other(CONFIG_TYPE.into()),
            config.len() as u64,
            digest(&config_digest)?,
        ))
        .layers(vec![Descriptor::new(
            MediaType::ImageLayerZstd,
            blob_bytes,
            digest(&blob_digest)?,
        )])
        .annotations(HashMap::from([
            (KEY.to_string(), meta.key.clone()),
            (FILES.to_string(), files.to_string()),
            (BYTES.to_string(), bytes.to_string()),
        ]))
        .build()
        .map_err(|e| reg_err(session, format!("manifest: {e}")))?;
    let body = serde_json::to_vec(&manifest).map_err(|e| reg_err(session, e.to_string()))?;
    let manifest_digest = sha256(&body);
    session
        .put_manifest(
            &meta.key,
            "application/vnd.oci.image.manifest.v1+json",
            Bytes::from(body),
        )
        .await?;
    Ok(Pushed {
        digest: manifest_digest,
        blob_bytes,
        ms: t.elapsed().as_millis() as u64,
    })
}

/// The layer's blob and the size its image needs, from a manifest checked
/// against `digest`.
fn read_manifest(
    session: &Session,
    key: &str,
    digest: &str,
    body: &[u8],
) -> Result<(Descriptor, u64, u64)> {
    let bad = |why: String| reg_err(session, format!("prebuild {key} at {digest}: {why}"));
    if sha256(body) != digest {
        return Err(bad("the manifest does not match its digest".into()));
    }
    let m: ImageManifest =
        serde_json::from_slice(body).map_err(|e| bad(format!("not an OCI manifest: {e}")))?;
    if m.artifact_type().as_ref().map(|t| t.to_string()).as_deref() != Some(ARTIFACT_TYPE) {
        return Err(bad("not a Berth prebuild".into()));
    }
    let notes = m.annotations().clone().unwrap_or_default();
    if notes.get(KEY).map(String::as_str) != Some(key) {
        return Err(bad("it is another prebuild".into()));
    }
    let number = |k: &str| {
        notes
            .get(k)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| bad(format!("annotation {k} missing")))
    };
    let (files, bytes) = (number(FILES)?, number(BYTES)?);
    if files > MAX_FILES {
        return Err(bad(format!("{files} files is more than a layer may have")));
    }
    match m.layers().as_slice() {
        [l] if *l.media_type() == MediaType::ImageLayerZstd => Ok((l.clone(), files, bytes)),
        _ => Err(bad("not one tar+zstd layer".into())),
    }
}

/// Unpacks the tar+zstd stream `rx` brings into `dst`: files, directories
/// and links only, none outside `dst`.
fn unpack(rx: tokio::sync::mpsc::Receiver<Bytes>, dst: &Path) -> std::io::Result<u64> {
    let dec = zstd::Decoder::new(ChannelReader {
        rx,
        cur: Bytes::new(),
    })?;
    let mut tar = tar::Archive::new(dec);
    tar.set_preserve_permissions(true);
    tar.set_preserve_ownerships(true);
    tar.set_preserve_mtime(true);
    tar.set_unpack_xattrs(false);
    let mut n = 0;
    for entry in tar.entries()? {
        let mut entry = entry?;
        use tar::EntryType as T;
        match entry.header().entry_type() {
            T::Regular | T::Continuous | T::Directory | T::Symlink | T::Link => {}
            // Devices, fifos and the like have no place in a workspace.
            _ => continue,
        }
        n += 1;
        if n > MAX_FILES {
            return Err(std::io::Error::other("more entries than announced"));
        }
        entry.unpack_in(dst)?;
    }
    // Whatever follows the archive is drained so the digest covers it all.
    std::io::copy(&mut tar.into_inner(), &mut std::io::sink())?;
    Ok(n)
}

impl Layers {
    fn partial(&self, key: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        (
            self.dir().join(format!("{key}.ext4.part")),
            self.dir().join(format!("{key}.pull")),
        )
    }

    /// Removes what an unfinished pull of `key` left.
    fn drop_partial(&self, key: &str) {
        let (image, mp) = self.partial(key);
        let _ = crate::volume::unmount_all(self.mountinfo(), &mp, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&mp);
        let _ = std::fs::remove_file(&image);
    }

    /// Pulls layer `key` from `session`'s repository (manifest `digest`)
    /// unless the node holds it; one pull per key at a time (a second
    /// asker waits for the first). Returns None when it was here.
    pub async fn pull(
        &self,
        session: &mut Session,
        key: &str,
        digest: &str,
        on: Option<crate::image::OnProgress>,
    ) -> Result<Option<Pulled>> {
        let one = {
            let mut pulls = self.pulls.lock().unwrap_or_else(|e| e.into_inner());
            pulls.entry(key.to_string()).or_default().clone()
        };
        let _one = one.lock().await;
        if self.exists(key) {
            return Ok(None);
        }
        self.drop_partial(key);
        let pulled = self.pull_into(session, key, digest, on).await;
        if pulled.is_err() {
            self.drop_partial(key);
        }
        pulled.map(Some)
    }

    async fn pull_into(
        &self,
        session: &mut Session,
        key: &str,
        digest: &str,
        on: Option<crate::image::OnProgress>,
    ) -> Result<Pulled> {
        let t = Instant::now();
        let (body, _, _) = session.manifest(digest).await?;
        let (layer, files, bytes) = read_manifest(session, key, digest, &body)?;
        let (image, mp) = self.partial(key);
        std::fs::create_dir_all(self.dir()).map_err(AgentError::io("mkdir the layer store"))?;
        // Room for the tree as it was, a quarter more, and the journal.
        let size = (bytes + bytes / 4 + (64 << 20)).next_multiple_of(4096);
        let inodes = files + files / 8 + 1024;
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(size))
            .map_err(AgentError::io(format!("create {}", image.display())))?;
        crate::volume::run(
            tokio::process::Command::new("mkfs.ext4")
                .args(["-q", "-F", "-m", "0", "-N", &inodes.to_string(), "-E"])
                .arg("root_owner=0:0,lazy_itable_init=1,lazy_journal_init=1,nodiscard")
                .arg(&image),
        )
        .await?;
        std::fs::create_dir_all(&mp).map_err(AgentError::io(format!("mkdir {}", mp.display())))?;
        crate::volume::run(
            tokio::process::Command::new("mount")
                .args(["-t", "ext4", "-o", "loop,nosuid,nodev,noatime"])
                .arg(&image)
                .arg(&mp),
        )
        .await?;
        let dst = mp.join("workspace");
        std::fs::create_dir(&dst).map_err(AgentError::io("mkdir the layer's tree"))?;
        let resp = session.blob(layer.digest().as_ref()).await?;
        let track = crate::image::Tracker::new(on, layer.size(), 1);
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let unpacker = tokio::task::spawn_blocking(move || unpack(rx, &dst));
        let mut stream = resp.bytes_stream();
        let (mut hash, mut got) = (Sha256::new(), 0u64);
        let mut failed = None;
        // Once the unpacker stops (its error is reported below), the rest
        // is still read and hashed: a bad blob must be told from a full disk.
        let mut unpacking = true;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(b) => {
                    hash.update(&b);
                    got += b.len() as u64;
                    track.bytes(b.len() as u64);
                    if got > layer.size() {
                        break;
                    }
                    if unpacking && tx.send(b).await.is_err() {
                        unpacking = false;
                    }
                }
                Err(e) => {
                    failed = Some(reg_err(session, format!("download of {key}: {e}")));
                    break;
                }
            }
        }
        drop(tx);
        let unpacked = unpacker
            .await
            .map_err(|e| AgentError::Volume(format!("unpack of {key}: {e}")))?;
        if let Some(e) = failed {
            return Err(e);
        }
        let actual = format!("sha256:{}", hex::encode(hash.finalize()));
        if got != layer.size() || actual != layer.digest().to_string() {
            return Err(reg_err(
                session,
                format!(
                    "prebuild {key}: the registry served other bytes than its manifest names \
                     ({got} bytes, {actual}; expected {} bytes, {})",
                    layer.size(),
                    layer.digest()
                ),
            ));
        }
        unpacked.map_err(AgentError::io(format!("unpack of prebuild {key}")))?;
        crate::volume::unmount_all(self.mountinfo(), &mp, nix::mount::MntFlags::empty())?;
        let _ = std::fs::remove_dir(&mp);
        self.adopt(&image, key)?;
        track.blob_done(true, None);
        Ok(Pulled {
            blob_bytes: got,
            ms: t.elapsed().as_millis() as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_round_trips_through_tar_and_zstd() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("a/b")).unwrap();
        std::fs::write(src.join("a/b/f"), b"hello").unwrap();
        std::os::unix::fs::symlink("../../etc/passwd", src.join("a/l")).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let diff_id = write_layer(&src, tx).unwrap();
        assert!(diff_id.starts_with("sha256:"));
        let (tx2, rx2) = tokio::sync::mpsc::channel(1024);
        while let Ok(Ok(b)) = rx.try_recv() {
            tx2.try_send(b).unwrap();
        }
        drop(tx2);
        let dst = d.path().join("dst");
        std::fs::create_dir(&dst).unwrap();
        let n = unpack(rx2, &dst).unwrap();
        assert!(n >= 4, "{n}");
        assert_eq!(std::fs::read(dst.join("a/b/f")).unwrap(), b"hello");
        // The link is a link, not what it names.
        assert_eq!(
            std::fs::read_link(dst.join("a/l")).unwrap(),
            Path::new("../../etc/passwd")
        );
    }

    /// The tar+zstd of one one-byte file named `name` (written by hand:
    /// `append_data` refuses "..").
    fn one_file(name: &[u8]) -> Bytes {
        let mut t = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        t.append(&h, &b"x"[..]).unwrap();
        Bytes::from(zstd::encode_all(&t.into_inner().unwrap()[..], 1).unwrap())
    }

    #[test]
    fn an_entry_outside_the_tree_is_not_written() {
        for (name, inside) in [(&b"../escape.tx"[..], false), (&b"in-tree.tx"[..], true)] {
            let d = tempfile::tempdir().unwrap();
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tx.try_send(one_file(name)).unwrap();
            drop(tx);
            let dst = d.path().join("dst");
            std::fs::create_dir(&dst).unwrap();
            let _ = unpack(rx, &dst);
            assert!(!d.path().join("escape.tx").exists());
            // The control: the same archive with a name inside is written.
            assert_eq!(dst.join("in-tree.tx").exists(), inside);
        }
    }

    #[test]
    fn a_manifest_must_match_its_digest_key_and_type() {
        let http = reqwest::Client::new();
        let r = crate::image::Reference::parse("127.0.0.1:1/berth/prebuilds").unwrap();
        let s = Session::new(http, &r, true, None);
        let layer = Descriptor::new(
            MediaType::ImageLayerZstd,
            10,
            sha256(b"x").parse::<oci_spec::image::Digest>().unwrap(),
        );
        let manifest = |key: &str, artifact: &str| {
            let m = ImageManifestBuilder::default()
                .schema_version(2u32)
                .artifact_type(MediaType::Other(artifact.into()))
                .config(Descriptor::new(
                    MediaType::Other(CONFIG_TYPE.into()),
                    1,
                    sha256(b"c").parse::<oci_spec::image::Digest>().unwrap(),
                ))
                .layers(vec![layer.clone()])
                .annotations(HashMap::from([
                    (KEY.to_string(), key.to_string()),
                    (FILES.to_string(), "3".to_string()),
                    (BYTES.to_string(), "4096".to_string()),
                ]))
                .build()
                .unwrap();
            serde_json::to_vec(&m).unwrap()
        };
        let good = manifest("k1", ARTIFACT_TYPE);
        let (l, files, bytes) = read_manifest(&s, "k1", &sha256(&good), &good).unwrap();
        assert_eq!((l.size(), files, bytes), (10, 3, 4096));
        let cases = [
            (
                "k1",
                sha256(b"other"),
                good.clone(),
                "does not match its digest",
            ),
            ("k2", sha256(&good), good.clone(), "another prebuild"),
        ];
        for (key, digest, body, why) in cases {
            let e = read_manifest(&s, key, &digest, &body).unwrap_err();
            assert!(e.to_string().contains(why), "{e}");
        }
        let image = manifest("k1", "application/vnd.oci.image.config.v1+json");
        let e = read_manifest(&s, "k1", &sha256(&image), &image).unwrap_err();
        assert!(e.to_string().contains("not a Berth prebuild"), "{e}");
    }
}
