//! The web portal in headless Chromium (Debian's chromium), on the real
//! components: sign in on /w/login, create a workspace from the list page and
//! see it become running without a reload (the event stream), open the
//! editor (Monaco over the file API), create and save a file and read it
//! with `berth exec`, have a stale save refused, run a command in the
//! terminal; a viewer the workspace is shared with reads files in the editor,
//! is offered no terminal and no save, and cannot write even by calling the
//! API from the page; and a page on another origin that makes the browser
//! send alice's cookie cannot stop her workspace, which the same request
//! from the portal's own page does (the control). Screenshots of each page
//! at 1280 and 390 px go to target/screens/.

use berth_tests::browser::{Browser, Page};
use berth_tests::Cluster;
use serde_json::json;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

async fn exec(c: &Cluster, token: &str, script: &str) -> String {
    let (code, out, err) = c
        .berth(token, &["exec", "web", "--", "sh", "-c", script])
        .await;
    assert_eq!(code, 0, "{script}: {out}{err}");
    out
}

/// Screenshots of the page at both widths, each audited first: text
/// contrast (WCAG AA) and every control reached by Tab.
async fn shots(page: &mut Page, name: &str) {
    for width in [1280, 390] {
        page.screenshot(name, width).await;
        let problems = page.audit().await;
        assert!(problems.is_empty(), "{name} at {width} px: {problems:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_runs_a_workspace_from_sign_in_to_editor() {
    let c = Cluster::start(Default::default()).await;
    let alice = c.member_token("alice").await;
    let carol = c.member_token("carol").await;
    let browser = Browser::start();
    let mut page = browser.page().await;

    // Sign in with the token, as the login page asks.
    page.goto(&format!("{}/w/login?next=/w/", c.api)).await;
    shots(&mut page, "login").await;
    page.eval(&format!(
        "document.querySelector('input[name=token]').value = {}; document.querySelector('form').submit(); true",
        json!(alice)
    ))
    .await;
    assert!(
        page.wait_for(
            "location.pathname === '/w/' && document.body.dataset.ready === 'true'",
            T
        )
        .await,
        "signed in, on the workspaces page"
    );

    // Create from the page; it becomes running live (no reload).
    page.eval(&format!(
        "window.sameLoad = true; const f = document.getElementById('create');
         f.name.value = 'web'; f.image.value = {}; f.requestSubmit(); true",
        json!(c.tiny())
    ))
    .await;
    assert!(
        page.wait_for(
            "window.sameLoad === true && document.querySelector('tr[data-ws=web][data-state=running]') !== null",
            T
        )
        .await,
        "the row turned running without a reload: {} {}",
        page.eval("document.getElementById('rows').innerText").await,
        page.eval("document.getElementById('message').textContent").await
    );
    let row = page
        .eval("document.querySelector('tr[data-ws=web]').innerText")
        .await;
    assert!(row.as_str().unwrap().contains("n0"), "its node: {row}");
    shots(&mut page, "workspaces").await;
    // The audit's control: faint text and a button Tab skips are caught.
    page.eval(
        "document.querySelector('main').insertAdjacentHTML('beforeend',
           '<p id=probe1 style=\"color:#aaaaaa\">faint words</p><button id=probe2 tabindex=-1>skipped</button>'); true",
    )
    .await;
    let caught = page.audit().await;
    assert!(
        caught.iter().any(|p| p.contains("faint words"))
            && caught
                .iter()
                .any(|p| p.contains("not reached by Tab: button \"skipped\"")),
        "{caught:#?}"
    );
    page.eval("document.getElementById('probe1').remove(); document.getElementById('probe2').remove(); true")
        .await;

    // The editor: a new file, saved, is in the workspace.
    page.goto(&format!("{}/w/web/editor", c.api)).await;
    assert!(
        page.wait_for("document.body.dataset.ready === 'true'", T)
            .await,
        "Monaco loaded"
    );
    page.eval("berth.newFile('notes/hello.txt'); berth.editor.focus(); true")
        .await;
    page.type_text("hello from the editor").await;
    page.eval("document.getElementById('save').click(); true")
        .await;
    assert!(
        page.wait_for(
            "document.getElementById('status').textContent.startsWith('Saved')",
            T
        )
        .await,
        "saved: {}",
        page.eval("document.getElementById('status').textContent")
            .await
    );
    assert_eq!(
        exec(&c, &alice, "cat /workspace/notes/hello.txt").await,
        "hello from the editor"
    );
    assert!(
        page.wait_for(
            "!!document.querySelector('#files button[data-path=notes]')",
            T
        )
        .await,
        "the tree shows the new directory"
    );
    shots(&mut page, "editor").await;
    // An upload from the file picker lands in /workspace.
    let upload = c.dir.join("upload.txt");
    std::fs::write(&upload, "uploaded bytes\n").unwrap();
    let doc = page.call("DOM.getDocument", json!({})).await;
    let input = page
        .call(
            "DOM.querySelector",
            json!({"nodeId": doc["root"]["nodeId"], "selector": "#upload"}),
        )
        .await;
    page.call(
        "DOM.setFileInputFiles",
        json!({"nodeId": input["nodeId"], "files": [upload.display().to_string()]}),
    )
    .await;
    assert!(
        page.wait_for(
            "document.getElementById('status').textContent.startsWith('Uploaded')",
            T
        )
        .await,
        "uploaded: {}",
        page.eval("document.getElementById('status').textContent")
            .await
    );
    assert_eq!(
        exec(&c, &alice, "cat /workspace/upload.txt").await,
        "uploaded bytes\n"
    );

    // A change made in the workspace meanwhile: the stale save is refused
    // and says so; the file keeps the other change.
    exec(
        &c,
        &alice,
        "echo from-terminal > /workspace/notes/hello.txt",
    )
    .await;
    page.eval("berth.editor.focus(); true").await;
    page.type_text(" and more").await;
    page.eval("document.getElementById('save').click(); true")
        .await;
    assert!(
        page.wait_for(
            "document.getElementById('status').classList.contains('conflict')",
            T
        )
        .await,
        "the conflict is shown"
    );
    assert_eq!(
        exec(&c, &alice, "cat /workspace/notes/hello.txt").await,
        "from-terminal\n"
    );
    // Reopened, it shows the other version, which then saves.
    page.eval("berth.openFile('notes/hello.txt').then(() => true)")
        .await;
    assert_eq!(
        page.eval("berth.editor.getValue()").await,
        json!("from-terminal\n")
    );

    // The terminal runs a command in the workspace.
    page.goto(&format!("{}/w/web/terminal", c.api)).await;
    assert!(page.wait_for("window.berthConnected === true", T).await);
    tokio::time::sleep(Duration::from_millis(800)).await;
    page.type_text("echo portal-ok > /workspace/t.txt").await;
    page.enter().await;
    let mut ran = String::new();
    for _ in 0..50 {
        ran = exec(&c, &alice, "cat /workspace/t.txt 2>/dev/null || true").await;
        if ran == "portal-ok\n" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(ran, "portal-ok\n");
    shots(&mut page, "terminal").await;

    // The public home index: nothing of web until a preview is public;
    // then its project, as its package.json says, read from the workspace.
    let index = || async {
        reqwest::get(format!("{}/w/index", c.api))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let (s, _) = c
        .send_json_as(
            "PUT",
            "/v1/workspaces/web/files/package.json",
            json!({"name": "notes-app", "description": "Keeps notes & more"}),
            &alice,
        )
        .await;
    assert_eq!(s, 200);
    assert!(!index().await.contains("notes-app"), "not public yet");
    let (s, e) = c
        .send_json_as(
            "PUT",
            "/v1/workspaces/web/ports/8000/visibility",
            json!({"public": true}),
            &alice,
        )
        .await;
    assert!((200..300).contains(&s), "{e}");
    let (_, w) = c.get_as("/v1/workspaces/web", &alice).await;
    let html = index().await;
    assert!(
        html.contains("notes-app")
            && html.contains("Keeps notes &amp; more")
            && html.contains(&format!("/w/{}/8000/", w["id"].as_str().unwrap())),
        "{html}"
    );
    page.goto(&format!("{}/w/index", c.api)).await;
    shots(&mut page, "index").await;

    // Carol, a viewer: reads in the editor; no terminal, no save, and the
    // API refuses her write even from the portal's own page.
    // Shared from the list page's row.
    page.goto(&format!("{}/w/", c.api)).await;
    assert!(
        page.wait_for("document.body.dataset.ready === 'true'", T)
            .await
    );
    page.eval(
        "const tr = document.querySelector('tr[data-ws=web]');
         tr.querySelector('input[name=share]').value = 'carol';
         tr.querySelector('button[data-act=share]').click(); true",
    )
    .await;
    assert!(
        page.wait_for(
            "!!document.querySelector('tr[data-ws=web] button[data-unshare=carol]')",
            T
        )
        .await,
        "the row shows the share: {}",
        page.eval("document.getElementById('message').textContent")
            .await
    );
    let (_, shares) = c.get_as("/v1/workspaces/web/shares", &alice).await;
    assert_eq!(shares["users"], json!(["carol"]), "{shares}");
    let viewer_browser = Browser::start();
    let mut viewer = viewer_browser.page().await;
    viewer.sign_in(&c.api, &carol).await;
    viewer
        .goto(&format!("{}/w/web/editor?owner=alice", c.api))
        .await;
    assert!(
        viewer
            .wait_for("document.body.dataset.ready === 'true'", T)
            .await
    );
    assert_eq!(
        viewer
            .eval("[!!document.getElementById('terminal'), !!document.getElementById('save'), berth.editor.getOption(monaco.editor.EditorOption.readOnly)]")
            .await,
        json!([false, false, true])
    );
    viewer
        .eval("berth.openFile('notes/hello.txt').then(() => true)")
        .await;
    assert_eq!(
        viewer.eval("berth.editor.getValue()").await,
        json!("from-terminal\n")
    );
    let put = viewer
        .eval("fetch('/v1/workspaces/web/files/notes/hello.txt?owner=alice', {method: 'PUT', body: 'carol was here'}).then(r => r.status)")
        .await;
    assert_eq!(put, json!(403), "a viewer's write");
    assert_eq!(
        exec(&c, &alice, "cat /workspace/notes/hello.txt").await,
        "from-terminal\n"
    );
    shots(&mut viewer, "editor-viewer").await;

    // Review: alice submits from the reviews page; carol (a reader) takes
    // it and approves; bob, who may not read the workspace, sees nothing.
    page.goto(&format!("{}/w/reviews", c.api)).await;
    assert!(
        page.wait_for("document.body.dataset.ready === 'true'", T)
            .await
    );
    page.eval(
        "const r = document.getElementById('submit-review'); r.note.value = 'please look at notes/';
         r.priority.value = 'high'; r.requestSubmit(); true",
    )
    .await;
    assert!(
        page.wait_for(
            "document.querySelector('#reviews tr[data-state=pending]') !== null",
            T
        )
        .await,
        "submitted: {}",
        page.eval("document.getElementById('message').textContent")
            .await
    );
    let (s, e) = c
        .post_as(
            "/v1/workspaces/web/reviews",
            json!({"note": "again"}),
            &alice,
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (409, Some("review_open")));
    let (s, e) = c
        .post_as(
            "/v1/workspaces/web/reviews",
            json!({"priority": "urgent"}),
            &alice,
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (400, Some("invalid_body")));
    let (s, e) = c
        .post_as(
            "/v1/workspaces/web/reviews",
            json!({"note": "a\u{0}b"}),
            &alice,
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (422, Some("invalid_review")));
    let (_, list) = c.get_as("/v1/reviews", &alice).await;
    let id = list[0]["id"].as_str().unwrap().to_string();
    let (s, _) = c
        .post_as(&format!("/v1/reviews/{id}/start"), json!({}), &alice)
        .await;
    assert_eq!(s, 403, "the author does not review her own request");
    let bob = c.member_token("bob").await;
    let (_, seen) = c.get_as("/v1/reviews", &bob).await;
    assert_eq!(
        seen,
        json!([]),
        "bob sees no review of a workspace he cannot read"
    );
    let (s, _) = c
        .post_as(&format!("/v1/reviews/{id}/start"), json!({}), &bob)
        .await;
    assert_eq!(s, 404);
    viewer.goto(&format!("{}/w/reviews", c.api)).await;
    assert!(
        viewer
            .wait_for("document.body.dataset.ready === 'true'", T)
            .await
    );
    viewer
        .eval("document.querySelector('#reviews tr[data-state=pending] button[data-review-act=start]').click(); true")
        .await;
    assert!(
        viewer
            .wait_for(
                "document.querySelector('#reviews tr[data-state=in_review]') !== null",
                T
            )
            .await
    );
    shots(&mut viewer, "reviews").await;
    viewer
        .eval(
            "const tr = document.querySelector('#reviews tr[data-state=in_review]');
               tr.querySelector('input[name=comment]').value = 'looks good';
               tr.querySelector('button[data-review-act=approve]').click(); true",
        )
        .await;
    assert!(
        viewer
            .wait_for(
                "document.querySelector('#reviews tr[data-state=approved]') !== null",
                T
            )
            .await
    );
    let (_, list) = c.get_as("/v1/reviews", &alice).await;
    assert_eq!(
        (
            list[0]["state"].as_str(),
            list[0]["reviewer"].as_str(),
            list[0]["comment"].as_str(),
            list[0]["priority"].as_str()
        ),
        (
            Some("approved"),
            Some("carol"),
            Some("looks good"),
            Some("high")
        ),
        "{list}"
    );
    let (s, e) = c
        .post_as(&format!("/v1/reviews/{id}/approve"), json!({}), &carol)
        .await;
    assert_eq!((s, e["code"].as_str()), (409, Some("review_state")));
    let (_, audit) = c.get("/v1/admin/audit?limit=1000").await;
    let steps: Vec<String> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"].as_str().unwrap_or("").contains("review") && e["error_code"] == "")
        .map(|e| {
            format!(
                "{} {}",
                e["actor"].as_str().unwrap(),
                e["resource"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        steps,
        vec![
            "alice /v1/workspaces/web/reviews".to_string(),
            format!("carol /v1/reviews/{id}/start"),
            format!("carol /v1/reviews/{id}/approve"),
        ],
        "every step is in the audit log"
    );
    let refusals: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            e["error_code"]
                .as_str()
                .filter(|c| c.starts_with("review_"))
        })
        .collect();
    assert_eq!(
        refusals,
        ["review_open", "review_state"],
        "each refusal once, with its code"
    );
    drop(viewer);
    drop(viewer_browser);

    // Another origin (same site: another port of this host) makes alice's
    // browser send her cookie with a POST that would stop her workspace.
    let evil = tempfile::tempdir().unwrap();
    std::fs::write(
        evil.path().join("index.html"),
        format!(
            "<script>fetch('{}/v1/workspaces/web/stop', {{method: 'POST', credentials: 'include', mode: 'no-cors'}})
               .finally(() => {{ window.sent = true; }});</script>",
            c.api
        ),
    )
    .unwrap();
    let port = berth_tests::free_port();
    let mut server = std::process::Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(evil.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    berth_tests::wait_listening(None, port);
    page.goto(&format!("http://127.0.0.1:{port}/index.html"))
        .await;
    assert!(
        page.wait_for("window.sent === true", T).await,
        "the request went"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, w) = c.get_as("/v1/workspaces/web", &alice).await;
    assert_eq!(
        (w["desired"].as_str(), w["state"].as_str()),
        (Some("running"), Some("running")),
        "another origin's request with the cookie changed nothing"
    );
    let _ = server.kill();
    let _ = server.wait();
    // The control: the same request from the portal's page stops it.
    page.goto(&format!("{}/w/", c.api)).await;
    let status = page
        .eval("fetch('/v1/workspaces/web/stop', {method: 'POST', credentials: 'include'}).then(r => r.status)")
        .await;
    assert_eq!(status, json!(202));
    c.wait_state_as("web", "stopped", T, &alice).await;
    assert!(
        page.wait_for(
            "document.querySelector('tr[data-ws=web][data-state=stopped]') !== null",
            T
        )
        .await,
        "the list shows it stopped, live"
    );

    // Admin pages: a member is refused; the admin sees the cluster's node
    // and the capacity figures the API reports, and cordons from the page.
    let (s, _) = c.get_as("/w/admin", &alice).await;
    assert_eq!(s, 403);
    page.sign_in(&c.api, &c.admin_token).await;
    page.goto(&format!("{}/w/admin", c.api)).await;
    assert!(
        page.wait_for("document.body.dataset.ready === 'true'", T)
            .await
    );
    let (_, report) = c.get("/v1/admin/capacity").await;
    let shown = page
        .eval("[...document.querySelectorAll('#tiers tbody tr')].map(r => [r.cells[0].innerText, r.cells[1].innerText])")
        .await;
    let want: Vec<serde_json::Value> = report["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| json!([t["tier"], t["fits"].to_string()]))
        .collect();
    assert_eq!(shown, json!(want), "the page's tiers are the API's");
    assert!(!want.is_empty());
    let node = page
        .eval("document.querySelector('#nodes tr[data-node=n0]').innerText")
        .await;
    let n0 = &report["nodes"][0];
    assert!(
        node.as_str().unwrap().contains(&format!(
            "{}m / {}m",
            n0["allocated"]["cpu_millis"], n0["allocatable"]["cpu_millis"]
        )),
        "{node} vs {n0}"
    );
    shots(&mut page, "admin").await;
    page.eval("document.querySelector('#nodes tr[data-node=n0] button[data-node-act=cordon]').click(); true")
        .await;
    assert!(
        page.wait_for(
            "!!document.querySelector('#nodes tr[data-node=n0] button[data-node-act=uncordon]')",
            T
        )
        .await,
        "cordoned from the page"
    );
    let (_, n) = c.get("/v1/nodes/n0").await;
    assert_eq!(n["cordoned"], json!(true), "{n}");
    drop(page);
    drop(browser);
    c.finish().await;
}

/// A workspace made from a repository on the list page: its row shows the
/// repository and branch, a preview link per forwarded port with its label,
/// and its init log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_makes_a_repository_workspace_and_shows_its_previews_and_log() {
    let (c, git, _dir) = berth_tests::git::repo_cluster().await;
    let config = format!(
        r#"{{"image": "{}/dev:latest", "forwardPorts": [3000],
            "portsAttributes": {{"3000": {{"label": "Web app"}}}},
            "onCreateCommand": "echo made-by-oncreate"}}"#,
        c.registry.addr
    );
    let url = git.repo("shop", &[(".devcontainer/devcontainer.json", &config)]);
    // A prebuild of its branch: the workspace starts from it, and the list
    // page shows it with its steps.
    let (code, out, err) = c
        .berth(
            &c.admin_token,
            &[
                "--json", "prebuild", "run", "--repo", &url, "--branch", "main",
            ],
        )
        .await;
    let pb: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    assert_eq!(
        (code, pb["state"].as_str()),
        (0, Some("ready")),
        "{out}{err}"
    );
    let browser = Browser::start();
    let mut page = browser.page().await;
    page.sign_in(&c.api, &c.admin_token).await;
    page.goto(&format!("{}/w/", c.api)).await;
    assert!(
        page.wait_for("document.body.dataset.ready === 'true'", T)
            .await
    );
    page.eval(&format!(
        "const f = document.getElementById('create'); f.name.value = 'shop'; f.repo.value = {};
         f.branch.value = 'main'; f.tier.value = 'small'; f.requestSubmit(); true",
        json!(url)
    ))
    .await;
    assert!(
        page.wait_for(
            "document.querySelector('tr[data-ws=shop][data-state=running]') !== null",
            Duration::from_secs(180)
        )
        .await,
        "made from the repository: {} {}",
        page.eval("document.getElementById('rows').innerText").await,
        page.eval("document.getElementById('message').textContent")
            .await
    );
    let (_, w) = c.get("/v1/workspaces/shop").await;
    let row = page
        .eval("(() => { const tr = document.querySelector('tr[data-ws=shop]');
               const a = tr.querySelector('a.preview');
               return [tr.innerText.includes('shop@main'), a && a.textContent, a && a.getAttribute('href')]; })()")
        .await;
    assert_eq!(
        row,
        json!([
            true,
            "Web app",
            format!("/w/{}/3000/", w["id"].as_str().unwrap())
        ]),
        "{w}"
    );
    let log = page
        .eval("fetch(document.querySelector('tr[data-ws=shop] a[href$=\"/init-log\"]').href).then(r => r.text())")
        .await;
    // onCreateCommand ran in the prebuild: the workspace's log says it
    // started from that.
    assert!(
        log.as_str().unwrap_or("").contains(&format!(
            "started from prebuild {}",
            pb["key"].as_str().unwrap()
        )),
        "{log}"
    );
    // Started from the prebuild, which the page lists with its steps.
    page.goto(&format!("{}/w/", c.api)).await;
    let shown = page
        .eval(&format!(
            "(async () => {{ const tr = document.querySelector('#prebuilds tr[data-prebuild={}]');
               const steps = await fetch(tr.querySelector('a').href).then(r => r.json());
               return [document.querySelector('tr[data-ws=shop] small.prebuild').textContent,
                       tr.querySelector('.state').textContent,
                       steps.steps.map(s => s.name + ':' + s.state)]; }})()",
            pb["id"].as_str().unwrap()
        ))
        .await;
    let commit: String = pb["commit"].as_str().unwrap().chars().take(8).collect();
    assert_eq!(shown[0], format!("prebuild {commit} (used)"), "{shown}");
    assert_eq!(shown[1], "ready", "{shown}");
    assert!(
        shown[2]
            .as_array()
            .unwrap()
            .contains(&json!("onCreateCommand:done")),
        "{shown}"
    );
    shots(&mut page, "workspaces-repo").await;
    // The preview link opens the app on that port.
    c.exec_ok(
        "shop",
        "mkdir -p /tmp/site && echo shop-preview-ok > /tmp/site/index.html && \
         (cd /tmp/site && setsid python3 -m http.server 3000 </dev/null >/dev/null 2>&1 &) && sleep 1",
    )
    .await;
    page.eval("document.querySelector('tr[data-ws=shop] a.preview').click(); true")
        .await;
    assert!(
        page.wait_for(
            "document.body && document.body.innerText.includes('shop-preview-ok')",
            T
        )
        .await,
        "the preview: {}",
        page.eval("location.href + ' ' + (document.body ? document.body.innerText : '')")
            .await
    );
    drop(page);
    drop(browser);
    c.finish().await;
}
