//! Prebuilds on more than one node (docs/prebuilds.md): once built, the
//! layer is pushed to the registry (`[prebuilds] registry`) and up to
//! `[prebuilds] pull_ahead` other nodes are asked to pull it before a
//! workspace needs it there; a node without it pulls it when a workspace
//! of it is created there. What each node holds is in the store (its
//! registration, then every answer that changes it), for placement and
//! for retention, which drops an expired layer from every node holding it.

use super::Service;
use crate::store::PrebuildRow;
use berth_proto::agent as pb;
use std::collections::BTreeSet;
use std::time::Duration;

/// How long a push or a pull of a layer may take.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(1800);

impl Service {
    /// After a build: the builder holds the layer; it is pushed to the
    /// registry if one is configured, and pulled ahead by other nodes.
    pub(super) async fn share_prebuild(&self, row: &mut PrebuildRow) {
        let store = &self.inner.store;
        if let Err(e) = store.note_cached_prebuild(&row.node, &row.key).await {
            tracing::warn!(node = %row.node, error = %e, "cached prebuild not noted");
        }
        let Some(repository) = self.inner.prebuilds.registry.clone() else {
            return;
        };
        let cmd = pb::request::Command::PushPrebuild(pb::PrebuildPushRequest {
            key: row.key.clone(),
            repository,
            repo_url: row.repo_url.clone(),
            commit: row.commit.clone(),
            config_hash: row.config_hash.clone(),
            folder: row.folder.clone(),
        });
        match self.inner.link.call(&row.node, cmd, TRANSFER_TIMEOUT).await {
            Ok(pb::response::Result::Pushed(p)) => {
                tracing::info!(prebuild = %row.id, source = %p.source, bytes = p.blob_bytes, ms = p.ms, "prebuild pushed");
                // Read again: retention may have expired it meanwhile.
                let Ok(Some(mut now)) = store.prebuild(&row.id).await else {
                    return;
                };
                now.source = p.source;
                if let Err(e) = store.put_prebuild(&now).await {
                    tracing::warn!(prebuild = %row.id, error = %e, "recording a prebuild's source");
                    return;
                }
                *row = now;
            }
            other => {
                tracing::warn!(prebuild = %row.id, node = %row.node, answer = ?other,
                    "prebuild not pushed: it stays on its node");
                return;
            }
        }
        self.pull_ahead(row).await;
    }

    /// Asks up to `pull_ahead` ready nodes connected here that lack it
    /// to pull `row`'s layer, at once.
    async fn pull_ahead(&self, row: &PrebuildRow) {
        let k = self.inner.prebuilds.pull_ahead;
        let Ok(nodes) = self.inner.store.nodes().await else {
            return;
        };
        let views = self.views(&nodes, self.now());
        let targets: Vec<String> = nodes
            .iter()
            .zip(&views)
            .filter(|(n, v)| {
                v.ready
                    && !v.cordoned
                    && !v.draining
                    && !n.cached_prebuilds.contains(&row.key)
                    && self.is_connected(&n.id)
            })
            .map(|(n, _)| n.id.clone())
            .take(k)
            .collect();
        let pulls = targets.iter().map(|node| async move {
            let cmd = pb::request::Command::PullPrebuild(pb::PrebuildPullRequest {
                key: row.key.clone(),
                source: row.source.clone(),
            });
            let answer = self.inner.link.call(node, cmd, TRANSFER_TIMEOUT).await;
            match answer {
                Ok(pb::response::Result::Prebuilds(l)) => {
                    tracing::info!(prebuild = %row.id, node = %node, "prebuild pulled ahead");
                    self.note_node_prebuilds(node, l.keys).await;
                }
                other => {
                    tracing::warn!(prebuild = %row.id, node = %node, answer = ?other, "pull ahead failed")
                }
            }
        });
        futures::future::join_all(pulls).await;
    }

    /// Records what node `node` said it holds.
    pub(super) async fn note_node_prebuilds(&self, node: &str, keys: Vec<String>) {
        let keys: BTreeSet<String> = keys.into_iter().collect();
        if let Err(e) = self.inner.store.set_node_prebuilds(node, &keys).await {
            tracing::warn!(node = %node, error = %e, "node prebuilds not recorded");
        }
    }

    /// Asks every node holding `key` (and `builder`) to drop it; the
    /// builder deletes it from the registry too (`source`, if pushed).
    pub(super) async fn drop_everywhere(&self, key: &str, builder: &str, source: &str) {
        let mut holders: BTreeSet<String> = self
            .inner
            .store
            .nodes()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|n| n.cached_prebuilds.contains(key))
            .map(|n| n.id)
            .collect();
        holders.insert(builder.to_string());
        for node in holders {
            let cmd = pb::request::Command::DropPrebuilds(pb::PrebuildDropRequest {
                keys: vec![key.to_string()],
                sources: match node == builder && !source.is_empty() {
                    true => vec![source.to_string()],
                    false => Vec::new(),
                },
            });
            match self
                .inner
                .link
                .call(&node, cmd, Duration::from_secs(60))
                .await
            {
                Ok(pb::response::Result::Prebuilds(l)) => {
                    tracing::info!(key, node = %node, "expired prebuild dropped");
                    self.note_node_prebuilds(&node, l.keys).await;
                }
                other => {
                    tracing::warn!(key, node = %node, answer = ?other, "dropping an expired prebuild")
                }
            }
        }
    }

    /// The prebuild of `rows` (ready, newest first) a workspace of `repo`
    /// starts from: of the commit asked for if there is one, then one
    /// `here` holds, then the newest.
    pub(super) fn best_prebuild<'a>(
        rows: &'a [PrebuildRow],
        commit: Option<&str>,
        here: impl Fn(&PrebuildRow) -> bool,
    ) -> Option<&'a PrebuildRow> {
        let rank = |p: &PrebuildRow| (commit.is_some_and(|c| p.commit.starts_with(c)), here(p));
        let best = rows.iter().map(rank).max()?;
        rows.iter().find(|p| rank(p) == best)
    }
}
