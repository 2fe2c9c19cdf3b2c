//! The audit log (docs/admin.md, "Audit log") on the real components: a
//! member's and an admin's requests through the API and the CLI, a refused
//! one, an unauthenticated one and a tunnel session each leave one entry
//! with actor, token, source, action, resource, status, error code, the
//! request id the answer carried, and a diff without secrets. Then, as an
//! attacker with write access to the store but not the key: an entry
//! changed, one removed and one forged at the end are each found by
//! `berth admin audit verify`, which passes on the intact log (control).

use berth_tests::Cluster;
use serde_json::{json, Value};
use sqlx::Row;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(90);
const SECRET: &str = "hunter2-never-logged";

/// Every entry, as the CLI exports them (JSON lines).
async fn export(c: &Cluster, filters: &[&str]) -> Vec<Value> {
    let mut args = vec!["admin", "audit", "--json", "--limit", "10000"];
    args.extend_from_slice(filters);
    let (code, out, err) = c.berth(&c.admin_token, &args).await;
    assert_eq!(code, 0, "{err}");
    out.lines()
        .map(|l| serde_json::from_str(l).expect("an entry per line"))
        .collect()
}

/// The one entry of `action` on `resource`.
fn one<'a>(entries: &'a [Value], action: &str, resource: &str) -> &'a Value {
    let found: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == action && e["resource"] == resource)
        .collect();
    assert_eq!(found.len(), 1, "{action} {resource}: {found:?}");
    found[0]
}

