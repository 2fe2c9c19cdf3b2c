//! Teams (docs/admin.md, "Teams") on a real cluster, as each role would
//! try: a team admin manages members and acts on a member's team
//! workspace; a member creates one and acts on a teammate's; a viewer reads
//! it (the workspace, its backups, its previews, sandboxed) and is refused
//! every action (stop, exec, terminal, SSH, a port) and member management;
//! an outsider is refused even reading, as is a viewer once removed. A
//! workspace shared read-only with an outsider is read, listed and
//! previewed by them and nothing more, until unshared. A team's usage is costed under its name.

use berth_tests::Cluster;
use serde_json::json;
use std::time::Duration;

const T: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_roles_allow_what_they_say_and_nothing_more() {
    let mut c = Cluster::start(Default::default()).await;
    let config = c.dir.join("teams.toml");
    std::fs::write(&config, "[cost]\nnode_hourly = 1.0\nsample_seconds = 0.5\n").unwrap();
    c.kill_coordinator();
    c.set_coordinator_args(vec!["--config".into(), config.display().to_string()]);
    c.start_coordinator();
    let [alice, bob, carol, dave] = [
        c.member_token("alice").await,
        c.member_token("bob").await,
        c.member_token("carol").await,
        c.member_token("dave").await,
    ];

    // Only platform admins make teams; a team's admin manages its members.
    let (code, _, err) = c.berth(&alice, &["team", "create", "web"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("forbidden"), "{err}");
    let (code, _, err) = c.berth(&c.admin_token, &["team", "create", "web"]).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = c
        .berth(
            &c.admin_token,
            &["team", "set", "web", "alice", "--role", "admin"],
        )
        .await;
    assert_eq!(code, 0, "{err}");
    for (user, role) in [("bob", "member"), ("carol", "viewer")] {
        let (code, _, err) = c
            .berth(&alice, &["team", "set", "web", user, "--role", role])
            .await;
        assert_eq!(code, 0, "{err}");
    }
    let (code, out, _) = c.berth(&carol, &["team", "list", "--json"]).await;
    assert_eq!(code, 0);
    let teams: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(teams[0]["members"].as_array().unwrap().len(), 3, "{teams}");
    let (s, _) = c
        .send_json_as(
            "PUT",
            "/v1/teams/web/members/dave",
            json!({"role": "member"}),
            &carol,
        )
        .await;
    assert_eq!(s, 403, "a viewer does not manage members");

    // A viewer cannot put a workspace in the team; nor can anyone in a team
    // that does not exist.
    let body = |name: &str, team: &str| {
        json!({"name": name, "image": c.tiny(), "cpu_millis": 200, "memory_bytes": 64u64 << 20,
               "disk_bytes": 32u64 << 20, "pids": 64, "team": team})
    };
    let (s, _) = c.post_as("/v1/workspaces", body("v1", "web"), &carol).await;
    assert_eq!(s, 403);
    let (s, _) = c.post_as("/v1/workspaces", body("v1", "nope"), &bob).await;
    assert_eq!(s, 404);
    let (s, w) = c.post_as("/v1/workspaces", body("t1", "web"), &bob).await;
    assert_eq!(s, 201, "{w}");
    assert_eq!(w["team"], "web");
    c.wait_state_as("t1", "running", T, &bob).await;

    // A team's quota holds across its members: one workspace at most.
    let (code, out, err) = c
        .berth(
            &c.admin_token,
            &[
                "admin",
                "quota",
                "set",
                "web",
                "--team",
                "--workspaces",
                "1",
            ],
        )
        .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Quota of team web") && out.contains("set for team"),
        "{out}"
    );
    let (s, e) = c.post_as("/v1/workspaces", body("t2", "web"), &alice).await;
    assert_eq!(
        (s, e["code"].as_str()),
        (403, Some("quota_exceeded")),
        "{e}"
    );
    assert_eq!(
        e["message"],
        "team web's quota is reached: workspaces: 2 of 1"
    );
    let (s, q) = c.get_as("/v1/teams/web/quota", &carol).await;
    assert_eq!(
        (s, q["usage"]["workspaces"].as_u64()),
        (200, Some(1)),
        "{q}"
    );
    let (s, _) = c.get_as("/v1/teams/web/quota", &dave).await;
    assert_eq!(s, 403);

    // The team admin acts on bob's workspace: a stop and a start.
    let (code, _, err) = c.berth(&alice, &["stop", "t1", "--owner", "bob"]).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = c.berth(&alice, &["start", "t1", "--owner", "bob"]).await;
    assert_eq!(code, 0, "{err}");

    // The viewer reads; every action is refused.
    let (s, w) = c.get_as("/v1/workspaces/t1?owner=bob", &carol).await;
    assert_eq!((s, w["state"].as_str()), (200, Some("running")), "{w}");
    let (s, _) = c
        .get_as("/v1/workspaces/t1/backups?owner=bob", &carol)
        .await;
    assert_eq!(s, 200);
    let (s, l) = c.get_as("/v1/workspaces?team=web", &carol).await;
    assert_eq!((s, l.as_array().map(Vec::len)), (200, Some(1)), "{l}");
    let (s, e) = c
        .post_as("/v1/workspaces/t1/stop?owner=bob", json!({}), &carol)
        .await;
    assert_eq!(s, 403, "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("viewers of team web"),
        "{e}"
    );
    let (s, _) = c
        .post_as(
            "/v1/workspaces/t1/exec?owner=bob",
            json!({"argv": ["true"]}),
            &carol,
        )
        .await;
    assert_eq!(s, 403);
    let (code, _, err) = c
        .berth(&carol, &["exec", "t1", "--owner", "bob", "--", "true"])
        .await;
    assert_eq!(code, 1, "{err}");
    for path in ["ssh", "ports/8080", "terminal"] {
        let r = reqwest::Client::new()
            .get(format!("{}/v1/workspaces/t1/{path}?owner=bob", c.api))
            .bearer_auth(&carol)
            .header("connection", "upgrade")
            .header(
                "upgrade",
                if path == "terminal" {
                    "websocket"
                } else {
                    "berth-tcp"
                },
            )
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403, "{path}");
    }
    let (s, _) = c.delete_as("/v1/workspaces/t1?owner=bob", &carol).await;
    assert_eq!(s, 403);
    // A viewer reads the workspace's previews (a private port's),
    // sandboxed; an outsider does not.
    let (s, w) = c.get_as("/v1/workspaces/t1?owner=bob", &bob).await;
    assert_eq!(s, 200);
    let preview = format!("/w/{}/8000/", w["id"].as_str().unwrap());
    let (s, out) = c
        .post_as(
            "/v1/workspaces/t1/exec",
            json!({"argv": ["sh", "-c", "mkdir -p /workspace/www && echo hello-preview > /workspace/www/index.html && httpd -p 8000 -h /workspace/www"]}),
            &bob,
        )
        .await;
    assert_eq!((s, out["exit_code"].as_i64()), (200, Some(0)), "{out}");
    let open = |token: String| {
        let url = format!("{}{preview}", c.api);
        async move {
            let r = reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let sandboxed = r
                .headers()
                .get("content-security-policy")
                .is_some_and(|v| v.to_str().unwrap_or("").contains("sandbox"));
            (
                r.status().as_u16(),
                sandboxed,
                r.text().await.unwrap_or_default(),
            )
        }
    };
    let (s, sandboxed, body) = open(carol.clone()).await;
    assert_eq!(
        (s, sandboxed, body.as_str()),
        (200, true, "hello-preview\n")
    );
    assert_eq!(
        open(dave.clone()).await.0,
        403,
        "an outsider sees no preview"
    );
    // Control: the same exec by the member works.
    let (s, out) = c
        .post_as(
            "/v1/workspaces/t1/exec?owner=bob",
            json!({"argv": ["true"]}),
            &alice,
        )
        .await;
    assert_eq!((s, out["exit_code"].as_i64()), (200, Some(0)), "{out}");

    // An outsider reads nothing; a removed viewer neither.
    let (s, _) = c.get_as("/v1/workspaces/t1?owner=bob", &dave).await;
    assert_eq!(s, 403);
    let (s, _) = c.get_as("/v1/workspaces?team=web", &dave).await;
    assert_eq!(s, 403);
    // Shared read-only with the outsider: reads, lists, acts on nothing;
    // unshared, reads nothing again.
    let (code, out, err) = c.berth(&bob, &["share", "t1", "dave"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("shared (read-only) with dave"), "{out}");
    let (s, _) = c.get_as("/v1/workspaces/t1?owner=bob", &dave).await;
    assert_eq!(s, 200);
    let (code, out, _) = c.berth(&dave, &["list", "--shared", "--json"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("\"t1\""), "{out}");
    let (s, e) = c
        .post_as("/v1/workspaces/t1/stop?owner=bob", json!({}), &dave)
        .await;
    assert_eq!(s, 403);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("shared with you to read"),
        "{e}"
    );
    let (s, _) = c
        .post_as(
            "/v1/workspaces/t1/exec?owner=bob",
            json!({"argv": ["true"]}),
            &dave,
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = c
        .send_json_as(
            "PUT",
            "/v1/workspaces/t1/shares/eve?owner=bob",
            json!({}),
            &dave,
        )
        .await;
    assert_eq!(s, 403, "a reader does not share further");
    assert_eq!(
        open(dave.clone()).await.0,
        200,
        "a reader sees its previews"
    );
    let (code, _, err) = c.berth(&bob, &["share", "t1", "dave", "--remove"]).await;
    assert_eq!(code, 0, "{err}");
    let (s, _) = c.get_as("/v1/workspaces/t1?owner=bob", &dave).await;
    assert_eq!(s, 403);
    assert_eq!(open(dave.clone()).await.0, 403);

    let (code, _, err) = c.berth(&alice, &["team", "remove", "web", "carol"]).await;
    assert_eq!(code, 0, "{err}");
    let (s, _) = c.get_as("/v1/workspaces/t1?owner=bob", &carol).await;
    assert_eq!(s, 403);

    // The team's usage is costed under its name.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (s, u) = c.get("/v1/admin/usage?by=team").await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(u["rows"][0]["key"], "web", "{u}");
    assert!(u["rows"][0]["cost"].as_f64().unwrap() > 0.0, "{u}");
    c.finish().await;
}
