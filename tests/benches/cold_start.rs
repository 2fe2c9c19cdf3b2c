//! cold_start (P3 of the prebuilds issue): a node that has nothing cached.
//! create→running of a `dev` workspace through the agent, the image pulled
//! from the local registry and unpacked, against `ctr image pull` +
//! `ctr run -d` of the same image on the same containerd, interleaved. Before
//! every run both sides start from nothing: the image, its content and its
//! snapshots are removed from containerd, and the agent is restarted (its
//! memory of resolved images goes with it; the restart is not timed).
//!
//! `prebuild_cold`, separately: a workspace from a prebuild of a 1 GiB tree
//! of 8 KiB files that its node does not hold (built on another node, pushed
//! to the registry, pulled by this one as the workspace is created; the
//! `dev` image is cached), against `ctr images pull` + `ctr run -d` of an
//! image made of `dev` and the same tree as one more layer (the same blob),
//! where only that layer is missing: both fetch and unpack the same bytes.
//! Metric `p50_ratio_prebuild_vs_ctr_pull_run_1gb`.
//!
//! Prints a table and appends JSON lines to target/bench/cold_start.jsonl.
//! BERTH_BENCH_ITERS sets the iterations (default 8; the prebuild part
//! runs half as many); `cargo bench --bench cold_start -- cold_start
//! prebuild_cold` picks; BERTH_BENCH_COLD_MIB the tree's size (default 1024).

use berth_proto::agent as pb;
use berth_tests::bench::{iters, percentile, record, sorted};
use berth_tests::{Cluster, ClusterOptions, Node, NodeOptions};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

fn ctr(node: &Node, args: &[&str]) -> (bool, String) {
    ctr_at(&node.containerd.socket, args)
}

fn ctr_at(socket: &Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(["--namespace", "berth"])
        .args(args)
        .output()
        .expect("run ctr");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The first column of a `ctr ... ls` table.
fn names(node: &Node, what: &[&str]) -> Vec<String> {
    let mut args = what.to_vec();
    args.push("ls");
    ctr(node, &args)
        .1
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
}

/// Removes every image, snapshot and blob of the berth namespace.
fn forget_everything(node: &Node) {
    for img in names(node, &["images"]) {
        ctr(node, &["images", "rm", "--sync", &img]);
    }
    // Children before parents: a few passes.
    for _ in 0..20 {
        let snaps = names(node, &["snapshots"]);
        if snaps.is_empty() {
            break;
        }
        for s in snaps {
            ctr(node, &["snapshots", "rm", &s]);
        }
    }
    for blob in names(node, &["content"]) {
        ctr(node, &["content", "rm", &blob]);
    }
    assert!(
        names(node, &["snapshots"]).is_empty() && names(node, &["content"]).is_empty(),
        "containerd still holds something: {:?} {:?}",
        names(node, &["snapshots"]),
        names(node, &["content"])
    );
}

async fn cold_start_bench() {
    let iters = iters(8);
    let warmup = 1;
    berth_tests::images(&["dev"]);
    let mut node = Node::new(NodeOptions::default());
    let image = format!("{}/dev:latest", node.registry.addr);
    node.start_agent().await;
    let (mut agent, mut base) = (Vec::new(), Vec::new());
    for i in 0..warmup + iters {
        node.kill_agent();
        forget_everything(&node);
        node.start_agent().await;
        let name = format!("cold{i}");
        let mut spec = node.spec(&name);
        spec.image = image.clone();
        let t = Instant::now();
        let st = node.create(spec).await.expect("agent create");
        let a = t.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(st.state, pb::State::Running as i32);
        node.delete(&name).await.expect("delete");

        forget_everything(&node);
        let id = format!("ctr{i}");
        let t = Instant::now();
        let (ok, _) = ctr(&node, &["images", "pull", "--plain-http", &image]);
        assert!(ok, "ctr images pull");
        let (ok, _) = ctr(&node, &["run", "-d", &image, &id, "sleep", "3600"]);
        assert!(ok, "ctr run -d");
        let c = t.elapsed().as_secs_f64() * 1000.0;
        ctr(&node, &["tasks", "rm", "-f", &id]);
        ctr(&node, &["containers", "rm", &id]);
        if i >= warmup {
            agent.push(a);
            base.push(c);
        }
    }
    let (agent, base) = (sorted(agent), sorted(base));
    let (a50, a90, c50, c90) = (
        percentile(&agent, 0.5),
        percentile(&agent, 0.9),
        percentile(&base, 0.5),
        percentile(&base, 0.9),
    );
    println!("\ncold_start: create→running of `dev` on a node with nothing cached, {iters} runs each, interleaved");
    println!("{:<40} {:>10} {:>10}", "", "p50 ms", "p90 ms");
    println!(
        "{:<40} {:>10.1} {:>10.1}",
        "berth-agent create (pull + start)", a50, a90
    );
    println!(
        "{:<40} {:>10.1} {:>10.1}",
        "ctr images pull + ctr run -d (baseline)", c50, c90
    );
    println!(
        "{:<40} {:>10.2} {:>10.2}",
        "ratio agent / ctr",
        a50 / c50,
        a90 / c90
    );
    let log = node.agent_log();
    let step = |marker: &str| {
        let v: Vec<f64> = log
            .lines()
            .filter(|l| l.contains(marker))
            .skip(warmup)
            .filter_map(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix("ms="))
                    .and_then(|v| v.parse().ok())
            })
            .collect();
        percentile(&sorted(v), 0.5)
    };
    println!("agent steps, p50 ms (from its log):");
    for marker in ["blob fetched", "layer unpacked", "image pulled"] {
        println!("  {marker:<16} {:>8.1}", step(marker));
    }
    record("cold_start", "agent_p50_ms", a50, "ms", "");
    record("cold_start", "ctr_pull_run_p50_ms", c50, "ms", "");
    record(
        "cold_start",
        "p50_ratio_vs_ctr_pull_run",
        a50 / c50,
        "x",
        "<=0.8",
    );
    node.kill_agent();
}

