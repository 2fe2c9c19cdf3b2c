//! The node's cache (docs/prebuilds.md "The node's cache"): prebuild
//! layers and images under one disk budget (`[cache] max_bytes`). Past it,
//! the least recently used that no workspace uses go (`crate::cache`
//! decides); an image used in the last `image_min_idle_seconds` stays (a
//! create may be between its pull and its record). When an image was last
//! used is kept in `<state_dir>/image-use.json`.

use super::*;
use crate::cache::Entry;
use std::collections::BTreeMap;

/// One writer of the image-use file at a time.
static IMAGE_USE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Cache entries that are images are keyed `image:<name>`.
const IMAGE: &str = "image:";

impl Manager {
    fn image_use_file(&self) -> std::path::PathBuf {
        self.inner.cfg.file.state_dir.join("image-use.json")
    }

    fn image_use(&self) -> BTreeMap<String, i64> {
        std::fs::read(self.image_use_file())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Notes that image `name` is used now (a create, a pull).
    pub(super) fn note_image_use(&self, name: &str) {
        let _one = IMAGE_USE.lock().unwrap_or_else(|e| e.into_inner());
        let mut used = self.image_use();
        used.insert(name.to_string(), now_ms());
        let path = self.image_use_file();
        let tmp = path.with_extension("json.tmp");
        let written = serde_json::to_vec(&used)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::warn!(error = %e, "image use not noted");
        }
    }

    /// The cache's budget: `[cache] max_bytes`, or a share of the state
    /// directory's file system.
    pub(super) fn cache_budget(&self) -> Result<u64> {
        Ok(match self.inner.cfg.file.cache.max_bytes {
            0 => {
                let st = nix::sys::statvfs::statvfs(&self.inner.cfg.file.state_dir)
                    .map_err(|e| AgentError::Volume(format!("statvfs: {e}")))?;
                crate::cache::default_budget(st.blocks() as u64 * st.fragment_size() as u64)
            }
            b => b,
        })
    }

    /// What the cache holds: every prebuild layer and every image.
    async fn cache_entries(&self) -> Result<Vec<Entry>> {
        let layers = &self.inner.layers;
        let records = self.inner.records.all()?;
        let mut entries = Vec::new();
        for key in layers.list() {
            entries.push(Entry {
                bytes: layers.bytes(&key),
                last_used_ms: layers.last_used_ms(&key),
                in_use: records.iter().any(|r| r.prebuild.as_deref() == Some(&key)),
                key,
            });
        }
        let used = self.image_use();
        let min_idle = self.inner.cfg.file.cache.image_min_idle_seconds;
        let fresh = now_ms().saturating_sub(min_idle.saturating_mul(1000) as i64);
        for name in self.inner.ctd.list_images().await? {
            let last = used.get(&name).copied().unwrap_or(0);
            entries.push(Entry {
                bytes: self.inner.images.footprint(&name).await?,
                last_used_ms: last,
                in_use: last > fresh || records.iter().any(|r| r.image == name),
                key: format!("{IMAGE}{name}"),
            });
        }
        Ok(entries)
    }

    /// Keeps prebuild layers and images within the cache's budget: the
    /// least recently used ones no workspace uses are removed, never
    /// `keep` (a layer just made or pulled, not yet under a workspace).
    /// Returns what went (layer keys, `image:<name>`).
    pub(super) async fn enforce_cache(&self, keep: Option<&str>) -> Result<Vec<String>> {
        let budget = self.cache_budget()?;
        let mut entries = self.cache_entries().await?;
        for e in &mut entries {
            e.in_use |= keep == Some(e.key.as_str());
        }
        let evicted = crate::cache::evict(&entries, budget);
        for key in &evicted {
            match key.strip_prefix(IMAGE) {
                Some(name) => {
                    self.inner.images.remove(name).await?;
                    tracing::info!(image = name, budget, "image evicted from the node's cache");
                }
                None => {
                    self.inner.layers.remove(key)?;
                    tracing::info!(key, budget, "prebuild evicted from the node's cache");
                }
            }
        }
        Ok(evicted)
    }

    /// `enforce_cache` in the background, after a pull added to the cache.
    pub(super) fn enforce_cache_soon(&self) {
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.enforce_cache(None).await {
                tracing::warn!(error = %e, "node cache not kept within its budget");
            }
        });
    }

    /// The cache as it is (after enforcing its budget, if asked).
    pub async fn cache(&self, req: pb::CacheRequest) -> Result<pb::CacheReport> {
        let evicted = match req.enforce {
            true => self.enforce_cache(None).await?,
            false => Vec::new(),
        };
        let entries = self.cache_entries().await?;
        Ok(pb::CacheReport {
            budget_bytes: self.cache_budget()?,
            used_bytes: entries.iter().map(|e| e.bytes).sum(),
            entries: entries
                .into_iter()
                .map(|e| pb::CacheEntry {
                    key: e.key,
                    bytes: e.bytes,
                    last_used_ms: e.last_used_ms,
                    in_use: e.in_use,
                })
                .collect(),
            evicted,
        })
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
