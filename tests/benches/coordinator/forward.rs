//! forward: `berth port-forward` and `ssh -L` throughput and round trip
//! against direct TCP.

use super::*;

/// Client side of the forward bench, run in a child process (this bench
/// re-executed with BERTH_BENCH_TCP_CLIENT="ADDR MODE N"), so the direct
/// baseline can run inside the node's network namespace (nsenter) and the
/// forwarded one on the host, with the same code. Prints one JSON object.
pub(super) fn tcp_client(spec: &str) -> ! {
    use std::io::{Read, Write};
    let mut it = spec.split_whitespace();
    let (addr, mode, n) = (
        it.next().unwrap().to_string(),
        it.next().unwrap().to_string(),
        it.next().unwrap().parse::<usize>().unwrap(),
    );
    let mut s = std::net::TcpStream::connect(&addr).expect("connect");
    s.set_nodelay(true).unwrap();
    let out = if mode == "throughput" {
        // n MiB one way; the sink closes after reading everything.
        let chunk = vec![0x5au8; 1 << 16];
        let t = Instant::now();
        for _ in 0..n * 16 {
            s.write_all(&chunk).unwrap();
        }
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        let secs = t.elapsed().as_secs_f64();
        serde_json::json!({"mib_per_s": n as f64 / secs})
    } else {
        // n one-byte round trips through the echo server.
        let mut rtts = Vec::with_capacity(n);
        let mut b = [0u8; 1];
        for i in 0..n + 20 {
            let t = Instant::now();
            s.write_all(b"x").unwrap();
            s.read_exact(&mut b).unwrap();
            if i >= 20 {
                rtts.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        let r = sorted(rtts);
        serde_json::json!({"rtt_p50_us": percentile(&r, 0.5), "rtt_p90_us": percentile(&r, 0.9)})
    };
    println!("{out}");
    std::process::exit(0)
}

pub(super) fn run_client(
    netns: Option<&str>,
    addr: &str,
    mode: &str,
    n: usize,
) -> serde_json::Value {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = std::process::Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}")).arg(&exe);
            c
        }
        None => std::process::Command::new(&exe),
    };
    let out = cmd
        .env("BERTH_BENCH_TCP_CLIENT", format!("{addr} {mode} {n}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "client {netns:?} {addr} {mode}: {}",
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .nth(1)
            .unwrap_or_default()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

pub(super) async fn forward() {
    let rounds = 3;
    let c = Cluster::start(ClusterOptions {
        agents: 1,
        ..Default::default()
    })
    .await;
    let (s, w) = c
        .post(
            "/v1/workspaces",
            serde_json::json!({"name": "fw", "image": c.tiny(), "cpu_millis": 2000,
                "memory_bytes": 256u64 << 20, "disk_bytes": 64u64 << 20, "pids": 256}),
        )
        .await;
    assert_eq!(s, 201, "{w}");
    let w = c.wait_state("fw", "running", Duration::from_secs(60)).await;
    let ip = w["ip"].as_str().unwrap().to_string();
    let (s, out) = c
        .post(
            "/v1/workspaces/fw/exec",
            serde_json::json!({"argv": ["sh", "-c", "(nc -ll -p 9000 -e dd of=/dev/null bs=64k 2>/dev/null &) && (nc -ll -p 9001 -e cat &) && sleep 0.3"]}),
        )
        .await;
    assert_eq!((s, out["exit_code"].as_i64()), (200, Some(0)), "{out}");
    let (mut pf, local) = c.port_forward("fw", &["0:9000", "0:9001"]).await;
    let ns = c.nodes[0].netns.clone();
    let (sink_d, echo_d) = (format!("{ip}:9000"), format!("{ip}:9001"));
    // Beside it: `ssh -L` through an OpenSSH sshd on the node (client and
    // server in the node's namespace, as a user with SSH access to the node
    // would forward), and `ssh -L` through Berth's own SSH (OpenSSH client,
    // `berth ssh --stdio` ProxyCommand, the agent's direct-tcpip).
    let sshd = berth_tests::openssh::Sshd::start(&c.dir.join("sshd"), Some(&ns), 2222);
    let mut ssh_l = std::process::Command::new("ip")
        .args(["netns", "exec", &ns, "ssh", "-N"])
        .args(sshd.client_args())
        .args([
            "-L",
            &format!("127.0.0.1:7000:{sink_d}"),
            "-L",
            &format!("127.0.0.1:7001:{echo_d}"),
        ])
        .arg("root@127.0.0.1")
        .spawn()
        .expect("ssh -L");
    let (berth_ssh, berth_key) = berth_ssh_setup(&c).await;
    let (lb0, lb1) = (free_port(), free_port());
    let mut berth_l = berth_ssh
        .command(
            "ssh",
            &berth_key,
            &c.admin_token,
            &[
                "-N",
                "-L",
                &format!("127.0.0.1:{lb0}:localhost:9000"),
                "-L",
                &format!("127.0.0.1:{lb1}:localhost:9001"),
                "berth.fw",
            ],
        )
        .spawn()
        .expect("ssh -L through berth");
    wait_listening(Some(&ns), 7001);
    wait_listening(None, lb1);
    type Row = (Option<String>, String, String);
    let rows: Vec<(&str, Row)> = vec![
        (
            "direct TCP (baseline)",
            (Some(ns.clone()), sink_d.clone(), echo_d.clone()),
        ),
        (
            "berth port-forward",
            (None, local[0].clone(), local[1].clone()),
        ),
        (
            "OpenSSH ssh -L via sshd",
            (
                Some(ns.clone()),
                "127.0.0.1:7000".into(),
                "127.0.0.1:7001".into(),
            ),
        ),
        (
            "OpenSSH ssh -L via berth",
            (None, format!("127.0.0.1:{lb0}"), format!("127.0.0.1:{lb1}")),
        ),
    ];
    let mib: usize = std::env::var("BERTH_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let mut thr = vec![Vec::new(); rows.len()];
    let mut rtt = vec![Vec::new(); rows.len()];
    for round in 0..rounds {
        // Rows alternate order between rounds.
        let mut order: Vec<usize> = (0..rows.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (ns, sink, echo) = rows[i].1.clone();
            let (t, r) = tokio::task::spawn_blocking(move || {
                (
                    run_client(ns.as_deref(), &sink, "throughput", mib)["mib_per_s"]
                        .as_f64()
                        .unwrap(),
                    run_client(ns.as_deref(), &echo, "rtt", 2000)["rtt_p50_us"]
                        .as_f64()
                        .unwrap(),
                )
            })
            .await
            .unwrap();
            thr[i].push(t);
            rtt[i].push(r);
        }
    }
    pf.kill().await.ok();
    let _ = ssh_l.kill();
    let _ = berth_l.kill().await;
    let _ = ssh_l.wait();
    drop(sshd);
    let med = |v: &Vec<f64>| percentile(&sorted(v.clone()), 0.5);
    let t: Vec<f64> = thr.iter().map(med).collect();
    let r: Vec<f64> = rtt.iter().map(med).collect();
    println!("\nforward: TCP through each path to the same servers in the workspace, median of {rounds} rounds ({mib} MiB each)");
    println!(
        "{:<28} {:>10} {:>12} {:>12} {:>12}",
        "", "MiB/s", "vs direct", "RTT p50 µs", "vs direct"
    );
    for (i, (name, _)) in rows.iter().enumerate() {
        println!(
            "{:<28} {:>10.0} {:>11.2}x {:>12.0} {:>11.2}x",
            name,
            t[i],
            t[i] / t[0],
            r[i],
            r[i] / r[0]
        );
    }
    println!("goals: port-forward >= 0.8x direct throughput, and faster than ssh -L via sshd");
    record("forward", "direct_mib_per_s", t[0], "MiB/s", "");
    record("forward", "forward_mib_per_s", t[1], "MiB/s", "");
    record(
        "forward",
        "throughput_ratio_vs_direct",
        t[1] / t[0],
        "x",
        ">=0.8",
    );
    record("forward", "sshd_ssh_l_mib_per_s", t[2], "MiB/s", "");
    record(
        "forward",
        "throughput_ratio_vs_ssh_l",
        t[1] / t[2],
        "x",
        ">1.0",
    );
    record("forward", "berth_ssh_l_mib_per_s", t[3], "MiB/s", "");
    record("forward", "direct_rtt_p50_us", r[0], "us", "");
    record("forward", "forward_rtt_p50_us", r[1], "us", "");
    record("forward", "rtt_p50_ratio_vs_direct", r[1] / r[0], "x", "");
    record("forward", "sshd_ssh_l_rtt_p50_us", r[2], "us", "");
    record(
        "forward",
        "rtt_p50_ratio_vs_ssh_l",
        r[1] / r[2],
        "x",
        "<1.0",
    );
    record("forward", "berth_ssh_l_rtt_p50_us", r[3], "us", "");
}
