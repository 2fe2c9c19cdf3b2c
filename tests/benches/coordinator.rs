//! Coordinator benchmarks, each printed as a table and appended as JSON lines
//! to target/bench/<bench>.jsonl:
//!
//! - placement: placements per second with durable commits (SQLite WAL with
//!   synchronous=FULL; PostgreSQL with fsync and synchronous_commit on) against
//!   5,000 simulated agents (registered, ready node rows with capacity, labels
//!   and cached images), by the coordinator's own scheduling pass; decision
//!   latency of the pure scheduler; baseline: the same number of rows written
//!   in the same batches by bare UPDATEs, with the same durability.
//! - link_handshake: full mutual-TLS QUIC handshakes per second against a
//!   coordinator process; baseline: server-authenticated-only handshakes to the
//!   same endpoint (the join ALPN) in the same run.
//! - link_memory: the coordinator's RSS with 5,000 idle agents connected,
//!   registered and heartbeating, against its RSS with none.
//! - api_overhead: create→running through the API (POST to SSE "running")
//!   against the agent alone (its control socket) on the same node and image,
//!   interleaved.
//! - forward: `berth port-forward` throughput and round trip vs direct TCP
//!   from the node to the same servers in the workspace, with `ssh -L`
//!   through an OpenSSH sshd on the node and through Berth's SSH beside it.
//! - keystroke: SSH keystroke echo through Berth vs an OpenSSH sshd on
//!   loopback, same SSH client.
//!
//! `cargo bench --bench coordinator -- placement handshake memory api forward keystroke` runs a
//! subset (`link` is handshake + memory); BERTH_BENCH_AGENTS sets the number
//! of idle agents (default 5000).

use berth_coordinator::domain::scheduler::{self, Request, Resources, Strategy};
use berth_coordinator::link::{Duplex, LinkError, NodeLink};
use berth_coordinator::pki::Ca;
use berth_coordinator::service::{Parts, Service, Timing};
use berth_coordinator::store::Store;
use berth_proto::agent as pb;
use berth_proto::units::now_ms;
use berth_tests::bench::{iters, percentile, record, rss_kib, sorted};
use berth_tests::{Cluster, ClusterOptions, Coordinator, Postgres};
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const NODES: usize = 5000;
const IMAGES: usize = 50;

fn image(i: usize) -> String {
    format!("registry.bench/img{}:1", i % IMAGES)
}

/// 5,000 ready nodes: 16 cores, 64 GiB, 1 TiB, 110 slots, a zone label,
/// three cached images each.
async fn seed_nodes(store: &Store, now: i64) {
    let mut tx = store.pool().begin().await.unwrap();
    for i in 0..NODES {
        let cached: Vec<String> = (0..3).map(|k| image(i * 3 + k)).collect();
        sqlx::query(
            "INSERT INTO nodes (id, status, labels, cached_images, cap_cpu_millis, cap_memory_bytes, \
             cap_disk_bytes, cap_slots, agent_version, joined_at_ms, last_seen_ms, status_since_ms) \
             VALUES ($1, 'ready', $2, $3, 16000, $4, $5, 110, 'bench', $6, $6, $6)",
        )
        .bind(format!("node{i:05}"))
        .bind(format!("{{\"zone\":\"z{}\"}}", i % 4))
        .bind(serde_json::to_string(&cached).unwrap())
        .bind(64i64 << 30)
        .bind(1i64 << 40)
        .bind(now)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
}

fn ws_resources(i: usize) -> Resources {
    Resources {
        cpu_millis: 500 + (i % 4) as u64 * 500,
        memory_bytes: (1 + (i % 4) as u64) << 30,
        disk_bytes: 10 << 30,
    }
}

/// `n` pending workspaces (acknowledged creates), inserted in bulk.
async fn seed_workspaces(store: &Store, n: usize, now: i64) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut tx = store.pool().begin().await.unwrap();
        for &i in chunk {
            let r = ws_resources(i);
            sqlx::query(
                "INSERT INTO workspaces (id, name, owner, image, cpu_millis, memory_bytes, disk_bytes, pids, \
                 env, node_selector, state, desired, node, generation, version, reason, ip, exit_code, \
                 created_at_ms, updated_at_ms, state_since_ms) \
                 VALUES ($1, $2, 'bench', $3, $4, $5, $6, 4096, '{}', $7, 'pending', 'running', NULL, 1, 0, NULL, NULL, NULL, $8, $8, $8)",
            )
            .bind(format!("w{i:06}"))
            .bind(format!("ws{i}"))
            .bind(image(i * 7))
            .bind(r.cpu_millis as i64)
            .bind(r.memory_bytes as i64)
            .bind(r.disk_bytes as i64)
            .bind(if i % 10 == 0 { "{\"zone\":\"z1\"}" } else { "{}" })
            .bind(now + i as i64)
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
    }
}

/// A link with no node connected: the scheduling passes place workspaces
/// and send nothing (the simulated agents are rows only).
struct NoNodes;

impl NodeLink for NoNodes {
    fn connected(&self) -> Vec<String> {
        Vec::new()
    }
    fn is_connected(&self, _: &str) -> bool {
        false
    }
    fn call(
        &self,
        node: &str,
        _: pb::request::Command,
        _: Duration,
    ) -> BoxFuture<'_, Result<pb::response::Result, LinkError>> {
        let e = LinkError::NotConnected(node.into());
        Box::pin(async move { Err(e) })
    }
    fn open(
        &self,
        node: &str,
        _: pb::request::Command,
    ) -> BoxFuture<'_, Result<(Duplex, pb::response::Result), LinkError>> {
        let e = LinkError::NotConnected(node.into());
        Box::pin(async move { Err(e) })
    }
}

