//! `GET /metrics` (admins): the coordinator's Prometheus metrics in the
//! text exposition format, written with the `prometheus-client` crate.
//! API requests are counted as they pass (by route template, method and
//! status, with a latency histogram); workspaces and nodes are read from
//! the store at each scrape, so the figures are the API's own.

use super::{AppState, Auth};
use crate::error::{Error, Result};
use axum::extract::{MatchedPath, Request, State as AxState};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Instant;

pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: String,
}

/// The API's request counters, kept for the coordinator's life.
#[derive(Clone, Debug)]
pub struct ApiMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            // 1 ms to ~16 s.
            latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 15))
            }),
        }
    }
}

/// Counts a request that matched a route, after its answer.
pub async fn track(
    AxState(s): AxState<AppState>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    if !s.observe {
        return next.run(req).await;
    }
    let method = req.method().as_str().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let m = &s.metrics;
    m.requests
        .get_or_create(&RequestLabels {
            route: route.clone(),
            method: method.clone(),
            status: response.status().as_u16().to_string(),
        })
        .inc();
    m.latency
        .get_or_create(&RouteLabels { route, method })
        .observe(started.elapsed().as_secs_f64());
    response
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkspaceLabels {
    state: String,
    tier: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

/// The coordinator's metrics (admins).
pub(super) async fn metrics(AxState(s): AxState<AppState>, a: Auth) -> Result<Response> {
    a.require_admin()?;
    let mut reg = Registry::with_prefix("berth");
    reg.register(
        "api_requests",
        "API requests answered, by route template, method and status",
        s.metrics.requests.clone(),
    );
    reg.register(
        "api_request_duration_seconds",
        "Time to answer an API request, by route template and method",
        s.metrics.latency.clone(),
    );

    s.svc.stats().register(&mut reg);
    let links = Gauge::<i64>::default();
    links.set(s.svc.connected_nodes() as i64);
    reg.register(
        "link_connections",
        "Agents connected to this coordinator over the link",
        links,
    );

    let workspaces = Family::<WorkspaceLabels, Gauge>::default();
    let by = s.svc.workspace_counts().await?;
    for ((state, tier), n) in by {
        workspaces
            .get_or_create(&WorkspaceLabels { state, tier })
            .set(n);
    }
    reg.register("workspaces", "Workspaces by state and tier", workspaces);

    let nodes = Family::<StatusLabels, Gauge>::default();
    let allocatable = Family::<NodeLabels, Gauge>::default();
    let allocated = Family::<NodeLabels, Gauge>::default();
    for n in s.svc.nodes().await? {
        nodes
            .get_or_create(&StatusLabels {
                status: n.status.as_str().to_string(),
            })
            .inc();
        let sizes = [
            ("cpu_millis", n.capacity.cpu_millis, n.allocated.cpu_millis),
            (
                "memory_bytes",
                n.capacity.memory_bytes,
                n.allocated.memory_bytes,
            ),
            ("disk_bytes", n.capacity.disk_bytes, n.allocated.disk_bytes),
            ("workspaces", n.slots.into(), n.allocated_slots.into()),
        ];
        for (resource, cap, used) in sizes {
            let l = NodeLabels {
                node: n.id.clone(),
                resource: resource.into(),
            };
            allocatable
                .get_or_create(&l)
                .set(cap.min(i64::MAX as u64) as i64);
            allocated
                .get_or_create(&l)
                .set(used.min(i64::MAX as u64) as i64);
        }
    }
    reg.register("nodes", "Nodes by status", nodes);
    reg.register(
        "node_allocatable",
        "What each node offers, by resource (cpu_millis, memory_bytes, disk_bytes, workspaces)",
        allocatable,
    );
    reg.register(
        "node_allocated",
        "What each node's workspaces reserve, by resource",
        allocated,
    );

    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, &reg)
        .map_err(|e| Error::internal(format!("metrics: {e}")))?;
    Ok((
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response())
}
