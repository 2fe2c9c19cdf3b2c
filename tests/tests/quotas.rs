//! Quotas (docs/admin.md, "Quotas"). On both store backends, two stores
//! standing for two coordinators: 50 concurrent creates against a limit of
//! 10 workspaces make exactly 10, and concurrent starts against a running
//! limit start exactly that many. End to end through the API and the CLI on
//! a real cluster: 50 concurrent creates against an admin's limit of 10;
//! a refusal names the limit and the usage; a stop makes room for a start;
//! a member reads their own quota but cannot set one.

use berth_coordinator::domain::lifecycle::{self, Event};
use berth_coordinator::domain::quota::Limits;
use berth_coordinator::store::{Store, Subject, QUOTA_EXCEEDED};
use berth_tests::db::ws;
use berth_tests::Cluster;
use serde_json::json;
use std::time::Duration;

berth_tests::on_both_backends!(
    fifty_concurrent_creates_make_exactly_the_limit,
    concurrent_starts_start_exactly_the_running_limit,
    a_teams_limit_holds_across_its_members,
);

async fn a_teams_limit_holds_across_its_members(url: &str) {
    let (a, b) = (
        Store::open(url).await.unwrap(),
        Store::open(url).await.unwrap(),
    );
    let limits = Limits {
        workspaces: Some(3),
        ..Limits::default()
    };
    a.set_quota(Subject::Team("web"), &limits).await.unwrap();
    // Twenty creates by two members at once, each within their own (no) limit.
    let creates = (0..20).map(|i| {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let owner = if i % 2 == 0 { "alice" } else { "bob" };
        let mut w = ws(&format!("t{i:02}"), owner, &format!("t{i}"), 100);
        w.team = "web".into();
        async move { store.insert_workspace_within(&w, &Limits::default()).await }
    });
    let results = futures::future::join_all(creates).await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        3,
        "{results:?}"
    );
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(e.code, QUOTA_EXCEEDED);
        assert!(
            e.message
                .contains("team web's quota is reached: workspaces: 4 of 3"),
            "{}",
            e.message
        );
    }
    // Outside the team, alice is not held back by it.
    a.insert_workspace_within(&ws("x1", "alice", "own", 100), &Limits::default())
        .await
        .unwrap();
}

async fn fifty_concurrent_creates_make_exactly_the_limit(url: &str) {
    let (a, b) = (
        Store::open(url).await.unwrap(),
        Store::open(url).await.unwrap(),
    );
    let limits = Limits {
        workspaces: Some(10),
        ..Limits::default()
    };
    let creates = (0..50).map(|i| {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move {
            store
                .insert_workspace_within(
                    &ws(&format!("w{i:02}"), "alice", &format!("d{i}"), 100),
                    &limits,
                )
                .await
        }
    });
    let results = futures::future::join_all(creates).await;
    let made = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(made, 10, "{results:?}");
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(e.code, QUOTA_EXCEEDED, "{e:?}");
        assert!(e.message.contains("workspaces: 11 of 10"), "{}", e.message);
    }
    // Another owner is not held back by alice's limit.
    b.insert_workspace_within(&ws("x1", "bob", "d1", 100), &limits)
        .await
        .unwrap();
}

async fn concurrent_starts_start_exactly_the_running_limit(url: &str) {
    let (a, b) = (
        Store::open(url).await.unwrap(),
        Store::open(url).await.unwrap(),
    );
    let limits = Limits {
        running: Some(2),
        ..Limits::default()
    };
    // Six stopped workspaces (made with start = false).
    let mut stopped = Vec::new();
    for i in 0..6 {
        let mut w = ws(&format!("s{i}"), "carol", &format!("s{i}"), 100);
        let lc = lifecycle::Workspace::new(false);
        (w.state, w.desired) = (lc.state, lc.desired);
        a.insert_workspace_within(&w, &limits).await.unwrap();
        stopped.push(w);
    }
    let starts = stopped.iter().enumerate().map(|(i, w)| {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (lc, _) = lifecycle::step(&w.lifecycle(), &Event::StartRequested).unwrap();
        let next = w.with_lifecycle(&lc, berth_proto::units::now_ms());
        let w = w.clone();
        async move { store.update_workspace_within(&w, &next, &limits).await }
    });
    let results = futures::future::join_all(starts).await;
    let started = results.iter().filter(|r| matches!(r, Ok(Some(_)))).count();
    assert_eq!(started, 2, "{results:?}");
    assert!(results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .all(|e| e.code == QUOTA_EXCEEDED));
}

