//! Prebuild benchmarks (docs/prebuilds.md), each printed as a table and
//! appended as JSON lines to target/bench/<bench>.jsonl. The repositories'
//! onCreateCommand writes a tree of 8 KiB files (like node_modules) of 10
//! MiB, 1 GiB and 3 GiB; everything runs through the API on one node with a
//! tier of 10 GiB of disk (a 3 GiB tree of 8 KiB files needs 400,000 inodes: a 6 GiB volume has 393,216).
//!
//! - prebuild_start: create → running of a workspace from the prebuild (at
//!   its commit) against a plain `dev` workspace of the same tier,
//!   interleaved: `p50_ratio_vs_plain_10mb`, `_1gb`, `_3gb` (goal ≤ 1.1).
//!   For 1 GiB also against Gitpod's method (a plain workspace, then the
//!   tree restored with `tar -x` into its volume) and against running the
//!   init from scratch (a clone and the same onCreateCommand):
//!   `p50_ratio_vs_tar_restore_1gb`, `p50_ratio_vs_init_from_scratch_1gb`
//!   (goal ≤ 0.05, i.e. ≥ 20× faster). Extra: the same from the branch
//!   (the agent fetches to check for new commits), `_1gb_with_fetch`.
//! - prebuild_build: the 1 GiB prebuild's build (request → ready) against
//!   the same init in a plain workspace plus `tar -c` of its tree (what a
//!   tar-based prebuild does): `ratio_vs_init_and_tar` (goal ≤ 1.0).
//! - time_to_prompt: `berth create --repo` of the prebuilt 1 GiB repository
//!   through the CLI until `ssh berth.NAME true` (what `berth ssh NAME --
//!   true` runs) answers, against the same for a plain `dev` workspace:
//!   `ratio_vs_plain` (≤ 1.2), `prebuilt_1gb_ms`, `plain_ms`.
//!
//! `cargo bench --bench prebuilds -- start build prompt` runs a subset;
//! BERTH_BENCH_ITERS sets the fast loops' iterations (default 10);
//! BERTH_BENCH_PREBUILD_SIZES the sizes in MiB (default 10,1024,3072).

use berth_tests::bench::{iters, percentile, record, sorted};
use berth_tests::git::{repo_cluster, GitServer};
use berth_tests::Cluster;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const TIER: &str = "big";

/// onCreateCommand: `mib` MiB of 8 KiB files in directories of 10 MiB.
fn on_create(mib: u64) -> String {
    format!(
        "set -e; for d in $(seq 1 {}); do mkdir -p node_modules/d$d; \
         head -c 10485760 /dev/urandom | split -a 3 -b 8192 - node_modules/d$d/f; done",
        mib.div_ceil(10)
    )
}

fn devcontainer(c: &Cluster, mib: u64) -> String {
    json!({"image": format!("{}/dev:latest", c.registry.addr), "onCreateCommand": on_create(mib)})
        .to_string()
}

/// Creates `body` through the API (the big tier) and waits until it is
/// running; (ms, the workspace).
async fn create_running(c: &Cluster, mut body: Value) -> (f64, Value) {
    body["tier"] = json!(TIER);
    let name = body["name"].as_str().unwrap().to_string();
    let t = Instant::now();
    let (s, w) = c.post("/v1/workspaces", body).await;
    assert_eq!(s, 201, "{w}");
    loop {
        let (_, w) = c.get(&format!("/v1/workspaces/{name}")).await;
        match w["state"].as_str() {
            Some("running") => return (t.elapsed().as_secs_f64() * 1000.0, w),
            Some("failed") => panic!("{name} failed: {w}"),
            _ => tokio::time::sleep(Duration::from_millis(5)).await,
        }
        assert!(
            t.elapsed() < Duration::from_secs(1800),
            "{name} never running"
        );
    }
}

async fn delete(c: &Cluster, name: &str) {
    let (code, _, err) = c.berth(&c.admin_token, &["delete", name]).await;
    assert_eq!(code, 0, "{err}");
}

fn row(what: &str, v: &[f64]) {
    let s = sorted(v.to_vec());
    println!(
        "{what:<52} {:>9.1} {:>9.1} {:>9.1}",
        percentile(&s, 0.5),
        percentile(&s, 0.9),
        s.last().copied().unwrap_or(f64::NAN)
    );
}

