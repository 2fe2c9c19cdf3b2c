//! `berth open`: a one-time sign-in link to a workspace's browser pages,
//! made with the caller's own token; it signs a browser in once, within its
//! time, and leads only to pages under /w/.

use berth_tests::Coordinator;

#[tokio::test(flavor = "multi_thread")]
async fn a_sign_in_link_works_once() {
    let c = Coordinator::start();
    let admin = c.admin_token();
    let out = std::process::Command::new(berth_tests::cli_bin())
        .args(["open", "demo"])
        .env("BERTH_URL", &c.api)
        .env("BERTH_TOKEN", &admin)
        .env("HOME", c.data_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(
        url.starts_with(&format!("{}/w/login/link/", c.api)),
        "{url}"
    );
    assert!(url.ends_with("?next=/w/demo/terminal"), "{url}");

    // A browser opening it is signed in (the cookie holds the token) and led on.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/w/demo/terminal");
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.starts_with(&format!("berth_token={admin};")) && cookie.contains("HttpOnly"));
    // Once only: the second time it leads to the sign-in page, no cookie.
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("/w/login?next="));
    assert!(r.headers().get("set-cookie").is_none());

    // Only to pages under /w/, and only for a caller with a token.
    let post = |body: serde_json::Value, token: Option<&str>| {
        let mut rb = http.post(format!("{}/v1/sign-in-links", c.api)).json(&body);
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        rb.send()
    };
    let r = post(
        serde_json::json!({"next": "https://evil.example/"}),
        Some(&admin),
    )
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    let r = post(serde_json::json!({"next": "/w/demo/terminal"}), None)
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = post(serde_json::json!({"next": "/w/demo/8000/"}), Some(&admin))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
}
