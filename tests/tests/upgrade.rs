//! Upgrades from the previous release, v0.1.0, built from this repository's
//! history (`scripts/previous-build.sh`):
//! - a store the old coordinator made, with data in it, is migrated by the
//!   new one (SQLite, and PostgreSQL below) and the data reads and works;
//! - two coordinators on PostgreSQL are upgraded, then restarted, one at a
//!   time while clients write through either: no request a coordinator
//!   took is failed or lost once the stopping one is of this release (the
//!   old one does not drain: what it fails is counted and printed);
//! - an agent of the old release keeps working with the new coordinators:
//!   its workspace made before stays and answers, a new one runs on it.

use berth_tests::{Cluster, ClusterOptions};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The previous release's binaries.
fn previous() -> PathBuf {
    let out =
        std::process::Command::new(berth_tests::repo_root().join("scripts/previous-build.sh"))
            .output()
            .expect("scripts/previous-build.sh");
    assert!(
        out.status.success(),
        "previous-build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// What the old release leaves in a store: tokens, a team, an SSH key, a
/// used and an unused join token.
async fn old_data(c: &Cluster) -> (String, String) {
    let member = c.member_token("mia").await;
    let (s, b) = c.post("/v1/teams", json!({"name": "red"})).await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = c
        .send_json(
            reqwest::Method::PUT,
            "/v1/teams/red/members/mia",
            json!({"role": "member"}),
        )
        .await;
    assert!((200..300).contains(&s), "{s} {b}");
    let key = c.dir.join("mia_key");
    let (ok, _, err) = berth_tests::sh(&format!(
        "ssh-keygen -q -t ed25519 -N '' -C mia@laptop -f {}",
        key.display()
    ));
    assert!(ok, "{err}");
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let (s, b) = c
        .post_as(
            "/v1/ssh-keys",
            json!({"public_key": public.trim()}),
            &member,
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let used = c.join_token(3600).await;
    let scratch = c.dir.join("scratch");
    berth_agent::link::join(&c.link_addr(), &used, "old-join", &scratch.join("a"))
        .await
        .expect("join with the old coordinator");
    let unused = c.join_token(3600).await;
    (member, format!("{used} {unused}"))
}

/// The old data, read and used through the new coordinator.
async fn old_data_works(c: &Cluster, member: &str, joins: &str) {
    let (s, w) = c.get_as("/v1/whoami", member).await;
    assert_eq!((s, w["user"].as_str()), (200, Some("mia")), "{w}");
    let (s, t) = c.get("/v1/teams").await;
    assert_eq!(s, 200, "{t}");
    assert!(
        t.to_string().contains("\"red\"") && t.to_string().contains("mia"),
        "{t}"
    );
    let (s, k) = c.get_as("/v1/ssh-keys", member).await;
    assert_eq!(s, 200, "{k}");
    assert!(k.to_string().contains("mia@laptop"), "{k}");
    let (used, unused) = joins.split_once(' ').unwrap();
    let scratch = c.dir.join("scratch");
    let addr = c.link_addr();
    // The token the old release marked used has no use left (migration
    // 0024 counted it); the unused one joins once.
    let e = berth_agent::link::join(&addr, used, "again", &scratch.join("b"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("join_token_used"), "{e}");
    berth_agent::link::join(&addr, unused, "new-join", &scratch.join("c"))
        .await
        .expect("the old unused token joins once");
    let e = berth_agent::link::join(&addr, unused, "new-join2", &scratch.join("d"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("join_token_used"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sqlite_store_of_the_previous_release_is_migrated_with_its_data() {
    let prev = previous();
    let mut c = Cluster::start(ClusterOptions {
        agents: 0,
        coordinator_bin: Some(prev.join("berth-coordinator")),
        ..Default::default()
    })
    .await;
    let (member, joins) = old_data(&c).await;
    c.stop_coordinator_at(0);
    c.coordinators[0].bin = berth_tests::coordinator_bin();
    c.start_coordinator_at(0);
    assert!(
        c.coordinator_log().contains("coordinator ready"),
        "{}",
        c.coordinator_log()
    );
    old_data_works(&c, &member, &joins).await;
    c.finish().await;
}

/// Requests through "a load balancer" over both coordinators: a refused
/// connection goes to the other one (the request was never taken); any
/// other error, or an answer that is not a success, is a failed request.
struct Traffic {
    apis: Vec<String>,
    admin: String,
    http: reqwest::Client,
    phase: Arc<AtomicU32>,
    acked: Mutex<Vec<String>>,
    failed: Mutex<Vec<(u32, String)>>,
    unanswered: AtomicU32,
}

impl Traffic {
    async fn send(
        &self,
        k: usize,
        make: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Option<Value> {
        for attempt in 0..400 {
            let api = &self.apis[(k + attempt) % self.apis.len()];
            let phase = self.phase.load(Ordering::SeqCst);
            // A connection per request, so a stopped coordinator shows as
            // a refused or reset connection, never as a kept-alive one.
            let req = make(api)
                .bearer_auth(&self.admin)
                .header("connection", "close");
            match req.send().await {
                // Refused, or reset before any answer (a connection the
                // kernel queued and the stopping coordinator never took):
                // not acknowledged, so the balancer tries the other one.
                Err(e) if e.is_connect() || e.is_request() => {
                    self.unanswered.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                Err(e) => {
                    self.failed
                        .lock()
                        .unwrap()
                        .push((phase, format!("{api}: {e:?}")));
                    return None;
                }
                Ok(r) if !r.status().is_success() => {
                    let s = r.status();
                    let body = r.text().await.unwrap_or_default();
                    self.failed
                        .lock()
                        .unwrap()
                        .push((phase, format!("{api}: {s} {body}")));
                    return None;
                }
                Ok(r) => match r.json::<Value>().await {
                    Ok(v) => return Some(v),
                    Err(e) => {
                        self.failed
                            .lock()
                            .unwrap()
                            .push((phase, format!("{api}: body {e}")));
                        return None;
                    }
                },
            }
        }
        panic!("no coordinator took a request for 4 s");
    }

    /// Until `stop`: an API token made (a write), then a workspace read.
    async fn run(self: Arc<Self>, stop: Arc<std::sync::atomic::AtomicBool>) {
        let mut k = 0usize;
        while !stop.load(Ordering::SeqCst) {
            k += 1;
            let user = format!("load{k}");
            let made = self
                .send(k, |api| {
                    self.http
                        .post(format!("{api}/v1/tokens"))
                        .json(&json!({"user": user, "role": "member"}))
                })
                .await;
            if let Some(t) = made.and_then(|v| v["token"].as_str().map(str::to_string)) {
                self.acked.lock().unwrap().push(t);
            }
            let _ = self
                .send(k, |api| self.http.get(format!("{api}/v1/workspaces/w1")))
                .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_coordinators_are_upgraded_one_at_a_time_and_an_old_agent_keeps_working() {
    let prev = previous();
    let mut c = Cluster::start(ClusterOptions {
        agents: 1,
        coordinators: 2,
        postgres: true,
        coordinator_bin: Some(prev.join("berth-coordinator")),
        agent_bin: Some(prev.join("berth-agent")),
        ..Default::default()
    })
    .await;
    // Made by the old release: data, and a running workspace.
    let (member, joins) = old_data(&c).await;
    let (s, w) = c.create("w1").await;
    assert_eq!(s, 201, "{w}");
    c.wait_state("w1", "running", Duration::from_secs(60)).await;
    c.exec_ok("w1", "echo before > /workspace/kept").await;

    let traffic = Arc::new(Traffic {
        apis: c.coordinators.iter().map(|co| co.api.clone()).collect(),
        admin: c.admin_token.clone(),
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        phase: Arc::new(AtomicU32::new(0)),
        acked: Mutex::new(Vec::new()),
        failed: Mutex::new(Vec::new()),
        unanswered: AtomicU32::new(0),
    });
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = tokio::spawn(traffic.clone().run(stop.clone()));
    let settle = || tokio::time::sleep(Duration::from_millis(1500));
    settle().await;
    // Phases: 1 and 2 stop an old coordinator, 3 and 4 a new one.
    let mut slow = Vec::new();
    for (phase, i) in [(1, 0), (2, 1), (3, 0), (4, 1)] {
        traffic.phase.store(phase, Ordering::SeqCst);
        // A request in flight when the stop comes: its body arrives 2 s
        // after the headers.
        let probe = tokio::spawn(slow_token(
            c.coordinators[i].api.clone(),
            c.admin_token.clone(),
            format!("slow{phase}"),
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let c2 = &mut c;
        tokio::task::block_in_place(|| {
            c2.stop_coordinator_at(i);
            c2.coordinators[i].bin = berth_tests::coordinator_bin();
            c2.start_coordinator_at(i);
        });
        let answer = probe.await.unwrap();
        if phase <= 2 {
            // The control: the old release drops it.
            assert!(
                answer.as_ref().map_or(true, |(s, _)| *s != 201),
                "the old release answered a request in flight at its stop: {answer:?}"
            );
        } else {
            let (status, body) = answer.expect("an answer to the request in flight");
            assert_eq!(status, 201, "{body}");
            let t: Value = serde_json::from_str(&body).unwrap();
            slow.push(t["token"].as_str().unwrap().to_string());
        }
        traffic.phase.store(phase * 10, Ordering::SeqCst);
        settle().await;
    }
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();

    let mut acked = traffic.acked.lock().unwrap().clone();
    let failed = traffic.failed.lock().unwrap().clone();
    let during = |p: u32| failed.iter().filter(|(ph, _)| *ph == p).count();
    println!(
        "rolling upgrade: {} tokens acknowledged, {} attempts refused or reset unanswered (retried); failed while an old coordinator stopped: {} and {}; while a new one stopped: {} and {}",
        acked.len(),
        traffic.unanswered.load(Ordering::SeqCst),
        during(1),
        during(2),
        during(3),
        during(4)
    );
    assert!(
        acked.len() > 50,
        "too little traffic to say anything: {}",
        acked.len()
    );
    let new_failures: Vec<_> = failed.iter().collect();
    assert!(
        new_failures.is_empty(),
        "requests failed with this release's coordinators: {new_failures:?}\n{}",
        c.coordinator_log()
            .lines()
            .filter(|l| !l.contains("DEBUG"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(slow.len(), 2);
    acked.extend(slow);
    // Every acknowledged write is there, on both.
    for (n, t) in acked.iter().enumerate() {
        let api = &c.coordinators[n % 2].api;
        let r = reqwest::Client::new()
            .get(format!("{api}/v1/whoami"))
            .bearer_auth(t)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "acknowledged token {n} is lost");
    }

    // The old agent, with the new coordinators: its workspace stayed and
    // answers; a new one runs on it.
    let (_, nodes) = c.get("/v1/nodes").await;
    assert!(
        nodes
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["id"] == "n0" && n["status"] == "ready"),
        "{nodes}"
    );
    assert_eq!(exec(&c, "w1", "cat /workspace/kept").await, "before\n");
    let (s, w) = c.create("w2").await;
    assert_eq!(s, 201, "{w}");
    c.wait_state("w2", "running", Duration::from_secs(60)).await;
    assert_eq!(exec(&c, "w2", "echo new").await, "new\n");
    old_data_works(&c, &member, &joins).await;
    c.finish().await;
}

/// `POST /v1/tokens` on a connection of its own whose body comes 2 s after
/// its headers; the answer's status and body.
async fn slow_token(api: String, admin: String, user: String) -> Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = api.trim_start_matches("http://").to_string();
    let body = json!({"user": user, "role": "member"}).to_string();
    let (head, tail) = body.split_at(body.len() / 2);
    let mut s = tokio::net::TcpStream::connect(&addr)
        .await
        .map_err(|e| e.to_string())?;
    let request = format!(
        "POST /v1/tokens HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {admin}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{head}",
        body.len()
    );
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.write_all(tail.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no answer: {answer:?}"))?;
    let body = answer
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    Ok((status, body))
}

/// Runs `sh -c SCRIPT` in workspace `ws` through whichever coordinator
/// holds its node's link; its output.
async fn exec(c: &Cluster, ws: &str, script: &str) -> String {
    let http = reqwest::Client::new();
    let answer = berth_tests::eventually(Duration::from_secs(30), || async {
        for co in &c.coordinators {
            let r = http
                .post(format!("{}/v1/workspaces/{ws}/exec", co.api))
                .bearer_auth(&c.admin_token)
                .json(&json!({"argv": ["sh", "-c", script]}))
                .send()
                .await
                .ok()?;
            if r.status() == 200 {
                let v: Value = r.json().await.ok()?;
                return (v["exit_code"] == 0)
                    .then(|| v["stdout"].as_str().unwrap_or_default().to_string());
            }
        }
        None
    })
    .await;
    answer.unwrap_or_else(|| panic!("{ws}: {script} did not run"))
}
