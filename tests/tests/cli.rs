//! The `berth` CLI against a real coordinator and agent (tests/src/cluster.rs):
//! every subcommand, its exit status, tables and --json, and its refusals.

use berth_tests::{Cluster, ClusterOptions};
use serde_json::Value;

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_drives_workspaces_nodes_and_tokens() {
    let c = Cluster::start(ClusterOptions {
        agents: 1,
        ..Default::default()
    })
    .await;
    let admin = c.admin_token.clone();
    let tiny = c.tiny();

    // Who am I; refusals without or with a wrong token.
    let (code, out, _) = c.berth(&admin, &["whoami"]).await;
    assert_eq!((code, out.as_str()), (0, "admin (admin)\n"));
    let (code, _, err) = c.berth("", &["list"]).await;
    assert_eq!(code, 1);
    assert!(err.starts_with("berth: no_token:"), "{err}");
    let (code, _, err) = c.berth("bt_nope_nope", &["list"]).await;
    assert_eq!(code, 1);
    assert!(err.starts_with("berth: unauthorized:"), "{err}");

    // Create waits, printing each state it passes, and ends running.
    let (code, out, err) = c
        .berth(
            &admin,
            &[
                "create",
                "demo",
                "--image",
                &tiny,
                "--cpu",
                "0.2",
                "--memory",
                "64M",
                "--disk",
                "32M",
                "--pids",
                "64",
                "-e",
                "GREETING=hi",
            ],
        )
        .await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        err.contains("demo: pending") || err.contains("demo: scheduled"),
        "{err}"
    );
    assert!(err.contains("demo: running"), "{err}");
    // The node had no image: the pull's progress was shown.
    assert!(
        err.contains(&format!("pulling image {tiny}: 100%")),
        "{err}"
    );
    assert!(
        out.contains("State:      running (wanted running)"),
        "{out}"
    );
    assert!(
        out.contains("0.2 CPU, 64M memory, 32M disk, 64 pids"),
        "{out}"
    );

    // List: a table, and the same in JSON.
    let (code, out, _) = c.berth(&admin, &["list"]).await;
    assert_eq!(code, 0);
    let mut lines = out.lines();
    assert!(lines.next().unwrap().starts_with("NAME"), "{out}");
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..3],
        &["demo", "running", c.nodes[0].id.as_str()],
        "{out}"
    );
    let (_, out, _) = c
        .berth(&admin, &["list", "--json", "--state", "running"])
        .await;
    let list = json(&out);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["env"]["GREETING"], "hi");

    // Exec: output on stdout/stderr, the command's exit status, stdin on -i.
    let (code, out, err) = c
        .berth(
            &admin,
            &[
                "exec",
                "demo",
                "--",
                "sh",
                "-c",
                "echo $GREETING; echo oops >&2; exit 3",
            ],
        )
        .await;
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (3, "hi\n", "oops\n"),
        "workspace env applies"
    );
    let (code, out, _) = c
        .berth(
            &admin,
            &[
                "exec", "demo", "-e", "X=y", "--json", "--", "sh", "-c", "echo $X",
            ],
        )
        .await;
    assert_eq!(code, 0);
    assert_eq!(json(&out)["stdout"], "y\n");
    // Output streams whole, past the JSON answer's 1 MiB cut (3 MB here);
    // --json keeps the bounded answer and says it was cut.
    let big = "head -c 3000000 /dev/zero | tr '\\0' x; echo; echo end >&2; exit 4";
    let (code, out, err) = c
        .berth(&admin, &["exec", "demo", "--", "sh", "-c", big])
        .await;
    assert_eq!((code, err.as_str()), (4, "end\n"));
    assert_eq!(out.len(), 3_000_001);
    assert!(out.bytes().take(3_000_000).all(|b| b == b'x'));
    let (code, out, _) = c
        .berth(&admin, &["exec", "demo", "--json", "--", "sh", "-c", big])
        .await;
    let r = json(&out);
    assert_eq!((code, &r["truncated"]), (4, &serde_json::json!(true)));
    assert_eq!(r["stdout"].as_str().unwrap().len(), 1 << 20);

    // A command past --timeout is killed: exec_timeout, status 1.
    let t = std::time::Instant::now();
    let (code, _, err) = c
        .berth(
            &admin,
            &["exec", "demo", "--timeout", "2s", "--", "sleep", "30"],
        )
        .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.starts_with("berth: exec_timeout:"), "{err}");
    assert!(t.elapsed() < std::time::Duration::from_secs(15));

    // Events: followed while the workspace stops and starts, one JSON line
    // per change, each with its state.
    let mut events = tokio::process::Command::new(berth_tests::cli_bin())
        .args(["events", "--json"])
        .env("HOME", c.dir.join("home"))
        .env("BERTH_URL", &c.api)
        .env("BERTH_TOKEN", &admin)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(events.stdout.take().unwrap()).lines();
    let mut notes = tokio::io::BufReader::new(events.stderr.take().unwrap()).lines();
    let following = tokio::time::timeout(std::time::Duration::from_secs(10), notes.next_line())
        .await
        .expect("the stream opens")
        .unwrap()
        .unwrap_or_default();
    assert!(
        following.contains("following workspace events"),
        "{following}"
    );

    // Stop and start wait for the state; exec on a stopped workspace is a conflict.
    let (code, out, _) = c.berth(&admin, &["stop", "demo", "-q"]).await;
    assert_eq!((code, out.as_str()), (0, "demo: stopped\n"));
    let mut states = Vec::new();
    while !states.iter().any(|s| s == "stopped") {
        let line = tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .expect("events keep coming");
        let ev = json(&line);
        assert_eq!(ev["name"], "demo", "{line}");
        states.push(ev["state"].as_str().unwrap().to_string());
    }
    assert!(states.contains(&"stopping".to_string()), "{states:?}");
    drop(events);
    let (code, _, err) = c.berth(&admin, &["exec", "demo", "--", "true"]).await;
    assert_eq!(code, 1);
    assert!(err.starts_with("berth: not_running:"), "{err}");
    let (code, out, _) = c.berth(&admin, &["start", "demo", "--json", "-q"]).await;
    assert_eq!(code, 0);
    assert_eq!(json(&out)["state"], "running");

    // Bad input: a clear code, status 1, nothing created.
    let (code, _, err) = c
        .berth(&admin, &["create", "Bad_Name", "--image", &tiny, "--json"])
        .await;
    assert_eq!(code, 1);
    assert_eq!(json(&err)["code"], "invalid_name");
    let (code, _, _) = c
        .berth(
            &admin,
            &["create", "x", "--image", &tiny, "--memory", "lots"],
        )
        .await;
    assert_eq!(code, 2, "bad usage is caught before any request");
    let (_, out, _) = c.berth(&admin, &["list", "--json"]).await;
    assert_eq!(json(&out).as_array().unwrap().len(), 1);

    // Nodes: list, get, cordon (nothing new lands), uncordon.
    let node = c.nodes[0].id.clone();
    let (code, out, _) = c.berth(&admin, &["nodes"]).await;
    assert_eq!(code, 0);
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..4], &[node.as_str(), "ready", "-", "1/50"], "{out}");
    assert_eq!(
        row[7], "1",
        "the image demo came from is noted as cached: {out}"
    );
    let (code, out, _) = c.berth(&admin, &["nodes", "cordon", &node, "--json"]).await;
    assert_eq!(code, 0);
    assert_eq!(json(&out)["cordoned"], true);
    let (code, _, err) = c
        .berth(
            &admin,
            &[
                "create",
                "later",
                "--image",
                &tiny,
                "--cpu",
                "0.2",
                "--memory",
                "64M",
                "--disk",
                "32M",
                "--timeout",
                "2s",
            ],
        )
        .await;
    assert_eq!(code, 1);
    assert!(
        err.contains("berth: timeout: workspace later is still pending"),
        "{err}"
    );
    let (code, out, _) = c
        .berth(&admin, &["nodes", "uncordon", &node, "--json"])
        .await;
    assert_eq!(
        (code, json(&out)["cordoned"].clone()),
        (0, Value::Bool(false))
    );
    // Start is idempotent: it waits for the workspace placed after uncordon.
    let (code, _, err) = c.berth(&admin, &["start", "later"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("later: running"), "{err}");
    let (code, _, err) = c.berth(&admin, &["delete", "later", "-q"]).await;
    assert_eq!(code, 0, "{err}");

    // Tokens: a member sees only their own workspaces and no nodes.
    let (code, out, _) = c
        .berth(&admin, &["admin", "token", "create", "--user", "bob"])
        .await;
    assert_eq!(code, 0);
    let bob = out.trim().to_string();
    assert!(bob.starts_with("bt_"), "{bob}");
    let (code, _, err) = c.berth(&bob, &["get", "demo"]).await;
    assert_eq!(code, 1);
    assert!(err.starts_with("berth: not_found:"), "{err}");
    let (code, _, err) = c.berth(&bob, &["nodes"]).await;
    assert_eq!(code, 1);
    assert!(err.starts_with("berth: forbidden:"), "{err}");
    let (code, _, err) = c.berth(&bob, &["admin", "join-token", "create"]).await;
    assert_eq!(code, 1);
    assert!(err.starts_with("berth: forbidden:"), "{err}");
    let (code, out, _) = c.berth(&bob, &["list"]).await;
    assert_eq!((code, out.lines().count()), (0, 1), "header only: {out}");
    // The admin reaches bob's workspaces with --owner, and everyone's with --all.
    let (code, _, err) = c
        .berth(
            &bob,
            &[
                "create",
                "bobs",
                "--image",
                &tiny,
                "--cpu",
                "0.2",
                "--memory",
                "64M",
                "--disk",
                "32M",
                "--no-start",
            ],
        )
        .await;
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = c
        .berth(&admin, &["get", "bobs", "--owner", "bob", "--json"])
        .await;
    assert_eq!(
        (code, json(&out)["state"].clone()),
        (0, Value::from("stopped")),
        "{err}"
    );
    let (_, out, _) = c.berth(&admin, &["list", "--all"]).await;
    assert!(out.starts_with("OWNER"), "{out}");
    assert_eq!(out.lines().count(), 3, "{out}");

    // Join tokens have the documented shape.
    let (code, out, _) = c
        .berth(&admin, &["admin", "join-token", "create", "--ttl", "10m"])
        .await;
    assert_eq!(code, 0);
    assert_eq!(out.trim().split('.').count(), 3, "{out}");
    // Usage mistakes exit 2 with a message: a zero lifetime, no SSH key file.
    let (code, _, err) = c
        .berth(&admin, &["admin", "join-token", "create", "--ttl", "0s"])
        .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("at least 1s"), "{err}");
    let (code, _, err) = c
        .berth(&admin, &["exec", "demo", "--timeout", "0s", "--", "true"])
        .await;
    assert_eq!(code, 2, "{err}");
    // (HOME is the test's own: no ~/.ssh/id_*.pub to default to.)
    let (code, _, err) = c.berth(&admin, &["ssh-key", "add"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.starts_with("berth: usage:"), "{err}");

    // login checks the token and saves it; then no env token is needed.
    let (code, _, err) = c.berth("bt_nope_nope", &["login"]).await;
    assert_eq!(code, 1, "a wrong token is not saved: {err}");
    let (code, out, err) = c.berth(&bob, &["login"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("as bob (member)"), "{out}");
    let (code, out, _) = c.berth("", &["whoami"]).await;
    assert_eq!((code, out.as_str()), (0, "bob (member)\n"));

    // Tiers, activity, one node, and a drain (its running workspace stops).
    let (code, out, _) = c.berth(&admin, &["tiers"]).await;
    assert_eq!(code, 0);
    assert!(out.starts_with("TIER"), "{out}");
    let (_, out, _) = c.berth(&admin, &["tiers", "--json"]).await;
    let names: Vec<String> = json(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["small", "medium", "large"]);
    let (code, out, err) = c.berth(&admin, &["activity", "demo", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(json(&out)["tunnels"].is_array(), "{out}");
    let (code, out, _) = c.berth(&admin, &["nodes", "get", &node, "--json"]).await;
    assert_eq!((code, &json(&out)["id"]), (0, &serde_json::json!(node)));
    let (code, out, _) = c.berth(&admin, &["nodes", "drain", &node, "--json"]).await;
    assert_eq!(code, 0);
    assert_eq!(json(&out)["draining"], true);
    c.wait_state("demo", "stopped", std::time::Duration::from_secs(30))
        .await;
    let (code, _, _) = c.berth(&admin, &["nodes", "uncordon", &node]).await;
    assert_eq!(code, 0);

    // Delete waits until it is gone.
    let (code, out, err) = c.berth(&admin, &["delete", "demo"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "demo: deleted\n");
    assert!(err.contains("demo: deleted"), "{err}");
    let (code, _, err) = c
        .berth(&admin, &["rm", "bobs", "--owner", "bob", "-q"])
        .await;
    assert_eq!(code, 0, "{err}");
    assert!(c.nodes[0].containers().is_empty(), "containers removed");
    c.finish().await;
}
