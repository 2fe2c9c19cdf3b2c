//! `GET /metrics` on the agent (`[metrics] listen`): the node's
//! allocatable, allocated and used resources, its PSI (`/proc/pressure`),
//! and per workspace (cAdvisor's names, label `workspace`) CPU seconds,
//! memory usage and working set, disk used, network bytes, OOM kills, PSI
//! where cgroup v2 has it, and open tunnel sessions. Written with the
//! `prometheus-client` crate from what is there at each scrape, so a
//! deleted workspace's series are gone with it; `per_workspace = false`
//! leaves them out (cardinality).

use crate::cgroup::Version;
use crate::config::MetricsConfig;
use crate::workspace::Manager;
use http_body_util::Full;
use hyper::body::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::path::Path;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Resource {
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Ws {
    workspace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WsKind {
    workspace: String,
    kind: String,
}

/// Serves `/metrics` until the future is dropped (for ever without `listen`).
pub async fn serve(cfg: MetricsConfig, m: Manager) {
    let Some(addr) = cfg.listen else {
        return std::future::pending().await;
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot serve metrics");
            return std::future::pending().await;
        }
    };
    tracing::info!(%addr, "serving metrics");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (m, per_workspace) = (m.clone(), cfg.per_workspace);
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let m = m.clone();
                    async move {
                        let r = if req.uri().path() == "/metrics" {
                            let text =
                                tokio::task::spawn_blocking(move || render(&m, per_workspace))
                                    .await
                                    .unwrap_or_default();
                            hyper::Response::builder()
                                .header(
                                    "content-type",
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                )
                                .body(Full::new(Bytes::from(text)))
                        } else {
                            hyper::Response::builder()
                                .status(404)
                                .body(Full::new(Bytes::from_static(b"only /metrics\n")))
                        };
                        r.map_err(|e| std::io::Error::other(e.to_string()))
                    }
                });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await;
        });
    }
}

/// Reads `<file>`'s `some` and `full` totals (microseconds), if present.
fn psi(file: &Path) -> (Option<u64>, Option<u64>) {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let total = |kind: &str| {
        text.lines()
            .find(|l| l.starts_with(kind))
            .and_then(|l| l.split_whitespace().find_map(|f| f.strip_prefix("total=")))
            .and_then(|v| v.parse().ok())
    };
    (total("some"), total("full"))
}

/// Registers node_exporter's PSI counters of `dir`'s `<res>.pressure`
/// files (seconds), under `prefix` (`node` or `container`).
fn pressure<
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
>(
    families: &mut [(String, Family<L, Counter<f64>>)],
    dir: &Path,
    labels: &L,
) {
    let mut i = 0;
    for res in ["cpu", "memory", "io"] {
        let (some, full) = psi(&dir.join(format!("{res}.pressure")));
        for v in [some, full] {
            if let Some(us) = v {
                families[i].1.get_or_create(labels).inc_by(us as f64 / 1e6);
            }
            i += 1;
        }
    }
}

/// The six PSI families (cpu, memory, io × waiting, stalled) under `prefix`.
fn pressure_families<
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
>(
    prefix: &str,
) -> Vec<(String, Family<L, Counter<f64>>)> {
    ["cpu", "memory", "io"]
        .iter()
        .flat_map(|r| {
            [
                format!("{prefix}_pressure_{r}_waiting_seconds"),
                format!("{prefix}_pressure_{r}_stalled_seconds"),
            ]
        })
        .map(|n| (n, Family::default()))
        .collect()
}

