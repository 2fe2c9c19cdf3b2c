//! Images: pull from an OCI registry into containerd's content store, unpack
//! into the snapshotter, and remember what is already here.

mod artifact;
mod local;
mod manifest;
mod progress;
mod reference;
mod registry;
mod stream;

pub use artifact::Artifact;
pub use progress::{OnProgress, Pulling, Tracker};
pub use reference::Reference;
pub use registry::{Credentials, Session};

use crate::config::RegistryConfig;
use crate::error::{AgentError, Result};
use crate::runtime::Containerd;
use containerd_client::types::Descriptor;
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How many blobs are fetched at once.
const PARALLEL_FETCHES: usize = 4;
/// A progress line is logged each time a blob's download passes a multiple of this.
const PROGRESS_EVERY: u64 = 16 << 20;

/// The parts of an image config a workspace needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageConfig {
    pub user: String,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
}

/// An image that is in the content store and unpacked.
#[derive(Debug, Clone)]
pub struct Image {
    /// Normalized reference (containerd image name).
    pub name: String,
    /// Digest of the manifest (or index) the name points at.
    pub digest: String,
    /// Snapshot of the top layer (its chain id): the parent of workspace
    /// snapshots. Layers are unpacked as they are, shared by every
    /// workspace (each sees them through its own idmapped mounts).
    pub chain_id: String,
    pub config: ImageConfig,
}

/// What a pull did.
#[derive(Debug, Clone, Default)]
pub struct PullStats {
    pub layers_fetched: u32,
    pub layers_present: u32,
    pub bytes_fetched: u64,
}

/// Pulls and caches images for one containerd.
#[derive(Clone)]
pub struct ImageStore {
    ctd: Containerd,
    http: reqwest::Client,
    registries: Vec<RegistryConfig>,
    cache: Arc<Mutex<HashMap<String, Image>>>,
    /// One pull at a time per image: concurrent creates of the same image
    /// wait for the first pull instead of writing the same content twice.
    pulling: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    /// Bytes each image (by digest) takes, once measured.
    footprints: Arc<Mutex<HashMap<String, u64>>>,
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStore").finish_non_exhaustive()
    }
}

impl ImageStore {
    /// Makes a store pulling with `registries`' settings.
    pub fn new(ctd: Containerd, registries: Vec<RegistryConfig>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self {
            ctd,
            http,
            registries,
            cache: Arc::default(),
            pulling: Arc::default(),
            footprints: Arc::default(),
        }
    }

    /// Returns the image if it is already unpacked here, pulling it otherwise.
    pub async fn ensure(&self, reference: &str, creds: Option<Credentials>) -> Result<Image> {
        Ok(self.ensure_pulled(reference, creds, None).await?.0)
    }

    /// `ensure`, and whether it pulled.
    pub async fn ensure_pulled(
        &self,
        reference: &str,
        creds: Option<Credentials>,
        on: Option<OnProgress>,
    ) -> Result<(Image, bool)> {
        let r = Reference::parse(reference)?;
        let name = r.to_string();
        if let Some(img) = self.cache.lock().ok().and_then(|c| c.get(&name).cloned()) {
            return Ok((img, false));
        }
        let lock = self
            .pulling
            .lock()
            .map(|mut p| p.entry(name.clone()).or_default().clone())
            .unwrap_or_default();
        let _one_pull = lock.lock().await;
        if let Some(img) = self.cache.lock().ok().and_then(|c| c.get(&name).cloned()) {
            return Ok((img, false));
        }
        if let Some(img) = self.local(&name).await? {
            self.remember(&img);
            return Ok((img, false));
        }
        Ok((self.pull(reference, creds, on).await?.0, true))
    }

    fn remember(&self, img: &Image) {
        if let Ok(mut c) = self.cache.lock() {
            c.insert(img.name.clone(), img.clone());
        }
    }

    /// A session with `r`'s repository, with the node's settings for its
    /// registry (credentials, plain HTTP).
    pub fn session(&self, r: &Reference, creds: Option<Credentials>) -> registry::Session {
        let conf = self.registries.iter().find(|c| c.host == r.registry);
        let creds = creds.or_else(|| {
            conf.and_then(|c| {
                Some(Credentials {
                    username: c.username.clone()?,
                    password: c.password.clone().unwrap_or_default(),
                })
            })
        });
        let plain = r.is_loopback() || conf.is_some_and(|c| c.insecure);
        registry::Session::new(self.http.clone(), r, plain, creds)
    }