const T: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quotas_hold_through_the_api_and_the_cli() {
    let c = Cluster::start(Default::default()).await;
    let dave = c.member_token("dave").await;
    let (code, out, err) = c
        .berth(
            &c.admin_token,
            &[
                "admin",
                "quota",
                "set",
                "dave",
                "--workspaces",
                "10",
                "--running",
                "20",
            ],
        )
        .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("set for user"), "{out}");

    let creates = (0..50).map(|i| {
        let (c, dave) = (&c, &dave);
        async move {
            c.post_as(
                "/v1/workspaces",
                json!({"name": format!("q{i}"), "image": c.tiny(), "cpu_millis": 100,
                       "memory_bytes": 32u64 << 20, "disk_bytes": 16u64 << 20, "pids": 32}),
                dave,
            )
            .await
        }
    });
    let results = futures::future::join_all(creates).await;
    let made = results.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(made, 10, "{results:?}");
    for (s, v) in results.iter().filter(|(s, _)| *s != 201) {
        assert_eq!(
            (*s, v["code"].as_str()),
            (403, Some("quota_exceeded")),
            "{v}"
        );
        assert_eq!(
            v["message"],
            "dave's quota is reached: workspaces: 11 of 10"
        );
    }

    // Running: 10 run; lowered to 9, a stop is fine, a start past it is not.
    let (s, q) = c
        .send_json(
            reqwest::Method::PUT,
            "/v1/admin/quotas/dave",
            json!({"workspaces": 10, "running": 9}),
        )
        .await;
    assert_eq!(s, 200, "{q}");
    let name = results
        .iter()
        .find(|(s, _)| *s == 201)
        .map(|(_, v)| v["name"].as_str().unwrap().to_string())
        .unwrap();
    c.wait_state_as(&name, "running", T, &dave).await;
    let (s, _) = c
        .post_as(&format!("/v1/workspaces/{name}/stop"), json!({}), &dave)
        .await;
    assert_eq!(s, 202);
    c.wait_state_as(&name, "stopped", T, &dave).await;
    let (code, _, err) = c.berth(&dave, &["start", &name, "--no-wait"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("quota_exceeded") && err.contains("running workspaces: 10 of 9"),
        "{err}"
    );
    let (s, w) = c.get_as(&format!("/v1/workspaces/{name}"), &dave).await;
    assert_eq!(
        (s, w["state"].as_str()),
        (200, Some("stopped")),
        "refused: nothing changed"
    );

    // The member reads their own quota; only an admin sets one.
    let (code, out, err) = c.berth(&dave, &["quota", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let q: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(q["usage"]["workspaces"], 10);
    assert_eq!(q["usage"]["running"], 9);
    assert_eq!(q["limits"]["running"], 9);
    let (s, _) = c.get_as("/v1/admin/quotas/dave", &dave).await;
    assert_eq!(s, 403);
    // A delete frees a unit for a create.
    let (code, _, err) = c.berth(&dave, &["delete", &name, "--force"]).await;
    assert_eq!(code, 0, "{err}");
    let (s, v) = c
        .post_as(
            "/v1/workspaces",
            json!({"name": "again", "image": c.tiny(), "cpu_millis": 100,
                   "memory_bytes": 32u64 << 20, "disk_bytes": 16u64 << 20, "pids": 32, "start": false}),
            &dave,
        )
        .await;
    assert_eq!(s, 201, "{v}");
    c.finish().await;
}
