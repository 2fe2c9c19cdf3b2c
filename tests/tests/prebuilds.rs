//! Prebuilds end to end (docs/prebuilds.md): a real git server, the
//! coordinator and an agent on containerd. A repository whose onCreateCommand
//! writes a large tree of small files (like node_modules) is prebuilt with
//! `berth prebuild run`; workspaces from it are checked as a user sees them
//! (every file, owned right, the steps the prebuild ran not run again) and
//! as the node holds them (no copy: the workspace's volume stays near empty;
//! one layer shared). What an overlay must get right is tried: renaming a
//! directory of the prebuild with rename(2), deleting one of its files
//! across a restart, writing past the volume's limit. The repository's
//! token is in no layer; a failing onCreateCommand fails the prebuild with
//! its log, and a workspace then clones, visibly.

use berth_proto::agent::{self as pb, request::Command};
use berth_tests::Cluster;
use serde_json::{json, Value};

/// The tree onCreateCommand writes: 200 MiB in 25,600 files of 8 KiB, in
/// 10 directories.
const TREE_FILES: u64 = 25_600;
const ON_CREATE: &str = "set -e; for d in 0 1 2 3 4 5 6 7 8 9; do mkdir -p node_modules/d$d; \
    head -c 20971520 /dev/urandom | split -a 4 -b 8192 - node_modules/d$d/f; done; \
    echo onCreate >> steps.log";

fn devcontainer(registry: &str, on_create: &str) -> String {
    json!({
        "image": format!("{registry}/dev:latest"),
        "onCreateCommand": on_create,
        "updateContentCommand": "echo updateContent >> steps.log",
        "postCreateCommand": "echo postCreate >> steps.log",
    })
    .to_string()
}

async fn sh(c: &Cluster, name: &str, script: &str) -> (i64, String) {
    let (s, out) = c
        .post(
            &format!("/v1/workspaces/{name}/exec"),
            json!({"argv": ["sh", "-c", script]}),
        )
        .await;
    assert_eq!(s, 200, "{out}");
    let text = format!(
        "{}{}",
        out["stdout"].as_str().unwrap_or(""),
        out["stderr"].as_str().unwrap_or("")
    );
    (out["exit_code"].as_i64().unwrap_or(-1), text)
}

async fn get(c: &Cluster, name: &str) -> Value {
    let (s, w) = c.get(&format!("/v1/workspaces/{name}")).await;
    assert_eq!(s, 200, "{w}");
    w
}

fn step<'a>(w: &'a Value, name: &str) -> &'a Value {
    w["init"]["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no step {name}: {w}"))
}

/// Bytes used on the volume /workspace is on.
async fn used(c: &Cluster, name: &str) -> u64 {
    let (code, out) = sh(c, name, "df -B1 --output=used /workspace | tail -1").await;
    assert_eq!(code, 0, "{out}");
    out.trim().parse().unwrap_or_else(|_| panic!("df: {out}"))
}

/// The file of prebuild layer `key` on the node.
fn layer(c: &Cluster, key: &str) -> std::path::PathBuf {
    c.nodes[0]
        .state_dir
        .join("prebuilds")
        .join(format!("{key}.ext4"))
}

fn held(c: &Cluster, key: &str) -> bool {
    layer(c, key).is_file()
}

