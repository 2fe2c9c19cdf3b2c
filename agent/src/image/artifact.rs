//! OCI artifacts that are not images (a devcontainer feature): one layer
//! fetched from its registry by media type, checked against its digest and
//! a size bound, held in memory (it is small and used once per build).

use super::{s_err, sha256_digest, verify_manifest_digest, ImageStore, Reference};
use crate::error::{AgentError, Result};
use futures::StreamExt;

/// A fetched artifact layer.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// The digest of the manifest the reference resolved to.
    pub digest: String,
    pub layer: Vec<u8>,
}

impl ImageStore {
    /// Fetches the layer of media type `media_type` (or the only layer) of
    /// the artifact `reference`, refusing one larger than `limit` bytes.
    pub async fn artifact(
        &self,
        reference: &str,
        media_type: &str,
        limit: u64,
    ) -> Result<Artifact> {
        let r = Reference::parse(reference)?;
        let mut s = self.session(&r, None);
        let (body, _, header_digest) = s.manifest(r.manifest_ref()).await?;
        let digest = sha256_digest(&body);
        verify_manifest_digest(&r, &digest, header_digest.as_deref())?;
        let manifest = super::manifest::parse_manifest(&body).map_err(|e| s_err(&r, e))?;
        let layers: Vec<_> = manifest
            .layers()
            .iter()
            .map(super::manifest::to_containerd)
            .collect();
        let layer = match layers.iter().find(|d| d.media_type == media_type) {
            Some(d) => d.clone(),
            None if layers.len() == 1 => layers[0].clone(),
            None => {
                return Err(s_err(
                    &r,
                    format!("{reference} has no layer of type {media_type}"),
                ))
            }
        };
        if u64::try_from(layer.size).unwrap_or(u64::MAX) > limit {
            return Err(s_err(
                &r,
                format!(
                    "{reference}: its layer is {} bytes, over {limit}",
                    layer.size
                ),
            ));
        }
        let resp = s.blob(&layer.digest).await?;
        let mut bytes = Vec::with_capacity(layer.size.max(0) as usize);
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| s_err(&r, format!("{reference}: {e}")))?;
            if (bytes.len() + chunk.len()) as u64 > limit {
                return Err(s_err(
                    &r,
                    format!("{reference}: its layer is over {limit} bytes"),
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        let actual = sha256_digest(&bytes);
        if actual != layer.digest {
            return Err(AgentError::DigestMismatch {
                expected: layer.digest,
                actual,
            });
        }
        Ok(Artifact {
            digest,
            layer: bytes,
        })
    }
}