async fn verify(c: &Cluster) -> (i32, String) {
    let (code, out, err) = c.berth(&c.admin_token, &["admin", "audit", "verify"]).await;
    (code, format!("{out}{err}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_is_recorded_and_tampering_is_found() {
    let c = Cluster::start(Default::default()).await;
    let alice = c.member_token("alice").await;

    // A member's create, with a secret in its environment; its answer's
    // request id is the entry's.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/workspaces", c.api))
        .bearer_auth(&alice)
        .header("user-agent", "audit-test/1")
        .json(&json!({"name": "a1", "image": c.tiny(), "cpu_millis": 200,
            "memory_bytes": 64u64 << 20, "disk_bytes": 32u64 << 20, "pids": 64,
            "env": {"API_KEY": SECRET}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let create_id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    c.wait_state_as("a1", "running", T, &alice).await;

    // Through the CLI: a stop, a start, and a refused second start.
    for (cmd, code) in [("stop", 0), ("start", 0)] {
        let (got, _, err) = c.berth(&alice, &[cmd, "a1"]).await;
        assert_eq!(got, code, "{cmd}: {err}");
    }
    let (s, _) = c
        .post_as(
            "/v1/workspaces",
            json!({"name": "a1", "image": c.tiny()}),
            &alice,
        )
        .await;
    assert_eq!(s, 409);
    // Unauthenticated, and a git credential whose token must not be kept.
    let (s, _) = c
        .post_as("/v1/workspaces/a1/stop", json!({}), "bt_nobody_x")
        .await;
    assert_eq!(s, 401);
    let (s, v) = c
        .post_as(
            "/v1/git-credentials",
            json!({"host": "git.example", "username": "alice", "token": SECRET}),
            &alice,
        )
        .await;
    assert_eq!(s, 201, "{v}");

    // A tunnel session: a connection to a port through the coordinator.
    let (s, out) = c
        .post_as(
            "/v1/workspaces/a1/exec",
            json!({"argv": ["sh", "-c", "echo hi > /workspace/i.html && httpd -p 127.0.0.1:8080 -h /workspace"]}),
            &alice,
        )
        .await;
    assert_eq!((s, out["exit_code"].as_i64()), (200, Some(0)), "{out}");
    let addr = c.api.trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(
        format!(
            "GET /v1/workspaces/a1/ports/8080 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {alice}\r\n\
             Connection: Upgrade\r\nUpgrade: berth-tcp\r\n\r\nGET /i.html HTTP/1.0\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).await.unwrap();
    assert!(got.starts_with("HTTP/1.1 101"), "{got}");
    assert!(got.ends_with("hi\n"), "{got}");

    let entries = export(&c, &[]).await;
    let creates: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "POST /v1/workspaces")
        .collect();
    assert_eq!(creates.len(), 2, "{creates:?}");
    let create = creates[0];
    assert_eq!(
        (
            creates[1]["status"].as_i64(),
            creates[1]["error_code"].as_str()
        ),
        (Some(409), Some("name_taken"))
    );
    assert_eq!(create["actor"], "alice");
    assert_eq!(create["role"], "member");
    assert_eq!(create["status"], 201);
    assert_eq!(create["request_id"], create_id.as_str());
    assert_eq!(create["user_agent"], "audit-test/1");
    assert_eq!(create["source_ip"], "127.0.0.1");
    assert!(!create["token_id"].as_str().unwrap().is_empty());
    assert!(alice.contains(create["token_id"].as_str().unwrap()));
    let diff: Value = serde_json::from_str(create["diff"].as_str().unwrap()).unwrap();
    assert_eq!(diff["request"]["name"], "a1", "{diff}");
    assert_eq!(diff["request"]["env"], "(secret)", "{diff}");

    let stops: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "POST /v1/workspaces/{name}/stop")
        .collect();
    assert_eq!(stops.len(), 2, "alice's and the unauthenticated one");
    let stop = stops[0];
    assert_eq!(
        (stop["actor"].as_str(), stop["status"].as_i64()),
        (Some("alice"), Some(202))
    );
    let diff: Value = serde_json::from_str(stop["diff"].as_str().unwrap()).unwrap();
    assert_eq!(
        diff["change"]["desired"],
        json!(["running", "stopped"]),
        "{diff}"
    );
    let anon = stops.iter().find(|e| e["status"] == 401).expect("the 401");
    assert_eq!(
        (anon["actor"].as_str(), anon["error_code"].as_str()),
        (Some(""), Some("unauthorized"))
    );

    let start = one(
        &entries,
        "POST /v1/workspaces/{name}/start",
        "/v1/workspaces/a1/start",
    );
    assert_eq!(start["status"], 202);
    let token = one(&entries, "POST /v1/tokens", "/v1/tokens");
    assert_eq!(
        (token["actor"].as_str(), token["role"].as_str()),
        (Some("admin"), Some("admin"))
    );
    let tunnel = one(
        &entries,
        "GET /v1/workspaces/{name}/ports/{port}",
        "/v1/workspaces/a1/ports/8080",
    );
    assert_eq!(tunnel["status"], 101, "{tunnel}");
    assert!(
        !entries.iter().any(|e| e.to_string().contains(SECRET)),
        "a secret reached the audit log"
    );
    // Seqs run from 1 without gaps; the filters select.
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e["seq"], i as i64 + 1);
    }
    let alices = export(&c, &["--actor", "alice"]).await;
    assert!(alices.len() >= 6 && alices.iter().all(|e| e["actor"] == "alice"));
    let only = export(&c, &["--action", "POST /v1/workspaces/{name}/st"]).await;
    assert_eq!(only.len(), 3, "{only:?}");
    let (s, _) = c.get_as("/v1/admin/audit", &alice).await;
    assert_eq!(s, 403, "members do not read the audit log");

    // Control: the intact chain verifies.
    let (code, said) = verify(&c).await;
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("chain intact"), "{said}");

    // The attacker edits the store directly.
    let db = format!(
        "sqlite://{}",
        c.coordinators[0].dir.join("berth.db").display()
    );
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let exec = |q: String| {
        let pool = pool.clone();
        async move { sqlx::query(&q).execute(&pool).await.unwrap() }
    };
    exec("UPDATE audit_log SET actor = 'bob' WHERE seq = 3".into()).await;
    let (code, said) = verify(&c).await;
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("entry 3 does not match its MAC"), "{said}");
    exec(format!(
        "UPDATE audit_log SET actor = '{}' WHERE seq = 3",
        entries[2]["actor"].as_str().unwrap()
    ))
    .await;
    assert_eq!(verify(&c).await.0, 0, "restored");

    let row = sqlx::query("SELECT * FROM audit_log WHERE seq = 4")
        .fetch_one(&pool)
        .await
        .unwrap();
    let cols: Vec<String> = (0..row.len())
        .map(|i| match row.try_get::<i64, _>(i) {
            Ok(n) => n.to_string(),
            Err(_) => format!("'{}'", row.get::<String, _>(i).replace('\'', "''")),
        })
        .collect();
    exec("DELETE FROM audit_log WHERE seq = 4".into()).await;
    let (code, said) = verify(&c).await;
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("entries between 3 and 5 were removed"),
        "{said}"
    );
    exec(format!(
        "INSERT INTO audit_log VALUES ({})",
        cols.join(", ")
    ))
    .await;
    assert_eq!(verify(&c).await.0, 0, "restored");

    // A forged entry at the end, the head moved along with it.
    let (head, mac): (i64, String) = {
        let r = sqlx::query("SELECT seq, mac FROM audit_head")
            .fetch_one(&pool)
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    let forged = "0".repeat(64);
    exec(format!(
        "INSERT INTO audit_log VALUES ({}, 0, 'alice', '', 'admin', '', '', 'POST /v1/tokens', '/v1/tokens', 201, '', 'r', '{{}}', '{forged}')",
        head + 1
    ))
    .await;
    exec(format!(
        "UPDATE audit_head SET seq = {}, mac = '{forged}'",
        head + 1
    ))
    .await;
    let (code, said) = verify(&c).await;
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains(&format!("entry {} does not match its MAC", head + 1)),
        "{said}"
    );
    // Removing the forgery but not the head: the end no longer matches.
    exec(format!("DELETE FROM audit_log WHERE seq = {}", head + 1)).await;
    let (code, said) = verify(&c).await;
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains(&format!("the log ends at entry {head}")),
        "{said}"
    );
    exec(format!("UPDATE audit_head SET seq = {head}, mac = '{mac}'")).await;
    assert_eq!(verify(&c).await.0, 0, "restored");
    c.finish().await;
}