fn p50(v: &[f64]) -> f64 {
    percentile(&sorted(v.to_vec()), 0.5)
}

/// Builds a prebuild of `url`; (ms request → ready, the prebuild).
async fn build(c: &Cluster, url: &str) -> (f64, Value) {
    let t = Instant::now();
    let (s, p) = c
        .post("/v1/prebuilds", json!({"repo": {"url": url}, "tier": TIER}))
        .await;
    assert_eq!(s, 202, "{p}");
    let id = p["id"].as_str().unwrap().to_string();
    loop {
        let (_, p) = c.get(&format!("/v1/prebuilds/{id}")).await;
        match p["state"].as_str() {
            Some("ready") => return (t.elapsed().as_secs_f64() * 1000.0, p),
            Some("queued" | "building") => tokio::time::sleep(Duration::from_millis(50)).await,
            _ => panic!("prebuild failed: {p}"),
        }
    }
}

/// The node directory a workspace's volume holds its /workspace in.
fn volume_dir(c: &Cluster, id: &str) -> PathBuf {
    let state = &c.nodes[0].state_dir;
    let rec: Value = serde_json::from_str(
        &std::fs::read_to_string(state.join("workspaces").join(format!("{id}.json"))).unwrap(),
    )
    .unwrap();
    let parts = match rec["slot"].as_str() {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => id.to_string(),
    };
    state.join("volumes").join(parts).join("workspace")
}

