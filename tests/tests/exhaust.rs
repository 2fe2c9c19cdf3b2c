//! TEST-PLAN 13: a member tries to exhaust the shared processes with output
//! that never ends: 1 GiB through the streaming exec, a reader that stops
//! reading, a terminal that floods, a preview that streams forever. The
//! coordinator's and the agent's memory stay bounded (peak RSS sampled all
//! along), another user's requests keep their latency, the abuser gets all
//! of the output it reads, and what it abandons is killed.

use berth_tests::bench::{percentile, rss_kib, sorted};
use berth_tests::{Cluster, ClusterOptions};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

// The dev image (node, npm, python) is pulled under the suite's load: minutes, not seconds.
const T: Duration = Duration::from_secs(180);
/// How much either process may grow at its peak over its idle size.
const BOUND_MIB: u64 = 96;

/// Samples a process's RSS every 20 ms until stopped; keeps the peak.
struct Peak {
    mib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Peak {
    fn watch(pid: u32) -> Self {
        let (mib, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (m, s) = (mib.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                m.fetch_max((rss_kib(pid) / 1024.0) as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Self { mib, stop }
    }
    fn peak(&self) -> u64 {
        self.mib.load(Ordering::Relaxed)
    }
}

impl Drop for Peak {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Whether a process whose command line is exactly `argv` runs on the machine.
fn runs(argv: &[&str]) -> bool {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want))
}

const ENDLESS: &str = r#"
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        chunk = b"x" * 65536
        try:
            while True:
                self.wfile.write(chunk)
        except Exception:
            pass
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8000), H).serve_forever()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn endless_output_keeps_memory_and_others_latency_bounded() {
    berth_tests::images(&["dev"]);
    let c = Cluster::start(ClusterOptions::default()).await;
    let dev = format!("{}/dev:latest", c.registry.addr);
    let (s, w) = c
        .post(
            "/v1/workspaces",
            json!({"name": "flood", "image": dev, "memory_bytes": 512u64 << 20, "cpu_millis": 1000,
                   "disk_bytes": 256u64 << 20}),
        )
        .await;
    assert_eq!(s, 201, "{w}");
    // Another user, with a workspace of their own.
    let (s, tok) = c
        .post("/v1/tokens", json!({"user": "bob", "role": "member"}))
        .await;
    assert_eq!(s, 201, "{tok}");
    let bob = tok["token"].as_str().unwrap().to_string();
    let (s, w) = c
        .post_as(
            "/v1/workspaces",
            json!({"name": "quiet", "image": c.tiny(), "cpu_millis": 200, "memory_bytes": 64u64 << 20, "disk_bytes": 32u64 << 20}),
            &bob,
        )
        .await;
    assert_eq!(s, 201, "{w}");
    c.wait_state("flood", "running", T).await;
    let (_, out) = c
        .post(
            "/v1/workspaces/flood/exec",
            json!({"argv": ["sh", "-c", "cat > /workspace/endless.py && (python3 /workspace/endless.py >/dev/null 2>&1 &)"],
                   "stdin": ENDLESS}),
        )
        .await;
    assert_eq!(out["exit_code"], 0, "{out}");

    // Bob's latency at rest, then under every flood.
    let bob_get = || {
        let (c, bob) = (&c, bob.clone());
        async move {
            let t = Instant::now();
            let (s, _) = c.get_as("/v1/workspaces?state=running", &bob).await;
            assert_eq!(s, 200);
            t.elapsed().as_secs_f64() * 1000.0
        }
    };
    let mut rest = Vec::new();
    for _ in 0..40 {
        rest.push(bob_get().await);
    }
    let coordinator = c.coordinator_pid().expect("coordinator runs");
    let agent = c.nodes[0].agent_pid().expect("agent runs");
    let (co_idle, ag_idle) = (rss_kib(coordinator) / 1024.0, rss_kib(agent) / 1024.0);
    let (co_peak, ag_peak) = (Peak::watch(coordinator), Peak::watch(agent));
    let flooding = Arc::new(AtomicBool::new(true));
    let probe = {
        let (flooding, api, bob) = (flooding.clone(), c.api.clone(), bob.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut during = Vec::new();
            while flooding.load(Ordering::Relaxed) {
                let t = Instant::now();
                let r = http
                    .get(format!("{api}/v1/workspaces?state=running"))
                    .bearer_auth(&bob)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 200);
                during.push(t.elapsed().as_secs_f64() * 1000.0);
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            during
        })
    };

