//! Secrets (docs/admin.md, "Secrets") on the real components, as a user
//! and an attacker would try them: a user's secrets reach their workspace
//! as an environment variable (every process Berth starts there) and as a
//! read-only file under /run/secrets; a file's rotation shows at once, an
//! environment variable's at the next start; a team's secrets reach the
//! team's workspaces and not its members' own, nor another user's; and no
//! value is found anywhere else: not in the store, a log, the event
//! stream, the audit log, a backup, the node's disk (volumes, containerd,
//! the agent's state) or a prebuild that was not given it. Each search is
//! shown to find what it looks for where the value is meant to be.

use berth_tests::Cluster;
use serde_json::json;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const T: Duration = Duration::from_secs(120);

/// A value no one else would write.
fn marker(what: &str) -> String {
    format!("{what}-{:032x}", rand::random::<u128>())
}

/// The files under `path` holding `needle` (grep -r; `skip` names
/// directories not to enter).
fn files_with(path: &Path, needle: &str, skip: &[&str]) -> Vec<String> {
    let mut cmd = std::process::Command::new("grep");
    // -D skip: FIFOs (an exec's stdio) and sockets are not read.
    cmd.args(["-r", "-a", "-l", "-D", "skip", "-F", needle]);
    for d in skip {
        cmd.arg(format!("--exclude-dir={d}"));
    }
    let out = cmd.arg(path).output().expect("grep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// `berth exec` as `token`: (exit code, stdout).
async fn exec(c: &Cluster, token: &str, ws: &str, script: &str) -> (i32, String) {
    let (code, out, err) = c
        .berth(token, &["exec", ws, "--", "sh", "-c", script])
        .await;
    (code, format!("{out}{err}"))
}

/// The whole audit log, as JSON text.
async fn audit_log(c: &Cluster) -> String {
    let mut all = String::new();
    let mut after = 0;
    loop {
        let (s, page) = c
            .get(&format!("/v1/admin/audit?limit=1000&after={after}"))
            .await;
        assert_eq!(s, 200, "{page}");
        all.push_str(&page["entries"].to_string());
        match page["next_after"].as_i64() {
            Some(n) => after = n,
            None => return all,
        }
    }
}

/// Collects the event stream `token` sees until dropped.
fn collect_events(c: &Cluster, token: &str) -> (Arc<Mutex<String>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(String::new()));
    let into = seen.clone();
    let url = format!("{}/v1/events", c.api);
    let token = token.to_string();
    let task = tokio::spawn(async move {
        let Ok(mut r) = reqwest::Client::new()
            .get(url)
            .bearer_auth(token)
            .send()
            .await
        else {
            return;
        };
        while let Ok(Some(chunk)) = r.chunk().await {
            into.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&chunk));
        }
    });
    (seen, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_their_workspaces_and_nowhere_else() {
    let c = berth_tests::backups::cluster(600.0).await;
    let alice = c.member_token("alice").await;
    let bob = c.member_token("bob").await;
    let (events, events_task) = collect_events(&c, &alice);
    let token = marker("gh");
    let creds = marker("creds");
    let team_value = marker("team");

    // Set through the CLI: an environment variable from standard input,
    // a file from a file.
    let (code, out, err) = c
        .berth_with_input(
            &alice,
            &["secret", "set", "GH_TOKEN"],
            Some(format!("{token}\n").as_bytes()),
        )
        .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("GH_TOKEN: version 1 (env)"), "{out}");
    let file = c.dir.join("creds.json");
    std::fs::write(&file, &creds).unwrap();
    let (code, out, err) = c
        .berth(
            &alice,
            &[
                "secret",
                "set",
                "CLOUD_CREDS",
                "--file",
                &file.display().to_string(),
            ],
        )
        .await;
    assert_eq!(code, 0, "{out}{err}");
    std::fs::remove_file(&file).unwrap();
    let (code, out, _) = c.berth(&alice, &["secret", "list"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("CLOUD_CREDS") && out.contains("GH_TOKEN"),
        "{out}"
    );
    assert!(!out.contains(&token) && !out.contains(&creds), "{out}");
    let (s, list) = c.get_as("/v1/secrets", &alice).await;
    assert_eq!(s, 200);
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    assert!(!list.to_string().contains(&token), "{list}");
    // Bad input: a clear error, nothing stored.
    for (name, body, code) in [
        ("9X", json!({"value": "v"}), "invalid_secret"),
        ("BERTH_X", json!({"value": "v"}), "invalid_secret"),
        ("X", json!({"value": "a\u{0}b"}), "invalid_secret"),
        (
            "X",
            json!({"value": "v", "value_base64": "dg=="}),
            "invalid_secret",
        ),
        (
            "X",
            json!({"value": "x".repeat(65 << 10), "kind": "file"}),
            "invalid_secret",
        ),
    ] {
        let (s, e) = c
            .send_json_as("PUT", &format!("/v1/secrets/{name}"), body, &alice)
            .await;
        assert_eq!((s, e["code"].as_str()), (422, Some(code)), "{name}: {e}");
    }
    let (_, list) = c.get_as("/v1/secrets", &alice).await;
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");

    // A team secret, set by the team's admin (alice); bob is a member.
    let (code, _, err) = c.berth(&c.admin_token, &["team", "create", "ops"]).await;
    assert_eq!(code, 0, "{err}");
    for (user, role) in [("alice", "admin"), ("bob", "member")] {
        let (code, _, err) = c
            .berth(
                &c.admin_token,
                &["team", "set", "ops", user, "--role", role],
            )
            .await;
        assert_eq!(code, 0, "{err}");
    }
    let (s, e) = c
        .send_json_as(
            "PUT",
            "/v1/teams/ops/secrets/TEAM_KEY",
            json!({"value": "x"}),
            &bob,
        )
        .await;
    assert_eq!(s, 403, "a member does not change the team's secrets: {e}");
    let (s, e) = c
        .send_json_as(
            "PUT",
            "/v1/teams/ops/secrets/TEAM_KEY",
            json!({"value": team_value}),
            &alice,
        )
        .await;
    assert_eq!(s, 200, "{e}");
    let (s, list) = c.get_as("/v1/teams/ops/secrets", &bob).await;
    assert_eq!(
        (s, list[0]["name"].as_str()),
        (200, Some("TEAM_KEY")),
        "{list}"
    );

    // Alice's own workspace, bob's, and one of the team's (bob's).
    let body = |name: &str, team: Option<&str>| {
        let mut b = json!({"name": name, "image": c.tiny(), "cpu_millis": 200,
            "memory_bytes": 64u64 << 20, "disk_bytes": 32u64 << 20, "pids": 64});
        if let Some(t) = team {
            b["team"] = json!(t);
        }
        b
    };
    for (name, team, who) in [
        ("mine", None, &alice),
        ("his", None, &bob),
        ("ours", Some("ops"), &bob),
    ] {
        let (s, w) = c.post_as("/v1/workspaces", body(name, team), who).await;
        assert_eq!(s, 201, "{w}");
        c.wait_state_as(name, "running", T, who).await;
    }

    // Alice's workspace: the environment variable in `berth exec`, the file
    // read-only and hers alone.
    let (code, out) = exec(&c, &alice, "mine", "echo \"$GH_TOKEN\"; cat /run/secrets/CLOUD_CREDS; echo; stat -c '%u %a' /run/secrets/CLOUD_CREDS; echo \"${TEAM_KEY-no-team-key}\"").await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [token.as_str(), creds.as_str(), "1000 400", "no-team-key"],
        "{out}"
    );
    // Not writable, not even by the workspace's root; the control write
    // beside it (in /tmp) works.
    let (code, out) = exec(
        &c,
        &alice,
        "mine",
        "echo x > /tmp/ok && cat /tmp/ok && (echo stolen > /run/secrets/CLOUD_CREDS) 2>&1; (touch /run/secrets/NEW) 2>&1; true",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("x\n") && out.contains("Read-only file system"),
        "{out}"
    );
    let (s, root) = c
        .post_as(
            "/v1/workspaces/mine/exec",
            json!({"argv": ["sh", "-c", "echo stolen > /run/secrets/CLOUD_CREDS"], "user": "root"}),
            &alice,
        )
        .await;
    assert_eq!(s, 200, "{root}");
    assert_ne!(root["exit_code"], 0, "root wrote a secret file: {root}");
    // Bob's workspace and the team's see none of alice's; the team's sees
    // the team's secret, bob's own does not.
    let (code, out) = exec(
        &c,
        &bob,
        "his",
        "echo \"${GH_TOKEN-}${TEAM_KEY-}\"; ls -A /run/secrets | wc -l",
    )
    .await;
    assert_eq!((code, out.trim()), (0, "0"), "{out}");
    let (code, out) = exec(
        &c,
        &bob,
        "ours",
        "echo \"${GH_TOKEN-}${TEAM_KEY-}\"; ls -A /run/secrets | wc -l",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [team_value.as_str(), "0"],
        "{out}"
    );

    // Rotation: the file changes at once in the running workspace; the
    // environment variable at its next start.
    let creds2 = marker("creds2");
    let token2 = marker("gh2");
    let (s, r) = c
        .send_json_as(
            "PUT",
            "/v1/secrets/CLOUD_CREDS",
            json!({"value": creds2, "kind": "file"}),
            &alice,
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["updated"], json!(["mine"]), "{r}");
    assert_eq!(r["secret"]["version"], 2, "{r}");
    let (code, out) = exec(&c, &alice, "mine", "cat /run/secrets/CLOUD_CREDS").await;
    assert_eq!((code, out.as_str()), (0, creds2.as_str()));
    // A start without secrets (the node's own `ctl start`, an older
    // coordinator) leaves a running workspace's as they are.
    let (_, w) = c.get_as("/v1/workspaces/mine", &alice).await;
    let mut agent = berth_agent::client::Client::connect(&c.nodes[0].socket)
        .await
        .unwrap();
    let started = agent
        .call(berth_proto::agent::request::Command::Start(
            berth_proto::agent::StartRequest {
                name: w["id"].as_str().unwrap().to_string(),
                generation: 0,
                secrets: None,
            },
        ))
        .await;
    assert!(started.is_ok(), "{started:?}");
    let (code, out) = exec(
        &c,
        &alice,
        "mine",
        "cat /run/secrets/CLOUD_CREDS; echo; echo \"$GH_TOKEN\"",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [creds2.as_str(), token.as_str()]
    );
    let (code, out, err) = c
        .berth_with_input(
            &alice,
            &["secret", "set", "GH_TOKEN"],
            Some(token2.as_bytes()),
        )
        .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("changes at the next start of: mine"), "{out}");
    let (_, out) = exec(&c, &alice, "mine", "echo \"$GH_TOKEN\"").await;
    assert_eq!(
        out.trim(),
        token,
        "an environment variable waits for the next start"
    );
    // While it runs, the values are on the node's secrets tmpfs (the
    // control for the searches below), and nowhere else on its disk.
    let node = &c.nodes[0];
    let tmpfs = node.state_dir.join("secrets");
    assert_eq!(
        files_with(&tmpfs, &creds2, &[]).len(),
        1,
        "the control is found"
    );
    assert_eq!(
        files_with(&tmpfs, &token, &[]).len(),
        1,
        "the control is found"
    );
    let (code, _, err) = c.berth(&alice, &["stop", "mine"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        files_with(&tmpfs, &creds2, &[]).is_empty(),
        "a stop wipes them"
    );
    let (code, _, err) = c.berth(&alice, &["start", "mine"]).await;
    assert_eq!(code, 0, "{err}");
    let (code, out) = exec(
        &c,
        &alice,
        "mine",
        "echo \"$GH_TOKEN\"; cat /run/secrets/CLOUD_CREDS",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [token2.as_str(), creds2.as_str()]
    );
    // A removed file secret leaves the running workspace at once.
    let (s, r) = c.delete_as("/v1/secrets/CLOUD_CREDS", &alice).await;
    assert_eq!((s, &r["updated"]), (200, &json!(["mine"])), "{r}");
    let (_, out) = exec(&c, &alice, "mine", "ls -A /run/secrets | wc -l").await;
    assert_eq!(out.trim(), "0");
    let (s, _) = c.delete_as("/v1/secrets/CLOUD_CREDS", &alice).await;
    assert_eq!(s, 404);
    let (s, r) = c
        .send_json_as(
            "PUT",
            "/v1/secrets/CLOUD_CREDS",
            json!({"value": creds2, "kind": "file"}),
            &alice,
        )
        .await;
    assert_eq!(s, 200, "{r}");

    // A backup of the workspace (its volume and root filesystem), restored
    // with stock restic: the values are not in it; what the workspace
    // wrote is (the control).
    let (code, _) = exec(
        &c,
        &alice,
        "mine",
        "echo written-by-alice > /workspace/note",
    )
    .await;
    assert_eq!(code, 0);
    let (s, b) = c
        .post_as("/v1/workspaces/mine/backups", json!({}), &alice)
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, w) = c.get_as("/v1/workspaces/mine", &alice).await;
    let id = w["id"].as_str().unwrap().to_string();
    let restored =
        berth_tests::backups::restore_with_stock_restic(&c, &id, b["id"].as_str().unwrap()).await;
    assert_eq!(
        files_with(&restored, "written-by-alice", &[]).len(),
        1,
        "the control is found"
    );

    // Nothing holds a value but the node's secrets tmpfs: not the store,
    // the coordinator's or agents' logs, a volume, containerd's state, the
    // agent's records, a backup (its repository is encrypted: the restored
    // copy is searched); not the event stream or the audit log either.
    drop(events_task);
    let audit = audit_log(&c).await;
    assert!(
        audit.contains("/v1/secrets/{name}"),
        "the changes are audited"
    );
    let events = events.lock().unwrap().clone();
    assert!(events.contains("\"mine\""), "the stream was read: {events}");
    // The CLI sends values in base64: that form is looked for too.
    use base64::Engine;
    let values = [&token, &token2, &creds, &creds2, &team_value];
    let encoded = values.map(|v| base64::engine::general_purpose::STANDARD.encode(v));
    for value in values
        .iter()
        .map(|v| v.as_str())
        .chain(encoded.iter().map(|v| v.as_str()))
    {
        let found = files_with(&c.dir, value, &["secrets"]);
        assert!(found.is_empty(), "a secret is in {found:?}");
        assert!(!audit.contains(value), "a secret is in the audit log");
        assert!(!events.contains(value), "a secret is in the events");
    }
    // Deleting the workspace removes its secrets from the node.
    let (s, w) = c.delete_as("/v1/workspaces/mine", &alice).await;
    assert_eq!(s, 202, "{w}");
    let deadline = std::time::Instant::now() + T;
    while c.get_as("/v1/workspaces/mine", &alice).await.0 != 404 {
        assert!(std::time::Instant::now() < deadline, "not deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!tmpfs.join(&id).exists(), "its secrets left the node");
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prebuild_sees_only_the_secrets_marked_for_prebuilds() {
    let (c, git, _dir) = berth_tests::git::repo_cluster().await;
    let pre = marker("pre");
    let pre_file = marker("prefile");
    let private = marker("private");
    let private_file = marker("privatefile");
    for (name, value, kind, prebuild) in [
        ("PRE", &pre, "env", true),
        ("PRE_FILE", &pre_file, "file", true),
        ("PRIVATE", &private, "env", false),
        ("PRIVATE_FILE", &private_file, "file", false),
    ] {
        let (s, r) = c
            .send_json_as(
                "PUT",
                &format!("/v1/secrets/{name}"),
                json!({"value": value, "kind": kind, "prebuild": prebuild}),
                &c.admin_token,
            )
            .await;
        assert_eq!(s, 200, "{r}");
    }
    // The build writes what it sees into the layer; the workspace's
    // postCreateCommand (not run by prebuilds) writes what it sees.
    let config = json!({
        "image": format!("{}/dev:latest", c.registry.addr),
        "onCreateCommand": "echo \"env:${PRE-}:${PRIVATE-}\" > built.txt; cat /run/secrets/* >> built.txt 2>/dev/null; true",
        "postCreateCommand": "echo \"env:${PRE-}:${PRIVATE-}\" > created.txt; cat /run/secrets/PRIVATE_FILE >> created.txt",
    })
    .to_string();
    let url = git.repo(
        "app",
        &[
            (".devcontainer/devcontainer.json", &config),
            ("README.md", "app\n"),
        ],
    );
    let (code, out, err) = c
        .berth(
            &c.admin_token,
            &["--json", "prebuild", "run", "--repo", &url],
        )
        .await;
    assert_eq!(code, 0, "{out}{err}");
    let p: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(p["state"], "ready", "{p}");
    let key = p["key"].as_str().unwrap().to_string();

    let (code, out, err) = c
        .berth(&c.admin_token, &["create", "w", "--repo", &url])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    let (s, w) = c.get("/v1/workspaces/w").await;
    assert_eq!(w["init"]["prebuild"]["outcome"], "used", "{s} {w}");
    let built = c.exec_ok("w", "cat /workspace/app/built.txt").await;
    assert_eq!(
        built["stdout"].as_str().unwrap(),
        format!("env:{pre}:\n{pre_file}"),
        "the build saw exactly the prebuild's secrets"
    );
    let created = c.exec_ok("w", "cat /workspace/app/created.txt").await;
    assert_eq!(
        created["stdout"].as_str().unwrap(),
        format!("env:{pre}:{private}\n{private_file}"),
        "the workspace's own lifecycle commands see all its secrets"
    );
    // In the layer on the node: what the build was given (the control),
    // not the others.
    let layer = c.nodes[0]
        .state_dir
        .join("prebuilds")
        .join(format!("{key}.ext4"));
    assert!(layer.is_file(), "{}", layer.display());
    assert_eq!(
        files_with(&layer, &pre, &[]).len(),
        1,
        "the control is found"
    );
    for value in [&private, &private_file] {
        assert!(
            files_with(&layer, value, &[]).is_empty(),
            "a secret is in the prebuild"
        );
    }
    let (code, _, err) = c.berth(&c.admin_token, &["delete", "w"]).await;
    assert_eq!(code, 0, "{err}");
    drop(git);
    c.finish().await;
}
