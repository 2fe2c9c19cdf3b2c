//! Prebuilds across nodes (docs/prebuilds.md): two agents, a registry the
//! layers are pushed to. A prebuild built on one node is pushed; the other
//! node pulls it when a workspace of it lands there, and starts from it
//! (every file, owned right, links kept). A registry that serves other
//! bytes than the manifest names is refused, leaves nothing on the node,
//! and the workspace clones instead, visibly. The repository's token is in
//! no pushed blob. A newer prebuild is pulled ahead by the node that did
//! not build it, and retention drops the older one from every node that
//! holds it (kept where a workspace still uses it, until that goes) and
//! from the registry. A layer a node loses on its own reaches the
//! coordinator with the node's next heartbeat.

use berth_tests::{Cluster, ClusterOptions};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

const FILES: usize = 2000;

fn layer(c: &Cluster, node: usize, key: &str) -> PathBuf {
    c.nodes[node]
        .state_dir
        .join("prebuilds")
        .join(format!("{key}.ext4"))
}

/// What is left in node `node`'s layer store besides layers and their marks.
fn leftovers(c: &Cluster, node: usize) -> Vec<String> {
    std::fs::read_dir(c.nodes[node].state_dir.join("prebuilds"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part") || n.ends_with(".pull"))
        .collect()
}

async fn cordon(c: &Cluster, node: usize, on: bool) {
    let verb = if on { "cordon" } else { "uncordon" };
    let (s, out) = c
        .post(&format!("/v1/nodes/{}/{verb}", c.nodes[node].id), json!({}))
        .await;
    assert_eq!(s, 200, "{out}");
}

async fn prebuild_until(c: &Cluster, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut p = Value::Null;
    for _ in 0..600 {
        let (s, got) = c.get(&format!("/v1/prebuilds/{id}")).await;
        assert_eq!(s, 200, "{got}");
        p = got;
        if done(&p) {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("prebuild {id}: {p}\n{}", c.coordinator_log());
}

fn nodes_of(p: &Value) -> Vec<String> {
    let mut n: Vec<String> = p["nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    n.sort();
    n
}

async fn run_prebuild(c: &Cluster, url: &str) -> Value {
    let (code, out, err) = c
        .berth(
            &c.admin_token,
            &["--json", "prebuild", "run", "--repo", url],
        )
        .await;
    let p: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    assert_eq!((code, &p["state"]), (0, &json!("ready")), "{p}{err}");
    p
}

/// Creates workspace `name` of `url` with the CLI: its record, and what the
/// CLI printed while it waited.
async fn create(c: &Cluster, name: &str, url: &str) -> (Value, String) {
    let (code, out, err) = c
        .berth(&c.admin_token, &["create", name, "--repo", url])
        .await;
    assert_eq!(
        code,
        0,
        "{out}{err}\n{}\n{}",
        c.nodes[0].agent_log(),
        c.nodes[1].agent_log()
    );
    let (s, w) = c.get(&format!("/v1/workspaces/{name}")).await;
    assert_eq!(s, 200, "{w}");
    (w, err)
}

async fn sh(c: &Cluster, name: &str, script: &str) -> String {
    let (s, out) = c
        .post(
            &format!("/v1/workspaces/{name}/exec"),
            json!({"argv": ["sh", "-c", script]}),
        )
        .await;
    assert_eq!((s, &out["exit_code"]), (200, &json!(0)), "{script}: {out}");
    out["stdout"].as_str().unwrap_or("").to_string()
}

async fn delete(c: &Cluster, name: &str) {
    let (code, _, err) = c.berth(&c.admin_token, &["delete", name]).await;
    assert_eq!(code, 0, "{err}");
}

/// Every blob the layer registry stores, decompressed if zstd.
fn blobs(c: &Cluster) -> Vec<(PathBuf, Vec<u8>)> {
    let root = c.layer_registry_dir.join("docker/registry/v2/blobs");
    let mut out = Vec::new();
    let mut dirs = vec![root];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.file_name().is_some_and(|n| n == "data") {
                let raw = std::fs::read(&p).unwrap();
                let data = match raw.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
                    true => zstd::decode_all(&raw[..]).expect("a zstd blob decodes"),
                    false => raw,
                };
                out.push((p, data));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_prebuild_reaches_other_nodes_through_the_registry() {
    let opts = ClusterOptions {
        agents: 2,
        layer_registry: true,
        ..Default::default()
    };
    let (c, git, _dir) = berth_tests::git::repo_cluster_with(opts, |c| {
        format!(
            "\n[prebuilds]\nregistry = \"{}/berth/prebuilds\"\npull_ahead = 1\nkeep = 1\n",
            c.layer_registry.as_ref().unwrap().addr
        )
    })
    .await;
    let marker = format!("built-{:016x}", rand::random::<u64>());
    let config = json!({
        "image": format!("{}/dev:latest", c.registry.addr),
        "onCreateCommand": format!(
            "set -e; mkdir -p node_modules/a/b; for i in $(seq 1 {FILES}); do echo $i > node_modules/a/b/f$i; done; \
             echo {marker} > built.txt; ln -s built.txt link.txt"
        ),
    })
    .to_string();
    let url = git.repo("shared", &[(".devcontainer.json", &config)]);
    let token = format!("tok-{:032x}", rand::random::<u128>());
    git.private("shared", "alice", &token);
    let host = url.trim_start_matches("http://").split('/').next().unwrap();
    let (code, _, err) = c
        .berth(
            &c.admin_token,
            &[
                "git-credential",
                "add",
                host,
                "--git-token",
                &token,
                "--username",
                "alice",
            ],
        )
        .await;
    assert_eq!(code, 0, "{err}");

    // Built on n0 (n1 is cordoned: no pull ahead either), then pushed.
    cordon(&c, 1, true).await;
    let p = run_prebuild(&c, &url).await;
    let (id, key) = (p["id"].as_str().unwrap(), p["key"].as_str().unwrap());
    assert_eq!(p["node"], "n0", "{p}");
    let p = prebuild_until(&c, id, |p| {
        p["source"].as_str().is_some_and(|s| !s.is_empty())
    })
    .await;
    let registry = c.layer_registry.as_ref().unwrap().addr.clone();
    assert!(
        p["source"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{registry}/berth/prebuilds@sha256:")),
        "{p}"
    );
    assert_eq!(nodes_of(&p), ["n0"], "{p}");
    assert!(!layer(&c, 1, key).exists());

    // The pushed blobs hold the tree (the control) and not the token.
    let blobs = blobs(&c);
    let needle = |hay: &[u8], n: &str| hay.windows(n.len()).any(|w| w == n.as_bytes());
    assert!(
        blobs.iter().any(|(_, d)| needle(d, &marker)),
        "the layer's tree is in a pushed blob"
    );
    for (path, data) in &blobs {
        assert!(!needle(data, &token), "the token is in {}", path.display());
    }

    // A registry that serves other bytes: refused, nothing left on n1,
    // and the workspace clones instead, saying why.
    let (blob, _) = blobs
        .iter()
        .max_by_key(|(p, _)| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let original = std::fs::read(blob).unwrap();
    let mut tampered = original.clone();
    let mid = tampered.len() / 2;
    tampered[mid] ^= 0xff;
    std::fs::write(blob, &tampered).unwrap();
    cordon(&c, 1, false).await;
    cordon(&c, 0, true).await;
    let (w, _) = create(&c, "w0", &url).await;
    assert_eq!(w["node"], "n1", "{w}");
    assert_eq!(w["init"]["prebuild"]["outcome"], "missing", "{w}");
    let note = w["init"]["prebuild"]["note"].as_str().unwrap_or("");
    assert!(note.contains("other bytes"), "{w}");
    assert!(!layer(&c, 1, key).exists(), "a tampered layer is not kept");
    assert_eq!(leftovers(&c, 1), Vec::<String>::new());
    delete(&c, "w0").await;

    // The blob as pushed: n1 pulls it and starts from it.
    std::fs::write(blob, &original).unwrap();
    let (w, waited) = create(&c, "w1", &url).await;
    assert_eq!(w["node"], "n1", "{w}");
    // The CLI showed the pull while it waited.
    assert!(
        waited.contains(&format!("pulling prebuild {key}: 100%")),
        "{waited}"
    );
    assert_eq!(w["init"]["prebuild"]["outcome"], "used", "{w}");
    assert!(
        w["init"]["prebuild"]["note"]
            .as_str()
            .unwrap_or("")
            .contains("pulled from the registry"),
        "{w}"
    );
    assert!(layer(&c, 1, key).exists());
    let out = sh(
        &c,
        "w1",
        "cd /workspace/shared && cat built.txt && readlink link.txt && \
         find node_modules -type f | wc -l && stat -c %u:%g node_modules/a/b/f7 && id -u",
    )
    .await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..3],
        [marker.as_str(), "built.txt", &FILES.to_string()],
        "{out}"
    );
    assert_eq!(
        lines[3],
        format!("{0}:{0}", lines[4]),
        "owned by the user: {out}"
    );
    let p = prebuild_until(&c, id, |p| nodes_of(p).len() == 2).await;
    assert_eq!(nodes_of(&p), ["n0", "n1"], "{p}");

    // A newer prebuild (built where it fits) is pulled ahead by the other
    // node; the older one expires (keep = 1): dropped where nothing uses
    // it, kept on n1 under w1 until w1 goes.
    cordon(&c, 0, false).await;
    git.commit("shared", "main", &[("more.txt", "more\n")]);
    let p2 = run_prebuild(&c, &url).await;
    let (id2, key2) = (p2["id"].as_str().unwrap(), p2["key"].as_str().unwrap());
    assert_ne!(key2, key);
    let p2 = prebuild_until(&c, id2, |p| nodes_of(p).len() == 2).await;
    assert!(!p2["source"].as_str().unwrap_or("").is_empty(), "{p2}");
    for n in 0..2 {
        assert!(
            layer(&c, n, key2).exists(),
            "node {n} holds the new prebuild"
        );
    }
    let old = prebuild_until(&c, id, |p| p["state"] == "expired").await;
    assert_eq!(old["state"], "expired");
    // Gone from the registry too; the newer one is there (the control).
    let manifest = |source: &str| {
        let (repo, digest) = source.split_once('@').unwrap();
        let (host, path) = repo.split_once('/').unwrap();
        format!("http://{host}/v2/{path}/manifests/{digest}")
    };
    let http = reqwest::Client::new();
    let accept = "application/vnd.oci.image.manifest.v1+json";
    let status = |u: String| {
        let http = http.clone();
        async move {
            http.head(u)
                .header("accept", accept)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let mut gone = 0;
    for _ in 0..100 {
        gone = status(manifest(old["source"].as_str().unwrap())).await;
        if gone == 404 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(gone, 404, "the expired prebuild's manifest is deleted");
    assert_eq!(status(manifest(p2["source"].as_str().unwrap())).await, 200);
    for _ in 0..100 {
        if !layer(&c, 0, key).exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!layer(&c, 0, key).exists(), "n0 dropped the expired layer");
    assert!(layer(&c, 1, key).exists(), "w1 still uses it on n1");
    delete(&c, "w1").await;
    assert!(!layer(&c, 1, key).exists(), "it went with w1");

    // A layer the node loses on its own (here dropped through its control
    // socket, as its cache would) reaches the coordinator by heartbeat.
    let dropped = berth_agent::client::Client::connect(&c.nodes[1].socket)
        .await
        .unwrap()
        .call(berth_proto::agent::request::Command::DropPrebuilds(
            berth_proto::agent::PrebuildDropRequest {
                keys: vec![key2.to_string()],
                sources: Vec::new(),
            },
        ))
        .await;
    assert!(dropped.is_ok(), "{dropped:?}");
    let p2 = prebuild_until(&c, id2, |p| nodes_of(p).len() == 1).await;
    assert_eq!(nodes_of(&p2), ["n0"], "{p2}");
    drop(git);
    c.finish().await;
}
