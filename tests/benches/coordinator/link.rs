//! link_handshake and link_memory: mutual-TLS QUIC handshakes per second,
//! and the coordinator's memory with thousands of idle agents connected.

use super::*;

/// A coordinator process (the release binary next to the agent's, from
/// BERTH_AGENT_BIN) and its RSS.
pub(super) fn rss_mib(c: &Coordinator) -> f64 {
    rss_kib(c.pid()) / 1024.0
}

/// A simulated agent's identity: a key, a CSR, a certificate signed by the
/// cluster CA, exactly what a join yields.
pub(super) struct SimIdentity {
    key_pem: String,
    cert_pem: String,
}

pub(super) fn make_identities(ca: &Ca, prefix: &str, n: usize) -> Vec<SimIdentity> {
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
pub(super) async fn sim_identities(
    store: &Store,
    prefix: &str,
    n: usize,
) -> (String, Vec<SimIdentity>) {
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
pub(super) fn bare_quic_server(dir: &std::path::Path) -> ! {
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
pub(super) async fn connect_agents(
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
pub(super) fn quic_client(mut tls: rustls::ClientConfig) -> quinn::ClientConfig {
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
pub(super) async fn handshakes(
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

pub(super) async fn link_handshake() {
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
pub(super) async fn sim_agent(
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
                    let hb = lk::AgentMessage { msg: Some(lk::agent_message::Msg::Heartbeat(lk::Heartbeat { seq, prebuilds: None, images: None, usage: None })) };
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

pub(super) async fn link_memory() {
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