fn service(store: Store) -> Service {
    Service::new(Parts {
        id: "bench".into(),
        store,
        link: Arc::new(NoNodes),
        timing: Timing {
            // The simulated agents do not heartbeat: keep them ready.
            unreachable_after: Duration::from_secs(86_400),
            ..Default::default()
        },
        tiers: Default::default(),
        default_image: None,
        ca_fingerprint: String::new(),
        clock: berth_coordinator::service::system_clock(),
    })
}

async fn placement(backend: &str, url: &str) {
    let n = iters(20) * 1000;
    let store = Store::open(url).await.unwrap();
    let now = now_ms();
    seed_nodes(&store, now).await;
    seed_workspaces(&store, n, now).await;
    let ctl = service(store.clone());

    // Decision latency of the pure scheduler over the 5,000 node views.
    let fleet = scheduler::Fleet::new(ctl.views(&store.nodes().await.unwrap(), now_ms()));
    let (mut decide, mut scan) = (Vec::new(), Vec::new());
    for i in 0..2000 {
        let mut sel = BTreeMap::new();
        if i % 10 == 0 {
            sel.insert("zone".to_string(), "z1".to_string());
        }
        let req = Request {
            image: image(i * 7),
            resources: ws_resources(i),
            node_selector: sel,
        };
        let t = Instant::now();
        let p = fleet.place(&req, Strategy::BinPack);
        decide.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        let q = scheduler::place(&req, fleet.nodes(), Strategy::BinPack);
        scan.push(t.elapsed().as_secs_f64() * 1e6);
        assert_eq!(p, q);
        assert!(p.is_ok());
    }
    let (decide, scan) = (sorted(decide), sorted(scan));

    let t = Instant::now();
    let _ = store.nodes().await.unwrap();
    let read_nodes = t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    let _ = store
        .workspaces_in(
            &[berth_coordinator::domain::lifecycle::State::Pending],
            1024,
        )
        .await
        .unwrap();
    let read_pending = t.elapsed().as_secs_f64() * 1000.0;
    // The scheduling passes, as the controller runs them.
    let mut passes = Vec::new();
    let mut placed = 0;
    let t0 = Instant::now();
    loop {
        let t = Instant::now();
        let k = ctl.schedule_once().await.expect("scheduling pass");
        if k == 0 {
            break;
        }
        passes.push(t.elapsed().as_secs_f64() * 1000.0);
        placed += k;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    assert_eq!(placed, n, "every workspace placed");
    let counts = store.placement_counts().await.unwrap();
    assert_eq!(counts.len(), n);
    let rate = placed as f64 / elapsed;
    let passes = sorted(passes);

    // Baseline: the same rows, the same batches, bare durable UPDATEs.
    let t0 = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1024) {
        let mut tx = store.pool().begin().await.unwrap();
        for &i in chunk {
            sqlx::query(
                "UPDATE workspaces SET reason = 'baseline', version = version + 1 WHERE id = $1",
            )
            .bind(format!("w{i:06}"))
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
    }
    let floor = n as f64 / t0.elapsed().as_secs_f64();

    let bench = format!("placement_{backend}");
    println!("\n{bench}: {n} pending workspaces onto {NODES} simulated agents, durable commits");
    println!("  placements/s                         {rate:>10.0}   (goal >= 3750)");
    println!(
        "  scheduling pass p50 / p99 (<=1024)   {:>7.1} / {:.1} ms",
        percentile(&passes, 0.5),
        percentile(&passes, 0.99)
    );
    println!(
        "  decision p50 / p99                   {:>7.0} / {:.0} us",
        percentile(&decide, 0.5),
        percentile(&decide, 0.99)
    );
    println!("  pass reads: {NODES} nodes {read_nodes:.1} ms, 1024 pending {read_pending:.1} ms");
    println!(
        "  (full scan of every node p50 / p99   {:>7.0} / {:.0} us)",
        percentile(&scan, 0.5),
        percentile(&scan, 0.99)
    );
    println!("  baseline: bare durable row updates/s {floor:>10.0}");
    println!(
        "  ratio placements / baseline          {:>10.2}",
        rate / floor
    );
    record(&bench, "placements_per_s", rate, "1/s", ">=3750");
    record(
        &bench,
        "decision_p50_us",
        percentile(&decide, 0.5),
        "us",
        "",
    );
    record(
        &bench,
        "decision_p99_us",
        percentile(&decide, 0.99),
        "us",
        "",
    );
    record(&bench, "pass_p99_ms", percentile(&passes, 0.99), "ms", "");
    record(&bench, "baseline_updates_per_s", floor, "1/s", "");
    record(&bench, "ratio_vs_bare_updates", rate / floor, "x", "");
}

/// A coordinator process (the release binary next to the agent's, from
/// BERTH_AGENT_BIN) and its RSS.
fn rss_mib(c: &Coordinator) -> f64 {
    rss_kib(c.pid()) / 1024.0
}

/// A simulated agent's identity: a key, a CSR, a certificate signed by the
/// cluster CA, exactly what a join yields.
struct SimIdentity {
    key_pem: String,
    cert_pem: String,
}

fn make_identities(ca: &Ca, prefix: &str, n: usize) -> Vec<SimIdentity> {
    (0..n)
        .map(|i| {
            let node = format!("{prefix}{i:05}");
            let (key_pem, csr) = berth_proto::tls::node_csr(&node).unwrap();
            let cert_pem = ca
                .sign_node(&node, &csr, Duration::from_secs(86_400))
                .unwrap()
                .cert_pem;
            SimIdentity { key_pem, cert_pem }
        })
        .collect()
}

/// Identities signed by the coordinator's CA, their nodes recorded as joined.
async fn sim_identities(store: &Store, prefix: &str, n: usize) -> (String, Vec<SimIdentity>) {
    let (ca_cert, ca_key) = store
        .ca_or_init(|| panic!("the coordinator made its CA"))
        .await
        .unwrap();
    let ca = Ca::load(&ca_cert, &ca_key).unwrap();
    let now = now_ms();
    let mut tx = store.pool().begin().await.unwrap();
    for i in 0..n {
        sqlx::query("INSERT INTO nodes (id, status, joined_at_ms, last_seen_ms, status_since_ms) VALUES ($1, 'joined', $2, $2, $2)")
            .bind(format!("{prefix}{i:05}"))
            .bind(now)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    (ca_cert, make_identities(&ca, prefix, n))
}

/// The baseline of link_memory: a bare quinn server with the coordinator's
/// TLS and transport settings that only does the protocol's minimum (answer
/// the registration, acknowledge heartbeats). Runs in a child process (this
/// bench re-executed with BERTH_BENCH_BARE_QUIC=<dir>) so its RSS is its own.
fn bare_quic_server(dir: &std::path::Path) -> ! {
    use berth_proto::link as lk;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        let ca = Ca::load(&read("ca.pem"), &read("ca.key")).unwrap();
        let (chain, key) = ca.server_cert(&[]).unwrap();
        let tls =
            berth_coordinator::pki::server_tls(&ca, chain, key, &[berth_proto::ALPN_LINK]).unwrap();
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server.transport_config(Arc::new(
            berth_coordinator::link::quic::server_transport(Duration::from_secs(8)).unwrap(),
        ));
        let ep = quinn::Endpoint::server(server, "127.0.0.1:0".parse().unwrap()).unwrap();
        std::fs::write(dir.join("addr"), ep.local_addr().unwrap().to_string()).unwrap();
        while let Some(incoming) = ep.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                let Ok((mut send, mut recv)) = conn.accept_bi().await else {
                    return;
                };
                let mut kind = [0u8; 1];
                if recv.read_exact(&mut kind).await.is_err() {
                    return;
                }
                while let Ok(Some(m)) =
                    berth_proto::read_frame::<_, lk::AgentMessage>(&mut recv).await
                {
                    let reply = match m.msg {
                        Some(lk::agent_message::Msg::Register(_)) => {
                            lk::coordinator_message::Msg::Registered(lk::Registered {
                                node_id: String::new(),
                                heartbeat_interval_ms: 2000,
                            })
                        }
                        Some(lk::agent_message::Msg::Heartbeat(h)) => {
                            lk::coordinator_message::Msg::HeartbeatAck(lk::HeartbeatAck {
                                seq: h.seq,
                            })
                        }
                        _ => continue,
                    };
                    let msg = lk::CoordinatorMessage { msg: Some(reply) };
                    if berth_proto::write_frame(&mut send, &msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    std::process::exit(0)
}

/// Connects `ids` as simulated agents to `addr`, 100 at a time; returns
/// the seconds it took.
async fn connect_agents(
    ep: &quinn::Endpoint,
    addr: std::net::SocketAddr,
    ca_pem: &str,
    ids: &[SimIdentity],
    stop: &Arc<tokio::sync::Notify>,
) -> f64 {
    let t = Instant::now();
    for chunk in ids.chunks(100) {
        let joins = chunk.iter().map(|id| {
            let cfg = quic_client(
                berth_proto::tls::client_tls(
                    ca_pem,
                    &id.cert_pem,
                    &id.key_pem,
                    berth_proto::ALPN_LINK,
                )
                .unwrap(),
            );
            sim_agent(ep.clone(), addr, cfg, stop.clone())
        });
        for r in futures::future::join_all(joins).await {
            r.expect("simulated agent registered");
        }
    }
    t.elapsed().as_secs_f64()
}

/// QUIC client settings as the agent uses them (agent/src/link.rs), with
/// TLS session resumption off so every handshake is a full one.
fn quic_client(mut tls: rustls::ClientConfig) -> quinn::ClientConfig {
    tls.resumption = rustls::client::Resumption::disabled();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut c = quinn::ClientConfig::new(Arc::new(crypto));
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_millis(500)));
    c.transport_config(Arc::new(t));
    c
}

/// `count` handshakes, `parallel` at a time, each with a config from `make`;
/// returns handshakes per second.
async fn handshakes(
    ep: &quinn::Endpoint,
    addr: std::net::SocketAddr,
    count: usize,
    parallel: usize,
    make: impl Fn(usize) -> quinn::ClientConfig,
) -> f64 {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let t = Instant::now();
    let workers = (0..parallel).map(|_| async {
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if i >= count {
                return;
            }
            let conn = ep
                .connect_with(make(i), addr, berth_proto::tls::SERVER_NAME)
                .unwrap()
                .await
                .expect("handshake");
            conn.close(0u32.into(), b"bench");
        }
    });
    futures::future::join_all(workers).await;
    count as f64 / t.elapsed().as_secs_f64()
}

async fn link_handshake() {
    let count = iters(20) * 100;
    let c = Coordinator::start();
    let store = Store::open(&c.store_url()).await.unwrap();
    let (ca_pem, ids) = sim_identities(&store, "hs", 64).await;
    let ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    // Warm-up, then interleave the two kinds in rounds.
    let mtls = |i: usize| {
        let id = &ids[i % ids.len()];
        quic_client(
            berth_proto::tls::client_tls(
                &ca_pem,
                &id.cert_pem,
                &id.key_pem,
                berth_proto::ALPN_LINK,
            )
            .unwrap(),
        )
    };
    let server_only = |_: usize| {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(berth_proto::tls::pem_to_der(&ca_pem).unwrap())
            .unwrap();
        let mut cfg = rustls::ClientConfig::builder_with_provider(berth_proto::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![berth_proto::ALPN_JOIN.to_vec()];
        quic_client(cfg)
    };
    handshakes(&ep, c.link, 100, 16, &mtls).await;
    handshakes(&ep, c.link, 100, 16, &server_only).await;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..4 {
        a.push(handshakes(&ep, c.link, count / 4, 16, &mtls).await);
        b.push(handshakes(&ep, c.link, count / 4, 16, &server_only).await);
    }
    let (a, b) = (sorted(a), sorted(b));
    let (ma, mb) = (percentile(&a, 0.5), percentile(&b, 0.5));
    println!("\nlink_handshake: {count} full TLS 1.3 handshakes over QUIC each kind, 16 at a time, client and coordinator on this machine");
    println!("  mutual TLS (node certificate), per second   {ma:>8.0}   (goal >= 1000)");
    println!("  server-authenticated only (baseline), per s {mb:>8.0}");
    println!(
        "  ratio mTLS / server-only                    {:>8.2}",
        ma / mb
    );
    record(
        "link_handshake",
        "mtls_handshakes_per_s",
        ma,
        "1/s",
        ">=1000",
    );
    record(
        "link_handshake",
        "server_auth_handshakes_per_s",
        mb,
        "1/s",
        "",
    );
    record(
        "link_handshake",
        "ratio_mtls_vs_server_auth",
        ma / mb,
        "x",
        "",
    );
}

/// One simulated agent: connect, register (empty inventory), then
/// heartbeat at the interval the coordinator asks for, as the agent does.
async fn sim_agent(
    ep: quinn::Endpoint,
    addr: std::net::SocketAddr,
    cfg: quinn::ClientConfig,
    stop: Arc<tokio::sync::Notify>,
) -> Result<(), String> {
    use berth_proto::link as lk;
    let conn = ep
        .connect_with(cfg, addr, berth_proto::tls::SERVER_NAME)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(b"C").await.map_err(|e| e.to_string())?;
    let reg = lk::AgentMessage {
        msg: Some(lk::agent_message::Msg::Register(lk::Register {
            agent_version: "sim".into(),
            capacity: Some(lk::Capacity {
                cpu_millis: 16_000,
                memory_bytes: 64 << 30,
                disk_bytes: 1 << 40,
                max_workspaces: 110,
            }),
            ..Default::default()
        })),
    };
    berth_proto::write_frame(&mut send, &reg)
        .await
        .map_err(|e| e.to_string())?;
    let first: lk::CoordinatorMessage = berth_proto::read_frame(&mut recv)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("closed before registered")?;
    let interval = match first.msg {
        Some(lk::coordinator_message::Msg::Registered(r)) => {
            Duration::from_millis(u64::from(r.heartbeat_interval_ms).max(100))
        }
        other => return Err(format!("not registered: {other:?}")),
    };
    tokio::spawn(async move {
        let mut seq = 0;
        let mut tick = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    seq += 1;
                    let hb = lk::AgentMessage { msg: Some(lk::agent_message::Msg::Heartbeat(lk::Heartbeat { seq })) };
                    if berth_proto::write_frame(&mut send, &hb).await.is_err() { return; }
                }
                m = berth_proto::read_frame::<_, lk::CoordinatorMessage>(&mut recv) => {
                    if !matches!(m, Ok(Some(_))) { return; }
                }
                _ = stop.notified() => { conn.close(0u32.into(), b"done"); return; }
            }
        }
    });
    Ok(())
}

