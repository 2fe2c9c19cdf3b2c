//! api_overhead: create→running through the API against the agent alone.

use super::*;

/// SSE "workspace" events as (name, state), from the API's event stream.
pub(super) async fn events(
    api: &str,
    token: &str,
) -> tokio::sync::mpsc::UnboundedReceiver<(String, String)> {
    use futures::StreamExt;
    let resp = reqwest::Client::new()
        .get(format!("{api}/v1/events"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut body = resp.bytes_stream();
    tokio::spawn(async move {
        let mut buf = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                for line in block.lines() {
                    if let Some(data) = line.strip_prefix("data:") {
                        if let Ok(v) = serde_json::from_str::<serde_json::Value>(data.trim()) {
                            let name = v["name"].as_str().unwrap_or_default().to_string();
                            let state = v["state"].as_str().unwrap_or_default().to_string();
                            let _ = tx.send((name, state));
                        }
                    }
                }
            }
        }
    });
    rx
}

pub(super) async fn until(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
    name: &str,
    state: &str,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((n, s))) if n == name && s == state => return,
            Ok(Some((n, s))) if n == name && s == "failed" => panic!("{name} failed"),
            Ok(Some(_)) => {}
            other => panic!("{name} never {state}: {other:?}"),
        }
    }
}

pub(super) async fn api_overhead() {
    use berth_proto::agent::{self as pb, request::Command};
    let iters = iters(60);
    let warmup = 3;
    let c = Cluster::start(ClusterOptions {
        agents: 1,
        ..Default::default()
    })
    .await;
    let node = &c.nodes[0];
    let tiny = c.tiny();
    let http = reqwest::Client::new();
    let mut rx = events(&c.api, &c.admin_token).await;
    let (mut via_api, mut alone) = (Vec::new(), Vec::new());
    for i in 0..warmup + iters {
        let name = format!("a{i}");
        let via_api_once = async {
            let t = Instant::now();
            let r = http
                .post(format!("{}/v1/workspaces", c.api))
                .bearer_auth(&c.admin_token)
                .json(
                    &serde_json::json!({"name": name, "image": tiny, "cpu_millis": 500,
                    "memory_bytes": 128u64 << 20, "disk_bytes": 64u64 << 20, "pids": 128}),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 201);
            until(&mut rx, &name, "running").await;
            t.elapsed().as_secs_f64() * 1000.0
        };
        let alone_once = async {
            let mut client = berth_agent::client::Client::connect(&node.socket)
                .await
                .unwrap();
            let t = Instant::now();
            let st = client
                .status_call(Command::Create(pb::CreateRequest {
                    spec: Some(pb::WorkspaceSpec {
                        name: format!("b{i}"),
                        image: tiny.clone(),
                        cpu_millis: 500,
                        memory_bytes: 128 << 20,
                        pids: 128,
                        disk_bytes: 64 << 20,
                        ..Default::default()
                    }),
                    auth: None,
                    start: true,
                    restore: None,
                    secrets: None,
                }))
                .await
                .expect("agent create");
            assert_eq!(st.state, pb::State::Running as i32);
            t.elapsed().as_secs_f64() * 1000.0
        };
        // Alternate which goes first, so neither gains from following the other.
        let (a, b) = if i % 2 == 0 {
            let a = via_api_once.await;
            (a, alone_once.await)
        } else {
            let b = alone_once.await;
            (via_api_once.await, b)
        };

        let r = http
            .delete(format!("{}/v1/workspaces/{name}", c.api))
            .bearer_auth(&c.admin_token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
        until(&mut rx, &name, "deleted").await;
        let mut client = berth_agent::client::Client::connect(&node.socket)
            .await
            .unwrap();
        client
            .status_call(Command::Delete(pb::NameRequest {
                name: format!("b{i}"),
                generation: 0,
            }))
            .await
            .ok();
        if i >= warmup {
            via_api.push(a);
            alone.push(b);
        }
    }
    let (via_api, alone) = (sorted(via_api), sorted(alone));
    let (a50, a90, b50, b90) = (
        percentile(&via_api, 0.5),
        percentile(&via_api, 0.9),
        percentile(&alone, 0.5),
        percentile(&alone, 0.9),
    );
    println!("\napi_overhead: create→running of `tiny`, {iters} runs each, interleaved, same agent and image");
    println!("{:<44} {:>8} {:>8}", "", "p50 ms", "p90 ms");
    println!(
        "{:<44} {:>8.1} {:>8.1}",
        "API: POST /v1/workspaces → SSE running", a50, a90
    );
    println!(
        "{:<44} {:>8.1} {:>8.1}",
        "agent alone: control socket (baseline)", b50, b90
    );
    println!(
        "{:<44} {:>8.1} {:>8.1}   (goal p50 <= 5 ms)",
        "added by the coordinator",
        a50 - b50,
        a90 - b90
    );
    println!(
        "{:<44} {:>8.2} {:>8.2}",
        "ratio API / agent",
        a50 / b50,
        a90 / b90
    );
    record("api_overhead", "api_p50_ms", a50, "ms", "");
    record("api_overhead", "agent_p50_ms", b50, "ms", "");
    record("api_overhead", "added_p50_ms", a50 - b50, "ms", "<=5");
    record("api_overhead", "p50_ratio_vs_agent", a50 / b50, "x", "");
}
