//! Repository benchmarks, each printed as a table and appended as JSON lines
//! to target/bench/<bench>.jsonl:
//!
//! - repo_start: a workspace from a small repository (clone, no init),
//!   create → running through the API, against what a user would do by
//!   hand on the same node: `git clone` of the same repository from the
//!   same server plus a plain workspace of the same image started through
//!   the API; interleaved. Metric `p50_ratio_vs_clone_and_start` (goal ≤ 1.2).
//! - dockerfile_build: the agent's build of a 3-step Dockerfile (RUN, COPY,
//!   RUN; every run a new Dockerfile, so nothing is cached) as the init
//!   report's build step measures it, against `buildah bud` of the same
//!   Dockerfile and context from the same base (overlay driver, the base
//!   pulled beforehand), interleaved; then the same repository again (every
//!   step from the cache). Metrics `ratio_vs_buildah` (≤ 1.0) and
//!   `cached_ms` (≤ 50).
//!
//! `cargo bench --bench repos -- start build` runs a subset;
//! BERTH_BENCH_ITERS sets the iterations (default 10).

use berth_tests::bench::{iters, percentile, record, sorted};
use berth_tests::git::{repo_cluster, GitServer};
use berth_tests::Cluster;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Creates `body` through the API and waits until it is running; ms.
async fn create_running(c: &Cluster, body: Value) -> f64 {
    let name = body["name"].as_str().unwrap().to_string();
    let t = Instant::now();
    let (s, w) = c.post("/v1/workspaces", body).await;
    assert_eq!(s, 201, "{w}");
    loop {
        let (_, w) = c.get(&format!("/v1/workspaces/{name}")).await;
        match w["state"].as_str() {
            Some("running") => break,
            Some("failed") => panic!("{name} failed: {w}"),
            _ => tokio::time::sleep(Duration::from_millis(5)).await,
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "{name} never running"
        );
    }
    t.elapsed().as_secs_f64() * 1000.0
}

async fn delete(c: &Cluster, name: &str) {
    let _ = c.delete(&format!("/v1/workspaces/{name}")).await;
}

fn row(what: &str, v: &[f64]) {
    let s = sorted(v.to_vec());
    println!(
        "{what:<44} {:>9.1} {:>9.1} {:>9.1}",
        percentile(&s, 0.5),
        percentile(&s, 0.9),
        s.last().copied().unwrap_or(f64::NAN)
    );
}