/// Uploads `data` as a blob of `repo` in registry `reg` (plain HTTP).
async fn put_blob(http: &reqwest::Client, reg: &str, repo: &str, data: Vec<u8>) -> (String, usize) {
    let digest = berth_agent::image::sha256_digest(&data);
    let r = http
        .post(format!("http://{reg}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let loc = match loc.starts_with("http") {
        true => loc,
        false => format!("http://{reg}{loc}"),
    };
    let sep = if loc.contains('?') { '&' } else { '?' };
    let size = data.len();
    let r = http
        .put(format!("{loc}{sep}digest={digest}"))
        .body(data)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "blob upload");
    (digest, size)
}

async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    http.get(url)
        .header(
            "accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Makes `REG/devtree:latest`: `dev` plus the prebuild's layer blob (the
/// same bytes a node pulls), in the layer registry.
async fn compose_image(c: &Cluster, source: &str) -> String {
    let reg = c.layer_registry.as_ref().unwrap().addr.clone();
    let out = std::process::Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--format",
            "oci",
        ])
        .arg(format!("docker://{}/dev:latest", c.registry.addr))
        .arg(format!("docker://{reg}/devtree:base"))
        .output()
        .expect("skopeo");
    assert!(out.status.success(), "skopeo copy: {out:?}");
    let http = reqwest::Client::new();
    let base = get_json(&http, &format!("http://{reg}/v2/devtree/manifests/base")).await;
    let config = get_json(
        &http,
        &format!(
            "http://{reg}/v2/devtree/blobs/{}",
            base["config"]["digest"].as_str().unwrap()
        ),
    )
    .await;
    let (_, digest) = source.split_once('@').unwrap();
    let artifact = get_json(
        &http,
        &format!("http://{reg}/v2/berth/prebuilds/manifests/{digest}"),
    )
    .await;
    let layer = artifact["layers"][0].clone();
    let meta = get_json(
        &http,
        &format!(
            "http://{reg}/v2/berth/prebuilds/blobs/{}",
            artifact["config"]["digest"].as_str().unwrap()
        ),
    )
    .await;
    let r = http
        .post(format!(
            "http://{reg}/v2/devtree/blobs/uploads/?mount={}&from=berth/prebuilds",
            layer["digest"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "cross-repository mount");
    let mut config = config;
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .unwrap()
        .push(meta["diff_id"].clone());
    let (cd, cs) = put_blob(&http, &reg, "devtree", serde_json::to_vec(&config).unwrap()).await;
    let mut layers = base["layers"].as_array().unwrap().clone();
    layers.push(
        json!({"mediaType": layer["mediaType"], "digest": layer["digest"], "size": layer["size"]}),
    );
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": layers,
    });
    let r = http
        .put(format!("http://{reg}/v2/devtree/manifests/latest"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(serde_json::to_vec(&manifest).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "manifest put");
    format!("{reg}/devtree:latest")
}

async fn until_running(c: &Cluster, name: &str, t: Instant) -> Value {
    loop {
        let (_, w) = c.get(&format!("/v1/workspaces/{name}")).await;
        match w["state"].as_str() {
            Some("running") => return w,
            Some("failed") => panic!("{name} failed: {w}"),
            _ => tokio::time::sleep(Duration::from_millis(5)).await,
        }
        assert!(
            t.elapsed() < Duration::from_secs(1800),
            "{name} never running"
        );
    }
}

async fn prebuild_cold_bench() {
    let iters = iters(8).div_ceil(2);
    let mib: u64 = std::env::var("BERTH_BENCH_COLD_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let opts = ClusterOptions {
        agents: 2,
        layer_registry: true,
        ..Default::default()
    };
    let (c, git, _dir) = berth_tests::git::repo_cluster_with(opts, |c| {
        format!(
            "\n[[tiers]]\nname = \"big\"\ncpu_millis = 2000\nmemory = \"4GiB\"\ndisk = \"10GiB\"\n\
             egress_allow = [\"{}/32\"]\n\n[prebuilds]\nregistry = \"{}/berth/prebuilds\"\npull_ahead = 0\n",
            c.host_ip,
            c.layer_registry.as_ref().unwrap().addr
        )
    })
    .await;
    let cordon = |i: usize, on: bool| {
        let c = &c;
        async move {
            let verb = if on { "cordon" } else { "uncordon" };
            let (s, _) = c.post(&format!("/v1/nodes/n{i}/{verb}"), json!({})).await;
            assert_eq!(s, 200);
        }
    };
    let on_create = format!(
        "set -e; for d in $(seq 1 {}); do mkdir -p node_modules/d$d; \
         head -c 10485760 /dev/urandom | split -a 3 -b 8192 - node_modules/d$d/f; done",
        mib.div_ceil(10)
    );
    let config =
        json!({"image": format!("{}/dev:latest", c.registry.addr), "onCreateCommand": on_create});
    let url = git.repo("cold", &[(".devcontainer.json", &config.to_string())]);
    // Built and pushed on n0.
    cordon(1, true).await;
    let (s, p) = c
        .post(
            "/v1/prebuilds",
            json!({"repo": {"url": url}, "tier": "big"}),
        )
        .await;
    assert_eq!(s, 202, "{p}");
    let id = p["id"].as_str().unwrap().to_string();
    let p = loop {
        let (_, p) = c.get(&format!("/v1/prebuilds/{id}")).await;
        match (p["state"].as_str(), p["source"].as_str()) {
            (Some("ready"), Some(s)) if !s.is_empty() => break p,
            (Some("failed"), _) => panic!("prebuild failed: {p}"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let key = p["key"].as_str().unwrap().to_string();
    let image = compose_image(&c, p["source"].as_str().unwrap()).await;
    // Workspaces go to n1, which has `dev` cached and not the prebuild.
    cordon(1, false).await;
    cordon(0, true).await;
    let t = Instant::now();
    let (s, w) = c
        .post("/v1/workspaces", json!({"name": "warm", "tier": "big", "image": format!("{}/dev:latest", c.registry.addr)}))
        .await;
    assert_eq!(s, 201, "{w}");
    until_running(&c, "warm", t).await;
    let (s, _) = c.delete("/v1/workspaces/warm").await;
    assert!(s < 300);
    let n1 = &c.nodes[1];
    let socket = n1.containerd.socket.clone();
    let (mut agent, mut base) = (Vec::new(), Vec::new());
    for i in 0..iters {
        let dropped = berth_agent::client::Client::connect(&n1.socket)
            .await
            .unwrap()
            .call(berth_proto::agent::request::Command::DropPrebuilds(
                berth_proto::agent::PrebuildDropRequest {
                    keys: vec![key.clone()],
                    sources: Vec::new(),
                },
            ))
            .await;
        assert!(dropped.is_ok(), "{dropped:?}");
        let name = format!("pb{i}");
        let t = Instant::now();
        let (s, w) = c
            .post(
                "/v1/workspaces",
                json!({"name": name, "tier": "big", "repo": {"url": url}}),
            )
            .await;
        assert_eq!(s, 201, "{w}");
        let w = until_running(&c, &name, t).await;
        agent.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(w["node"], "n1", "{w}");
        let note = w["init"]["prebuild"]["note"].as_str().unwrap_or("");
        assert!(note.contains("pulled"), "not pulled: {w}");
        let (code, _, err) = c.berth(&c.admin_token, &["delete", &name]).await;
        assert_eq!(code, 0, "{err}");

        ctr_at(&socket, &["images", "rm", "--sync", &image]);
        let cid = format!("tree{i}");
        let t = Instant::now();
        let (ok, _) = ctr_at(&socket, &["images", "pull", "--plain-http", &image]);
        assert!(ok, "ctr images pull {image}");
        let (ok, _) = ctr_at(&socket, &["run", "-d", &image, &cid, "sleep", "3600"]);
        assert!(ok, "ctr run -d");
        base.push(t.elapsed().as_secs_f64() * 1000.0);
        ctr_at(&socket, &["tasks", "rm", "-f", &cid]);
        ctr_at(&socket, &["containers", "rm", &cid]);
    }
    let (a, b) = (sorted(agent), sorted(base));
    let (a50, b50) = (percentile(&a, 0.5), percentile(&b, 0.5));
    println!("\nprebuild_cold: create→running from a {mib} MiB prebuild the node pulls, {iters} runs each, interleaved");
    println!("{:<52} {:>10} {:>10}", "", "p50 ms", "max ms");
    println!(
        "{:<52} {:>10.1} {:>10.1}",
        "berth create --repo (layer pulled from the registry)",
        a50,
        a.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "{:<52} {:>10.1} {:>10.1}",
        "ctr images pull + run -d of dev + the tree layer",
        b50,
        b.last().copied().unwrap_or(f64::NAN)
    );
    println!("{:<52} {:>10.2}", "ratio", a50 / b50);
    record("cold_start", "prebuild_1gb_p50_ms", a50, "ms", "");
    record("cold_start", "ctr_pull_run_tree_1gb_p50_ms", b50, "ms", "");
    record(
        "cold_start",
        "p50_ratio_prebuild_vs_ctr_pull_run_1gb",
        a50 / b50,
        "x",
        "<=0.8",
    );
    drop(git);
    c.finish().await;
}

fn main() {
    let only = berth_tests::bench::Selection::from_args();
    if only.wanted("cold_start") {
        berth_tests::bench::runtime().block_on(cold_start_bench());
    }
    if only.wanted("prebuild_cold") {
        berth_tests::bench::runtime().block_on(prebuild_cold_bench());
    }
}
