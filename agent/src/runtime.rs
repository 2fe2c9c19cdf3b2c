//! containerd client: the narrow set of calls the agent makes to containerd's
//! content, image, snapshot, diff, lease, container, task and event services.

mod content;
mod snapshots;
mod tasks;

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
        let expire =
            time_rfc3339(std::time::SystemTime::now() + std::time::Duration::from_secs(3600));
        self.create_lease_with(
            id,
            HashMap::from([("containerd.io/gc.expire".to_string(), expire)]),
        )
        .await
    }

    /// Makes lease `id` with no expiry (a GC root until deleted), or finds it.
    pub async fn create_lasting_lease(&self, id: &str) -> Result<()> {
        self.create_lease_with(id, HashMap::new()).await
    }

    async fn create_lease_with(&self, id: &str, labels: HashMap<String, String>) -> Result<()> {
        let mut c = svc::leases_client::LeasesClient::new(self.channel.clone());
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

    /// Deletes a lease (idempotent); with `sync`, containerd collects what
    /// only it held before answering.
    pub async fn delete_lease(&self, id: &str, sync: bool) -> Result<()> {
        let mut c = svc::leases_client::LeasesClient::new(self.channel.clone());
        match c
            .delete(self.req(
                svc::DeleteRequest {
                    id: id.into(),
                    sync,
                },
                None,
            ))
            .await
        {
            Err(s) if !is_not_found(&s) => Err(AgentError::containerd("delete lease")(s)),
            _ => Ok(()),
        }
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
