//! Prebuilds between nodes (docs/prebuilds.md): the node that built one
//! pushes its layer to the registry when the coordinator asks; another
//! node pulls it on demand (a workspace of it is created there) or ahead
//! of demand. The layer format is `crate::layers`'.

use super::*;
use crate::init::prebuild as p;

impl Manager {
    /// Pushes held prebuild `req.key` to registry repository `req.repository`.
    pub async fn push_prebuild(&self, req: pb::PrebuildPushRequest) -> Result<pb::PrebuildPushed> {
        if !p::is_key(&req.key) {
            return Err(AgentError::InvalidRequest(format!(
                "{:?} is not a prebuild key",
                req.key
            )));
        }
        let r = image::Reference::parse(&req.repository)?;
        if r.digest.is_some() {
            return Err(AgentError::InvalidRequest(format!(
                "{:?}: a repository, not an image",
                req.repository
            )));
        }
        if !self.inner.layers.exists(&req.key) {
            return Err(AgentError::NotFound(format!("prebuild {}", req.key)));
        }
        let mut session = self.inner.images.session(&r, None).for_push();
        let meta = crate::layers::Meta {
            key: req.key.clone(),
            repo_url: req.repo_url,
            commit: req.commit,
            config_hash: req.config_hash,
            folder: req.folder,
        };
        let pushed = self.inner.layers.push(&mut session, &meta).await?;
        tracing::info!(key = %req.key, digest = %pushed.digest, bytes = pushed.blob_bytes,
            ms = pushed.ms, "prebuild pushed");
        Ok(pb::PrebuildPushed {
            source: format!("{}/{}@{}", r.registry, r.repository, pushed.digest),
            blob_bytes: pushed.blob_bytes,
            ms: pushed.ms,
        })
    }

    /// Pulls prebuild `req.key` from `req.source` if the node lacks it.
    pub async fn pull_prebuild(&self, req: pb::PrebuildPullRequest) -> Result<pb::PrebuildList> {
        if !p::is_key(&req.key) {
            return Err(AgentError::InvalidRequest(format!(
                "{:?} is not a prebuild key",
                req.key
            )));
        }
        if self
            .fetch_prebuild(&req.key, &req.source, None)
            .await?
            .is_some()
        {
            self.enforce_cache(Some(&req.key)).await?;
        }
        self.prebuilds().await
    }

    /// Deletes pushed prebuilds' manifests from their registry (retention);
    /// a failure is logged (the registry's own policy still applies).
    pub async fn delete_pushed(&self, sources: &[String]) {
        for source in sources {
            let deleted = async {
                let r = image::Reference::parse(source)?;
                let digest = r.digest.clone().ok_or_else(|| {
                    AgentError::InvalidRequest(format!("{source:?} names no digest"))
                })?;
                let mut session = self.inner.images.session(&r, None).for_push();
                session.delete_manifest(&digest).await
            }
            .await;
            match deleted {
                Ok(()) => tracing::info!(source, "expired prebuild deleted from the registry"),
                Err(e) => {
                    tracing::warn!(source, error = %e, "expired prebuild not deleted from the registry")
                }
            }
        }
    }

    /// Pulls layer `key` from `source` (REPOSITORY@sha256:DIGEST) unless
    /// the node holds it (None then).
    pub(super) async fn fetch_prebuild(
        &self,
        key: &str,
        source: &str,
        on: Option<image::OnProgress>,
    ) -> Result<Option<crate::layers::Pulled>> {
        let r = image::Reference::parse(source)?;
        let digest = r.digest.clone().ok_or_else(|| {
            AgentError::InvalidRequest(format!("{source:?}: a prebuild source names a digest"))
        })?;
        let mut session = self.inner.images.session(&r, None);
        let pulled = self
            .inner
            .layers
            .pull(&mut session, key, &digest, on)
            .await?;
        if let Some(p) = &pulled {
            tracing::info!(
                key,
                source,
                bytes = p.blob_bytes,
                ms = p.ms,
                "prebuild pulled"
            );
        }
        Ok(pulled)
    }
}