fn sh(script: &str) -> f64 {
    let t = Instant::now();
    let out = std::process::Command::new("sh")
        .args(["-c", script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{script}: {out:?}");
    t.elapsed().as_secs_f64() * 1000.0
}

/// Sets up the big tier on the repository cluster.
async fn cluster() -> (Cluster, GitServer, tempfile::TempDir) {
    let (mut c, git, dir) = repo_cluster().await;
    let path = dir.path().join("coordinator.toml");
    let mut cfg = std::fs::read_to_string(&path).unwrap();
    cfg.push_str(&format!(
        "\n[[tiers]]\nname = \"{TIER}\"\ncpu_millis = 2000\nmemory = \"4GiB\"\ndisk = \"10GiB\"\n\
         egress_allow = [\"{}/32\"]\n",
        c.host_ip
    ));
    std::fs::write(&path, cfg).unwrap();
    c.kill_coordinator();
    c.start_coordinator();
    (c, git, dir)
}

struct Built {
    url: String,
    commit: String,
}

async fn prebuild_start(c: &Cluster, git: &GitServer, mib: u64, work: &Path) -> Built {
    let n = iters(10);
    let url = git.repo(
        &format!("pb{mib}"),
        &[(".devcontainer.json", &devcontainer(c, mib))],
    );
    let (build_ms, p) = build(c, &url).await;
    let commit = p["commit"].as_str().unwrap().to_string();
    println!(
        "\nprebuild of {mib} MiB: {} files, {:.0} MiB, built in {:.1} s",
        p["files"],
        p["bytes"].as_f64().unwrap() / 1048576.0,
        build_ms / 1000.0
    );
    let at = json!({"url": url, "commit": commit});
    let (mut from, mut plain) = (Vec::new(), Vec::new());
    for i in 0..n {
        let (ms, w) = create_running(c, json!({"name": format!("f{i}"), "repo": at})).await;
        assert_eq!(w["init"]["prebuild"]["outcome"], "used", "{w}");
        from.push(ms);
        delete(c, &format!("f{i}")).await;
        let (ms, _) = create_running(
            c,
            json!({"name": format!("p{i}"), "image": format!("{}/dev:latest", c.registry.addr)}),
        )
        .await;
        plain.push(ms);
        delete(c, &format!("p{i}")).await;
    }
    let label = match mib {
        10 => "10mb".to_string(),
        m if m % 1024 == 0 => format!("{}gb", m / 1024),
        m => format!("{m}mb"),
    };
    let ratio = p50(&from) / p50(&plain);
    println!("prebuild_start {label} ({n} each, ms)                   p50       p90       max");
    row("from the prebuild, create → running", &from);
    row("plain dev workspace, create → running", &plain);
    println!("p50 ratio vs plain: {ratio:.2}x (goal <= 1.1)");
    record(
        "prebuild_start",
        &format!("p50_ratio_vs_plain_{label}"),
        ratio,
        "x",
        "<=1.1",
    );
    if mib != 1024 {
        return Built { url, commit };
    }
    // The branch instead of the commit: the agent fetches to see whether
    // the branch moved on (it has not).
    let mut fetch = Vec::new();
    for i in 0..n {
        let (ms, w) =
            create_running(c, json!({"name": format!("b{i}"), "repo": {"url": url}})).await;
        assert_eq!(w["init"]["prebuild"]["outcome"], "used", "{w}");
        fetch.push(ms);
        delete(c, &format!("b{i}")).await;
    }
    // The same init from scratch (a clone and the onCreateCommand), and
    // its tree tar-ed from the volume (what a tar-based prebuild makes);
    // then Gitpod's start: a plain workspace and that tar restored with
    // `tar -x` into its volume.
    let slow = iters(10).min(3);
    let (mut restore, mut scratch, mut tar_c) = (Vec::new(), Vec::new(), Vec::new());
    let scratch_url = git.repo(
        "scratch1024",
        &[(".devcontainer.json", &devcontainer(c, mib))],
    );
    let tar = work.join("tree.tar");
    for i in 0..slow {
        let (ms, w) = create_running(
            c,
            json!({"name": format!("s{i}"), "repo": {"url": scratch_url}}),
        )
        .await;
        assert!(w["init"]["prebuild"].is_null(), "{w}");
        scratch.push(ms);
        let dir = volume_dir(c, w["id"].as_str().unwrap());
        tar_c.push(sh(&format!(
            "tar --numeric-owner -C {} -cf {} .",
            dir.display(),
            tar.display()
        )));
        delete(c, &format!("s{i}")).await;
        let (ms, w) = create_running(
            c,
            json!({"name": format!("t{i}"), "image": format!("{}/dev:latest", c.registry.addr)}),
        )
        .await;
        let dir = volume_dir(c, w["id"].as_str().unwrap());
        let x_ms = sh(&format!(
            "tar --numeric-owner -C {} -xf {}",
            dir.display(),
            tar.display()
        ));
        restore.push(ms + x_ms);
        delete(c, &format!("t{i}")).await;
    }
    let _ = std::fs::remove_file(&tar);
    let vs_fetch = p50(&fetch) / p50(&plain);
    let vs_tar = p50(&from) / p50(&restore);
    let vs_scratch = p50(&from) / p50(&scratch);
    println!("prebuild_start 1gb against the other ways (ms)        p50       p90       max");
    row("from the prebuild, by branch (the agent fetches)", &fetch);
    row(&format!("plain + tar -x of the tree ({slow})"), &restore);
    row(
        &format!("clone + onCreateCommand from scratch ({slow})"),
        &scratch,
    );
    println!(
        "p50 ratio: by branch vs plain {vs_fetch:.2}x; vs tar restore {vs_tar:.4}x (goal <= 0.05); \
         vs init from scratch {vs_scratch:.4}x (goal <= 0.05)"
    );
    record(
        "prebuild_start",
        "p50_ratio_vs_plain_1gb_with_fetch",
        vs_fetch,
        "x",
        "<=1.1",
    );
    record(
        "prebuild_start",
        "p50_ratio_vs_tar_restore_1gb",
        vs_tar,
        "x",
        "<=0.05",
    );
    record(
        "prebuild_start",
        "p50_ratio_vs_init_from_scratch_1gb",
        vs_scratch,
        "x",
        "<=0.05",
    );
    // prebuild_build: the build against the same init plus a tar of it.
    let tar_c_ms = p50(&tar_c);
    let baseline = p50(&scratch) + tar_c_ms;
    let ratio = build_ms / baseline;
    println!("\nprebuild_build 1gb (ms)");
    println!(
        "{:<52} {build_ms:>9.1}",
        "berth prebuild: build workspace, init, commit"
    );
    println!(
        "{:<52} {baseline:>9.1}",
        format!("init from scratch (p50) + tar -c ({tar_c_ms:.0} ms)")
    );
    println!("ratio vs init and tar: {ratio:.2}x (goal <= 1.0)");
    record(
        "prebuild_build",
        "ratio_vs_init_and_tar",
        ratio,
        "x",
        "<=1.0",
    );
    Built { url, commit }
}

async fn time_to_prompt(c: &Cluster, b: &Built, work: &Path) {
    let n = iters(10);
    let key = work.join("id_bench");
    berth_tests::openssh::keygen(&key);
    let pubkey = format!("{}.pub", key.display());
    let (code, _, err) = c.berth(&c.admin_token, &["ssh-key", "add", &pubkey]).await;
    assert_eq!(code, 0, "{err}");
    let config = work.join("ssh_config");
    let (code, _, err) = c
        .berth(
            &c.admin_token,
            &["config-ssh", "--ssh-config", config.to_str().unwrap()],
        )
        .await;
    assert_eq!(code, 0, "{err}");
    let ssh = berth_tests::openssh::Client {
        home: work.to_path_buf(),
        config,
        api: c.api.clone(),
    };
    let image = format!("{}/dev:latest", c.registry.addr);
    let prompt = |name: String, args: Vec<String>| {
        let ssh = ssh.clone();
        let key = key.clone();
        async move {
            let t = Instant::now();
            let mut a = vec![
                "create".to_string(),
                name.clone(),
                "--tier".into(),
                TIER.into(),
            ];
            a.extend(args);
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            let (code, out, err) = c.berth(&c.admin_token, &a).await;
            assert_eq!(code, 0, "{out}{err}");
            let (code, out, err) = ssh
                .run(
                    "ssh",
                    &key,
                    &c.admin_token,
                    &[&format!("berth.{name}"), "true"],
                )
                .await;
            assert_eq!(code, 0, "{out}{err}");
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            delete(c, &name).await;
            ms
        }
    };
    let (mut pre, mut plain) = (Vec::new(), Vec::new());
    for i in 0..n {
        pre.push(
            prompt(
                format!("q{i}"),
                vec![
                    "--repo".into(),
                    b.url.clone(),
                    "--commit".into(),
                    b.commit.clone(),
                ],
            )
            .await,
        );
        plain.push(prompt(format!("r{i}"), vec!["--image".into(), image.clone()]).await);
    }
    let ratio = p50(&pre) / p50(&plain);
    println!("\ntime_to_prompt ({n} each, ms)                          p50       p90       max");
    row("berth create --repo (prebuilt 1 GiB) → ssh true", &pre);
    row("berth create --image dev → ssh true", &plain);
    println!(
        "ratio vs plain: {ratio:.2}x (goal <= 1.2); published anchors: Gitpod p50 ~10 s, \
         Codespaces with a prebuild 30-45 s, Coder ~30 s"
    );
    record("time_to_prompt", "ratio_vs_plain", ratio, "x", "<=1.2");
    record("time_to_prompt", "prebuilt_1gb_ms", p50(&pre), "ms", "");
    record("time_to_prompt", "plain_ms", p50(&plain), "ms", "");
}

fn main() {
    let only = berth_tests::bench::Selection::from_args();
    let sizes: Vec<u64> = std::env::var("BERTH_BENCH_PREBUILD_SIZES")
        .unwrap_or("10,1024,3072".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    berth_tests::bench::runtime().block_on(async {
        let (c, git, dir) = cluster().await;
        // Warm-up: the image pulled, the paths taken once.
        create_running(
            &c,
            json!({"name": "warm", "image": format!("{}/dev:latest", c.registry.addr)}),
        )
        .await;
        delete(&c, "warm").await;
        let mut one_gb = None;
        if only.wanted("start") || only.wanted("build") || only.wanted("prompt") {
            for mib in &sizes {
                if *mib != 1024 && !only.wanted("start") {
                    continue;
                }
                let b = prebuild_start(&c, &git, *mib, dir.path()).await;
                if *mib == 1024 {
                    one_gb = Some(b);
                }
            }
        }
        if let (true, Some(b)) = (only.wanted("prompt"), &one_gb) {
            time_to_prompt(&c, b, dir.path()).await;
        }
        c.finish().await;
    });
}