    /// Resolves `reference` in its registry, fetches what is missing and unpacks it.
    pub async fn pull(
        &self,
        reference: &str,
        creds: Option<Credentials>,
        on: Option<OnProgress>,
    ) -> Result<(Image, PullStats)> {
        let started = Instant::now();
        let r = Reference::parse(reference)?;
        let name = r.to_string();
        let mut session = self.session(&r, creds);
        let lease = format!("berth-pull-{}", rand::random::<u64>());
        self.ctd.create_lease(&lease).await?;
        let result = self.pull_leased(&lease, &r, &name, &mut session, on).await;
        // A failed pull's leftovers (partial snapshots, content) are
        // collected now, not at containerd's next collection.
        let _ = self.ctd.delete_lease(&lease, result.is_err()).await;
        let (img, stats) = result?;
        tracing::info!(image = %name, digest = %img.digest, layers_fetched = stats.layers_fetched,
            layers_present = stats.layers_present, bytes = stats.bytes_fetched,
            ms = started.elapsed().as_millis() as u64, "image pulled");
        self.remember(&img);
        Ok((img, stats))
    }

    async fn pull_leased(
        &self,
        lease: &str,
        r: &Reference,
        name: &str,
        s: &mut registry::Session,
        on: Option<OnProgress>,
    ) -> Result<(Image, PullStats)> {
        let (body, media, header_digest) = s.manifest(r.manifest_ref()).await?;
        let top_digest = sha256_digest(&body);
        verify_manifest_digest(r, &top_digest, header_digest.as_deref())?;
        let top = manifest::parse_top(&body).map_err(|e| s_err(r, e))?;
        let media_of = |m: String, fallback: String| if m.is_empty() { fallback } else { m };
        // An index: pick our platform's manifest, fetch it by digest.
        let (manifest, manifest_body, manifest_digest, manifest_media, index) = match top {
            manifest::Top::Index(i) => {
                let d = manifest::pick_platform(&i)
                    .ok_or_else(|| s_err(r, "no manifest for this platform".into()))?;
                let (b, m, _) = s.manifest(&d.digest).await?;
                let actual = sha256_digest(&b);
                if actual != d.digest {
                    return Err(AgentError::DigestMismatch {
                        expected: d.digest,
                        actual,
                    });
                }
                let top_media = media_of(
                    media,
                    i.media_type()
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                );
                (
                    manifest::parse_manifest(&b).map_err(|e| s_err(r, e))?,
                    b,
                    actual,
                    media_of(m, d.media_type),
                    Some((body, top_digest.clone(), top_media)),
                )
            }
            manifest::Top::Manifest(m) => {
                let own = m
                    .media_type()
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                (*m, body, top_digest.clone(), media_of(media, own), None)
            }
        };
        let config_desc = manifest::to_containerd(manifest.config());
        let layers: Vec<Descriptor> = manifest
            .layers()
            .iter()
            .map(manifest::to_containerd)
            .collect();
        if layers.is_empty() {
            return Err(s_err(r, "manifest without layers".into()));
        }
        let stats = Arc::new(Mutex::new(PullStats::default()));
        let total = layers
            .iter()
            .chain([&config_desc])
            .map(|d| d.size.max(0) as u64)
            .sum();
        let track = Arc::new(progress::Tracker::new(on, total, layers.len() as u32));
        // The config first: its diff_ids name the layers' snapshots.
        let fetched = self
            .fetch_blob(lease, &mut s.clone(), &config_desc, &stats, &track, None)
            .await?;
        track.blob_done(false, (!fetched).then_some(config_desc.size.max(0) as u64));
        let config = manifest::parse_config(&self.ctd.read_content(&config_desc.digest).await?)
            .map_err(|e| s_err(r, e))?;
        let diff_ids = manifest::diff_ids(&config);
        let chain = chain_ids(&diff_ids);
        if chain.len() != layers.len() {
            return Err(s_err(r, "config diff_ids do not match the layers".into()));
        }
        // Then the layers, in parallel; the bottom one, if it is not here,
        // is unpacked as it downloads.
        let (mut to_unpack, finishing) =
            match self.stream_bottom(lease, &layers[0], &chain[0]).await? {
                Some((tx, f)) => (Some(tx), Some(f)),
                None => (None, None),
            };
        let bottom_fetched = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let fetches =
            futures::stream::iter(layers.clone().into_iter().enumerate().map(|(i, d)| {
                let (mut s, stats, track) = (s.clone(), stats.clone(), &track);
                let (tx, bottom) = (to_unpack.take().filter(|_| i == 0), bottom_fetched.clone());
                async move {
                    let fetched = self
                        .fetch_blob(lease, &mut s, &d, &stats, track, tx)
                        .await?;
                    bottom.fetch_or(i == 0 && fetched, std::sync::atomic::Ordering::Relaxed);
                    track.blob_done(true, (!fetched).then_some(d.size.max(0) as u64));
                    Ok::<_, AgentError>(())
                }
            }))
            .buffer_unordered(PARALLEL_FETCHES)
            .try_collect::<Vec<()>>()
            .await;
        if let Some(f) = finishing {
            let whole =
                fetches.is_ok() && bottom_fetched.load(std::sync::atomic::Ordering::Relaxed);
            self.finish_bottom(lease, f, whole, &chain[0], &diff_ids[0])
                .await?;
        }
        fetches?;
        let mut labels = HashMap::from([(
            "containerd.io/gc.ref.content.config".to_string(),
            config_desc.digest.clone(),
        )]);
        for (i, l) in layers.iter().enumerate() {
            labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                l.digest.clone(),
            );
        }
        self.store_bytes(lease, &manifest_digest, manifest_body, labels)
            .await?;
        let target = match index {
            Some((body, digest, media)) => {
                let labels = HashMap::from([(
                    "containerd.io/gc.ref.content.m.0".to_string(),
                    manifest_digest.clone(),
                )]);
                let size = body.len() as i64;
                self.store_bytes(lease, &digest, body, labels).await?;
                Descriptor {
                    media_type: media,
                    digest,
                    size,
                    annotations: HashMap::new(),
                }
            }
            None => Descriptor {
                media_type: manifest_media,
                digest: manifest_digest,
                size: 0,
                annotations: HashMap::new(),
            },
        };
        self.unpack(lease, &layers, &chain, &track).await?;
        let top_chain = chain.last().cloned().unwrap_or_default();
        // A key of our own (containerd reads "<key>/<anything>" as a snapshot
        // reference too), so an unpack by another client (ctr) that labels
        // the config with its own key never drops ours.
        let gc = format!(
            "containerd.io/gc.ref.snapshot.{}/berth",
            self.ctd.snapshotter()
        );
        self.ctd
            .label_content(
                &config_desc.digest,
                HashMap::from([(gc, top_chain.clone())]),
            )
            .await?;
        let mut target = target;
        if target.size == 0 {
            target.size = self.ctd.read_content(&target.digest).await?.len() as i64;
        }
        let digest = target.digest.clone();
        self.ctd.put_image(lease, name, target).await?;
        let stats = stats.lock().map(|s| s.clone()).unwrap_or_default();
        Ok((
            Image {
                name: name.into(),
                digest,
                chain_id: top_chain,
                config: manifest::image_config(&config),
            },
            stats,
        ))
    }

    /// Fetches one blob into the content store unless it is already there
    /// (false then), verifying its digest as it streams.
    async fn fetch_blob(
        &self,
        lease: &str,
        s: &mut registry::Session,
        d: &Descriptor,
        stats: &Mutex<PullStats>,
        track: &Arc<progress::Tracker>,
        unpack: Option<tokio::sync::mpsc::Sender<bytes::Bytes>>,
    ) -> Result<bool> {
        // Leased before the check: what exists then stays for this pull.
        self.ctd.lease_add(lease, "content", &d.digest).await?;
        if self.ctd.content_exists(&d.digest).await? {
            if let Ok(mut st) = stats.lock() {
                st.layers_present += 1;
            }
            return Ok(false);
        }
        let started = Instant::now();
        let resp = s.blob(&d.digest).await?;
        let hasher = Arc::new(Mutex::new(Sha256::new()));
        let h = hasher.clone();
        let (digest, total) = (d.digest.clone(), d.size.max(1) as u64);
        // A body that breaks off is a transfer error, not a bad blob: remember why.
        let broke: Arc<Mutex<Option<String>>> = Arc::default();
        let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (b, r, t) = (broke.clone(), received.clone(), track.clone());
        let body = resp
            .bytes_stream()
            .take_while(move |c| {
                if let Err(e) = c {
                    if let Ok(mut b) = b.lock() {
                        *b = Some(e.to_string());
                    }
                }
                std::future::ready(c.is_ok())
            })
            .filter_map(|c| std::future::ready(c.ok()))
            .then(move |chunk| {
                // Also to the unpacker, if any (it may have stopped: the
                // download goes on for the content store).
                let tx = unpack.clone();
                async move {
                    if let Some(tx) = tx {
                        let _ = tx.send(chunk.clone()).await;
                    }
                    chunk
                }
            })
            .map(move |chunk| {
                if let Ok(mut h) = h.lock() {
                    h.update(&chunk);
                }
                let before = r.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                let seen = before + chunk.len() as u64;
                t.bytes(chunk.len() as u64);
                if seen / PROGRESS_EVERY != before / PROGRESS_EVERY {
                    tracing::info!(digest = %digest, bytes = seen, total, percent = seen * 100 / total, "pulling");
                }
                chunk.to_vec()
            });
        let reference = format!("berth-{}", d.digest);
        self.ctd.abort_write(&reference).await;
        let written = self
            .ctd
            .write_content(lease, &reference, &d.digest, d.size, HashMap::new(), body)
            .await;
        let actual = hasher
            .lock()
            .map(|h| format!("sha256:{}", hex::encode(h.clone().finalize())))
            .unwrap_or_default();
        if let Err(e) = written {
            self.ctd.abort_write(&reference).await;
            let got = received.load(std::sync::atomic::Ordering::Relaxed);
            let why = broke.lock().ok().and_then(|b| b.clone());
            if why.is_some() || got != d.size as u64 {
                return Err(AgentError::Registry {
                    registry: s.registry().to_string(),
                    message: format!(
                        "transfer of {} broke after {got} of {} bytes: {}",
                        d.digest,
                        d.size,
                        why.unwrap_or_else(|| e.to_string())
                    ),
                });
            }
            if actual != d.digest {
                return Err(AgentError::DigestMismatch {
                    expected: d.digest.clone(),
                    actual,
                });
            }
            return Err(e);
        }
        if let Ok(mut st) = stats.lock() {
            st.layers_fetched += 1;
            st.bytes_fetched += d.size as u64;
        }
        tracing::info!(digest = %d.digest, bytes = d.size, ms = started.elapsed().as_millis() as u64, "blob fetched");
        Ok(true)
    }

    async fn store_bytes(
        &self,
        lease: &str,
        digest: &str,
        body: Vec<u8>,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        let size = body.len() as i64;
        let reference = format!("berth-{digest}");
        self.ctd.abort_write(&reference).await;
        self.ctd
            .write_content(
                lease,
                &reference,
                digest,
                size,
                labels,
                futures::stream::once(async move { body }),
            )
            .await
    }

    /// Applies each layer on its parent unless its snapshot exists already
    /// (once per layer and node: every workspace shares the result).
    async fn unpack(
        &self,
        lease: &str,
        layers: &[Descriptor],
        chain: &[String],
        track: &progress::Tracker,
    ) -> Result<()> {
        let mut parent = String::new();
        let kind = format!("snapshots/{}", self.ctd.snapshotter());
        for (i, (layer, id)) in layers.iter().zip(chain).enumerate() {
            track.unpacking(i as u32);
            self.ctd.lease_add(lease, &kind, id).await?;
            if !self.ctd.snapshot_exists(id).await? {
                let started = Instant::now();
                let key = format!("berth-extract-{}-{id}", rand::random::<u32>());
                let mounts = self
                    .ctd
                    .prepare(Some(lease), &key, &parent, HashMap::new())
                    .await?;
                match self.ctd.apply(lease, layer.clone(), mounts).await {
                    Ok(_) => self.ctd.commit(lease, id, &key).await?,
                    Err(e) => {
                        let _ = self.ctd.remove_snapshot(&key).await;
                        return Err(e);
                    }
                }
                tracing::info!(layer = %layer.digest, chain_id = %id, ms = started.elapsed().as_millis() as u64, "layer unpacked");
            }
            parent = id.clone();
        }
        track.unpacking(layers.len() as u32);
        Ok(())
    }
}