/// The exposition now.
pub fn render(m: &Manager, per_workspace: bool) -> String {
    let mut reg = Registry::default();
    let records = m.records_now();
    let cap = crate::link::capacity(m);
    let allocatable = Family::<Resource, Gauge>::default();
    let allocated = Family::<Resource, Gauge>::default();
    let used = Family::<Resource, Gauge>::default();
    let mut sum = [0u64; 4];
    let mut used_sum = [0u64; 2];
    let cg = m.cgroup_reader();
    for r in &records {
        sum[0] += u64::from(r.cpu_millis);
        sum[1] += r.memory_bytes;
        sum[2] += r.disk_bytes;
        sum[3] += 1;
        let u = cg.usage(&m.cgroup_of(&r.name));
        used_sum[0] += u.memory_bytes;
        used_sum[1] += m.volume_used(&r.name);
    }
    for (i, (name, total)) in [
        ("cpu_millis", cap.cpu_millis),
        ("memory_bytes", cap.memory_bytes),
        ("disk_bytes", cap.disk_bytes),
        ("workspaces", u64::from(cap.max_workspaces)),
    ]
    .into_iter()
    .enumerate()
    {
        let l = Resource {
            resource: name.into(),
        };
        allocatable.get_or_create(&l).set(total as i64);
        allocated.get_or_create(&l).set(sum[i] as i64);
    }
    for (name, v) in [("memory_bytes", used_sum[0]), ("disk_bytes", used_sum[1])] {
        used.get_or_create(&Resource {
            resource: name.into(),
        })
        .set(v as i64);
    }
    reg.register(
        "berth_node_allocatable",
        "What this node offers to workspaces, by resource",
        allocatable,
    );
    reg.register(
        "berth_node_allocated",
        "What this node's workspaces reserve, by resource",
        allocated,
    );
    reg.register(
        "berth_node_used",
        "What this node's workspaces use: memory (their cgroups) and disk (their volumes)",
        used,
    );
    let proc_pressure = m.host().proc().join("pressure");
    for res in ["cpu", "memory", "io"] {
        let (some, full) = psi(&proc_pressure.join(res));
        for (kind, v) in [("waiting", some), ("stalled", full)] {
            if let Some(us) = v {
                let c = Counter::<f64>::default();
                c.inc_by(us as f64 / 1e6);
                reg.register(
                    format!("node_pressure_{res}_{kind}_seconds"),
                    "Pressure stall time of the node (/proc/pressure), seconds",
                    c,
                );
            }
        }
    }

    if per_workspace {
        let cpu = Family::<Ws, Counter<f64>>::default();
        let mem = Family::<Ws, Gauge>::default();
        let ws = Family::<Ws, Gauge>::default();
        let disk = Family::<Ws, Gauge>::default();
        let rx = Family::<Ws, Counter<u64, AtomicU64>>::default();
        let tx = Family::<Ws, Counter<u64, AtomicU64>>::default();
        let oom = Family::<Ws, Counter<u64, AtomicU64>>::default();
        let sessions = Family::<WsKind, Gauge>::default();
        let mut psi_fams = pressure_families::<Ws>("container");
        for r in &records {
            let l = Ws {
                workspace: r.name.clone(),
            };
            let path = m.cgroup_of(&r.name);
            let u = cg.usage(&path);
            cpu.get_or_create(&l).inc_by(u.cpu_usage_nanos as f64 / 1e9);
            mem.get_or_create(&l).set(u.memory_bytes as i64);
            let inactive = cg.inactive_file(&path);
            ws.get_or_create(&l)
                .set(u.memory_bytes.saturating_sub(inactive) as i64);
            disk.get_or_create(&l).set(m.volume_used(&r.name) as i64);
            let veth = m.veth_of(&r.name);
            let stat = |f: &str| {
                std::fs::read_to_string(format!("/sys/class/net/{veth}/statistics/{f}"))
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            // The host side's receive is the workspace's transmit.
            rx.get_or_create(&l).inc_by(stat("tx_bytes"));
            tx.get_or_create(&l).inc_by(stat("rx_bytes"));
            oom.get_or_create(&l).inc_by(r.oom_kills);
            for t in m.activity().of(&r.name) {
                sessions
                    .get_or_create(&WsKind {
                        workspace: r.name.clone(),
                        kind: t.kind.clone(),
                    })
                    .set(i64::try_from(t.open).unwrap_or(i64::MAX));
            }
            if cg.version() == Version::V2 {
                pressure(&mut psi_fams, &cg.dir_of(&path), &l);
            }
        }
        reg.register(
            "container_cpu_usage_seconds",
            "CPU time of the workspace's cgroup, seconds",
            cpu,
        );
        reg.register(
            "container_memory_usage_bytes",
            "Memory charged to the workspace's cgroup",
            mem,
        );
        reg.register(
            "container_memory_working_set_bytes",
            "Its memory usage less inactive file pages (what cAdvisor calls the working set)",
            ws,
        );
        reg.register(
            "container_fs_usage_bytes",
            "Bytes used on the workspace's volume",
            disk,
        );
        reg.register(
            "container_network_receive_bytes",
            "Bytes the workspace received",
            rx,
        );
        reg.register(
            "container_network_transmit_bytes",
            "Bytes the workspace sent",
            tx,
        );
        reg.register(
            "container_oom_events",
            "Times the workspace's cgroup killed a process for memory",
            oom,
        );
        reg.register(
            "berth_workspace_tunnel_sessions",
            "Open tunnel sessions by kind (ssh, terminal, port, preview)",
            sessions,
        );
        if cg.version() == Version::V2 {
            for (name, fam) in psi_fams {
                reg.register(
                    name,
                    "Pressure stall time of the workspace's cgroup (cgroup v2), seconds",
                    fam,
                );
            }
        }
    }
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
    out
}