async fn link_memory() {
    let n: usize = std::env::var("BERTH_BENCH_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();

    // Baseline: bare quinn with the same TLS and transport, the same agents.
    let bare_dir = tempfile::tempdir().unwrap();
    let (ca_cert, ca_key) = Ca::generate().unwrap();
    std::fs::write(bare_dir.path().join("ca.pem"), &ca_cert).unwrap();
    std::fs::write(bare_dir.path().join("ca.key"), &ca_key).unwrap();
    let mut bare = std::process::Command::new(std::env::current_exe().unwrap())
        .env("BERTH_BENCH_BARE_QUIC", bare_dir.path())
        .spawn()
        .unwrap();
    let addr_file = bare_dir.path().join("addr");
    let t = Instant::now();
    while !addr_file.exists() {
        assert!(t.elapsed() < Duration::from_secs(10), "bare server not up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let bare_addr: std::net::SocketAddr = std::fs::read_to_string(&addr_file)
        .unwrap()
        .parse()
        .unwrap();
    let bare_ids = make_identities(&Ca::load(&ca_cert, &ca_key).unwrap(), "bare", n);
    let bare_idle = rss_kib(bare.id()) / 1024.0;
    let stop_bare = Arc::new(tokio::sync::Notify::new());
    connect_agents(&ep, bare_addr, &ca_cert, &bare_ids, &stop_bare).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let bare_full = rss_kib(bare.id()) / 1024.0;
    stop_bare.notify_waiters();
    let _ = bare.kill();
    let _ = bare.wait();

    // The coordinator.
    let c = Coordinator::start();
    let store = Store::open(&c.store_url()).await.unwrap();
    let (ca_pem, ids) = sim_identities(&store, "sim", n).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle0 = rss_mib(&c);
    let stop = Arc::new(tokio::sync::Notify::new());
    let connect_s = connect_agents(&ep, c.link, &ca_pem, &ids, &stop).await;
    // Let them idle through a few heartbeats and the coordinator's liveness passes.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let http = reqwest::Client::new();
    let nodes: serde_json::Value = http
        .get(format!("{}/v1/nodes", c.api))
        .bearer_auth(c.admin_token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let connected = nodes
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["connected_here"] == true && n["status"] == "ready")
        .count();
    assert_eq!(connected, n, "every simulated agent connected and ready");
    let full = rss_mib(&c);
    let per_conn = (full - idle0) * 1024.0 / n as f64;
    let bare_per_conn = (bare_full - bare_idle) * 1024.0 / n as f64;
    println!(
        "\nlink_memory: RSS with {n} idle agents (mTLS QUIC, registered, heartbeating every 2 s)"
    );
    println!(
        "{:<40} {:>10} {:>12} {:>14}",
        "",
        "no agent",
        format!("{n} agents"),
        "per agent"
    );
    println!(
        "{:<40} {:>6.1} MiB {:>8.1} MiB {:>10.1} KiB",
        "berth-coordinator", idle0, full, per_conn
    );
    println!(
        "{:<40} {:>6.1} MiB {:>8.1} MiB {:>10.1} KiB",
        "bare quinn, same TLS + transport (base)", bare_idle, bare_full, bare_per_conn
    );
    println!("  goal: coordinator <= 150 MiB with {n} agents; per-agent ratio coordinator / bare quinn {:.2}", per_conn / bare_per_conn);
    println!("  ({n} registrations with the coordinator took {connect_s:.1} s)");
    record(
        "link_memory",
        &format!("rss_{n}_agents_mib"),
        full,
        "MiB",
        "<=150",
    );
    record("link_memory", "per_agent_kib", per_conn, "KiB", "");
    record(
        "link_memory",
        "bare_quinn_per_agent_kib",
        bare_per_conn,
        "KiB",
        "",
    );
    record(
        "link_memory",
        "per_agent_ratio_vs_bare_quinn",
        per_conn / bare_per_conn,
        "x",
        "",
    );
    stop.notify_waiters();
}

/// SSE "workspace" events as (name, state), from the API's event stream.
async fn events(api: &str, token: &str) -> tokio::sync::mpsc::UnboundedReceiver<(String, String)> {
    use futures::StreamExt;
    let resp = reqwest::Client::new()
        .get(format!("{api}/v1/events"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut body = resp.bytes_stream();
    tokio::spawn(async move {
        let mut buf = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                for line in block.lines() {
                    if let Some(data) = line.strip_prefix("data:") {
                        if let Ok(v) = serde_json::from_str::<serde_json::Value>(data.trim()) {
                            let name = v["name"].as_str().unwrap_or_default().to_string();
                            let state = v["state"].as_str().unwrap_or_default().to_string();
                            let _ = tx.send((name, state));
                        }
                    }
                }
            }
        }
    });
    rx
}

async fn until(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
    name: &str,
    state: &str,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((n, s))) if n == name && s == state => return,
            Ok(Some((n, s))) if n == name && s == "failed" => panic!("{name} failed"),
            Ok(Some(_)) => {}
            other => panic!("{name} never {state}: {other:?}"),
        }
    }
}