fn s_err(r: &Reference, message: String) -> AgentError {
    AgentError::Registry {
        registry: r.registry.clone(),
        message,
    }
}

fn verify_manifest_digest(r: &Reference, actual: &str, header: Option<&str>) -> Result<()> {
    if let Some(expected) = r.digest.as_deref().or(header) {
        if expected != actual {
            return Err(AgentError::DigestMismatch {
                expected: expected.into(),
                actual: actual.into(),
            });
        }
    }
    Ok(())
}

/// "sha256:<hex>" of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// OCI chain ids: chain[0] = diff[0], chain[i] = sha256(chain[i-1] + " " + diff[i]).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => sha256_digest(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        let diffs = vec!["sha256:aa".to_string(), "sha256:bb".to_string()];
        let c = chain_ids(&diffs);
        assert_eq!(c[0], "sha256:aa");
        assert_eq!(c[1], sha256_digest(b"sha256:aa sha256:bb"));
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn manifest_digest_must_match_pin_or_header() {
        let r = Reference::parse("127.0.0.1:1/a:b").unwrap();
        assert!(verify_manifest_digest(&r, "sha256:x", None).is_ok());
        assert!(verify_manifest_digest(&r, "sha256:x", Some("sha256:x")).is_ok());
        assert_eq!(
            verify_manifest_digest(&r, "sha256:x", Some("sha256:y"))
                .unwrap_err()
                .code(),
            "digest_mismatch"
        );
    }
}
