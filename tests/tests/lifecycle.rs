//! A workspace's life on a real containerd: create, exec, stop, start,
//! delete, with the security defaults checked from inside.

use berth_proto::agent as pb;
use berth_tests::{assert_clean, Node, NodeOptions};

/// Docker's default capabilities without NET_RAW, as a CapEff mask.
const DEFAULT_CAPS_MASK: &str = "00000000a80405fb";

#[tokio::test(flavor = "multi_thread")]
async fn create_exec_stop_start_delete() {
    let mut node = Node::new(NodeOptions::default());
    node.start_agent().await;
    let baseline = berth_tests::clean::nft_rules(&node.nft_table);

    let st = node.create(node.spec("life")).await.expect("create");
    assert_eq!(st.state, pb::State::Running as i32);
    assert!(st.pid > 0);

    // Security defaults, seen from inside.
    let (code, out, _) = node
        .sh(
            "life",
            "id -u; grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; pwd",
        )
        .await;
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_ne!(lines[0], "0", "runs as non-root");
    assert_eq!(lines[0], "1000");
    assert!(
        out.contains(&format!("CapEff:\t{DEFAULT_CAPS_MASK}")),
        "{out}"
    );
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(out.trim_end().ends_with("/workspace"), "{out}");
    // Masked and read-only /proc paths, no raw sockets.
    let (_, out, _) = node.sh("life", "cat /proc/kcore 2>&1 | head -c 20 | wc -c; echo 1 > /proc/sys/kernel/domainname 2>&1 || echo ro").await;
    assert!(out.trim_end().ends_with("ro"), "{out}");
    let (code, _, _) = node.sh("life", "ping -c1 -W1 127.0.0.1").await;
    assert_ne!(code, 0, "no NET_RAW: ping cannot open a raw socket");

    // stdin, stdout, stderr and the exit code travel through exec.
    let req = pb::ExecRequest {
        name: "life".into(),
        argv: vec!["sh".into(), "-c".into(), "cat; echo err >&2; exit 7".into()],
        ..Default::default()
    };
    let out = node.client().await.exec(req, b"from stdin").await.unwrap();
    assert_eq!(
        (out.exit_code, out.stdout.as_slice(), out.stderr.as_slice()),
        (7, &b"from stdin"[..], &b"err\n"[..])
    );

    // A terminal with the size asked for.
    let req = pb::ExecRequest {
        name: "life".into(),
        argv: vec!["stty".into(), "size".into()],
        tty: true,
        rows: 33,
        cols: 101,
        ..Default::default()
    };
    let out = node.client().await.exec(req, b"").await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "33 101");

    // The volume keeps its files across stop/start.
    assert_eq!(node.sh("life", "echo kept > /workspace/file").await.0, 0);
    let stopped = node.stop("life").await.unwrap();
    assert_eq!(stopped.state, pb::State::Stopped as i32);
    assert_eq!(
        stopped.exit_code, 0,
        "the init process exits cleanly on SIGTERM"
    );
    let started = node.start("life").await.unwrap();
    assert_eq!(started.state, pb::State::Running as i32);
    assert_ne!(started.pid, st.pid);
    assert_eq!(node.sh("life", "cat /workspace/file").await.1, "kept\n");

    // Starting a running workspace is a no-op; deleting twice is fine.
    assert_eq!(node.start("life").await.unwrap().pid, started.pid);
    assert_eq!(
        node.delete("life").await.unwrap().state,
        pb::State::Deleted as i32
    );
    assert_eq!(
        node.delete("life").await.unwrap().state,
        pb::State::Deleted as i32
    );
    assert_eq!(
        node.status("life").await.unwrap_err().code(),
        Some("not_found")
    );
    assert_clean(&node, &baseline);
}

#[tokio::test(flavor = "multi_thread")]
async fn pulls_once_and_reuses_layers() {
    let mut node = Node::new(NodeOptions::default());
    node.start_agent().await;
    let pull = || async {
        match node
            .call(pb::request::Command::Pull(pb::PullRequest {
                image: node.tiny(),
                auth: None,
            }))
            .await
            .unwrap()
        {
            pb::response::Result::Pulled(p) => p,
            other => panic!("{other:?}"),
        }
    };
    let first = pull().await;
    assert_eq!(
        (first.layers_fetched, first.layers_present),
        (2, 0),
        "config + one layer fetched"
    );
    assert!(first.digest.starts_with("sha256:"));
    let second = pull().await;
    assert_eq!(
        (
            second.layers_fetched,
            second.layers_present,
            second.bytes_fetched
        ),
        (0, 2, 0)
    );
    assert_eq!(second.digest, first.digest);
}
