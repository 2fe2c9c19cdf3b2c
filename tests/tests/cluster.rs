//! Cluster tests: a coordinator and agents in their own network namespaces,
//! each with its own containerd (see tests/src/cluster.rs).

use berth_tests::{Cluster, ClusterOptions};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_workspaces_over_three_agents_within_capacity() {
    let c = Cluster::start(ClusterOptions {
        agents: 3,
        node_cpu_millis: 2000,
        ..Default::default()
    })
    .await;
    let cr = &c;
    let tasks = (0..20).map(|i| async move {
        let name = format!("w{i}");
        (name.clone(), cr.create(&name).await)
    });
    for (name, (s, w)) in futures::future::join_all(tasks).await {
        assert_eq!(s, 201, "{name}: {w}");
    }
    let mut per_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in 0..20 {
        let w = c.wait_state(&format!("w{i}"), "running", T).await;
        per_node
            .entry(w["node"].as_str().unwrap().to_string())
            .or_default()
            .push(w["id"].as_str().unwrap().to_string());
    }
    // Within capacity: 2000 millicores per node, 200 per workspace.
    let (_, nodes) = c.get("/v1/nodes").await;
    for n in nodes.as_array().unwrap() {
        let cap = n["capacity"]["cpu_millis"].as_u64().unwrap();
        let used = n["allocated"]["cpu_millis"].as_u64().unwrap();
        assert!(used <= cap, "node over capacity: {n}");
        let id = n["id"].as_str().unwrap();
        let on = per_node.get(id).map_or(0, Vec::len) as u64;
        assert_eq!(used, on * 200, "allocation of {id} matches its workspaces");
    }
    assert!(
        per_node.len() >= 2,
        "20 × 200m cannot fit one 2000m node: {per_node:?}"
    );
    // Each workspace runs exactly where the coordinator says, once.
    for node in &c.nodes {
        let mut running = node.running_tasks();
        running.sort();
        let mut want = per_node.get(&node.id).cloned().unwrap_or_default();
        want.sort();
        assert_eq!(running, want, "tasks on {}", node.id);
    }
    // Exec through the API, stop / start, delete.
    let (s, out) = c
        .post(
            "/v1/workspaces/w3/exec",
            json!({"argv": ["sh", "-c", "echo hi; id -u; exit 3"]}),
        )
        .await;
    assert_eq!(s, 200, "{out}");
    assert_eq!(out["stdout"], "hi\n1000\n");
    assert_eq!(out["exit_code"], 3);
    let (s, _) = c.post("/v1/workspaces/w3/stop", json!({})).await;
    assert_eq!(s, 202);
    c.wait_state("w3", "stopped", T).await;
    let (s, e) = c
        .post("/v1/workspaces/w3/exec", json!({"argv": ["true"]}))
        .await;
    assert_eq!((s, e["code"].as_str()), (409, Some("not_running")));
    c.post("/v1/workspaces/w3/start", json!({})).await;
    c.wait_state("w3", "running", T).await;
    for i in 0..20 {
        let (s, _) = c.delete(&format!("/v1/workspaces/w{i}")).await;
        assert_eq!(s, 202);
    }
    for i in 0..20 {
        c.wait_state(&format!("w{i}"), "deleted", T).await;
    }
    for node in &c.nodes {
        assert!(
            node.containers().is_empty(),
            "containers left on {}",
            node.id
        );
    }
    let (_, nodes) = c.get("/v1/nodes").await;
    for n in nodes.as_array().unwrap() {
        assert_eq!(
            n["allocated"]["cpu_millis"], 0,
            "reservations released: {n}"
        );
    }
    c.finish().await;
}

