//! SSH to workspaces with Debian's OpenSSH client through `berth ssh
//! --stdio` (ProxyCommand, from `berth config-ssh`): OpenSSH's `ssh` → berth
//! → coordinator (HTTP upgrade) → QUIC stream → the agent's SSH server →
//! a process in the workspace. No sshd anywhere; the workspace image is
//! busybox.

use berth_tests::{Cluster, ClusterOptions};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

fn keygen(dir: &Path, name: &str) -> PathBuf {
    let key = dir.join(name);
    berth_tests::openssh::keygen(&key);
    key
}

async fn exec(c: &Cluster, ws: &str, script: &str) -> Value {
    c.exec_ok(ws, script).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_reaches_workspaces_through_berth() {
    let c = Cluster::start(ClusterOptions::default()).await;
    let dir = c.dir.join("ssh-test");
    std::fs::create_dir_all(&dir).unwrap();
    let key = keygen(&dir, "alice");
    let stranger = keygen(&dir, "stranger");
    let (s, w) = c.create("box").await;
    assert_eq!(s, 201, "{w}");
    c.wait_state("box", "running", Duration::from_secs(60))
        .await;

    // Keys through the CLI; the same key twice is refused with its code.
    let pubkey = format!("{}.pub", key.display());
    let (code, out, err) = c.berth(&c.admin_token, &["ssh-key", "add", &pubkey]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("SHA256:"), "{out}");
    let (code, _, err) = c.berth(&c.admin_token, &["ssh-key", "add", &pubkey]).await;
    assert_eq!(code, 1);
    assert!(err.contains("ssh_key_exists"), "{err}");
    let (code, _, err) = c
        .berth(&c.admin_token, &["ssh-key", "add", "/etc/hostname"])
        .await;
    assert_eq!(code, 1);
    assert!(err.contains("invalid_ssh_key"), "{err}");

    // config-ssh writes the Host block (idempotently) next to what is there.
    let config = dir.join("config");
    std::fs::write(&config, "Host other\n    User nobody\n").unwrap();
    for _ in 0..2 {
        let (code, out, err) = c
            .berth(
                &c.admin_token,
                &["config-ssh", "--ssh-config", config.to_str().unwrap()],
            )
            .await;
        assert_eq!(code, 0, "{out}{err}");
    }
    let text = std::fs::read_to_string(&config).unwrap();
    assert_eq!(text.matches("Host berth.*").count(), 1, "{text}");
    assert!(text.contains("Host other\n    User nobody"), "{text}");
    let ssh = berth_tests::openssh::Client {
        home: dir.clone(),
        config,
        api: c.api.clone(),
    };
    let tok = c.admin_token.clone();

    // A command: its output, its exit status, env sent by the client.
    let (code, out, err) = ssh
        .run(
            "ssh",
            &key,
            &tok,
            &[
                "-o",
                "SetEnv=GREETING=hello",
                "berth.box",
                "echo $GREETING from $(id -u) in $(pwd); exit 7",
            ],
        )
        .await;
    assert_eq!(code, 7, "{out}{err}");
    assert_eq!(out, "hello from 1000 in /workspace\n", "{err}");
    // Standard input to the command and its EOF.
    let mut child = ssh
        .command("ssh", &key, &tok, &["berth.box", "wc -c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&[b'x'; 100_000]).await.unwrap();
    }
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "100000");

    // An interactive session under a terminal (tmux): `stty size` follows a resize.
    let tmux = format!("berth-ssh-{}", std::process::id());
    let proxy_env = format!(
        "env -i PATH=\"$PATH\" HOME={} BERTH_URL={} BERTH_TOKEN={}",
        dir.display(),
        c.api,
        tok
    );
    let session = format!(
        "{proxy_env} ssh -F {} -i {} -o IdentitiesOnly=yes -o BatchMode=yes -tt berth.box",
        ssh.config.display(),
        key.display()
    );
    let (ok, _, err) = berth_tests::sh(&format!(
        "tmux -L {tmux} new-session -d -x 91 -y 33 '{session}'"
    ));
    assert!(ok, "tmux: {err}");
    let screen = |want: &'static str| {
        let tmux = tmux.clone();
        async move {
            berth_tests::eventually(Duration::from_secs(20), || {
                let tmux = tmux.clone();
                async move {
                    let (_, s, _) = berth_tests::sh(&format!("tmux -L {tmux} capture-pane -p"));
                    s.contains(want).then_some(s)
                }
            })
            .await
        }
    };
    let keys = |text: &str| {
        let (ok, _, err) = berth_tests::sh(&format!("tmux -L {tmux} send-keys '{text}' Enter"));
        assert!(ok, "tmux send-keys: {err}");
    };
    // The shell is up once it answers.
    let mut up = None;
    for _ in 0..20 {
        keys("echo rea''dy");
        up = screen("ready").await;
        if up.is_some() {
            break;
        }
    }
    assert!(up.is_some(), "no shell prompt");
    keys("stty size");
    let s1 = screen("33 91").await;
    assert!(s1.is_some(), "stty size before the resize");
    let (ok, _, err) = berth_tests::sh(&format!("tmux -L {tmux} resize-window -x 120 -y 40"));
    assert!(ok, "tmux resize: {err}");
    let mut resized = None;
    for _ in 0..10 {
        keys("stty size");
        resized = screen("40 120").await;
        if resized.is_some() {
            break;
        }
    }
    assert!(resized.is_some(), "stty size after the resize");
    // ^C interrupts a foreground command, the shell stays.
    // Only once `sleep` runs in the foreground: a ^C that reaches the shell between reading the
    // line and starting the command is the shell's to ignore, and the command would then run on.
    keys("sleep 1000");
    let sleeping = berth_tests::eventually(Duration::from_secs(20), || async {
        let (s, out) = c
            .post(
                "/v1/workspaces/box/exec",
                json!({"argv": ["pidof", "sleep"]}),
            )
            .await;
        (s == 200 && out["exit_code"].as_i64() == Some(0)).then_some(())
    })
    .await;
    assert!(sleeping.is_some(), "sleep never started");
    let (ok, _, _) = berth_tests::sh(&format!("tmux -L {tmux} send-keys C-c"));
    assert!(ok);
    keys("echo af''ter-interrupt");
    assert!(screen("after-interrupt").await.is_some(), "^C");
    keys("exit");
    let gone = berth_tests::eventually(Duration::from_secs(10), || async {
        let (alive, _, _) = berth_tests::sh(&format!("tmux -L {tmux} has-session"));
        (!alive).then_some(())
    })
    .await;
    berth_tests::sh(&format!("tmux -L {tmux} kill-server"));
    assert!(gone.is_some(), "the session ends when the shell exits");

    // scp in and out (OpenSSH's scp speaks SFTP), sftp, as the workspace user.
    let payload: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7 + i / 13) as u8).collect();
    std::fs::write(dir.join("up.bin"), &payload).unwrap();
    let up = dir.join("up.bin");
    let (code, out, err) = ssh
        .run(
            "scp",
            &key,
            &tok,
            &["-q", up.to_str().unwrap(), "berth.box:/workspace/up.bin"],
        )
        .await;
    assert_eq!(code, 0, "scp in: {out}{err}");
    let st = exec(&c, "box", "stat -c '%s %u' /workspace/up.bin").await;
    assert_eq!(st["stdout"], format!("{} 1000\n", 1 << 20));
    let down = dir.join("down.bin");
    let (code, out, err) = ssh
        .run(
            "scp",
            &key,
            &tok,
            &["-q", "berth.box:/workspace/up.bin", down.to_str().unwrap()],
        )
        .await;
    assert_eq!(code, 0, "scp out: {out}{err}");
    assert_eq!(std::fs::read(&down).unwrap(), payload, "scp round trip");
    let batch = dir.join("sftp-batch");
    std::fs::write(&batch, "mkdir /workspace/d\nput /etc/hostname /workspace/d/h\nls /workspace/d\nrm /workspace/d/h\nrmdir /workspace/d\n").unwrap();
    let (code, out, err) = ssh
        .run(
            "sftp",
            &key,
            &tok,
            &["-b", batch.to_str().unwrap(), "berth.box"],
        )
        .await;
    assert_eq!(code, 0, "sftp: {out}{err}");
    assert!(out.contains("/workspace/d/h"), "{out}");
    // The user's permissions, not root's: a root-owned file stays unwritable.
    let (code, _, _) = ssh
        .run(
            "scp",
            &key,
            &tok,
            &["-q", up.to_str().unwrap(), "berth.box:/etc/passwd"],
        )
        .await;
    assert_ne!(code, 0, "scp over /etc/passwd must fail");
    // ... and the same through the shell, exec and the API: the user's
    // permissions on every path in (sftp drops them on its own thread; the
    // shell and exec are separate processes). A writable path is the control.
    let probe = "echo x >> /etc/passwd; echo rc=$?; echo y >> /workspace/w; echo rc=$?";
    let (code, out, err) = ssh.run("ssh", &key, &tok, &["berth.box", probe]).await;
    assert_eq!((code, out.as_str()), (0, "rc=1\nrc=0\n"), "ssh exec: {err}");
    assert!(err.contains("Permission denied"), "{err}");
    let (code, out, err) = ssh
        .run("ssh", &key, &tok, &["-tt", "berth.box", probe])
        .await;
    assert_eq!(code, 0, "ssh under a terminal: {out}{err}");
    assert!(out.contains("rc=1\r\nrc=0"), "{out}");
    let api = exec(&c, "box", probe).await;
    assert_eq!(api["stdout"], "rc=1\nrc=0\n", "API exec: {api}");
    let passwd = exec(&c, "box", "grep -c '^[xy]$' /etc/passwd; cat /workspace/w").await;
    assert_eq!(passwd["stdout"], "0\ny\ny\ny\n", "{passwd}");

    // ssh -L to a server bound to the workspace's loopback.
    exec(
        &c,
        "box",
        "echo via-ssh-L > /workspace/index.html && httpd -p 127.0.0.1:8080 -h /workspace",
    )
    .await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let forward = format!("{port}:localhost:8080");
    let mut fwd = ssh
        .command(
            "ssh",
            &key,
            &tok,
            &[
                "-N",
                "-o",
                "ExitOnForwardFailure=yes",
                "-L",
                &forward,
                "berth.box",
            ],
        )
        .spawn()
        .unwrap();
    let got = berth_tests::eventually(Duration::from_secs(20), || async {
        let out = reqwest::get(format!("http://127.0.0.1:{port}/index.html"))
            .await
            .ok()?;
        out.text().await.ok()
    })
    .await;
    fwd.kill().await.ok();
    assert_eq!(got.as_deref(), Some("via-ssh-L\n"));
    // Forwarding reaches the workspace's own ports only: a server on the
    // node (the coordinator's API) is refused, the workspace's is the control.
    let api_addr = c.api.trim_start_matches("http://").to_string();
    let (code, out, err) = ssh
        .run("ssh", &key, &tok, &["-W", &api_addr, "berth.box"])
        .await;
    assert_ne!(code, 0, "ssh -W to the node's {api_addr}: {out}");
    assert!(err.contains("open failed"), "{err}");
    let (code, out, err) = ssh
        .run_with_stdin(
            "ssh",
            &key,
            &tok,
            &["-W", "localhost:8080", "berth.box"],
            b"GET /index.html HTTP/1.0\r\n\r\n",
        )
        .await;
    assert!(
        out.ends_with("via-ssh-L\n"),
        "control: -W to the workspace's port: {code} {out} {err}"
    );

    // The client going away hangs up the session: the shell's processes
    // get SIGHUP (seen in the workspace), as with sshd.
    let mut held = ssh
        .command(
            "ssh",
            &key,
            &tok,
            &[
                "-tt",
                "berth.box",
                "trap 'echo hup > /workspace/hup; exit' HUP; echo ready; while :; do sleep 1; done",
            ],
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(held.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("the session starts")
            .unwrap();
        assert!(line.is_some_and(|l| l.contains("ready")));
    }
    held.kill().await.ok();
    let hup = berth_tests::eventually(Duration::from_secs(10), || async {
        let out = exec(&c, "box", "cat /workspace/hup 2>/dev/null; true").await;
        (out["stdout"] == "hup\n").then_some(())
    })
    .await;
    assert!(hup.is_some(), "the session's shell got no SIGHUP");

    // Activity: the agent counted the SSH sessions and their bytes.
    let (s, a) = c.get("/v1/workspaces/box/activity").await;
    assert_eq!(s, 200, "{a}");
    let t = a["tunnels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["kind"] == "ssh")
        .cloned()
        .unwrap_or_default();
    assert!(t["sessions"].as_u64().unwrap_or(0) >= 6, "{a}");
    // 1 MiB scp'd in and 100 kB of stdin; 1 MiB scp'd out.
    assert!(
        t["bytes_in"].as_u64().unwrap_or(0) > (1 << 20) + 100_000,
        "{a}"
    );
    assert!(t["bytes_out"].as_u64().unwrap_or(0) > 1 << 20, "{a}");

    // Refusals: an unregistered key, no token, a wrong token, another
    // user's workspace, a user without keys.
    let (code, _, err) = ssh
        .run("ssh", &stranger, &tok, &["berth.box", "true"])
        .await;
    assert_eq!(code, 255);
    assert!(err.contains("Permission denied (publickey)"), "{err}");
    let (code, _, err) = ssh.run("ssh", &key, "", &["berth.box", "true"]).await;
    assert_eq!(code, 255);
    assert!(err.contains("no_token"), "{err}");
    let (code, _, err) = ssh
        .run("ssh", &key, "bt_wrong", &["berth.box", "true"])
        .await;
    assert_eq!(code, 255);
    assert!(err.contains("unauthorized"), "{err}");
    let (s, bob) = c
        .post("/v1/tokens", json!({"user": "bob", "role": "member"}))
        .await;
    assert_eq!(s, 201, "{bob}");
    let bob = bob["token"].as_str().unwrap().to_string();
    let (code, _, err) = ssh.run("ssh", &key, &bob, &["berth.box", "true"]).await;
    assert_eq!(code, 255);
    assert!(
        err.contains("not_found"),
        "bob cannot see admin's box: {err}"
    );
    let (code, _, err) = c
        .berth(&bob, &["ssh", "--stdio", "berth.box", "--owner", "admin"])
        .await;
    assert_eq!(code, 1);
    assert!(err.contains("forbidden"), "{err}");

    // Wake on connect: a stopped workspace starts for the connection.
    let (s, w) = c.post("/v1/workspaces/box/stop", json!({})).await;
    assert_eq!(s, 202, "{w}");
    c.wait_state("box", "stopped", Duration::from_secs(60))
        .await;
    let (code, out, err) = ssh
        .run(
            "ssh",
            &key,
            &tok,
            &["berth.box", "cat /workspace/index.html"],
        )
        .await;
    assert_eq!((code, out.as_str()), (0, "via-ssh-L\n"), "{err}");
    assert!(err.contains("running"), "progress while starting: {err}");

    // Removing the key closes the door at once.
    let (code, out, err) = c
        .berth(&c.admin_token, &["ssh-key", "list", "--json"])
        .await;
    assert_eq!(code, 0, "{err}");
    let keys: Value = serde_json::from_str(&out).unwrap();
    let fp = keys[0]["fingerprint"].as_str().unwrap().to_string();
    let (code, _, err) = c.berth(&c.admin_token, &["ssh-key", "remove", &fp]).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = ssh.run("ssh", &key, &tok, &["berth.box", "true"]).await;
    assert_eq!(code, 255);
    assert!(err.contains("no_ssh_key"), "{err}");
    c.finish().await;
}
