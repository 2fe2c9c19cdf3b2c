//! The coordinator's container image (`images/component.sh`), run as the
//! Deployment in `deploy/kubernetes/coordinator.yaml` says, by the
//! kubelet's steps done with `ctr` from the manifest (`berth_tests::kubelet`):
//! two replicas, each in a pod network namespace of its own, as the
//! image's non-root user with a read-only root file system, no
//! capabilities and no privilege escalation, the data directory an
//! emptyDir and the secrets key from the Secret, on one PostgreSQL. Both
//! become ready (the manifest's TCP probe) and serve one store; inside, a
//! write to the root file system and a setuid are refused, with controls.

use berth_tests::kubelet::{kind, manifest, KubeNode, Pod};
use berth_tests::{Cluster, ClusterOptions};
use std::collections::BTreeMap;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_coordinator_replicas_serve_one_store_unprivileged() {
    let image = berth_tests::component_image("coordinator");
    // The harness's cluster gives the bridge and the registry; its own
    // coordinator is not used.
    let c = Cluster::start(ClusterOptions {
        agents: 0,
        ..Default::default()
    })
    .await;
    let pg = berth_tests::Postgres::start_on(Some(&c.host_ip));
    let url = pg.database("berth").replace("127.0.0.1", &c.host_ip);
    let docs = manifest("coordinator.yaml");
    let deployment = kind(&docs, "Deployment");
    let spec = &deployment["spec"]["template"]["spec"];
    let container = &spec["containers"][0];
    assert_eq!(deployment["spec"]["replicas"], 2);
    let secret_name = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|v| v["secret"]["secretName"].as_str())
        .unwrap()
        .to_string();
    let key: String = (0..32)
        .map(|i| format!("{:02x}", (i * 37 + 11) % 256))
        .collect();
    let secrets = BTreeMap::from([(
        secret_name,
        BTreeMap::from([
            ("database-url".to_string(), url),
            ("secrets.key".to_string(), key),
        ]),
    )]);

    // The pods' network namespaces first: the node's mount namespace is a
    // private copy, which sees only those made before it.
    let nets: Vec<(String, String)> = (0..2).map(|r| c.wire_netns(61 + r)).collect();
    let mut node = KubeNode::start(&c.dir, "k1", &c.wire_netns(60).0, "");
    let mut pods = Vec::new();
    for (r, (netns, ip)) in nets.into_iter().enumerate() {
        let id = node.run(&Pod {
            workload: deployment,
            config_maps: BTreeMap::new(),
            secrets: secrets.clone(),
            services: BTreeMap::new(),
            image: format!("{}/{image}", c.registry.addr),
            network: Some(netns),
            replica: format!("r{r}"),
        });
        pods.push((id, ip, format!("r{r}")));
    }

    // Ready: the manifest's probe, a TCP connection to the api port.
    let port = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == container["readinessProbe"]["tcpSocket"]["port"])
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap();
    for (_, ip, r) in &pods {
        let ready = berth_tests::eventually(Duration::from_secs(60), || async {
            tokio::net::TcpStream::connect((ip.as_str(), port as u16))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        assert!(ready.is_some(), "replica {r} not ready:\n{}", node.logs());
    }
    // One store: the admin token the first start made works on both.
    let token = pods
        .iter()
        .find_map(|(_, _, r)| {
            std::fs::read_to_string(node.dir.join("pods").join(r).join("data/admin.token")).ok()
        })
        .expect("an admin token in a replica's data directory");
    for (_, ip, r) in &pods {
        let who = reqwest::Client::new()
            .get(format!("http://{ip}:{port}/v1/whoami"))
            .bearer_auth(token.trim())
            .send()
            .await
            .unwrap();
        assert_eq!(who.status(), 200, "replica {r}");
    }

    // Inside: the image's user, no capabilities, no new privileges; the
    // root file system refuses a write the data directory takes.
    let (id, _, _) = &pods[0];
    let run = |cmd: &str| node.exec(id, &["sh", "-c", cmd]);
    let (ok, status, err) = run("grep -E '^(Uid|CapEff|NoNewPrivs)' /proc/self/status");
    assert!(ok, "{err}");
    assert!(status.contains("Uid:\t10001\t10001"), "{status}");
    assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    let (ok, _, err) = run("echo x > /usr/bin/planted");
    assert!(!ok && err.contains("Read-only file system"), "{err}");
    let (ok, _, err) = run("echo x > /var/lib/berth/coordinator/probe && cat /etc/berth/secrets/secrets.key >/dev/null");
    assert!(ok, "the data directory and the key are usable: {err}");
    for (id, _, _) in &pods {
        node.stop(id, Duration::from_secs(10));
    }
    drop(node);
    drop(pg);
    c.finish().await;
}
