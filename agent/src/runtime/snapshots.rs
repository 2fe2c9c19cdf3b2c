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

    /// The labels of snapshot `key`, if it exists.
    pub async fn snapshot_labels(&self, key: &str) -> Result<Option<HashMap<String, String>>> {
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
            Ok(r) => Ok(Some(
                r.into_inner().info.map(|i| i.labels).unwrap_or_default(),
            )),
            Err(s) if is_not_found(&s) => Ok(None),
            Err(s) => Err(AgentError::containerd("stat snapshot")(s)),
        }
    }

    /// Sets `labels` on snapshot `key` (others are kept).
    pub async fn set_snapshot_labels(
        &self,
        key: &str,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        self.snapshots()
            .update(self.req(
                snap::UpdateSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    info: Some(snap::Info {
                        name: key.into(),
                        labels,
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask { paths }),
                },
                None,
            ))
            .await
            .map_err(AgentError::containerd(format!("label snapshot {key}")))?;
        Ok(())
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

    /// Makes a read-only view `key` of committed snapshot `parent` (or
    /// returns the view's mounts if it exists).
    pub async fn view(&self, lease: &str, key: &str, parent: &str) -> Result<Vec<Mount>> {
        let r = self
            .snapshots()
            .view(self.req(
                snap::ViewSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    key: key.into(),
                    parent: parent.into(),
                    labels: HashMap::new(),
                },
                Some(lease),
            ))
            .await;
        match r {
            Ok(r) => Ok(r.into_inner().mounts),
            Err(s) if s.code() == tonic::Code::AlreadyExists => self.mounts(key).await,
            Err(s) => Err(AgentError::containerd(format!("view snapshot {key}"))(s)),
        }
    }

    /// Bytes and inodes a snapshot uses (containerd's Usage).
    pub async fn usage(&self, key: &str) -> Result<(u64, u64)> {
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
            .map_err(AgentError::containerd(format!("snapshot usage {key}")))?
            .into_inner();
        Ok((r.size.max(0) as u64, r.inodes.max(0) as u64))
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