/// TEST-PLAN 4: a cut shorter than the lost-node timeout changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn short_partition_changes_nothing() {
    let c = Cluster::start(ClusterOptions::default()).await;
    c.create("a").await;
    let before = c.wait_state("a", "running", T).await;
    c.partition(0);
    // The cut bites (control): the coordinator hears nothing and marks the
    // node unreachable (after 2 s here); the workspace is left as it is.
    let seen = berth_tests::eventually(Duration::from_secs(5), || async {
        let (_, n) = c.get("/v1/nodes/n0").await;
        (n["status"] == "unreachable").then_some(())
    })
    .await;
    assert!(seen.is_some(), "the partition did not cut the link");
    let (_, during) = c.get("/v1/workspaces/a").await;
    assert_eq!(during["state"], "running");
    assert_eq!(during["generation"], before["generation"], "no new intent");
    c.heal(0);
    // Back within the backoff cap (2 s) plus a handshake.
    let back = berth_tests::eventually(Duration::from_secs(5), || async {
        let (_, n) = c.get("/v1/nodes/n0").await;
        (n["status"] == "ready" && n["connected_here"] == true).then_some(())
    })
    .await;
    assert!(back.is_some(), "agent did not reconnect within 5 s");
    let (_, after) = c.get("/v1/workspaces/a").await;
    assert_eq!(after["state"], "running");
    assert_eq!(after["generation"], before["generation"]);
    assert_eq!(c.nodes[0].running_tasks().len(), 1);
    assert!(!c.coordinator_log().contains("node lost"));
    c.finish().await;
}

/// TEST-PLAN 5: a cut longer than the lost-node timeout makes the workspace
/// unknown, never started twice; after healing there is still one copy, and
/// a command with a stale generation is refused by the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn long_partition_then_heal_keeps_one_copy() {
    let c = Cluster::start(ClusterOptions {
        agents: 2,
        ..Default::default()
    })
    .await;
    c.create("a").await;
    let w = c.wait_state("a", "running", T).await;
    let node = w["node"].as_str().unwrap().to_string();
    let i = c.nodes.iter().position(|n| n.id == node).unwrap();
    c.partition(i);
    c.wait_state("a", "unknown", Duration::from_secs(20)).await;
    // The message the other tests look for to say "no node was lost"
    // appears when one is (their control).
    assert!(c.coordinator_log().contains("node lost"));
    // Unknown is never placed again: watched through the cut (4 s) and the
    // heal, the other node never has a copy and the store one placement.
    let other = &c.nodes[1 - i];
    let watch_until = std::time::Instant::now() + Duration::from_secs(4);
    while std::time::Instant::now() < watch_until {
        assert!(
            other.containers().is_empty(),
            "started a second copy on {}",
            other.id
        );
        assert_eq!(
            c.nodes[i].running_tasks().len(),
            1,
            "still runs where it was"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.heal(i);
    let back = c.wait_state("a", "running", Duration::from_secs(20)).await;
    assert_eq!(back["node"], node.as_str());
    assert_eq!(c.nodes[i].containers().len(), 1);
    assert!(other.containers().is_empty());
    assert_eq!(
        placements(&c, back["id"].as_str().unwrap()).await,
        1,
        "one placement in the store"
    );
    // The agent refuses a command older than what it has seen.
    let id = back["id"].as_str().unwrap();
    let gen = back["generation"].as_u64().unwrap();
    assert!(gen >= 2);
    let mut client = berth_agent::client::Client::connect(&c.nodes[i].socket)
        .await
        .unwrap();
    let r = client
        .call(berth_proto::agent::request::Command::Stop(
            berth_proto::agent::StopRequest {
                name: id.into(),
                grace_seconds: 0,
                generation: gen - 1,
            },
        ))
        .await;
    match r {
        Err(berth_agent::client::ClientError::Agent(e)) => assert_eq!(e.code, "stale_generation"),
        other => panic!("stale stop accepted: {other:?}"),
    }
    assert_eq!(c.nodes[i].running_tasks().len(), 1);
    c.finish().await;
}

/// How many placements the (SQLite) store records for workspace `id`.
async fn placements(c: &Cluster, id: &str) -> i64 {
    let url = format!("sqlite://{}", c.dir.join("coord/berth.db").display());
    let store = berth_coordinator::store::Store::open(&url).await.unwrap();
    let n = store.placement_counts().await.unwrap();
    n.get(id).copied().unwrap_or(0)
}

/// TEST-PLAN 7 on SQLite: kill -9 the coordinator in a loop under 50
/// concurrent creates.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coordinator_killed_in_a_loop_under_concurrent_creates() {
    let c = Cluster::start(ClusterOptions {
        agents: 3,
        ..Default::default()
    })
    .await;
    let sqlite = format!("sqlite://{}", c.dir.join("coord/berth.db").display());
    kill_loop_under_creates(c, &sqlite).await.finish().await;
}

