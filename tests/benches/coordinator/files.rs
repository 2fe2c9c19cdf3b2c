//! files: the file API against OpenSSH's `sftp` (through `berth ssh
//! --stdio`, Berth's SSH and SFTP on the node) on the same workspace and
//! files: a 1 MiB read, a 1 MiB write and a 200-entry listing. Both sides
//! keep their connection: the API's requests share one keep-alive HTTP
//! connection, and sftp's cost per operation is the difference between a
//! batch of N operations and a batch of one in one session (so its SSH
//! handshake is not counted against it). Rounds alternate which goes first.

use super::*;

/// Operations per measured batch.
const N: usize = 20;

/// Seconds per operation of one sftp batch session: (N ops − 1 op) / (N − 1).
async fn sftp_per_op(
    ssh: &berth_tests::openssh::Client,
    key: &std::path::Path,
    token: &str,
    dir: &std::path::Path,
    op: &str,
) -> f64 {
    let mut times = [0.0; 2];
    for (i, n) in [1, N].into_iter().enumerate() {
        let batch = dir.join(format!("batch-{n}"));
        std::fs::write(&batch, format!("{op}\n").repeat(n)).unwrap();
        let t = Instant::now();
        let (code, _, err) = ssh
            .run(
                "sftp",
                key,
                token,
                &["-q", "-b", batch.to_str().unwrap(), "berth.fs"],
            )
            .await;
        times[i] = t.elapsed().as_secs_f64();
        assert_eq!(code, 0, "sftp {op}: {err}");
    }
    (times[1] - times[0]) / (N - 1) as f64
}

/// Seconds per request of N requests on one keep-alive connection.
async fn api_per_op(http: &reqwest::Client, url: &str, token: &str, put: Option<&[u8]>) -> f64 {
    let t = Instant::now();
    for _ in 0..N {
        let rb = match put {
            Some(b) => http.put(url).body(b.to_vec()),
            None => http.get(url),
        };
        let r = rb.bearer_auth(token).send().await.unwrap();
        assert!(r.status().is_success(), "{url}: {}", r.status());
        let _ = r.bytes().await.unwrap();
    }
    t.elapsed().as_secs_f64() / N as f64
}

pub(super) async fn files() {
    let rounds = iters(5);
    let c = Cluster::start(ClusterOptions::default()).await;
    let (s, w) = c
        .post(
            "/v1/workspaces",
            serde_json::json!({"name": "fs", "image": c.tiny(), "cpu_millis": 1000,
                "memory_bytes": 256u64 << 20, "disk_bytes": 128u64 << 20, "pids": 64}),
        )
        .await;
    assert_eq!(s, 201, "{w}");
    c.wait_state("fs", "running", Duration::from_secs(60)).await;
    c.exec_ok(
        "fs",
        "head -c 1048576 /dev/urandom > /workspace/f1m && mkdir /workspace/d200 && \
         i=0; while [ $i -lt 200 ]; do echo $i > /workspace/d200/f$i; i=$((i+1)); done",
    )
    .await;
    let (ssh, key) = berth_ssh_setup(&c).await;
    let dir = c.dir.join("files-bench");
    std::fs::create_dir_all(&dir).unwrap();
    let local = dir.join("up1m");
    let payload: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&local, &payload).unwrap();
    let got = dir.join("got");
    let ops = [
        (
            "read 1 MiB",
            "read_ratio_vs_sftp",
            format!("get /workspace/f1m {}", got.display()),
            "f1m",
            false,
        ),
        (
            "write 1 MiB",
            "write_ratio_vs_sftp",
            format!("put {} /workspace/up1m", local.display()),
            "up1m",
            true,
        ),
        (
            "list 200 entries",
            "list_ratio_vs_sftp",
            "ls -l /workspace/d200".to_string(),
            "d200",
            false,
        ),
    ];
    let http = reqwest::Client::new();
    let token = c.admin_token.clone();
    let mut api = vec![Vec::new(); ops.len()];
    let mut sftp = vec![Vec::new(); ops.len()];
    for round in 0..rounds {
        for (i, (_, _, batch, path, put)) in ops.iter().enumerate() {
            let url = format!("{}/v1/workspaces/fs/files/{path}", c.api);
            let body = put.then_some(payload.as_slice());
            if round % 2 == 0 {
                api[i].push(api_per_op(&http, &url, &token, body).await);
                sftp[i].push(sftp_per_op(&ssh, &key, &token, &dir, batch).await);
            } else {
                sftp[i].push(sftp_per_op(&ssh, &key, &token, &dir, batch).await);
                api[i].push(api_per_op(&http, &url, &token, body).await);
            }
        }
    }
    // The API wrote what was sent, byte for byte.
    let r = http
        .get(format!("{}/v1/workspaces/fs/files/up1m", c.api))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), payload.as_slice());
    println!("\nfiles: per operation, p50 of {rounds} rounds of {N} (one connection each)");
    println!(
        "{:<18} {:>10} {:>10} {:>8}",
        "operation", "API ms", "sftp ms", "ratio"
    );
    for (i, (label, metric, ..)) in ops.iter().enumerate() {
        let a = percentile(&sorted(api[i].clone()), 0.5) * 1e3;
        let s = percentile(&sorted(sftp[i].clone()), 0.5) * 1e3;
        let ratio = a / s;
        println!("{label:<18} {a:>10.2} {s:>10.2} {ratio:>7.2}x");
        record("files", metric, ratio, "x", "<=1.0");
    }
    c.finish().await;
}
