//! containerd client: the narrow set of calls the agent makes to containerd's
//! content, image, snapshot, diff, lease, container, task and event services.

use crate::error::{is_not_found, AgentError, Result};
use containerd_client::services::v1 as svc;
use containerd_client::services::v1::snapshots as snap;
use containerd_client::tonic::{self, transport::Channel, Request};
use containerd_client::types::{v1::Process, Descriptor, Mount};
use futures::{Stream, StreamExt};
use prost_types::Any;
use std::collections::HashMap;
use std::path::PathBuf;

/// type URL containerd uses for an OCI runtime spec.
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// type URL containerd uses for an OCI process spec (exec).
pub const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// The runc shim's options (containerd.runc.v1.Options); only what we set.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RuncOptions {
    /// runc's state root.
    #[prost(string, tag = "7")]
    pub root: String,
}

/// A connection to one containerd, scoped to one namespace and snapshotter.
#[derive(Clone)]
pub struct Containerd {
    channel: Channel,
    namespace: String,
    snapshotter: String,
    runtime: String,
    runtime_options: Option<Any>,
}

impl std::fmt::Debug for Containerd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Containerd")
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl Containerd {
    /// Makes a client that dials `socket` on first use and redials after
    /// containerd restarts, so the agent runs while containerd is down.
    pub fn new(
        socket: PathBuf,
        namespace: &str,
        snapshotter: &str,
        runtime: &str,
        runc_root: &str,
    ) -> Result<Self> {
        let channel = tonic::transport::Endpoint::try_from("http://[::]")
            .map_err(|e| AgentError::InvalidRequest(e.to_string()))?
            .connect_timeout(std::time::Duration::from_secs(2))
            .connect_with_connector_lazy(tower::service_fn(move |_| {
                let socket = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(socket).await?,
                    ))
                }
            }));
        Ok(Self {
            channel,
            namespace: namespace.to_string(),
            snapshotter: snapshotter.to_string(),
            runtime: runtime.to_string(),
            runtime_options: (!runc_root.is_empty()).then(|| Any {
                type_url: "containerd.runc.v1.Options".into(),
                value: prost::Message::encode_to_vec(&RuncOptions {
                    root: runc_root.into(),
                }),
            }),
        })
    }

    /// The containerd namespace in use.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The snapshotter in use.
    pub fn snapshotter(&self) -> &str {
        &self.snapshotter
    }

    fn req<T>(&self, msg: T, lease: Option<&str>) -> Request<T> {
        let mut req = Request::new(msg);
        let md = req.metadata_mut();
        if let Ok(v) = self.namespace.parse() {
            md.insert("containerd-namespace", v);
        }
        if let Some(v) = lease.and_then(|l| l.parse().ok()) {
            md.insert("containerd-lease", v);
        }
        req
    }

    /// Answers when containerd is reachable.
    pub async fn ping(&self) -> Result<String> {
        let mut c = svc::version_client::VersionClient::new(self.channel.clone());
        let v = c
            .version(Request::new(()))
            .await
            .map_err(AgentError::containerd("version"))?;
        Ok(v.into_inner().version)
    }

    // ---- leases ----

    /// Creates a lease protecting what is written under it from GC for an
    /// hour; one left by a crashed agent is reused.
    pub async fn create_lease(&self, id: &str) -> Result<()> {
        let mut c = svc::leases_client::LeasesClient::new(self.channel.clone());
        let expire =
            time_rfc3339(std::time::SystemTime::now() + std::time::Duration::from_secs(3600));
        let labels = HashMap::from([("containerd.io/gc.expire".to_string(), expire)]);
        let r = c
            .create(self.req(
                svc::CreateRequest {
                    id: id.into(),
                    labels,
                },
                None,
            ))
            .await;
        match r {
            Err(s) if s.code() != tonic::Code::AlreadyExists => {
                Err(AgentError::containerd("create lease")(s))
            }
            _ => Ok(()),
        }
    }

    /// Adds `id` (of `kind`: "content", or "snapshots/<snapshotter>") to a
    /// lease, so GC keeps it while the lease lives: what a pull finds already
    /// present may be unreferenced (left by a failed pull) and collectable.
    pub async fn lease_add(&self, lease: &str, kind: &str, id: &str) -> Result<()> {
        let mut c = svc::leases_client::LeasesClient::new(self.channel.clone());
        c.add_resource(self.req(
            svc::AddResourceRequest {
                id: lease.into(),
                resource: Some(svc::Resource {
                    id: id.into(),
                    r#type: kind.into(),
                }),
            },
            None,
        ))
        .await
        .map_err(AgentError::containerd(format!("lease {id}")))?;
        Ok(())
    }

    /// Deletes a lease (idempotent).
    pub async fn delete_lease(&self, id: &str) -> Result<()> {
        let mut c = svc::leases_client::LeasesClient::new(self.channel.clone());
        match c
            .delete(self.req(
                svc::DeleteRequest {
                    id: id.into(),
                    sync: false,
                },
                None,
            ))
            .await
        {
            Err(s) if !is_not_found(&s) => Err(AgentError::containerd("delete lease")(s)),
            _ => Ok(()),
        }
    }

    // ---- content ----

    /// Whether the content store holds `digest`.
    pub async fn content_exists(&self, digest: &str) -> Result<bool> {
        let mut c = svc::content_client::ContentClient::new(self.channel.clone());
        match c
            .info(self.req(
                svc::InfoRequest {
                    digest: digest.into(),
                },
                None,
            ))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if is_not_found(&s) => Ok(false),
            Err(s) => Err(AgentError::containerd("content info")(s)),
        }
    }

    /// Reads a whole blob from the content store.
    pub async fn read_content(&self, digest: &str) -> Result<Vec<u8>> {
        let mut c = svc::content_client::ContentClient::new(self.channel.clone());
        let mut s = c
            .read(self.req(
                svc::ReadContentRequest {
                    digest: digest.into(),
                    offset: 0,
                    size: 0,
                },
                None,
            ))
            .await
            .map_err(AgentError::containerd(format!("read {digest}")))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = s.next().await {
            out.extend(
                chunk
                    .map_err(AgentError::containerd(format!("read {digest}")))?
                    .data,
            );
        }
        Ok(out)
    }

    /// Streams `chunks` into the content store as `expected`; containerd
    /// refuses the commit unless size and digest match.
    pub async fn write_content<S>(
        &self,
        lease: &str,
        reference: &str,
        expected: &str,
        total: i64,
        labels: HashMap<String, String>,
        chunks: S,
    ) -> Result<()>
    where
        S: Stream<Item = Vec<u8>> + Send + 'static,
    {
        let mut c = svc::content_client::ContentClient::new(self.channel.clone());
        let (r, e) = (reference.to_string(), expected.to_string());
        let mut offset = 0i64;
        let writes = chunks.map(move |data| {
            let req = svc::WriteContentRequest {
                action: svc::WriteAction::Write as i32,
                r#ref: r.clone(),
                total,
                expected: e.clone(),
                offset,
                data,
                labels: HashMap::new(),
            };
            offset += req.data.len() as i64;
            req
        });
        let commit = svc::WriteContentRequest {
            action: svc::WriteAction::Commit as i32,
            r#ref: reference.into(),
            total,
            expected: expected.into(),
            // containerd truncates an ingest written at offset 0: commit at the end.
            offset: total,
            data: Vec::new(),
            labels,
        };
        let stream = writes.chain(futures::stream::once(async move { commit }));
        let already = |s: &tonic::Status| s.code() == tonic::Code::AlreadyExists;
        let mut responses = match c.write(self.req(stream, Some(lease))).await {
            Ok(r) => r.into_inner(),
            // Another pull stored it first: the content is what we wanted.
            Err(s) if already(&s) => return Ok(()),
            Err(s) => return Err(AgentError::containerd(format!("write {expected}"))(s)),
        };
        while let Some(r) = responses.next().await {
            match r {
                Ok(_) => {}
                Err(s) if already(&s) => return Ok(()),
                Err(s) => return Err(AgentError::containerd(format!("write {expected}"))(s)),
            }
        }
        Ok(())
    }

    /// Drops an unfinished write (idempotent).
    pub async fn abort_write(&self, reference: &str) {
        let mut c = svc::content_client::ContentClient::new(self.channel.clone());
        let _ = c
            .abort(self.req(
                svc::AbortRequest {
                    r#ref: reference.into(),
                },
                None,
            ))
            .await;
    }

    /// Sets labels on a blob (e.g. the GC reference to its unpacked snapshot).
    pub async fn label_content(&self, digest: &str, labels: HashMap<String, String>) -> Result<()> {
        let mut c = svc::content_client::ContentClient::new(self.channel.clone());
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        let info = svc::Info {
            digest: digest.into(),
            labels,
            ..Default::default()
        };
        c.update(self.req(
            svc::UpdateRequest {
                info: Some(info),
                update_mask: Some(prost_types::FieldMask { paths }),
            },
            None,
        ))
        .await
        .map_err(AgentError::containerd(format!("label {digest}")))?;
        Ok(())
    }

    // ---- images ----

    /// The target descriptor of image `name`, if containerd has it.
    pub async fn get_image(&self, name: &str) -> Result<Option<Descriptor>> {
        let mut c = svc::images_client::ImagesClient::new(self.channel.clone());
        match c
            .get(self.req(svc::GetImageRequest { name: name.into() }, None))
            .await
        {
            Ok(r) => Ok(r.into_inner().image.and_then(|i| i.target)),
            Err(s) if is_not_found(&s) => Ok(None),
            Err(s) => Err(AgentError::containerd("get image")(s)),
        }
    }

    /// Names of every image in the namespace.
    pub async fn list_images(&self) -> Result<Vec<String>> {
        let mut c = svc::images_client::ImagesClient::new(self.channel.clone());
        let r = c
            .list(self.req(svc::ListImagesRequest { filters: vec![] }, None))
            .await
            .map_err(AgentError::containerd("list images"))?;
        Ok(r.into_inner().images.into_iter().map(|i| i.name).collect())
    }

    /// Creates or updates image `name` to point at `target`.
    pub async fn put_image(&self, lease: &str, name: &str, target: Descriptor) -> Result<()> {
        let mut c = svc::images_client::ImagesClient::new(self.channel.clone());
        let image = svc::Image {
            name: name.into(),
            target: Some(target),
            ..Default::default()
        };
        let created = c
            .create(self.req(
                svc::CreateImageRequest {
                    image: Some(image.clone()),
                    ..Default::default()
                },
                Some(lease),
            ))
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::AlreadyExists => {
                c.update(self.req(
                    svc::UpdateImageRequest {
                        image: Some(image),
                        ..Default::default()
                    },
                    Some(lease),
                ))
                .await
                .map_err(AgentError::containerd("update image"))?;
                Ok(())
            }
            Err(s) => Err(AgentError::containerd("create image")(s)),
        }
    }

    // ---- snapshots and diff ----

    fn snapshots(&self) -> snap::snapshots_client::SnapshotsClient<Channel> {
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

    // ---- containers ----

    /// Creates a container running `spec` on snapshot `snapshot_key`.
    pub async fn create_container(
        &self,
        id: &str,
        image: &str,
        snapshot_key: &str,
        spec: &serde_json::Value,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        let mut c = svc::containers_client::ContainersClient::new(self.channel.clone());
        let container = svc::Container {
            id: id.into(),
            labels,
            image: image.into(),
            runtime: Some(svc::container::Runtime {
                name: self.runtime.clone(),
                options: self.runtime_options.clone(),
            }),
            spec: Some(Any {
                type_url: SPEC_TYPE_URL.into(),
                value: serde_json::to_vec(spec).unwrap_or_default(),
            }),
            snapshotter: self.snapshotter.clone(),
            snapshot_key: snapshot_key.into(),
            ..Default::default()
        };
        c.create(self.req(
            svc::CreateContainerRequest {
                container: Some(container),
            },
            None,
        ))
        .await
        .map_err(AgentError::containerd(format!("create container {id}")))?;
        Ok(())
    }

    /// Ids and labels of the containers matching `filter`.
    pub async fn list_containers(
        &self,
        filter: &str,
    ) -> Result<Vec<(String, HashMap<String, String>)>> {
        let mut c = svc::containers_client::ContainersClient::new(self.channel.clone());
        let r = c
            .list(self.req(
                svc::ListContainersRequest {
                    filters: vec![filter.into()],
                },
                None,
            ))
            .await
            .map_err(AgentError::containerd("list containers"))?;
        Ok(r.into_inner()
            .containers
            .into_iter()
            .map(|c| (c.id, c.labels))
            .collect())
    }

    /// Deletes a container (idempotent).
    pub async fn delete_container(&self, id: &str) -> Result<()> {
        let mut c = svc::containers_client::ContainersClient::new(self.channel.clone());
        match c
            .delete(self.req(svc::DeleteContainerRequest { id: id.into() }, None))
            .await
        {
            Err(s) if !is_not_found(&s) => {
                Err(AgentError::containerd(format!("delete container {id}"))(s))
            }
            _ => Ok(()),
        }
    }

    // ---- tasks ----

    fn tasks(&self) -> svc::tasks_client::TasksClient<Channel> {
        svc::tasks_client::TasksClient::new(self.channel.clone())
    }

    /// Creates the task (init process) of container `id`, its output going to `log`.
    pub async fn create_task(&self, id: &str, rootfs: Vec<Mount>, log: &str) -> Result<u32> {
        let uri = format!("file://{log}");
        let r = self
            .tasks()
            .create(self.req(
                svc::CreateTaskRequest {
                    container_id: id.into(),
                    rootfs,
                    stdout: uri.clone(),
                    stderr: uri,
                    ..Default::default()
                },
                None,
            ))
            .await
            .map_err(AgentError::containerd(format!("create task {id}")))?;
        Ok(r.into_inner().pid)
    }

    /// Starts the init process (empty `exec_id`) or an exec'd process.
    pub async fn start(&self, id: &str, exec_id: &str) -> Result<u32> {
        let r = self
            .tasks()
            .start(self.req(
                svc::StartRequest {
                    container_id: id.into(),
                    exec_id: exec_id.into(),
                },
                None,
            ))
            .await
            .map_err(AgentError::containerd(format!("start {id} {exec_id}")))?;
        Ok(r.into_inner().pid)
    }

    /// The init process of container `id`, if it has a task.
    pub async fn get_task(&self, id: &str) -> Result<Option<Process>> {
        match self
            .tasks()
            .get(self.req(
                svc::GetRequest {
                    container_id: id.into(),
                    exec_id: String::new(),
                },
                None,
            ))
            .await
        {
            Ok(r) => Ok(r.into_inner().process),
            Err(s) if is_not_found(&s) => Ok(None),
            Err(s) => Err(AgentError::containerd(format!("get task {id}"))(s)),
        }
    }

    /// All tasks in the namespace.
    pub async fn list_tasks(&self) -> Result<Vec<Process>> {
        let r = self
            .tasks()
            .list(self.req(svc::ListTasksRequest::default(), None))
            .await
            .map_err(AgentError::containerd("list tasks"))?;
        Ok(r.into_inner().tasks)
    }

    /// Sends `signal` to a process (to all of the container's with `all`).
    pub async fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        let r = self
            .tasks()
            .kill(self.req(
                svc::KillRequest {
                    container_id: id.into(),
                    exec_id: exec_id.into(),
                    signal,
                    all,
                },
                None,
            ))
            .await;
        match r {
            Err(s) if !is_not_found(&s) => Err(AgentError::containerd(format!("kill {id}"))(s)),
            _ => Ok(()),
        }
    }

    /// Waits for a process to exit and returns its exit status.
    pub async fn wait(&self, id: &str, exec_id: &str) -> Result<u32> {
        let r = self
            .tasks()
            .wait(self.req(
                svc::WaitRequest {
                    container_id: id.into(),
                    exec_id: exec_id.into(),
                },
                None,
            ))
            .await
            .map_err(AgentError::containerd(format!("wait {id} {exec_id}")))?;
        Ok(r.into_inner().exit_status)
    }

    /// Deletes the (exited) task of container `id`; returns its exit status if it had one.
    pub async fn delete_task(&self, id: &str) -> Result<Option<u32>> {
        match self
            .tasks()
            .delete(self.req(
                svc::DeleteTaskRequest {
                    container_id: id.into(),
                },
                None,
            ))
            .await
        {
            Ok(r) => Ok(Some(r.into_inner().exit_status)),
            Err(s) if is_not_found(&s) => Ok(None),
            Err(s) => Err(AgentError::containerd(format!("delete task {id}"))(s)),
        }
    }

    /// Adds a process to a running task; its stdio are FIFO paths.
    pub async fn exec(
        &self,
        id: &str,
        exec_id: &str,
        process: &serde_json::Value,
        stdio: [String; 3],
        tty: bool,
    ) -> Result<()> {
        let [stdin, stdout, stderr] = stdio;
        let spec = Any {
            type_url: PROCESS_TYPE_URL.into(),
            value: serde_json::to_vec(process).unwrap_or_default(),
        };
        self.tasks()
            .exec(self.req(
                svc::ExecProcessRequest {
                    container_id: id.into(),
                    stdin,
                    stdout,
                    stderr,
                    terminal: tty,
                    spec: Some(spec),
                    exec_id: exec_id.into(),
                },
                None,
            ))
            .await
            .map_err(AgentError::containerd(format!("exec in {id}")))?;
        Ok(())
    }

    /// Resizes an exec'd process's terminal.
    pub async fn resize(&self, id: &str, exec_id: &str, cols: u32, rows: u32) -> Result<()> {
        self.tasks()
            .resize_pty(self.req(
                svc::ResizePtyRequest {
                    container_id: id.into(),
                    exec_id: exec_id.into(),
                    width: cols,
                    height: rows,
                },
                None,
            ))
            .await
            .map_err(AgentError::containerd("resize pty"))?;
        Ok(())
    }

    /// Closes the stdin of an exec'd process.
    pub async fn close_stdin(&self, id: &str, exec_id: &str) -> Result<()> {
        self.tasks()
            .close_io(self.req(
                svc::CloseIoRequest {
                    container_id: id.into(),
                    exec_id: exec_id.into(),
                    stdin: true,
                },
                None,
            ))
            .await
            .map_err(AgentError::containerd("close stdin"))?;
        Ok(())
    }

    /// Removes an exited exec'd process (idempotent).
    pub async fn delete_process(&self, id: &str, exec_id: &str) -> Result<()> {
        let r = self
            .tasks()
            .delete_process(self.req(
                svc::DeleteProcessRequest {
                    container_id: id.into(),
                    exec_id: exec_id.into(),
                },
                None,
            ))
            .await;
        match r {
            Err(s) if !is_not_found(&s) => Err(AgentError::containerd("delete process")(s)),
            _ => Ok(()),
        }
    }

    // ---- events ----

    /// Subscribes to this namespace's events matching `topics`.
    pub async fn subscribe(
        &self,
        topics: &[&str],
    ) -> Result<tonic::Streaming<containerd_client::types::Envelope>> {
        let mut c = svc::events_client::EventsClient::new(self.channel.clone());
        let filters = event_filters(&self.namespace, topics);
        let r = c
            .subscribe(Request::new(svc::SubscribeRequest { filters }))
            .await
            .map_err(AgentError::containerd("subscribe to events"))?;
        Ok(r.into_inner())
    }
}

/// containerd event filters for `topics` in `namespace` (values quoted: the
/// filter grammar does not allow '/' in a bare value).
pub fn event_filters(namespace: &str, topics: &[&str]) -> Vec<String> {
    topics
        .iter()
        .map(|t| format!("namespace=={namespace:?},topic=={t:?}"))
        .collect()
}

/// Formats a time as RFC 3339 in UTC (what containerd's GC labels expect).
pub fn time_rfc3339(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    berth_proto::units::rfc3339(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_filters_quote_their_values() {
        assert_eq!(
            event_filters("berth", &["/tasks/exit"]),
            [r#"namespace=="berth",topic=="/tasks/exit""#]
        );
    }

    #[test]
    fn rfc3339() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000);
        assert_eq!(time_rfc3339(t), "2026-11-18T11:06:40Z");
        assert_eq!(time_rfc3339(std::time::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
