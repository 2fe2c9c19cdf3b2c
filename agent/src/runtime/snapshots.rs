//! Snapshots and the diff service: layers unpacked, workspace roots prepared.

use super::*;

impl Containerd {
    pub(super) fn snapshots(&self) -> snap::snapshots_client::SnapshotsClient<Channel> {
        snap::snapshots_client::SnapshotsClient::new(self.channel.clone())
    }

    /// Whether snapshot `key` exists.
    pub async fn snapshot_exists(&self, key: &str) -> Result<bool> {
        let r = self
            .snapshots()
            .stat(self.req(
                snap::StatSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    key: key.into(),
                },
                None,
            ))
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(s) if is_not_found(&s) => Ok(false),
            Err(s) => Err(AgentError::containerd("stat snapshot")(s)),
        }
    }

    /// Bytes snapshot `key` holds (its own files, not its parents').
    pub async fn snapshot_usage(&self, key: &str) -> Result<u64> {
        let r = self
            .snapshots()
            .usage(self.req(
                snap::UsageRequest {
                    snapshotter: self.snapshotter.clone(),
                    key: key.into(),
                },
                None,
            ))
            .await
            .map_err(AgentError::containerd("snapshot usage"))?;
        Ok(r.into_inner().size.max(0) as u64)
    }

    /// Prepares an active snapshot `key` on top of `parent` and returns its mounts.
    pub async fn prepare(
        &self,
        lease: Option<&str>,
        key: &str,
        parent: &str,
        labels: HashMap<String, String>,
    ) -> Result<Vec<Mount>> {
        let r = self
            .snapshots()
            .prepare(self.req(
                snap::PrepareSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    key: key.into(),
                    parent: parent.into(),
                    labels,
                },
                lease,
            ))
            .await
            .map_err(AgentError::containerd(format!("prepare snapshot {key}")))?;
        Ok(r.into_inner().mounts)
    }

    /// The mounts of an existing snapshot.
    pub async fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let r = self
            .snapshots()
            .mounts(self.req(
                snap::MountsRequest {
                    snapshotter: self.snapshotter.clone(),
                    key: key.into(),
                },
                None,
            ))
            .await
            .map_err(AgentError::containerd(format!("snapshot mounts {key}")))?;
        Ok(r.into_inner().mounts)
    }

    /// Commits active snapshot `key` as `name`; an existing `name` counts as success.
    pub async fn commit(&self, lease: &str, name: &str, key: &str) -> Result<()> {
        let labels = HashMap::from([("containerd.io/snapshot.ref".to_string(), name.to_string())]);
        let r = self
            .snapshots()
            .commit(self.req(
                snap::CommitSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    name: name.into(),
                    key: key.into(),
                    labels,
                },
                Some(lease),
            ))
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::AlreadyExists => self.remove_snapshot(key).await,
            Err(s) => Err(AgentError::containerd(format!("commit snapshot {name}"))(s)),
        }
    }

    /// Removes snapshot `key` (idempotent).
    pub async fn remove_snapshot(&self, key: &str) -> Result<()> {
        let r = self
            .snapshots()
            .remove(self.req(
                snap::RemoveSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    key: key.into(),
                },
                None,
            ))
            .await;
        match r {
            Err(s) if !is_not_found(&s) => {
                Err(AgentError::containerd(format!("remove snapshot {key}"))(s))
            }
            _ => Ok(()),
        }
    }

    /// Keys of snapshots whose labels match `filter` (containerd filter syntax).
    pub async fn list_snapshots(&self, filter: &str) -> Result<Vec<String>> {
        let mut s = self
            .snapshots()
            .list(self.req(
                snap::ListSnapshotsRequest {
                    snapshotter: self.snapshotter.clone(),
                    filters: vec![filter.into()],
                },
                None,
            ))
            .await
            .map_err(AgentError::containerd("list snapshots"))?
            .into_inner();
        let mut keys = Vec::new();
        while let Some(r) = s.next().await {
            keys.extend(
                r.map_err(AgentError::containerd("list snapshots"))?
                    .info
                    .into_iter()
                    .map(|i| i.name),
            );
        }
        Ok(keys)
    }

    /// Applies a layer blob onto mounts (unpacking it into a snapshot).
    pub async fn apply(
        &self,
        lease: &str,
        layer: Descriptor,
        mounts: Vec<Mount>,
    ) -> Result<Descriptor> {
        let mut c = svc::diff_client::DiffClient::new(self.channel.clone());
        let digest = layer.digest.clone();
        let r = c
            .apply(self.req(
                svc::ApplyRequest {
                    diff: Some(layer),
                    mounts,
                    ..Default::default()
                },
                Some(lease),
            ))
            .await
            .map_err(AgentError::containerd(format!("apply layer {digest}")))?;
        r.into_inner()
            .applied
            .ok_or_else(|| AgentError::Containerd {
                context: "apply".into(),
                status: tonic::Status::internal("no descriptor"),
            })
    }
}
