//! What the node already has: an image as containerd holds it, the bytes
//! it takes (for the node's cache), and its removal.

use super::*;

impl ImageStore {
    /// The manifest (this platform's, if `digest` is an index's) and the
    /// config of the image whose target is `digest`, if containerd has them.
    async fn manifest_and_config(
        &self,
        digest: &str,
    ) -> Option<(
        oci_spec::image::ImageManifest,
        oci_spec::image::ImageConfiguration,
    )> {
        let body = self.ctd.read_content(digest).await.ok()?;
        let manifest = match manifest::parse_top(&body).ok()? {
            manifest::Top::Index(i) => {
                let d = manifest::pick_platform(&i)?;
                manifest::parse_manifest(&self.ctd.read_content(&d.digest).await.ok()?).ok()?
            }
            manifest::Top::Manifest(m) => *m,
        };
        let config_digest = manifest.config().digest().to_string();
        let config = self.ctd.read_content(&config_digest).await.ok()?;
        Some((manifest, manifest::parse_config(&config).ok()?))
    }

    /// Bytes image `name` takes on the node: its blobs and its unpacked
    /// layers (a layer two images share counts in both). Kept per digest.
    pub async fn footprint(&self, name: &str) -> Result<u64> {
        let Some(target) = self.ctd.get_image(name).await? else {
            return Ok(0);
        };
        let known = self
            .footprints
            .lock()
            .ok()
            .and_then(|f| f.get(&target.digest).copied());
        if let Some(b) = known {
            return Ok(b);
        }
        let Some((manifest, config)) = self.manifest_and_config(&target.digest).await else {
            return Ok(0);
        };
        let mut bytes: u64 = manifest
            .layers()
            .iter()
            .chain([manifest.config()])
            .map(|d| d.size())
            .sum();
        for id in chain_ids(&manifest::diff_ids(&config)) {
            bytes += self.ctd.snapshot_usage(&id).await.unwrap_or(0);
        }
        if let Ok(mut f) = self.footprints.lock() {
            f.insert(target.digest, bytes);
        }
        Ok(bytes)
    }

    /// Deletes image `name` from containerd (its blobs and layers go with
    /// it unless another image holds them) and from what is remembered.
    pub async fn remove(&self, name: &str) -> Result<()> {
        if let Ok(mut c) = self.cache.lock() {
            c.remove(name);
        }
        self.ctd.delete_image(name).await
    }

    /// The image as containerd has it, if complete (content and snapshots).
    pub(super) async fn local(&self, name: &str) -> Result<Option<Image>> {
        let Some(target) = self.ctd.get_image(name).await? else {
            return Ok(None);
        };
        let Some((_, config)) = self.manifest_and_config(&target.digest).await else {
            return Ok(None);
        };
        let chain = chain_ids(&manifest::diff_ids(&config));
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
            config: manifest::image_config(&config),
        }))
    }
}