/// A client of node 0's control socket (once the agent, maybe just
/// restarted, listens).
async fn agent(c: &Cluster) -> berth_agent::client::Client {
    for _ in 0..100 {
        if let Ok(a) = berth_agent::client::Client::connect(&c.nodes[0].socket).await {
            return a;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("node 0's agent does not listen\n{}", c.nodes[0].agent_log());
}

/// Node 0's cache (after enforcing its budget, if asked).
async fn cache(c: &Cluster, enforce: bool) -> pb::CacheReport {
    match agent(c)
        .await
        .call(Command::Cache(pb::CacheRequest { enforce }))
        .await
    {
        Ok(pb::response::Result::Cache(r)) => r,
        other => panic!("cache: {other:?}"),
    }
}

/// The images node 0's containerd holds.
fn images(c: &Cluster) -> Vec<String> {
    c.nodes[0].containerd.ctr_list(&["images", "ls", "-q"])
}

/// Asserts that no build workspace (a container named after its prebuild,
/// `p...`) is left on the node.
fn no_build_workspace(c: &Cluster) {
    let builds: Vec<String> = c.nodes[0]
        .containers()
        .into_iter()
        .filter(|id| id.starts_with('p'))
        .collect();
    assert!(builds.is_empty(), "build workspaces left: {builds:?}");
}

/// The prebuild layers the node holds.
fn layers(c: &Cluster) -> Vec<String> {
    let mut keys: Vec<String> = std::fs::read_dir(c.nodes[0].state_dir.join("prebuilds"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_suffix(".ext4").map(String::from)
        })
        .collect();
    keys.sort();
    keys
}

async fn prebuild(c: &Cluster, url: &str, more: &[&str]) -> (i32, Value) {
    let mut args = vec!["--json", "prebuild", "run", "--repo", url];
    args.extend_from_slice(more);
    let (code, out, err) = c.berth(&c.admin_token, &args).await;
    let v: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("{e}: {out}{err}\n{}", c.coordinator_log()));
    (code, v)
}

fn host_of(url: &str) -> String {
    url.trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_workspace_starts_from_a_prebuild_layer_without_a_copy() {
    let (c, git, dir) = berth_tests::git::repo_cluster().await;
    let config = devcontainer(&c.registry.addr, ON_CREATE);
    let url = git.repo(
        "big",
        &[
            (".devcontainer/devcontainer.json", &config),
            ("README.md", "big\n"),
        ],
    );
    // A private repository: the build clones with the requester's token.
    let token = format!("tok-{:032x}", rand::random::<u128>());
    git.private("big", "alice", &token);
    let (code, _, err) = c
        .berth(
            &c.admin_token,
            &[
                "git-credential",
                "add",
                &host_of(&url),
                "--git-token",
                &token,
                "--username",
                "alice",
            ],
        )
        .await;
    assert_eq!(code, 0, "{err}");

    let (code, p) = prebuild(&c, &url, &[]).await;
    assert_eq!(code, 0, "{p}\n{}", c.nodes[0].agent_log());
    assert_eq!(p["state"], "ready", "{p}");
    assert!(p["files"].as_u64().unwrap() > TREE_FILES, "{p}");
    assert!(p["bytes"].as_u64().unwrap() > 200 << 20, "{p}");
    let key = p["key"].as_str().unwrap().to_string();
    let steps: Vec<(&str, &str)> = p["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["state"].as_str().unwrap()))
        .collect();
    assert!(steps.contains(&("onCreateCommand", "done")), "{p}");
    assert!(steps.contains(&("updateContentCommand", "done")), "{p}");
    assert!(
        steps.contains(&("postCreateCommand", "skipped")),
        "a prebuild never runs postCreateCommand: {p}"
    );
    let (_, list, _) = c
        .berth(&c.admin_token, &["prebuild", "list", "--repo", &url])
        .await;
    assert!(
        list.contains(&key[..12]) && list.contains("ready"),
        "{list}"
    );
    // One layer: the build's volume, kept (no copy); no build workspace left.
    assert_eq!(layers(&c), std::slice::from_ref(&key));
    let (_, list) = c.get("/v1/workspaces").await;
    assert_eq!(list, json!([]), "no build workspace is shown");
    no_build_workspace(&c);

    // A workspace from it: the prebuild's tree, its steps not run again.
    let (code, out, err) = c
        .berth(&c.admin_token, &["create", "a", "--repo", &url])
        .await;
    assert_eq!(code, 0, "{out}{err}\n{}", c.nodes[0].agent_log());
    let w = get(&c, "a").await;
    assert_eq!(w["init"]["prebuild"]["key"], key.as_str(), "{w}");
    assert_eq!(w["init"]["prebuild"]["outcome"], "used", "{w}");
    assert_eq!(w["init"]["commit"], p["commit"], "{w}");
    assert_eq!(step(&w, "prebuild")["state"], "done", "{w}");
    assert_eq!(step(&w, "onCreateCommand")["state"], "skipped", "{w}");
    assert_eq!(step(&w, "onCreateCommand")["tail"], "ran in the prebuild");
    let (_, shown, _) = c.berth(&c.admin_token, &["get", "a"]).await;
    assert!(
        shown.contains("Prebuild:") && shown.contains(&key[..12]),
        "{shown}"
    );
    let (code, out) = sh(
        &c,
        "a",
        "cd /workspace/big && find node_modules -type f | wc -l && stat -c '%u:%g' node_modules/d3/faaaa . .git && cat steps.log && git status --porcelain | wc -l",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], TREE_FILES.to_string(), "{out}");
    assert_eq!(&lines[1..4], ["1000:1000"; 3], "owned by the user: {out}");
    assert_eq!(lines[4..6], ["onCreate", "updateContent"], "{out}");
    // No copy: the volume holds nothing of the 200 MiB tree. A control
    // shows df counts what the user writes there.
    let before = used(&c, "a").await;
    assert!(
        before < 32 << 20,
        "the tree was copied: {before} bytes used"
    );
    let (code, out) = sh(&c, "a", "head -c 52428800 /dev/urandom > /workspace/mine").await;
    assert_eq!(code, 0, "{out}");
    let after = used(&c, "a").await;
    assert!(after >= before + (48 << 20), "{before} -> {after}");

    // rename(2) of a directory of the prebuild works (no EXDEV) and copies
    // nothing; a deleted file of the prebuild stays deleted.
    let (code, out) = sh(
        &c,
        "a",
        "cd /workspace/big/node_modules && python3 -c 'import os; os.rename(\"d0\", \"moved\")' && ls moved | wc -l && ! test -e d0 && rm d1/faaaa && ! test -e d1/faaaa && ls d1 | wc -l",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().collect::<Vec<_>>(), ["2560", "2559"], "{out}");
    let renamed = used(&c, "a").await;
    assert!(
        renamed < after + (4 << 20),
        "the rename copied: {after} -> {renamed}"
    );
    // The volume's limit holds for what the user writes (512 MiB tier).
    let (code, out) = sh(&c, "a", "head -c 629145600 /dev/zero > /workspace/fill").await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("No space left"), "{out}");
    let (code, _) = sh(&c, "a", "rm /workspace/fill").await;
    assert_eq!(code, 0);
    // Across a stop and a start: the changes kept, the deletion too.
    let (code, _, err) = c.berth(&c.admin_token, &["stop", "a"]).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = c.berth(&c.admin_token, &["start", "a"]).await;
    assert_eq!(code, 0, "{err}");
    let (code, out) = sh(
        &c,
        "a",
        "cd /workspace/big/node_modules && ls moved | wc -l && ! test -e d0 && ! test -e d1/faaaa && ls d2 | wc -l && wc -c < /workspace/mine",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["2560", "2560", "52428800"],
        "{out}"
    );

    // A second workspace shares the same layer: its own view of the one
    // committed snapshot, and it does not see the first one's changes.
    let (code, out, err) = c
        .berth(&c.admin_token, &["create", "b", "--repo", &url])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out) = sh(
        &c,
        "b",
        "ls /workspace/big/node_modules/d0 | wc -l; test -e /workspace/mine; echo $?",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().collect::<Vec<_>>(), ["2560", "1"], "{out}");
    // One read-only loop mount of the one layer serves both.
    assert_eq!(layers(&c), std::slice::from_ref(&key));
    let loops = std::process::Command::new("losetup")
        .arg("-j")
        .arg(layer(&c, &key))
        .output()
        .unwrap();
    let loops = String::from_utf8_lossy(&loops.stdout).into_owned();
    assert_eq!(loops.lines().count(), 1, "{loops}");

    // The repository's token is in no layer, nowhere on the node; the
    // same search finds it where a control put it.
    let control = dir.path().join("control");
    std::fs::write(&control, format!("x{token}x")).unwrap();
    let grep = |path: &std::path::Path| {
        std::process::Command::new("grep")
            .args(["-r", "-a", "-l", "-F", &token])
            .arg(path)
            .output()
            .unwrap()
    };
    assert!(grep(dir.path()).status.success(), "the control is found");
    for path in [&c.nodes[0].containerd.dir, &c.nodes[0].state_dir] {
        let found = grep(path);
        assert!(
            !found.status.success(),
            "the token is in {}",
            String::from_utf8_lossy(&found.stdout)
        );
    }
    for name in ["a", "b"] {
        let (code, _, err) = c.berth(&c.admin_token, &["delete", name]).await;
        assert_eq!(code, 0, "{err}");
    }
    drop(git);
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_moved_branch_is_brought_up_and_a_failed_prebuild_falls_back_to_a_clone() {
    let (c, git, _dir) = berth_tests::git::repo_cluster().await;
    let small = devcontainer(
        &c.registry.addr,
        "mkdir -p deps && echo 1 > deps/one && echo onCreate >> steps.log",
    );
    let url = git.repo(
        "app",
        &[
            (".devcontainer/devcontainer.json", &small),
            ("a.txt", "a\n"),
        ],
    );
    let (code, p) = prebuild(&c, &url, &["--branch", "main"]).await;
    assert_eq!(code, 0, "{p}");
    let built = p["commit"].as_str().unwrap().to_string();
    // The branch moves on: the workspace starts from the prebuild, fetches
    // the new commit and runs updateContentCommand again, not onCreate.
    let head = git.commit("app", "main", &[("b.txt", "b\n")]);
    assert_ne!(head, built);
    let (code, out, err) = c
        .berth(
            &c.admin_token,
            &["create", "moved", "--repo", &url, "--branch", "main"],
        )
        .await;
    assert_eq!(code, 0, "{out}{err}\n{}", c.nodes[0].agent_log());
    let w = get(&c, "moved").await;
    assert_eq!(w["init"]["commit"], head.as_str(), "{w}");
    assert_eq!(w["init"]["prebuild"]["outcome"], "updated", "{w}");
    assert_eq!(w["init"]["prebuild"]["commit"], built.as_str(), "{w}");
    assert_eq!(step(&w, "onCreateCommand")["state"], "skipped", "{w}");
    assert_eq!(step(&w, "updateContentCommand")["state"], "done", "{w}");
    // (postCreateCommand may be appending after them.)
    let (code, out) = sh(
        &c,
        "moved",
        "cd /workspace/app && cat b.txt deps/one && head -3 steps.log",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["b", "1", "onCreate", "updateContent", "updateContent"],
        "{out}"
    );

    // A failing onCreateCommand fails the prebuild with its log's end...
    let failing = devcontainer(
        &c.registry.addr,
        "echo the-build-broke >&2; sleep 2; exit 3",
    );
    let url2 = git.repo("broken", &[(".devcontainer/devcontainer.json", &failing)]);
    let (code, p) = prebuild(&c, &url2, &[]).await;
    assert_eq!(code, 1, "{p}");
    assert_eq!(p["state"], "failed", "{p}");
    assert_eq!(p["error_code"], "prebuild_failed", "{p}");
    assert!(
        p["error"].as_str().unwrap().contains("the-build-broke"),
        "{p}"
    );
    // For people, the build's log streams on standard error as it builds.
    let (code, out, err) = c
        .berth(&c.admin_token, &["prebuild", "run", "--repo", &url2])
        .await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("failed") && out.contains("prebuild_failed"),
        "{out}"
    );
    assert!(
        err.contains("==> git clone") && err.contains("the-build-broke"),
        "{err}"
    );
    // ...and no layer is kept of it, no build workspace left.
    assert_eq!(layers(&c).len(), 1, "{:?}", layers(&c));
    no_build_workspace(&c);
    // A workspace of it finds no ready prebuild: a plain clone, whose
    // failing step shows as usual.
    let (code, out, err) = c
        .berth(&c.admin_token, &["create", "plain", "--repo", &url2])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    let w = get(&c, "plain").await;
    assert!(w["init"]["prebuild"].is_null(), "{w}");
    assert_eq!(step(&w, "clone")["state"], "done", "{w}");
    assert_eq!(step(&w, "onCreateCommand")["state"], "failed", "{w}");
    let (_, shown, _) = c.berth(&c.admin_token, &["get", "plain"]).await;
    assert!(!shown.contains("Prebuild:"), "{shown}");

    // A prebuild that is not on the workspace's node (deleted from its
    // containerd here, as a node that lost it): cloned, and said so.
    let key = c
        .get(&format!("/v1/prebuilds?repo={url}"))
        .await
        .1
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["state"] == "ready")
        .map(|p| p["key"].as_str().unwrap().to_string())
        .unwrap();
    let (code, out, err) = c.berth(&c.admin_token, &["delete", "moved"]).await;
    assert_eq!(code, 0, "{out}{err}");
    std::fs::remove_file(layer(&c, &key)).unwrap();
    let (code, out, err) = c
        .berth(
            &c.admin_token,
            &["create", "missing", "--repo", &url, "--branch", "main"],
        )
        .await;
    assert_eq!(code, 0, "{out}{err}");
    let w = get(&c, "missing").await;
    assert_eq!(w["init"]["prebuild"]["outcome"], "missing", "{w}");
    assert_eq!(step(&w, "clone")["state"], "done", "{w}");
    assert_eq!(step(&w, "onCreateCommand")["state"], "done", "{w}");
    let (_, shown, _) = c.berth(&c.admin_token, &["get", "missing"]).await;
    assert!(shown.contains("Prebuild:   none"), "{shown}");
    // The coordinator counts the builds by outcome (docs/coordinator.md,
    // "Metrics"), as many failed as the API shows.
    let (_, metrics) = c.get("/metrics").await;
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    let count = |series: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let (_, all) = c.get("/v1/prebuilds").await;
    let failed = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["state"] == "failed")
        .count() as f64;
    let ready = count("berth_prebuilds_total{outcome=\"ready\"}");
    assert!(ready >= 1.0, "{metrics}");
    assert_eq!(
        count("berth_prebuilds_total{outcome=\"failed\"}"),
        failed,
        "{all}\n{metrics}"
    );
    assert_eq!(
        count("berth_prebuild_duration_seconds_count"),
        ready + failed,
        "{metrics}"
    );
    for name in ["plain", "missing"] {
        let (code, _, err) = c.berth(&c.admin_token, &["delete", name]).await;
        assert_eq!(code, 0, "{err}");
    }
    drop(git);
    c.finish().await;
}