    // 1 GiB through the streaming exec: every byte arrives, in order of
    // frames, and the exit status ends it.
    let http = reqwest::Client::new();
    let stream = |argv: serde_json::Value| {
        http.post(format!("{}/v1/workspaces/flood/exec/stream", c.api))
            .bearer_auth(&c.admin_token)
            .json(&json!({"argv": argv, "timeout_seconds": 600}))
            .send()
    };
    let resp = stream(json!(["head", "-c", "1073741824", "/dev/zero"]))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        berth_proto::exec_stream::MEDIA_TYPE
    );
    let (mut body, mut buf, mut stdout, mut end) = (resp.bytes_stream(), Vec::new(), 0u64, None);
    while let Some(chunk) = body.next().await {
        buf.extend_from_slice(&chunk.unwrap());
        for f in berth_proto::exec_stream::decode(&mut buf).unwrap() {
            match f {
                berth_proto::exec_stream::Frame::Stdout(b) => stdout += b.len() as u64,
                other => end = Some(other),
            }
        }
    }
    assert_eq!(stdout, 1 << 30, "every byte of 1 GiB");
    assert_eq!(end, Some(berth_proto::exec_stream::Frame::Exit(0)));

    // A reader that stops reading: the command is held back (nothing piles
    // up), then killed when the reader goes.
    let endless = ["dd", "if=/dev/zero", "bs=65536", "count=99999917"];
    let resp = stream(json!(endless)).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(runs(&endless), "control: the endless command runs");
    drop(resp);
    let gone = berth_tests::eventually(Duration::from_secs(10), || async {
        (!runs(&endless)).then_some(())
    })
    .await;
    assert!(gone.is_some(), "an abandoned exec still runs");

    // A terminal that floods: read for 3 s, then stop reading for 3 s.
    let (mut ws, _) =
        tokio_tungstenite::connect_async(c.ws_request("/v1/workspaces/flood/terminal"))
            .await
            .expect("terminal");
    ws.send(Message::Binary(b"cat /dev/zero | od -v\r".to_vec().into()))
        .await
        .unwrap();
    let (t0, mut terminal) = (Instant::now(), 0usize);
    while t0.elapsed() < Duration::from_secs(3) {
        if let Ok(Some(Ok(Message::Binary(b)))) =
            tokio::time::timeout(Duration::from_secs(1), ws.next()).await
        {
            terminal += b.len();
        }
    }
    assert!(terminal > 1 << 20, "the terminal flooded: {terminal} bytes");
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(ws);

    // A preview that streams forever: read 64 MiB, stop reading, go.
    let resp = http
        .get(format!("{}/w/flood/8000/", c.api))
        .bearer_auth(&c.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let (mut body, mut preview) = (resp.bytes_stream(), 0usize);
    while preview < 64 << 20 {
        preview += body.next().await.expect("more").unwrap().len();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(body);

    flooding.store(false, Ordering::Relaxed);
    let during = sorted(probe.await.unwrap());
    let rest = sorted(rest);
    let (co, ag) = (co_peak.peak(), ag_peak.peak());
    eprintln!(
        "coordinator RSS {co_idle:.0} MiB idle, peak {co} MiB; agent {ag_idle:.0} MiB idle, peak {ag} MiB; \
         bob's GET p50/p99 {:.1}/{:.1} ms at rest, {:.1}/{:.1} ms under the floods ({} requests)",
        percentile(&rest, 0.5),
        percentile(&rest, 0.99),
        percentile(&during, 0.5),
        percentile(&during, 0.99),
        during.len()
    );
    assert!(
        (co as f64) < co_idle + BOUND_MIB as f64,
        "coordinator peak {co} MiB over {co_idle:.0} MiB idle"
    );
    assert!(
        (ag as f64) < ag_idle + BOUND_MIB as f64,
        "agent peak {ag} MiB over {ag_idle:.0} MiB idle"
    );
    assert!(during.len() > 20, "bob was served during the floods");
    assert!(
        percentile(&during, 0.99) < 1000.0,
        "bob's p99 under the floods: {:.0} ms",
        percentile(&during, 0.99)
    );
    c.finish().await;
}