async fn repo_start(c: &Cluster, git: &GitServer) {
    let n = iters(10);
    let files: Vec<(String, String)> = (0..50)
        .map(|i| (format!("src/f{i}.txt"), format!("file {i}\n").repeat(50)))
        .chain([("README.md".to_string(), "small\n".to_string())])
        .collect();
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let url = git.repo("small", &files);
    let image = format!("{}/dev:latest", c.registry.addr);
    let clone_dir = c.dir.join("by-hand");
    let limits =
        json!({"cpu_millis": 1000, "memory_bytes": 512u64 << 20, "disk_bytes": 256u64 << 20});
    let with = |name: &str, extra: Value| {
        let mut b = limits.clone();
        b["name"] = json!(name);
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    // Warm-up: the image pulled, the paths taken once.
    create_running(c, with("warm", json!({"image": image}))).await;
    delete(c, "warm").await;
    let (mut repo, mut by_hand, mut clone) = (Vec::new(), Vec::new(), Vec::new());
    let (mut clone_step, mut configure_step) = (Vec::new(), Vec::new());
    for i in 0..n {
        let name = format!("r{i}");
        repo.push(create_running(c, with(&name, json!({"repo": {"url": url}}))).await);
        let (_, w) = c.get(&format!("/v1/workspaces/{name}")).await;
        let step_ms = |step: &str| {
            w["init"]["steps"]
                .as_array()
                .and_then(|s| s.iter().find(|s| s["name"] == step))
                .and_then(|s| s["duration_ms"].as_f64())
                .unwrap_or(f64::NAN)
        };
        clone_step.push(step_ms("clone"));
        configure_step.push(step_ms("configure"));
        delete(c, &name).await;
        let _ = std::fs::remove_dir_all(&clone_dir);
        let t = Instant::now();
        let out = std::process::Command::new("git")
            .args(["clone", "-q", &url])
            .arg(&clone_dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let clone_ms = t.elapsed().as_secs_f64() * 1000.0;
        let name = format!("p{i}");
        let start_ms = create_running(c, with(&name, json!({"image": image}))).await;
        delete(c, &name).await;
        clone.push(clone_ms);
        by_hand.push(clone_ms + start_ms);
    }
    let ratio = percentile(&sorted(repo.clone()), 0.5) / percentile(&sorted(by_hand.clone()), 0.5);
    println!("\nrepo_start ({n} each, ms)                         p50       p90       max");
    row("repository workspace, create → running", &repo);
    row("  of which its clone step", &clone_step);
    row("  of which its configure step", &configure_step);
    row("by hand: git clone + plain workspace", &by_hand);
    row("  of which git clone", &clone);
    println!("p50 ratio vs clone and start: {ratio:.2}x (goal <= 1.2)");
    record(
        "repo_start",
        "p50_ratio_vs_clone_and_start",
        ratio,
        "x",
        "<=1.2",
    );
}

const DOCKERFILE: &str = "FROM REGISTRY/dev:latest\nUSER root\n\
RUN echo ITER > /built && mkdir -p /opt/app\n\
COPY app.txt /opt/app/app.txt\n\
RUN cat /opt/app/app.txt >> /built\n";

async fn build_ms(c: &Cluster, name: &str, url: &str) -> f64 {
    create_running(
        c,
        json!({"name": name, "repo": {"url": url}, "cpu_millis": 1000,
               "memory_bytes": 512u64 << 20, "disk_bytes": 256u64 << 20}),
    )
    .await;
    let (_, w) = c.get(&format!("/v1/workspaces/{name}")).await;
    let step = w["init"]["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "build").cloned())
        .unwrap_or_else(|| panic!("no build step: {w}"));
    assert_eq!(step["state"], "done", "{w}");
    step["duration_ms"].as_f64().unwrap()
}

fn buildah(root: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new("buildah")
        .arg("--root")
        .arg(root.join("root"))
        .arg("--runroot")
        .arg(root.join("run"))
        .args(["--storage-driver", "overlay"])
        .args(args)
        .output()
        .expect("buildah (make bench installs it)")
}

async fn dockerfile_build(c: &Cluster, git: &GitServer) {
    let n = iters(10);
    let store =
        std::path::PathBuf::from(std::env::var("BERTH_CACHE").unwrap_or("/var/cache/berth".into()))
            .join("buildah-bench");
    let _ = std::fs::remove_dir_all(&store);
    let base = format!("{}/dev:latest", c.registry.addr);
    let pulled = buildah(&store, &["pull", "-q", "--tls-verify=false", &base]);
    assert!(pulled.status.success(), "buildah pull: {pulled:?}");
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut last_url = String::new();
    for i in 0..=n {
        let dockerfile = DOCKERFILE
            .replace("REGISTRY", &c.registry.addr)
            .replace("ITER", &format!("run-{i}-{}", rand::random::<u32>()));
        let files = [
            (
                ".devcontainer.json",
                r#"{"build": {"dockerfile": "Dockerfile"}}"#,
            ),
            ("Dockerfile", dockerfile.as_str()),
            ("app.txt", "the application\n"),
        ];
        let url = git.repo(&format!("build{i}"), &files);
        let name = format!("b{i}");
        let ms = build_ms(c, &name, &url).await;
        delete(c, &name).await;
        // The same Dockerfile and context for buildah.
        let ctx = c.dir.join(format!("buildah-ctx{i}"));
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("Dockerfile"), &dockerfile).unwrap();
        std::fs::write(ctx.join("app.txt"), "the application\n").unwrap();
        let t = Instant::now();
        let out = buildah(
            &store,
            &[
                "bud",
                "-q",
                "--tls-verify=false",
                "--pull-never",
                "-t",
                &format!("bench{i}"),
                "-f",
                ctx.join("Dockerfile").to_str().unwrap(),
                ctx.to_str().unwrap(),
            ],
        );
        let buildah_ms = t.elapsed().as_secs_f64() * 1000.0;
        assert!(
            out.status.success(),
            "buildah bud: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The first of each is a warm-up.
        if i > 0 {
            ours.push(ms);
            theirs.push(buildah_ms);
        }
        last_url = url;
    }
    let cached = build_ms(c, "cached", &last_url).await;
    delete(c, "cached").await;
    let ratio = percentile(&sorted(ours.clone()), 0.5) / percentile(&sorted(theirs.clone()), 0.5);
    println!("\ndockerfile_build ({n} each, ms)                   p50       p90       max");
    row("berth: run-and-commit on containerd", &ours);
    row("buildah bud (overlay)", &theirs);
    row("berth: the same repository again (cached)", &[cached]);
    println!(
        "ratio vs buildah: {ratio:.2}x (goal <= 1.0); cached build {cached:.0} ms (goal <= 50)"
    );
    record("dockerfile_build", "ratio_vs_buildah", ratio, "x", "<=1.0");
    record("dockerfile_build", "cached_ms", cached, "ms", "<=50");
    let _ = buildah(&store, &["rmi", "--all", "--force"]);
    let _ = std::fs::remove_dir_all(&store);
}

fn main() {
    let only = berth_tests::bench::Selection::from_args();
    let want = |b: &str| only.wanted(b);
    berth_tests::bench::runtime().block_on(async {
        let (c, git, _dir) = repo_cluster().await;
        if want("start") {
            repo_start(&c, &git).await;
        }
        if want("build") {
            dockerfile_build(&c, &git).await;
        }
        c.finish().await;
    });
}