const SECRET: &str = "a-webhook-secret-of-the-repo";

use berth_tests::git::webhook as hook;

fn github_sign(body: &str) -> String {
    berth_tests::git::github_signature(SECRET, body)
}

async fn wait_prebuild(c: &Cluster, id: &str) -> Value {
    for _ in 0..600 {
        let (s, p) = c.get(&format!("/v1/prebuilds/{id}")).await;
        assert_eq!(s, 200, "{p}");
        if !matches!(p["state"].as_str(), Some("queued" | "building")) {
            return p;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("prebuild {id} did not finish\n{}", c.coordinator_log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushes_build_prebuilds_old_ones_expire_and_the_cache_keeps_its_budget() {
    let (mut c, git, dir) = berth_tests::git::repo_cluster().await;
    // The node's cache holds images and prebuild layers: what the image
    // takes (it counts: the control) plus 10 MiB.
    let image = format!("{}/dev:latest", c.registry.addr);
    let pulled = agent(&c)
        .await
        .call(Command::Pull(pb::PullRequest {
            image: image.clone(),
            auth: None,
        }))
        .await;
    assert!(pulled.is_ok(), "{pulled:?}");
    let report = cache(&c, false).await;
    let image_bytes: u64 = report
        .entries
        .iter()
        .filter(|e| e.key == format!("image:{image}"))
        .map(|e| e.bytes)
        .sum();
    assert!(image_bytes > 10 << 20, "{report:?}");
    let mut agent_cfg = std::fs::read_to_string(&c.nodes[0].config).unwrap();
    agent_cfg.push_str(&format!(
        "[cache]\nmax_bytes = {}\n",
        image_bytes + 10485760
    ));
    std::fs::write(&c.nodes[0].config, agent_cfg).unwrap();
    c.nodes[0].kill_agent();
    c.nodes[0].start_agent(None);
    let config = devcontainer(&c.registry.addr, "echo onCreate >> steps.log");
    let url = git.repo("hooked", &[(".devcontainer/devcontainer.json", &config)]);
    // The repository's pushes to main start prebuilds; one is kept.
    let cfg_path = dir.path().join("coordinator.toml");
    let mut cfg = std::fs::read_to_string(&cfg_path).unwrap();
    cfg.push_str(&format!(
        "\n[prebuilds]\nkeep = 1\n\n[[prebuilds.repos]]\nurl = \"{url}\"\nbranches = [\"main\"]\nwebhook_secret = \"{SECRET}\"\n"
    ));
    std::fs::write(&cfg_path, cfg).unwrap();
    c.kill_coordinator();
    c.start_coordinator();

    let c1 = git.commit("hooked", "main", &[("one.txt", "1\n")]);
    let push = |branch: &str, commit: &str| {
        json!({"ref": format!("refs/heads/{branch}"), "after": commit,
               "repository": {"clone_url": url, "html_url": url.trim_end_matches(".git")}})
        .to_string()
    };
    let body = push("main", &c1);
    // A bad signature is refused and changes nothing; so is a good
    // signature of another body, and no signature.
    let forged = github_sign(&push("main", "0123abcd"));
    for sig in ["sha256=00".to_string(), forged, String::new()] {
        let (s, out) = hook(
            &c,
            &[("x-github-event", "push"), ("x-hub-signature-256", &sig)],
            &body,
        )
        .await;
        assert_eq!(s, 401, "{out}");
        assert_eq!(out["code"], "bad_signature", "{out}");
    }
    let (s, out) = hook(&c, &[], &body).await;
    assert_eq!(s, 422, "{out}");
    assert_eq!(out["code"], "invalid_webhook", "{out}");
    // A branch that is not configured, and a ping: ignored.
    let dev = push("dev", &c1);
    let (s, out) = hook(
        &c,
        &[
            ("x-github-event", "push"),
            ("x-hub-signature-256", &github_sign(&dev)),
        ],
        &dev,
    )
    .await;
    assert_eq!(
        (s, out["outcome"].as_str()),
        (200, Some("ignored")),
        "{out}"
    );
    let (s, out) = hook(&c, &[("x-github-event", "ping")], "{}").await;
    assert_eq!(
        (s, out["outcome"].as_str()),
        (200, Some("ignored")),
        "{out}"
    );
    let (_, list) = c.get("/v1/prebuilds").await;
    assert_eq!(list, json!([]), "nothing was started");

    // The signed push to main: a prebuild of the pushed commit.
    let (s, out) = hook(
        &c,
        &[
            ("x-github-event", "push"),
            ("x-hub-signature-256", &github_sign(&body)),
        ],
        &body,
    )
    .await;
    assert_eq!(s, 202, "{out}");
    assert_eq!(out["outcome"], "started", "{out}");
    let first = wait_prebuild(&c, out["prebuild"]["id"].as_str().unwrap()).await;
    assert_eq!(
        first["state"],
        "ready",
        "{first}\n{}",
        c.nodes[0].agent_log()
    );
    assert_eq!(first["commit"], c1.as_str());
    assert_eq!(first["requested_by"], "webhook");
    let key1 = first["key"].as_str().unwrap().to_string();
    // A workspace uses it...
    let (code, out, err) = c
        .berth(
            &c.admin_token,
            &["create", "user", "--repo", &url, "--branch", "main"],
        )
        .await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        get(&c, "user").await["init"]["prebuild"]["key"],
        key1.as_str()
    );

    // ...when the next push (GitLab's format, its token) makes a newer one:
    // the first expires (keep = 1), but stays on the node while used.
    let c2 = git.commit("hooked", "main", &[("two.txt", "2\n")]);
    let gl = json!({"object_kind": "push", "ref": "refs/heads/main", "after": c2,
                    "project": {"git_http_url": url}})
    .to_string();
    let (s, out) = hook(
        &c,
        &[("x-gitlab-event", "Push Hook"), ("x-gitlab-token", "wrong")],
        &gl,
    )
    .await;
    assert_eq!(s, 401, "{out}");
    let (s, out) = hook(
        &c,
        &[("x-gitlab-event", "Push Hook"), ("x-gitlab-token", SECRET)],
        &gl,
    )
    .await;
    assert_eq!(s, 202, "{out}");
    let second = wait_prebuild(&c, out["prebuild"]["id"].as_str().unwrap()).await;
    assert_eq!(second["state"], "ready", "{second}");
    assert_eq!(second["commit"], c2.as_str());
    let key2 = second["key"].as_str().unwrap().to_string();
    let (_, first_now) = c
        .get(&format!("/v1/prebuilds/{}", first["id"].as_str().unwrap()))
        .await;
    assert_eq!(first_now["state"], "expired", "{first_now}");
    assert!(held(&c, &key1), "in use: kept");
    assert!(held(&c, &key2));
    let (code, _, err) = c.berth(&c.admin_token, &["delete", "user"]).await;
    assert_eq!(code, 0, "{err}");
    for _ in 0..100 {
        if !held(&c, &key1) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        !held(&c, &key1),
        "the expired prebuild goes with its last workspace"
    );

    // The cache's budget (10 MiB): layers of 4 MiB each. The least
    // recently used go first, never one a workspace uses.
    let blob = "head -c 4194304 /dev/urandom > blob";
    let mut keys = Vec::new();
    for name in ["r2", "r3", "r4"] {
        let u = git.repo(
            name,
            &[(
                ".devcontainer/devcontainer.json",
                &devcontainer(&c.registry.addr, blob),
            )],
        );
        let (code, p) = prebuild(&c, &u, &[]).await;
        assert_eq!(code, 0, "{p}");
        keys.push(p["key"].as_str().unwrap().to_string());
        if name == "r2" {
            let (code, out, err) = c
                .berth(&c.admin_token, &["create", "keep", "--repo", &u])
                .await;
            assert_eq!(code, 0, "{out}{err}");
        }
    }
    // r4 made the layers 12.6 MiB: key2 (least recently used) and r3 went;
    // r2 is older than r3 but in use. The image, in use, stayed.
    assert!(!held(&c, &key2), "{:?}", layers(&c));
    assert!(held(&c, &keys[0]), "in use: kept {:?}", layers(&c));
    assert!(!held(&c, &keys[1]), "{:?}", layers(&c));
    assert!(held(&c, &keys[2]), "{:?}", layers(&c));
    assert_eq!(images(&c), vec![image.clone()]);
    let (code, _, err) = c.berth(&c.admin_token, &["delete", "keep"]).await;
    assert_eq!(code, 0, "{err}");

    // Images go like layers once idle: with no grace after a use and a
    // 10 MiB budget, r2's layer and then the image (least recently used
    // first) go; r4's layer then fits and stays.
    let cfg = std::fs::read_to_string(&c.nodes[0].config).unwrap();
    let cfg = cfg.replace(
        &format!("max_bytes = {}", image_bytes + 10485760),
        "max_bytes = 10485760\nimage_min_idle_seconds = 0",
    );
    std::fs::write(&c.nodes[0].config, cfg).unwrap();
    c.nodes[0].kill_agent();
    c.nodes[0].start_agent(None);
    let report = cache(&c, true).await;
    assert_eq!(
        report.evicted,
        [keys[0].clone(), format!("image:{image}")],
        "{report:?}"
    );
    assert!(held(&c, &keys[2]), "{:?}", layers(&c));
    assert!(images(&c).is_empty(), "{:?}", images(&c));
    // The coordinator learns it from the heartbeat.
    let mut listed = Value::Null;
    for _ in 0..100 {
        listed = c.get("/v1/nodes").await.1[0]["cached_images"].clone();
        if listed == json!([]) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(listed, json!([]));
    // A workspace of it pulls it again, and while it is there the image
    // stays, over the budget.
    let (code, out, err) = c
        .berth(&c.admin_token, &["create", "again", "--image", &image])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    let report = cache(&c, true).await;
    assert!(report.evicted.is_empty(), "{report:?}");
    assert!(report.used_bytes > report.budget_bytes, "{report:?}");
    assert_eq!(images(&c), vec![image.clone()]);
    let (code, _, err) = c.berth(&c.admin_token, &["delete", "again"]).await;
    assert_eq!(code, 0, "{err}");
    drop(git);
    c.finish().await;
}