/// TEST-PLAN 7 with two coordinators on one PostgreSQL: both serve the API
/// and the link (agents know both addresses), and each is killed in turn
/// while 50 creates go to either.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_coordinators_on_postgres_killed_in_turn_under_concurrent_creates() {
    let c = Cluster::start(ClusterOptions {
        agents: 3,
        coordinators: 2,
        postgres: true,
        // Coordinators killed in turn under 50 creates on 2 cores: an agent
        // may be silent for 8 s while it moves; that is not a lost node.
        coordinator_args: vec!["--lost-after".into(), "30s".into()],
        ..Default::default()
    })
    .await;
    let url = c.database_url.clone().unwrap();
    let second = format!("{}:{}", c.host_ip, c.coordinators[1].link_port);
    let mut c = kill_loop_under_creates(c, &url).await;
    for n in &c.nodes {
        assert!(
            n.agent_log().contains(&second),
            "{} never tried {second}",
            n.id
        );
    }
    // The first coordinator gone for good: the agents move to the second,
    // which places, starts and reports on its own.
    c.kill_coordinator_at(0);
    let api = c.coordinators[1].api.clone();
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{api}/v1/workspaces"))
        .bearer_auth(&c.admin_token)
        .json(
            &json!({"name": "after", "image": c.tiny(), "cpu_millis": 100,
            "memory_bytes": 64u64 << 20, "disk_bytes": 32u64 << 20, "pids": 64}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let running = berth_tests::eventually(Duration::from_secs(60), || async {
        let w: serde_json::Value = http
            .get(format!("{api}/v1/workspaces/after"))
            .bearer_auth(&c.admin_token)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (w["state"] == "running").then_some(w)
    })
    .await;
    assert!(
        running.is_some(),
        "not running through the second coordinator:\n{}",
        c.coordinator_log()
    );
    let moved = berth_tests::eventually(Duration::from_secs(30), || async {
        let (_, nodes) = c.get_at(&api, "/v1/nodes").await;
        let here = nodes
            .as_array()?
            .iter()
            .filter(|n| n["connected_here"] == true)
            .count();
        (here == 3).then_some(())
    })
    .await;
    assert!(
        moved.is_some(),
        "not every agent moved to the second coordinator"
    );
    c.finish().await;
}

async fn kill_loop_under_creates(mut c: Cluster, store_url: &str) -> Cluster {
    let http = reqwest::Client::new();
    let apis: Vec<String> = c.coordinators.iter().map(|k| k.api.clone()).collect();
    let (token, image) = (c.admin_token.clone(), c.tiny());
    let creates: Vec<_> = (0..50)
        .map(|i| {
            let (http, apis, token, image) =
                (http.clone(), apis.clone(), token.clone(), image.clone());
            tokio::spawn(async move {
                // Retry until acknowledged (201) or refused as a duplicate of
                // an earlier attempt that was acknowledged without us seeing
                // it; each attempt goes to the next coordinator.
                for attempt in 0..200 {
                    let api = &apis[(i + attempt) % apis.len()];
                    let r = http
                        .post(format!("{api}/v1/workspaces"))
                        .bearer_auth(&token)
                        .json(
                            &json!({"name": format!("c{i}"), "image": image, "cpu_millis": 100,
                            "memory_bytes": 64u64 << 20, "disk_bytes": 32u64 << 20, "pids": 64}),
                        )
                        .send()
                        .await;
                    match r.map(|r| r.status().as_u16()) {
                        Ok(201) | Ok(409) => return true,
                        _ => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
                false
            })
        })
        .collect();
    for round in 0..6 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let k = round % c.coordinators.len();
        c.kill_coordinator_at(k);
        c.start_coordinator_at(k);
    }
    for t in creates {
        assert!(t.await.unwrap(), "a create was never acknowledged");
    }
    for i in 0..50 {
        c.wait_state(&format!("c{i}"), "running", Duration::from_secs(120))
            .await;
    }
    // At most one placement per workspace, and each runs exactly once.
    let store = berth_coordinator::store::Store::open(store_url)
        .await
        .unwrap();
    let counts = store.placement_counts().await.unwrap();
    assert_eq!(counts.len(), 50);
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    let total: usize = c.nodes.iter().map(|n| n.running_tasks().len()).sum();
    assert_eq!(total, 50);
    for n in store.nodes().await.unwrap() {
        assert!(
            n.allocated.cpu_millis <= n.capacity.cpu_millis && n.allocated_slots <= n.slots,
            "{} overcommitted: {n:?}",
            n.id
        );
    }
    assert!(
        !c.coordinator_log().contains("node lost"),
        "a node was declared lost within the grace window"
    );
    c
}

/// Connects to the link with `cert`/`key` and tries to register as a node;
/// Ok(()) if the coordinator answered `registered`.
async fn try_link(addr: &str, ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<(), String> {
    let tls = berth_proto::tls::client_tls(ca_pem, cert_pem, key_pem, berth_proto::ALPN_LINK)?;
    try_link_with(addr, tls).await
}

/// A link session with no client certificate at all (the server is verified).
async fn try_link_without_cert(addr: &str, ca_pem: &str) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(berth_proto::tls::pem_to_der(ca_pem)?)
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![berth_proto::ALPN_LINK.to_vec()];
    try_link_with(addr, tls).await
}

/// A link session: connect, register, expect `Registered`. An error is the
/// connection's close reason when it was closed (the TLS alert a refused
/// handshake ends with), else what failed.
async fn try_link_with(addr: &str, tls: rustls::ClientConfig) -> Result<(), String> {
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    let ep = quinn::Endpoint::client("0.0.0.0:0".parse().unwrap()).map_err(|e| e.to_string())?;
    let conn = ep
        .connect_with(
            quinn::ClientConfig::new(std::sync::Arc::new(crypto)),
            addr.parse().unwrap(),
            "berth-coordinator",
        )
        .map_err(|e| e.to_string())?;
    let fut = async {
        let conn = conn.await.map_err(|e| e.to_string())?;
        let session = async {
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
            send.write_all(b"C").await.map_err(|e| e.to_string())?;
            let reg = berth_proto::link::AgentMessage {
                msg: Some(berth_proto::link::agent_message::Msg::Register(
                    Default::default(),
                )),
            };
            berth_proto::write_frame(&mut send, &reg)
                .await
                .map_err(|e| e.to_string())?;
            let answer: berth_proto::link::CoordinatorMessage = berth_proto::read_frame(&mut recv)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("closed")?;
            match answer.msg {
                Some(berth_proto::link::coordinator_message::Msg::Registered(_)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        };
        let r = session.await;
        r.map_err(|e| conn.close_reason().map_or(e, |why| why.to_string()))
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// TEST-PLAN 12 (link part): an unknown CA, an expired certificate, a
/// reused, expired or unknown join token, a token for another CA, and a node
/// reporting on another node's workspace are all refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn link_refuses_bad_identities() {
    let c = Cluster::start(ClusterOptions::default()).await;
    let addr = c.link_addr();
    let scratch = c.dir.join("scratch");
    // A token works once.
    let token = c.join_token(3600).await;
    let id = berth_agent::link::join(&addr, &token, "extra", &scratch.join("a"))
        .await
        .unwrap();
    let again = berth_agent::link::join(&addr, &token, "extra2", &scratch.join("b"))
        .await
        .unwrap_err();
    assert!(again.to_string().contains("join_token_used"), "{again}");
    // A token for two nodes (a DaemonSet's Secret) joins two, then no more;
    // revoked, one with uses left joins none.
    let (status, body) = c
        .post("/v1/join-tokens", json!({"ttl_seconds": 600, "uses": 2}))
        .await;
    assert_eq!(status, 201, "{body}");
    let two = body["token"].as_str().unwrap().to_string();
    for (n, node) in ["ds-a", "ds-b"].iter().enumerate() {
        berth_agent::link::join(&addr, &two, node, &scratch.join(format!("m{n}")))
            .await
            .unwrap();
    }
    let e = berth_agent::link::join(&addr, &two, "ds-c", &scratch.join("m2"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("join_token_used"), "{e}");
    let (status, body) = c
        .post("/v1/join-tokens", json!({"ttl_seconds": 600, "uses": 5}))
        .await;
    assert_eq!(status, 201, "{body}");
    let five = body["token"].as_str().unwrap().to_string();
    let five_id = five.split('.').next().unwrap();
    let (status, body) = c.delete(&format!("/v1/join-tokens/{five_id}")).await;
    assert_eq!(status, 204, "{body}");
    let e = berth_agent::link::join(&addr, &five, "ds-d", &scratch.join("m3"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("join_token_revoked"), "{e}");
    let (status, body) = c.delete("/v1/join-tokens/000000000000").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("join_token_not_found"))
    );
    let (status, body) = c
        .post("/v1/join-tokens", json!({"ttl_seconds": 600, "uses": 0}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("invalid_uses")),
        "{body}"
    );
    // Expired.
    let short = c.join_token(1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let e = berth_agent::link::join(&addr, &short, "late", &scratch.join("c"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("join_token_expired"), "{e}");
    // Unknown (right CA, made-up id and secret).
    let real = berth_proto::tls::JoinToken::parse(&token).unwrap();
    let fake = berth_proto::tls::JoinToken::generate(&real.ca_fingerprint).to_string();
    let e = berth_agent::link::join(&addr, &fake, "fake", &scratch.join("d"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("join_token_unknown"), "{e}");
    // A token pinning another CA: the agent refuses the coordinator.
    let other = berth_proto::tls::JoinToken::generate(&"0".repeat(64)).to_string();
    let e = berth_agent::link::join(&addr, &other, "pin", &scratch.join("e"))
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("the coordinator's CA does not match the join token's fingerprint"),
        "{e}"
    );
    // A session without a certificate.
    let e = try_link_without_cert(&addr, &id.ca_pem).await.unwrap_err();
    assert!(e.contains("a node certificate is required"), "{e}");
    // The joined identity works on the link.
    try_link(&addr, &id.ca_pem, &id.cert_pem, &id.key_pem)
        .await
        .expect("valid identity registers");
    // A certificate from another CA.
    let (ocert, okey) = berth_coordinator::pki::Ca::generate().unwrap();
    let other_ca = berth_coordinator::pki::Ca::load(&ocert, &okey).unwrap();
    let (key, csr) = berth_proto::tls::node_csr("n0").unwrap();
    let foreign = other_ca
        .sign_node("n0", &csr, Duration::from_secs(600))
        .unwrap();
    let e = try_link(&addr, &id.ca_pem, &foreign.cert_pem, &key)
        .await
        .unwrap_err();
    assert!(
        e.contains("handshake failed: error 51") && e.contains("BadSignature"),
        "a certificate of another CA: {e}"
    );
    // An expired certificate from the right CA.
    let store = berth_coordinator::store::Store::open(&format!(
        "sqlite://{}",
        c.dir.join("coord/berth.db").display()
    ))
    .await
    .unwrap();
    let ca = berth_coordinator::cluster_ca(&store).await.unwrap();
    let now = time::OffsetDateTime::now_utc();
    let expired = ca
        .sign_node_between(
            "n0",
            &csr,
            now - time::Duration::hours(2),
            now - time::Duration::hours(1),
        )
        .unwrap();
    let e = try_link(&addr, &id.ca_pem, &expired.cert_pem, &key)
        .await
        .unwrap_err();
    assert!(
        e.contains("handshake failed: error 45") && e.contains("certificate expired"),
        "an expired certificate: {e}"
    );
    // Node "extra" reports that n0's workspace stopped: refused, no state change.
    c.create("a").await;
    let w = c.wait_state("a", "running", T).await;
    let tls = berth_proto::tls::client_tls(
        &id.ca_pem,
        &id.cert_pem,
        &id.key_pem,
        berth_proto::ALPN_LINK,
    )
    .unwrap();
    let ep = quinn::Endpoint::client("0.0.0.0:0".parse().unwrap()).unwrap();
    let conn = ep
        .connect_with(
            quinn::ClientConfig::new(std::sync::Arc::new(
                quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap(),
            )),
            addr.parse().unwrap(),
            "berth-coordinator",
        )
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(b"C").await.unwrap();
    use berth_proto::link::{agent_message::Msg, AgentMessage, Register, StatusReport};
    let lie = berth_proto::agent::WorkspaceStatus {
        name: w["id"].as_str().unwrap().into(),
        state: berth_proto::agent::State::Stopped as i32,
        generation: 99,
        ..Default::default()
    };
    // Its registration claims n0's workspace in its inventory: left alone.
    berth_proto::write_frame(
        &mut send,
        &AgentMessage {
            msg: Some(Msg::Register(Register {
                inventory: vec![lie.clone()],
                ..Default::default()
            })),
        },
    )
    .await
    .unwrap();
    let _: Option<berth_proto::link::CoordinatorMessage> =
        berth_proto::read_frame(&mut recv).await.unwrap();
    let logged = |line: &'static str| {
        let c = &c;
        async move {
            berth_tests::eventually(Duration::from_secs(10), || async {
                c.coordinator_log().contains(line).then_some(())
            })
            .await
            .is_some()
        }
    };
    assert!(logged("node runs a workspace the store does not place there").await);
    let (_, after) = c.get("/v1/workspaces/a").await;
    assert_eq!(
        after["state"], "running",
        "another node's inventory was applied"
    );
    berth_proto::write_frame(
        &mut send,
        &AgentMessage {
            msg: Some(Msg::Status(StatusReport { status: Some(lie) })),
        },
    )
    .await
    .unwrap();
    assert!(logged("report about another node's workspace refused").await);
    let (_, after) = c.get("/v1/workspaces/a").await;
    assert_eq!(
        after["state"], "running",
        "another node's report was applied"
    );
    // No node was registered under a refused identity.
    let (_, nodes) = c.get("/v1/nodes").await;
    let ids: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["ds-a", "ds-b", "extra", "n0"]);
    c.finish().await;
}

/// Node certificates are renewed at two thirds of their lifetime, so a node
/// outlives many lifetimes: with 6 s certificates, the node renews a few
/// times (not at every heartbeat), stays ready, and after 3 lifetimes a
/// restarted agent reconnects with what it renewed (the original expired:
/// an expired certificate is refused, see `link_refuses_bad_identities`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_certificates_are_renewed_before_they_expire() {
    let mut c = Cluster::start(ClusterOptions {
        coordinator_args: vec!["--cert-lifetime".into(), "6s".into()],
        ..Default::default()
    })
    .await;
    let cert = c.nodes[0].state_dir.join("identity/cert.pem");
    let first = std::fs::read_to_string(&cert).unwrap();
    c.create("a").await;
    c.wait_state("a", "running", T).await;
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(18) {
        let (_, n) = c.get("/v1/nodes/n0").await;
        assert_eq!(n["status"], "ready", "at {:?}: {n}", t0.elapsed());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let renewals = c.nodes[0]
        .agent_log()
        .matches("node certificate renewed")
        .count();
    assert!(
        (3..=12).contains(&renewals),
        "{renewals} renewals in 18 s of 6 s certificates"
    );
    assert_ne!(std::fs::read_to_string(&cert).unwrap(), first);
    // A fresh connection with the renewed certificate: the restarted agent
    // says it connected (its log is appended to), and commands reach it.
    let connected = |c: &Cluster| {
        c.nodes[0]
            .agent_log()
            .matches("connected to the coordinator")
            .count()
    };
    let before = connected(&c);
    c.nodes[0].kill_agent();
    c.nodes[0].start_agent(None);
    let back = berth_tests::eventually(Duration::from_secs(10), || async {
        (connected(&c) > before).then_some(())
    })
    .await;
    assert!(
        back.is_some(),
        "the node did not reconnect:\n{}",
        c.nodes[0].agent_log()
    );
    let out = berth_tests::eventually(Duration::from_secs(10), || async {
        let (_, out) = c
            .post(
                "/v1/workspaces/a/exec",
                serde_json::json!({"argv": ["echo", "still"]}),
            )
            .await;
        (out["stdout"] == "still\n").then_some(out)
    })
    .await;
    assert!(out.is_some(), "commands reach the restarted agent");
    c.finish().await;
}
