//! Images: pull from an OCI registry into containerd's content store, unpack
//! into the snapshotter, and remember what is already here.

mod artifact;
mod reference;
mod registry;

pub use artifact::Artifact;
pub use reference::Reference;
pub use registry::{Credentials, Session};

use crate::config::RegistryConfig;
use crate::error::{AgentError, Result};
use crate::runtime::Containerd;
use containerd_client::types::Descriptor;
use futures::{StreamExt, TryStreamExt};
use serde_json::Value;
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
        }
    }

    /// Returns the image if it is already unpacked here, pulling it otherwise.
    pub async fn ensure(&self, reference: &str, creds: Option<Credentials>) -> Result<Image> {
        let r = Reference::parse(reference)?;
        let name = r.to_string();
        if let Some(img) = self.cache.lock().ok().and_then(|c| c.get(&name).cloned()) {
            return Ok(img);
        }
        let lock = self
            .pulling
            .lock()
            .map(|mut p| p.entry(name.clone()).or_default().clone())
            .unwrap_or_default();
        let _one_pull = lock.lock().await;
        if let Some(img) = self.cache.lock().ok().and_then(|c| c.get(&name).cloned()) {
            return Ok(img);
        }
        if let Some(img) = self.local(&name).await? {
            self.remember(&img);
            return Ok(img);
        }
        Ok(self.pull(reference, creds).await?.0)
    }

    fn remember(&self, img: &Image) {
        if let Ok(mut c) = self.cache.lock() {
            c.insert(img.name.clone(), img.clone());
        }
    }

    /// The image as containerd has it, if complete (content and snapshots).
    async fn local(&self, name: &str) -> Result<Option<Image>> {
        let Some(target) = self.ctd.get_image(name).await? else {
            return Ok(None);
        };
        let manifest = match self.ctd.read_content(&target.digest).await {
            Ok(m) => m,
            Err(_) => return Ok(None),
        };
        let manifest: Value = serde_json::from_slice(&manifest).unwrap_or_default();
        let manifest = if manifest["manifests"].is_array() {
            let Some(d) = pick_platform(&manifest) else {
                return Ok(None);
            };
            match self.ctd.read_content(&d.digest).await {
                Ok(m) => serde_json::from_slice(&m).unwrap_or_default(),
                Err(_) => return Ok(None),
            }
        } else {
            manifest
        };
        let Some(config_digest) = manifest["config"]["digest"].as_str() else {
            return Ok(None);
        };
        let Ok(config) = self.ctd.read_content(config_digest).await else {
            return Ok(None);
        };
        let config: Value = serde_json::from_slice(&config).unwrap_or_default();
        let chain = chain_ids(&diff_ids(&config));
        let Some(top) = chain.last() else {
            return Ok(None);
        };
        if !self.ctd.snapshot_exists(top).await? {
            return Ok(None);
        }
        Ok(Some(Image {
            name: name.into(),
            digest: target.digest,
            chain_id: top.clone(),
            config: image_config(&config),
        }))
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
    ) -> Result<(Image, PullStats)> {
        let started = Instant::now();
        let r = Reference::parse(reference)?;
        let name = r.to_string();
        let mut session = self.session(&r, creds);
        let lease = format!("berth-pull-{}", rand::random::<u64>());
        self.ctd.create_lease(&lease).await?;
        let result = self.pull_leased(&lease, &r, &name, &mut session).await;
        let _ = self.ctd.delete_lease(&lease).await;
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
    ) -> Result<(Image, PullStats)> {
        let (body, media, header_digest) = s.manifest(r.manifest_ref()).await?;
        let top_digest = sha256_digest(&body);
        verify_manifest_digest(r, &top_digest, header_digest.as_deref())?;
        let top: Value = serde_json::from_slice(&body)
            .map_err(|e| s_err(r, format!("manifest is not JSON: {e}")))?;
        let top_media = if media.is_empty() {
            top["mediaType"].as_str().unwrap_or_default().to_string()
        } else {
            media
        };
        // An index: pick our platform's manifest, fetch it by digest.
        let (manifest_body, manifest_digest, manifest_media, index) = if top["manifests"].is_array()
        {
            let d = pick_platform(&top)
                .ok_or_else(|| s_err(r, "no manifest for this platform".into()))?;
            let (b, m, _) = s.manifest(&d.digest).await?;
            let actual = sha256_digest(&b);
            if actual != d.digest {
                return Err(AgentError::DigestMismatch {
                    expected: d.digest,
                    actual,
                });
            }
            (
                b,
                actual,
                if m.is_empty() { d.media_type } else { m },
                Some((body, top_digest.clone(), top_media.clone())),
            )
        } else {
            (body, top_digest.clone(), top_media.clone(), None)
        };
        let manifest: Value = serde_json::from_slice(&manifest_body)
            .map_err(|e| s_err(r, format!("manifest is not JSON: {e}")))?;
        let config_desc = descriptor(&manifest["config"])
            .ok_or_else(|| s_err(r, "manifest without config".into()))?;
        let layers: Vec<Descriptor> = manifest["layers"]
            .as_array()
            .map(|l| l.iter().filter_map(descriptor).collect())
            .unwrap_or_default();
        if layers.is_empty() {
            return Err(s_err(r, "manifest without layers".into()));
        }
        // Blobs first (config + layers, in parallel), then the manifests that reference them.
        let mut blobs = vec![config_desc.clone()];
        blobs.extend(layers.iter().cloned());
        let stats = Arc::new(Mutex::new(PullStats::default()));
        futures::stream::iter(blobs.into_iter().map(|d| {
            let (mut s, stats) = (s.clone(), stats.clone());
            async move {
                self.fetch_blob(lease, &mut s, &d, HashMap::new(), &stats)
                    .await
            }
        }))
        .buffer_unordered(PARALLEL_FETCHES)
        .try_collect::<Vec<()>>()
        .await?;
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
        let config: Value =
            serde_json::from_slice(&self.ctd.read_content(&config_desc.digest).await?)
                .map_err(|e| s_err(r, format!("image config is not JSON: {e}")))?;
        let chain = chain_ids(&diff_ids(&config));
        if chain.len() != layers.len() {
            return Err(s_err(r, "config diff_ids do not match the layers".into()));
        }
        self.unpack(lease, &layers, &chain).await?;
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
                config: image_config(&config),
            },
            stats,
        ))
    }

    /// Fetches one blob into the content store unless it is already there,
    /// verifying its digest as it streams.
    async fn fetch_blob(
        &self,
        lease: &str,
        s: &mut registry::Session,
        d: &Descriptor,
        labels: HashMap<String, String>,
        stats: &Mutex<PullStats>,
    ) -> Result<()> {
        // Leased before the check: what exists then stays for this pull.
        self.ctd.lease_add(lease, "content", &d.digest).await?;
        if self.ctd.content_exists(&d.digest).await? {
            if let Ok(mut st) = stats.lock() {
                st.layers_present += 1;
            }
            return Ok(());
        }
        let started = Instant::now();
        let resp = s.blob(&d.digest).await?;
        let hasher = Arc::new(Mutex::new(Sha256::new()));
        let h = hasher.clone();
        let (digest, total) = (d.digest.clone(), d.size.max(1) as u64);
        // A body that breaks off is a transfer error, not a bad blob: remember why.
        let broke: Arc<Mutex<Option<String>>> = Arc::default();
        let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (b, r) = (broke.clone(), received.clone());
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
            .map(move |chunk| {
                if let Ok(mut h) = h.lock() {
                    h.update(&chunk);
                }
                let before = r.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                let seen = before + chunk.len() as u64;
                if seen / PROGRESS_EVERY != before / PROGRESS_EVERY {
                    tracing::info!(digest = %digest, bytes = seen, total, percent = seen * 100 / total, "pulling");
                }
                chunk.to_vec()
            });
        let reference = format!("berth-{}", d.digest);
        self.ctd.abort_write(&reference).await;
        let written = self
            .ctd
            .write_content(lease, &reference, &d.digest, d.size, labels, body)
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
        Ok(())
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
    async fn unpack(&self, lease: &str, layers: &[Descriptor], chain: &[String]) -> Result<()> {
        let mut parent = String::new();
        let kind = format!("snapshots/{}", self.ctd.snapshotter());
        for (layer, id) in layers.iter().zip(chain) {
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

fn descriptor(v: &Value) -> Option<Descriptor> {
    Some(Descriptor {
        media_type: v["mediaType"].as_str().unwrap_or_default().to_string(),
        digest: v["digest"].as_str()?.to_string(),
        size: v["size"].as_i64()?,
        annotations: HashMap::new(),
    })
}

/// Picks this machine's linux manifest from an index.
pub fn pick_platform(index: &Value) -> Option<Descriptor> {
    let arch = crate::seccomp::go_arch(std::env::consts::ARCH);
    index["manifests"].as_array()?.iter().find_map(|m| {
        let p = &m["platform"];
        (p["os"] == "linux" && p["architecture"] == arch)
            .then(|| descriptor(m))
            .flatten()
    })
}

/// The config's `rootfs.diff_ids`.
pub fn diff_ids(config: &Value) -> Vec<String> {
    config["rootfs"]["diff_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
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

fn image_config(config: &Value) -> ImageConfig {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let c = &config["config"];
    ImageConfig {
        user: c["User"].as_str().unwrap_or_default().to_string(),
        env: strings(&c["Env"]),
        entrypoint: strings(&c["Entrypoint"]),
        cmd: strings(&c["Cmd"]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        let diffs = vec!["sha256:aa".to_string(), "sha256:bb".to_string()];
        let c = chain_ids(&diffs);
        assert_eq!(c[0], "sha256:aa");
        assert_eq!(c[1], sha256_digest(b"sha256:aa sha256:bb"));
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn picks_this_platform() {
        let arch = crate::seccomp::go_arch(std::env::consts::ARCH);
        let idx = json!({"manifests": [
            {"digest": "sha256:1", "size": 1, "platform": {"os": "linux", "architecture": "s390x"}},
            {"digest": "sha256:2", "size": 2, "mediaType": "m", "platform": {"os": "linux", "architecture": arch}}
        ]});
        assert_eq!(pick_platform(&idx).unwrap().digest, "sha256:2");
        assert!(pick_platform(&json!({"manifests": []})).is_none());
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

    #[test]
    fn reads_image_config() {
        let c =
            image_config(&json!({"config": {"User": "1000:1000", "Env": ["A=1"], "Cmd": ["sh"]}}));
        assert_eq!(
            c,
            ImageConfig {
                user: "1000:1000".into(),
                env: vec!["A=1".into()],
                entrypoint: vec![],
                cmd: vec!["sh".into()]
            }
        );
    }
}