async fn api_overhead() {
    use berth_proto::agent::{self as pb, request::Command};
    let iters = iters(60);
    let warmup = 3;
    let c = Cluster::start(ClusterOptions {
        agents: 1,
        ..Default::default()
    })
    .await;
    let node = &c.nodes[0];
    let tiny = c.tiny();
    let http = reqwest::Client::new();
    let mut rx = events(&c.api, &c.admin_token).await;
    let (mut via_api, mut alone) = (Vec::new(), Vec::new());
    for i in 0..warmup + iters {
        let name = format!("a{i}");
        let via_api_once = async {
            let t = Instant::now();
            let r = http
                .post(format!("{}/v1/workspaces", c.api))
                .bearer_auth(&c.admin_token)
                .json(
                    &serde_json::json!({"name": name, "image": tiny, "cpu_millis": 500,
                    "memory_bytes": 128u64 << 20, "disk_bytes": 64u64 << 20, "pids": 128}),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 201);
            until(&mut rx, &name, "running").await;
            t.elapsed().as_secs_f64() * 1000.0
        };
        let alone_once = async {
            let mut client = berth_agent::client::Client::connect(&node.socket)
                .await
                .unwrap();
            let t = Instant::now();
            let st = client
                .status_call(Command::Create(pb::CreateRequest {
                    spec: Some(pb::WorkspaceSpec {
                        name: format!("b{i}"),
                        image: tiny.clone(),
                        cpu_millis: 500,
                        memory_bytes: 128 << 20,
                        pids: 128,
                        disk_bytes: 64 << 20,
                        ..Default::default()
                    }),
                    auth: None,
                    start: true,
                }))
                .await
                .expect("agent create");
            assert_eq!(st.state, pb::State::Running as i32);
            t.elapsed().as_secs_f64() * 1000.0
        };
        // Alternate which goes first, so neither gains from following the other.
        let (a, b) = if i % 2 == 0 {
            let a = via_api_once.await;
            (a, alone_once.await)
        } else {
            let b = alone_once.await;
            (via_api_once.await, b)
        };

        let r = http
            .delete(format!("{}/v1/workspaces/{name}", c.api))
            .bearer_auth(&c.admin_token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
        until(&mut rx, &name, "deleted").await;
        let mut client = berth_agent::client::Client::connect(&node.socket)
            .await
            .unwrap();
        client
            .status_call(Command::Delete(pb::NameRequest {
                name: format!("b{i}"),
                generation: 0,
            }))
            .await
            .ok();
        if i >= warmup {
            via_api.push(a);
            alone.push(b);
        }
    }
    let (via_api, alone) = (sorted(via_api), sorted(alone));
    let (a50, a90, b50, b90) = (
        percentile(&via_api, 0.5),
        percentile(&via_api, 0.9),
        percentile(&alone, 0.5),
        percentile(&alone, 0.9),
    );
    println!("\napi_overhead: create→running of `tiny`, {iters} runs each, interleaved, same agent and image");
    println!("{:<44} {:>8} {:>8}", "", "p50 ms", "p90 ms");
    println!(
        "{:<44} {:>8.1} {:>8.1}",
        "API: POST /v1/workspaces → SSE running", a50, a90
    );
    println!(
        "{:<44} {:>8.1} {:>8.1}",
        "agent alone: control socket (baseline)", b50, b90
    );
    println!(
        "{:<44} {:>8.1} {:>8.1}   (goal p50 <= 5 ms)",
        "added by the coordinator",
        a50 - b50,
        a90 - b90
    );
    println!(
        "{:<44} {:>8.2} {:>8.2}",
        "ratio API / agent",
        a50 / b50,
        a90 / b90
    );
    record("api_overhead", "api_p50_ms", a50, "ms", "");
    record("api_overhead", "agent_p50_ms", b50, "ms", "");
    record("api_overhead", "added_p50_ms", a50 - b50, "ms", "<=5");
    record("api_overhead", "p50_ratio_vs_agent", a50 / b50, "x", "");
}

/// Client side of the forward bench, run in a child process (this bench
/// re-executed with BERTH_BENCH_TCP_CLIENT="ADDR MODE N"), so the direct
/// baseline can run inside the node's network namespace (nsenter) and the
/// forwarded one on the host, with the same code. Prints one JSON object.
fn tcp_client(spec: &str) -> ! {
    use std::io::{Read, Write};
    let mut it = spec.split_whitespace();
    let (addr, mode, n) = (
        it.next().unwrap().to_string(),
        it.next().unwrap().to_string(),
        it.next().unwrap().parse::<usize>().unwrap(),
    );
    let mut s = std::net::TcpStream::connect(&addr).expect("connect");
    s.set_nodelay(true).unwrap();
    let out = if mode == "throughput" {
        // n MiB one way; the sink closes after reading everything.
        let chunk = vec![0x5au8; 1 << 16];
        let t = Instant::now();
        for _ in 0..n * 16 {
            s.write_all(&chunk).unwrap();
        }
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        let secs = t.elapsed().as_secs_f64();
        serde_json::json!({"mib_per_s": n as f64 / secs})
    } else {
        // n one-byte round trips through the echo server.
        let mut rtts = Vec::with_capacity(n);
        let mut b = [0u8; 1];
        for i in 0..n + 20 {
            let t = Instant::now();
            s.write_all(b"x").unwrap();
            s.read_exact(&mut b).unwrap();
            if i >= 20 {
                rtts.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        let r = sorted(rtts);
        serde_json::json!({"rtt_p50_us": percentile(&r, 0.5), "rtt_p90_us": percentile(&r, 0.9)})
    };
    println!("{out}");
    std::process::exit(0)
}

fn run_client(netns: Option<&str>, addr: &str, mode: &str, n: usize) -> serde_json::Value {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = std::process::Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}")).arg(&exe);
            c
        }
        None => std::process::Command::new(&exe),
    };
    let out = cmd
        .env("BERTH_BENCH_TCP_CLIENT", format!("{addr} {mode} {n}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "client {netns:?} {addr} {mode}: {}",
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .nth(1)
            .unwrap_or_default()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn forward() {
    let rounds = 3;
    let c = Cluster::start(ClusterOptions {
        agents: 1,
        ..Default::default()
    })
    .await;
    let (s, w) = c
        .post(
            "/v1/workspaces",
            serde_json::json!({"name": "fw", "image": c.tiny(), "cpu_millis": 2000,
                "memory_bytes": 256u64 << 20, "disk_bytes": 64u64 << 20, "pids": 256}),
        )
        .await;
    assert_eq!(s, 201, "{w}");
    let w = c.wait_state("fw", "running", Duration::from_secs(60)).await;
    let ip = w["ip"].as_str().unwrap().to_string();
    let (s, out) = c
        .post(
            "/v1/workspaces/fw/exec",
            serde_json::json!({"argv": ["sh", "-c", "(nc -ll -p 9000 -e dd of=/dev/null bs=64k 2>/dev/null &) && (nc -ll -p 9001 -e cat &) && sleep 0.3"]}),
        )
        .await;
    assert_eq!((s, out["exit_code"].as_i64()), (200, Some(0)), "{out}");
    let (mut pf, local) = c.port_forward("fw", &["0:9000", "0:9001"]).await;
    let ns = c.nodes[0].netns.clone();
    let (sink_d, echo_d) = (format!("{ip}:9000"), format!("{ip}:9001"));
    // Beside it: `ssh -L` through an OpenSSH sshd on the node (client and
    // server in the node's namespace, as a user with SSH access to the node
    // would forward), and `ssh -L` through Berth's own SSH (OpenSSH client,
    // `berth ssh --stdio` ProxyCommand, the agent's direct-tcpip).
    let sshd = berth_tests::openssh::Sshd::start(&c.dir.join("sshd"), Some(&ns), 2222);
    let mut ssh_l = std::process::Command::new("ip")
        .args(["netns", "exec", &ns, "ssh", "-N"])
        .args(sshd.client_args())
        .args([
            "-L",
            &format!("127.0.0.1:7000:{sink_d}"),
            "-L",
            &format!("127.0.0.1:7001:{echo_d}"),
        ])
        .arg("root@127.0.0.1")
        .spawn()
        .expect("ssh -L");
    let (berth_ssh, berth_key) = berth_ssh_setup(&c).await;
    let (lb0, lb1) = (free_port(), free_port());
    let mut berth_l = berth_ssh
        .command(
            "ssh",
            &berth_key,
            &c.admin_token,
            &[
                "-N",
                "-L",
                &format!("127.0.0.1:{lb0}:localhost:9000"),
                "-L",
                &format!("127.0.0.1:{lb1}:localhost:9001"),
                "berth.fw",
            ],
        )
        .spawn()
        .expect("ssh -L through berth");
    wait_listening(Some(&ns), 7001);
    wait_listening(None, lb1);
    type Row = (Option<String>, String, String);
    let rows: Vec<(&str, Row)> = vec![
        (
            "direct TCP (baseline)",
            (Some(ns.clone()), sink_d.clone(), echo_d.clone()),
        ),
        (
            "berth port-forward",
            (None, local[0].clone(), local[1].clone()),
        ),
        (
            "OpenSSH ssh -L via sshd",
            (
                Some(ns.clone()),
                "127.0.0.1:7000".into(),
                "127.0.0.1:7001".into(),
            ),
        ),
        (
            "OpenSSH ssh -L via berth",
            (None, format!("127.0.0.1:{lb0}"), format!("127.0.0.1:{lb1}")),
        ),
    ];
    let mib: usize = std::env::var("BERTH_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let mut thr = vec![Vec::new(); rows.len()];
    let mut rtt = vec![Vec::new(); rows.len()];
    for round in 0..rounds {
        // Rows alternate order between rounds.
        let mut order: Vec<usize> = (0..rows.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (ns, sink, echo) = rows[i].1.clone();
            let (t, r) = tokio::task::spawn_blocking(move || {
                (
                    run_client(ns.as_deref(), &sink, "throughput", mib)["mib_per_s"]
                        .as_f64()
                        .unwrap(),
                    run_client(ns.as_deref(), &echo, "rtt", 2000)["rtt_p50_us"]
                        .as_f64()
                        .unwrap(),
                )
            })
            .await
            .unwrap();
            thr[i].push(t);
            rtt[i].push(r);
        }
    }
    pf.kill().await.ok();
    let _ = ssh_l.kill();
    let _ = berth_l.kill().await;
    let _ = ssh_l.wait();
    drop(sshd);
    let med = |v: &Vec<f64>| percentile(&sorted(v.clone()), 0.5);
    let t: Vec<f64> = thr.iter().map(med).collect();
    let r: Vec<f64> = rtt.iter().map(med).collect();
    println!("\nforward: TCP through each path to the same servers in the workspace, median of {rounds} rounds ({mib} MiB each)");
    println!(
        "{:<28} {:>10} {:>12} {:>12} {:>12}",
        "", "MiB/s", "vs direct", "RTT p50 µs", "vs direct"
    );
    for (i, (name, _)) in rows.iter().enumerate() {
        println!(
            "{:<28} {:>10.0} {:>11.2}x {:>12.0} {:>11.2}x",
            name,
            t[i],
            t[i] / t[0],
            r[i],
            r[i] / r[0]
        );
    }
    println!("goals: port-forward >= 0.8x direct throughput, and faster than ssh -L via sshd");
    record("forward", "direct_mib_per_s", t[0], "MiB/s", "");
    record("forward", "forward_mib_per_s", t[1], "MiB/s", "");
    record(
        "forward",
        "throughput_ratio_vs_direct",
        t[1] / t[0],
        "x",
        ">=0.8",
    );
    record("forward", "sshd_ssh_l_mib_per_s", t[2], "MiB/s", "");
    record(
        "forward",
        "throughput_ratio_vs_ssh_l",
        t[1] / t[2],
        "x",
        ">1.0",
    );
    record("forward", "berth_ssh_l_mib_per_s", t[3], "MiB/s", "");
    record("forward", "direct_rtt_p50_us", r[0], "us", "");
    record("forward", "forward_rtt_p50_us", r[1], "us", "");
    record("forward", "rtt_p50_ratio_vs_direct", r[1] / r[0], "x", "");
    record("forward", "sshd_ssh_l_rtt_p50_us", r[2], "us", "");
    record(
        "forward",
        "rtt_p50_ratio_vs_ssh_l",
        r[1] / r[2],
        "x",
        "<1.0",
    );
    record("forward", "berth_ssh_l_rtt_p50_us", r[3], "us", "");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(netns: Option<&str>, port: u16) {
    let probe = format!("ss -ltn 'sport = :{port}' | grep -q LISTEN");
    let cmd = match netns {
        Some(ns) => format!("ip netns exec {ns} sh -c \"{probe}\""),
        None => probe,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !berth_tests::sh(&cmd).0 {
        assert!(
            Instant::now() < deadline,
            "nothing listens on {port} ({netns:?})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// OpenSSH set up for `berth.*` (config-ssh) with a key registered for the
/// admin: the client and the key.
async fn berth_ssh_setup(c: &Cluster) -> (berth_tests::openssh::Client, std::path::PathBuf) {
    let dir = c.dir.join("berth-ssh");
    let key = dir.join("key");
    std::fs::create_dir_all(&dir).unwrap();
    berth_tests::openssh::keygen(&key);
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let (s, v) = c
        .post("/v1/ssh-keys", serde_json::json!({"public_key": public}))
        .await;
    assert!(s == 201 || s == 409, "{v}");
    let config = dir.join("config");
    let (code, _, err) = c
        .berth(
            &c.admin_token,
            &["config-ssh", "--ssh-config", config.to_str().unwrap()],
        )
        .await;
    assert_eq!(code, 0, "{err}");
    let client = berth_tests::openssh::Client {
        home: dir,
        config,
        api: c.api.clone(),
    };
    (client, key)
}

/// SSH keystroke echo: one byte typed into `cat` under a PTY, until its echo
/// comes back, by the same SSH client (russh) through Berth (HTTP upgrade →
/// coordinator → QUIC → the agent's SSH server → the workspace) and directly
/// to an OpenSSH sshd on this machine's loopback.
async fn keystroke() {
    let n = iters(500);
    let c = Cluster::start(ClusterOptions::default()).await;
    let (s, w) = c.create("ks").await;
    assert_eq!(s, 201, "{w}");
    c.wait_state("ks", "running", Duration::from_secs(60)).await;
    let (_, berth_key) = berth_ssh_setup(&c).await;
    let key = Arc::new(russh::keys::load_secret_key(&berth_key, None).unwrap());
    let sshd = berth_tests::openssh::Sshd::start(&c.dir.join("sshd-ks"), None, free_port());
    let sshd_key = Arc::new(russh::keys::load_secret_key(&sshd.key, None).unwrap());

    let mut via_berth = Vec::new();
    let mut via_sshd = Vec::new();
    for round in 0..2 {
        for which in if round == 0 { [0, 1] } else { [1, 0] } {
            if which == 0 {
                let http = reqwest::Client::new();
                let resp = http
                    .get(format!("{}/v1/workspaces/ks/ssh", c.api))
                    .bearer_auth(&c.admin_token)
                    .header("connection", "upgrade")
                    .header("upgrade", "berth-ssh")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status().as_u16(), 101);
                let stream = resp.upgrade().await.unwrap();
                via_berth.extend(echo_times(stream, key.clone(), n / 2).await);
            } else {
                let stream = tokio::net::TcpStream::connect(("127.0.0.1", sshd.port))
                    .await
                    .unwrap();
                stream.set_nodelay(true).unwrap();
                via_sshd.extend(echo_times(stream, sshd_key.clone(), n / 2).await);
            }
        }
    }
    let (b, d) = (sorted(via_berth), sorted(via_sshd));
    let (b50, d50) = (percentile(&b, 0.5), percentile(&d, 0.5));
    let (b99, d99) = (percentile(&b, 0.99), percentile(&d, 0.99));
    println!("\nkeystroke: one byte typed into `cat` under a PTY until its echo returns, same SSH client (russh), {n} keystrokes each");
    println!("{:<34} {:>12} {:>12}", "", "p50 µs", "p99 µs");
    println!(
        "{:<34} {:>12.0} {:>12.0}",
        "OpenSSH sshd on loopback (baseline)", d50, d99
    );
    println!(
        "{:<34} {:>12.0} {:>12.0}",
        "berth (coordinator → agent)", b50, b99
    );
    println!(
        "{:<34} {:>11.2}x {:>11.2}x",
        "ratio berth / sshd",
        b50 / d50,
        b99 / d99
    );
    record("keystroke", "sshd_echo_p50_us", d50, "us", "");
    record("keystroke", "berth_echo_p50_us", b50, "us", "");
    record("keystroke", "echo_p50_ratio_vs_sshd", b50 / d50, "x", "");
    record("keystroke", "berth_echo_p99_us", b99, "us", "");
}

struct Trusting;

impl russh::client::Handler for Trusting {
    type Error = russh::Error;
    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// Logs in on `stream`, runs `cat` under a PTY, and times `n` echoes (µs).
async fn echo_times<S>(stream: S, key: Arc<russh::keys::PrivateKey>, n: usize) -> Vec<f64>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let cfg = Arc::new(russh::client::Config {
        nodelay: true,
        ..Default::default()
    });
    let mut session = russh::client::connect_stream(cfg, stream, Trusting)
        .await
        .expect("ssh handshake");
    let auth = session
        .authenticate_publickey("root", russh::keys::PrivateKeyWithHashAlg::new(key, None))
        .await
        .expect("ssh auth");
    assert!(auth.success(), "ssh key refused");
    let mut ch = session.channel_open_session().await.unwrap();
    ch.request_pty(true, "xterm", 80, 24, 0, 0, &[])
        .await
        .unwrap();
    ch.exec(true, "cat").await.unwrap();
    let mut times = Vec::with_capacity(n);
    // Let the session settle (prompt-less `cat` started).
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..n + 20 {
        let byte = b'a' + (i % 26) as u8;
        let t = Instant::now();
        ch.data(&[byte][..]).await.unwrap();
        loop {
            match tokio::time::timeout(Duration::from_secs(10), ch.wait()).await {
                Ok(Some(russh::ChannelMsg::Data { data })) if data.contains(&byte) => break,
                Ok(Some(_)) => {}
                other => panic!("no echo: {other:?}"),
            }
        }
        if i >= 20 {
            times.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    let _ = ch.eof().await;
    let _ = session
        .disconnect(russh::Disconnect::ByApplication, "", "")
        .await;
    times
}

fn main() {
    if let Ok(spec) = std::env::var("BERTH_BENCH_TCP_CLIENT") {
        tcp_client(&spec);
    }
    if let Some(dir) = std::env::var_os("BERTH_BENCH_BARE_QUIC") {
        bare_quic_server(std::path::Path::new(&dir));
    }
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |b: &str| only.is_empty() || only.iter().any(|o| o == b);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        if want("placement") {
            let dir = tempfile::tempdir().unwrap();
            placement(
                "sqlite",
                &format!("sqlite://{}", dir.path().join("berth.db").display()),
            )
            .await;
            let pg = Postgres::start();
            placement("postgres", &pg.database("bench")).await;
        }
        if want("link") || want("handshake") {
            link_handshake().await;
        }
        if want("link") || want("memory") {
            link_memory().await;
        }
        if want("api") {
            api_overhead().await;
        }
        if want("forward") {
            forward().await;
        }
        if want("keystroke") {
            keystroke().await;
        }
    });
    let _ = (
        Arc::new(()),
        Cluster::start,
        ClusterOptions::default,
        rss_kib,
    );
}
