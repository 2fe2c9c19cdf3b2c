//! OIDC sign-in (docs/admin.md, "OIDC sign-in") against a real provider
//! (oidc-provider-mock, on loopback) through a proxy the coordinator takes
//! for the issuer. Signed in from a browser's point of view (an HTTP client
//! following the redirects and filling the provider's form) and with
//! `berth login --oidc`: the user, the admin role and the teams their groups
//! give. Then what must be refused, each with the same user and a control
//! that signs in again: a user in no configured group, an ID token from
//! another issuer, one whose signature was changed, one already expired; a
//! CLI code traded twice or with the wrong secret.

use berth_tests::oidc::{Provider, Proxy, Tamper};
use berth_tests::Coordinator;
use serde_json::{json, Value};
use std::process::Stdio;
use tokio::io::AsyncBufReadExt;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get(reqwest::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// Goes through a sign-in from `start` as the provider's user `sub`, as a
/// browser would; returns the coordinator's answer to the provider's
/// redirect back.
async fn sign_in(start: &str, sub: &str) -> reqwest::Response {
    let http = client();
    let r = http.get(start).send().await.unwrap();
    assert_eq!(
        r.status(),
        303,
        "{start}: {}",
        r.text().await.unwrap_or_default()
    );
    let authorize = location(&r);
    let page = http.get(&authorize).send().await.unwrap();
    assert_eq!(page.status(), 200, "the provider's form");
    let r = http
        .post(&authorize)
        .form(&[("sub", sub)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap_or_default());
    let back = location(&r);
    assert!(back.contains("/auth/oidc/callback?"), "{back}");
    http.get(&back).send().await.unwrap()
}

/// Signs in from a browser; returns the token of the cookie it set.
async fn browser_token(api: &str, sub: &str) -> String {
    let r = sign_in(&format!("{api}/auth/oidc/login?next=/w/login"), sub).await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap_or_default());
    assert_eq!(location(&r), "/w/login");
    let cookie = r
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|c| c.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    cookie
        .strip_prefix("berth_token=")
        .and_then(|c| c.split(';').next())
        .expect("the berth_token cookie")
        .to_string()
}

/// A refused sign-in: its status and error code (and no cookie).
async fn refused(api: &str, sub: &str) -> (u16, Value) {
    let r = sign_in(&format!("{api}/auth/oidc/login"), sub).await;
    let status = r.status().as_u16();
    assert!(r.headers().get(reqwest::header::SET_COOKIE).is_none());
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get(api: &str, path: &str, token: &str) -> (u16, Value) {
    let r = client()
        .get(format!("{api}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_sign_in_maps_groups_and_refuses_what_it_must() {
    let dir = tempfile::tempdir().unwrap();
    let good = Provider::start(3600, &dir.path().join("provider.log"));
    let expired = Provider::start(1, &dir.path().join("expired.log"));
    for p in [&good, &expired] {
        p.set_user(
            "alice",
            json!({"preferred_username": "alice", "groups": ["ops", "web-dev"]}),
        )
        .await;
        p.set_user(
            "bob",
            json!({"preferred_username": "Bob", "groups": ["web-lead"]}),
        )
        .await;
        p.set_user(
            "carol",
            json!({"preferred_username": "carol", "groups": ["sales"]}),
        )
        .await;
    }
    let proxy = Proxy::start(&good.addr).await;
    let issuer = format!("http://{}", proxy.addr);
    let co = Coordinator::start_configured(|api| {
        format!(
            "[oidc]\nissuer = \"{issuer}\"\nclient_id = \"berth\"\nclient_secret = \"s3cret\"\n\
             public_url = \"{api}\"\nscopes = [\"openid\", \"profile\"]\n\
             [[oidc.groups]]\ngroup = \"ops\"\nadmin = true\n\
             [[oidc.groups]]\ngroup = \"web-dev\"\nteam = \"web\"\n\
             [[oidc.groups]]\ngroup = \"web-lead\"\nteam = \"web\"\nrole = \"admin\"\n"
        )
    });
    let api = co.api.clone();

    // The sign-in page offers the provider.
    let page = client().get(format!("{api}/w/login")).send().await.unwrap();
    assert!(page
        .text()
        .await
        .unwrap()
        .contains("/auth/oidc/login?next="));

    // A browser: alice is an admin (ops) and a member of team web.
    let alice = browser_token(&api, "alice").await;
    let (s, me) = get(&api, "/v1/whoami", &alice).await;
    assert_eq!(
        (s, &me["user"], &me["role"]),
        (200, &json!("alice"), &json!("admin")),
        "{me}"
    );
    let (s, teams) = get(&api, "/v1/teams", &alice).await;
    assert_eq!(s, 200);
    assert_eq!(teams[0]["name"], "web", "{teams}");
    assert_eq!(
        teams[0]["members"],
        json!([{"user": "alice", "role": "member"}]),
        "{teams}"
    );

    // The CLI: bob (his username lower-cased), the admin of team web.
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut login = tokio::process::Command::new(berth_tests::cli_bin())
        .args(["login", "--oidc"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("BERTH_URL", &api)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(login.stderr.take().unwrap()).lines();
    let link = loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("the CLI prints a link");
        if let Some(l) = line.trim().strip_prefix("http") {
            break format!("http{l}");
        }
    };
    assert!(
        link.starts_with(&format!("{api}/auth/oidc/login?cli_port=")),
        "{link}"
    );
    let r = sign_in(&link, "bob").await;
    assert_eq!(r.status(), 303);
    let loopback = location(&r);
    assert!(loopback.starts_with("http://127.0.0.1:"), "{loopback}");
    let r = client().get(&loopback).send().await.unwrap();
    assert_eq!(r.status(), 200, "the CLI's listener takes the code");
    let out = login.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("as bob (member)"), "{stdout}");
    let whoami = std::process::Command::new(berth_tests::cli_bin())
        .args(["team", "list", "--json"])
        .env("HOME", &home)
        .env_remove("BERTH_TOKEN")
        .env_remove("BERTH_URL")
        .output()
        .unwrap();
    let teams: Value = serde_json::from_slice(&whoami.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&whoami.stderr)));
    let members = teams[0]["members"].as_array().unwrap();
    assert!(
        members.contains(&json!({"user": "bob", "role": "admin"})),
        "{teams}"
    );
    // The code is used: it trades for nothing again.
    let code = loopback.split("code=").nth(1).unwrap();
    let r = client()
        .post(format!("{api}/auth/oidc/token"))
        .json(&json!({"code": code, "verifier": "x".repeat(43)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "oidc_code");

    // Refused: a user in none of the configured groups.
    let (s, e) = refused(&api, "carol").await;
    assert_eq!((s, e["code"].as_str()), (403, Some("oidc_no_group")), "{e}");
    // An ID token signed by the provider for another issuer.
    proxy.set(&good.addr, Tamper::WrongIssuer);
    let (s, e) = refused(&api, "alice").await;
    assert_eq!((s, e["code"].as_str()), (403, Some("oidc_refused")), "{e}");
    assert!(e["message"].as_str().unwrap().contains("issuer"), "{e}");
    // One whose signature does not hold.
    proxy.set(&good.addr, Tamper::BadSignature);
    let (s, e) = refused(&api, "alice").await;
    assert_eq!((s, e["code"].as_str()), (403, Some("oidc_refused")), "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("signature"),
        "{e}"
    );
    // One expired when it arrives (it lasts a second, and is held longer).
    proxy.set(&expired.addr, Tamper::Late);
    let (s, e) = refused(&api, "alice").await;
    assert_eq!((s, e["code"].as_str()), (403, Some("oidc_refused")), "{e}");
    assert!(e["message"].as_str().unwrap().contains("xpired"), "{e}");
    // The control: the same sign-in through the same proxy, untampered.
    proxy.set(&good.addr, Tamper::None);
    let again = browser_token(&api, "alice").await;
    assert_eq!(get(&api, "/v1/whoami", &again).await.0, 200);
    // Each sign-in is in the audit log, under the user it signed in; a
    // refusal with its code.
    let (s, log) = get(
        &api,
        "/v1/admin/audit?action=GET%20/auth/oidc/callback&limit=1000",
        &co.admin_token(),
    )
    .await;
    assert_eq!(s, 200, "{log}");
    let entries = log["entries"].as_array().unwrap();
    let by = |actor: &str, status: i64| {
        entries
            .iter()
            .filter(|e| e["actor"] == actor && e["status"] == status)
            .count()
    };
    assert_eq!(by("alice", 200), 2, "{log}");
    assert_eq!(by("bob", 200), 1, "{log}");
    assert!(
        entries
            .iter()
            .any(|e| e["status"] == 403 && e["error_code"] == "oidc_no_group"),
        "{log}"
    );
    // The CLI's trade is recorded without its secret.
    let (_, trades) = get(
        &api,
        "/v1/admin/audit?action=POST%20/auth/oidc/token",
        &co.admin_token(),
    )
    .await;
    let trades = trades["entries"].to_string();
    assert!(
        trades.contains("oidc_code") && !trades.contains(&"x".repeat(43)),
        "{trades}"
    );
    let (s, v) = get(&api, "/v1/admin/audit/verify", &co.admin_token()).await;
    assert_eq!((s, &v["ok"]), (200, &json!(true)), "{v}");
    assert!(!co.log().contains("panicked"), "{}", co.log());
}
