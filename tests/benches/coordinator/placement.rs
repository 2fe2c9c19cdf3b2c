//! placement: placements per second with durable commits against 5,000
//! simulated agents, and the pure scheduler's decision latency.

use super::*;

const NODES: usize = 5000;
const IMAGES: usize = 50;

pub(super) fn image(i: usize) -> String {
    format!("registry.bench/img{}:1", i % IMAGES)
}

/// 5,000 ready nodes: 16 cores, 64 GiB, 1 TiB, 110 slots, a zone label,
/// three cached images each.
pub(super) async fn seed_nodes(store: &Store, now: i64) {
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

pub(super) fn ws_resources(i: usize) -> Resources {
    Resources {
        cpu_millis: 500 + (i % 4) as u64 * 500,
        memory_bytes: (1 + (i % 4) as u64) << 30,
        disk_bytes: 10 << 30,
    }
}

/// `n` pending workspaces (acknowledged creates), inserted in bulk.
pub(super) async fn seed_workspaces(store: &Store, n: usize, now: i64) {
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
pub(super) struct NoNodes;

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

pub(super) fn service(store: Store) -> Service {
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
        sealer: berth_coordinator::secrets::Sealer::new([7; 32]),
        prebuilds: Default::default(),
        backups: Default::default(),
        cost: Default::default(),
        quotas: Default::default(),
    })
}

pub(super) async fn placement(backend: &str, url: &str) {
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
            prebuild: None,
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
