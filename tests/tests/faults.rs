//! TEST-PLAN scenarios 1, 2 and 3: the agent and containerd die at the worst
//! moments, and workspaces neither stop, restart nor leak.

use berth_agent::failpoint::POINTS;
use berth_proto::agent as pb;
use berth_tests::{assert_clean, Node, NodeOptions};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Scenario 1: `kill -9` the agent 20 times in a row while workspaces run.
#[tokio::test(flavor = "multi_thread")]
async fn agent_killed_in_a_loop_never_touches_workspaces() {
    let mut node = Node::new(NodeOptions::default());
    node.start_agent().await;
    let baseline = berth_tests::clean::nft_rules(&node.nft_table);
    let names = ["k1", "k2", "k3"];
    let mut pids = HashMap::new();
    for n in names {
        let st = node.create(node.spec(n)).await.unwrap();
        pids.insert(n, st.pid);
        assert_eq!(
            node.sh(n, &format!("echo {n} > /workspace/mark")).await.0,
            0
        );
    }
    let mut slowest = Duration::ZERO;
    for round in 0..20 {
        node.kill_agent();
        let t = Instant::now();
        node.start_agent().await;
        let adopted = berth_tests::eventually(Duration::from_secs(5), || async {
            let list = node.list().await;
            let all = list.len() == names.len()
                && list.iter().all(|s| {
                    s.state == pb::State::Running as i32
                        && pids.get(s.name.as_str()) == Some(&s.pid)
                });
            all.then_some(())
        })
        .await;
        assert!(
            adopted.is_some(),
            "round {round}: workspaces not re-adopted unchanged within 5 s: {:?}",
            node.list().await
        );
        slowest = slowest.max(t.elapsed());
    }
    eprintln!("slowest re-adoption over 20 kills: {slowest:?}");
    assert!(slowest < Duration::from_secs(5));
    let mut containers = node.containerd.ctr_list(&["containers", "ls", "-q"]);
    containers.sort();
    assert_eq!(containers, names, "exactly one container per workspace");
    for n in names {
        assert_eq!(
            node.sh(n, "cat /workspace/mark").await.1,
            format!("{n}\n"),
            "volume intact"
        );
        node.delete(n).await.unwrap();
    }
    assert_clean(&node, &baseline);
}

/// Scenario 2: `kill -9` at each step of create, stop and delete.
#[tokio::test(flavor = "multi_thread")]
async fn agent_killed_at_every_step_converges_without_leaks() {
    let mut node = Node::new(NodeOptions::default());
    node.start_agent().await;
    let baseline = berth_tests::clean::nft_rules(&node.nft_table);
    // Pull once so every round exercises the workspace steps, not the registry.
    node.call(pb::request::Command::Pull(pb::PullRequest {
        image: node.tiny(),
        auth: None,
    }))
    .await
    .unwrap();
    for (i, point) in POINTS.iter().enumerate() {
        let name = format!("fp{i}");
        let (op, _) = point.split_once(':').unwrap();
        if op != "create" {
            node.create(node.spec(&name)).await.unwrap();
        }
        node.kill_agent();
        node.start_agent_with(&[("BERTH_FAILPOINT", point)]).await;
        let res = match op {
            "create" => node.create(node.spec(&name)).await,
            "stop" => node.stop(&name).await,
            _ => node.delete(&name).await,
        };
        assert!(
            res.is_err(),
            "{point}: the agent should have died, got {res:?}"
        );
        assert!(
            node.wait_agent_exit(Duration::from_secs(5)),
            "{point}: agent still alive"
        );
        node.start_agent().await;

        // Exactly one or zero containers, and a state that matches it.
        let containers = node.containerd.ctr_list(&["containers", "ls", "-q"]);
        match node.status(&name).await {
            Ok(st) => {
                assert_eq!(
                    containers,
                    vec![name.clone()],
                    "{point}: one container for a known workspace"
                );
                assert_ne!(
                    op, "delete",
                    "{point}: an interrupted delete is finished on restart"
                );
                // It is whole: it (re)starts and runs commands.
                let st = if st.state == pb::State::Running as i32 {
                    st
                } else {
                    node.start(&name).await.unwrap()
                };
                assert_eq!(st.state, pb::State::Running as i32, "{point}");
                assert_eq!(node.sh(&name, "echo ok").await.1, "ok\n", "{point}");
                node.delete(&name).await.unwrap();
            }
            Err(e) => {
                assert_eq!(e.code(), Some("not_found"), "{point}: {e}");
                assert!(
                    containers.is_empty(),
                    "{point}: containers left: {containers:?}"
                );
            }
        }
        assert_clean(&node, &baseline);
    }
}

/// Scenario 3: restart containerd and kill a workspace process while it is down.
#[tokio::test(flavor = "multi_thread")]
async fn containerd_restart_keeps_workspaces_and_reports_exits() {
    let mut node = Node::new(NodeOptions::default());
    node.start_agent().await;
    let baseline = berth_tests::clean::nft_rules(&node.nft_table);
    let a = node.create(node.spec("ca")).await.unwrap();
    let b = node.create(node.spec("cb")).await.unwrap();

    node.containerd.kill();
    assert!(
        node.status("ca").await.is_err(),
        "containerd is really down"
    );
    // The workspace's init dies while nobody is there to see it.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(a.pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    node.containerd.restart();

    let reported = berth_tests::eventually(Duration::from_secs(10), || async {
        let s = node.status("ca").await.ok()?;
        (s.state == pb::State::Stopped as i32).then_some(s)
    })
    .await
    .expect("the exit is reported once containerd is back");
    assert_eq!(reported.exit_code, 137, "killed by SIGKILL");
    let b_now = node.status("cb").await.unwrap();
    assert_eq!(
        (b_now.state, b_now.pid),
        (pb::State::Running as i32, b.pid),
        "the other workspace kept running"
    );

    // The agent (never restarted) follows containerd's events again: an exit
    // now reaches its record through the event stream, not through a query.
    let record = node.state_dir.join("workspaces/cb.json");
    let last_exit = || {
        let r: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
        r["last_exit"].as_i64()
    };
    assert_eq!(last_exit(), None);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(b.pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let noted = berth_tests::eventually(Duration::from_secs(10), || async {
        last_exit().filter(|c| *c == 137)
    })
    .await;
    assert!(
        noted.is_some(),
        "exit event recorded after containerd's restart:\n{}",
        node.agent_log()
    );
    for n in ["ca", "cb"] {
        assert_eq!(
            node.start(n).await.unwrap().state,
            pb::State::Running as i32,
            "{n} starts again"
        );
    }
    for n in ["ca", "cb"] {
        node.delete(n).await.unwrap();
    }
    assert_clean(&node, &baseline);
}
