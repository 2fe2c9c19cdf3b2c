//! Tiers from the coordinator's configuration file, and what a tier grants
//! beyond the security defaults: nested user namespaces and a private range
//! its workspaces may reach. Each grant is tried from inside a workspace of
//! the tier, with a workspace of the default tier as the refusal beside it.

use berth_tests::{Cluster, ClusterOptions};
use serde_json::json;
use std::time::Duration;

// The dev image (node, npm, python) is pulled under the suite's load: minutes, not seconds.
const T: Duration = Duration::from_secs(180);

/// A Python one-liner printing the errno of `unshare(CLONE_NEWUSER)` (0 on success).
const UNSHARE: &str = "python3 -c \"import ctypes; l=ctypes.CDLL(None, use_errno=True); r=l.unshare(0x10000000); print(0 if r==0 else ctypes.get_errno())\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_configured_tier_grants_its_workspaces_only() {
    berth_tests::images(&["dev"]);
    // A private service beside the nodes: on a port of the cluster's bridge
    // address (10.x: refused by the default egress policy).
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("coordinator.toml");
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut c = Cluster::start(ClusterOptions::default()).await;
    let private = format!("{}/32", c.host_ip);
    std::fs::write(
        &config,
        format!(
            "[[tiers]]\nname = \"small\"\ncpu_millis = 500\nmemory = \"256MiB\"\ndisk = \"256MiB\"\n\n\
             [[tiers]]\nname = \"lab\"\ncpu_millis = 500\nmemory = \"256MiB\"\ndisk = \"256MiB\"\n\
             nested_userns = true\negress_allow = [\"{private}\"]\n"
        ),
    )
    .unwrap();
    c.kill_coordinator();
    c.set_coordinator_args(vec!["--config".into(), config.display().to_string()]);
    c.start_coordinator();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            use std::io::Write;
            let _ = (&s).write_all(b"HTTP/1.0 200 OK\r\n\r\nprivate\n");
        }
    });

    // The API lists the configured tiers with what they grant, and the
    // OpenAPI document offers exactly their names.
    let (_, tiers) = c.get("/v1/tiers").await;
    let names: Vec<&str> = tiers
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["small", "lab"], "{tiers}");
    assert_eq!(tiers[1]["nested_userns"], true);
    assert_eq!(tiers[1]["egress_allow"], json!([private]));
    let (_, doc) = c.get("/v1/openapi.json").await;
    assert_eq!(
        doc["components"]["schemas"]["CreateWorkspace"]["properties"]["tier"]["enum"],
        // null: the field may be null (the default tier)
        json!(["small", "lab", null])
    );
    let (s, e) = c
        .post(
            "/v1/workspaces",
            json!({"name": "x", "image": c.tiny(), "tier": "medium"}),
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (422, Some("invalid_tier")), "{e}");

    let dev = format!("{}/dev:latest", c.registry.addr);
    for (name, tier) in [("plain", None), ("lab", Some("lab"))] {
        let mut body = json!({"name": name, "image": dev});
        if let Some(t) = tier {
            body["tier"] = json!(t);
        }
        let (s, w) = c.post("/v1/workspaces", body).await;
        assert_eq!(s, 201, "{w}");
        assert_eq!(w["tier"], tier.unwrap_or("small"));
        c.wait_state(name, "running", T).await;
    }
    let cr = &c;
    let exec = |name: &str, root: bool, script: String| {
        let body =
            json!({"argv": ["sh", "-c", script], "user": if root { "root" } else { "user" }});
        let path = format!("/v1/workspaces/{name}/exec");
        async move { cr.post(&path, body).await.1 }
    };

    // The private service: reached from the lab tier's workspace only.
    let curl = format!("curl -sS -m 5 http://{}:{port}/", c.host_ip);
    let out = exec("lab", false, curl.clone()).await;
    assert_eq!(out["stdout"], "private\n", "lab reaches its range: {out}");
    let out = exec("plain", false, curl).await;
    assert_ne!(out["exit_code"], 0, "the default tier reached it: {out}");

    // Nested user namespaces: made by the lab tier's root, refused (EPERM)
    // to the default tier's.
    let out = exec("lab", true, UNSHARE.into()).await;
    assert_eq!(out["stdout"], "0\n", "{out}");
    let out = exec("plain", true, UNSHARE.into()).await;
    assert_eq!(out["stdout"], "1\n", "{out}");

    for name in ["plain", "lab"] {
        c.delete(&format!("/v1/workspaces/{name}")).await;
        c.wait_state(name, "deleted", T).await;
    }

    // A bad file stops the coordinator before it serves, naming the key.
    std::fs::write(
        &config,
        "[[tiers]]\nname = \"lab\"\ncpu_millis = 500\nmemory = \"256MiB\"\ndisk = \"256MiB\"\negress_allow = [\"10.0.0.1/8\"]\n",
    )
    .unwrap();
    let out = std::process::Command::new(berth_tests::coordinator_bin())
        .args(["--config", &config.display().to_string(), "run"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("tiers[0].egress_allow") && err.contains("host bits set"),
        "{err}"
    );
    c.finish().await;
}
