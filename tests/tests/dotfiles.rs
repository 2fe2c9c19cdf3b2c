//! A user's dotfiles repository (docs/repositories.md, "Dotfiles") on the
//! real components: the git server the tests run, workspaces from the
//! `dev` image (which has git). Set with `berth config dotfiles`, it is
//! applied to each new workspace, inside it as its user: a repository
//! with an install script has it run; one without has its dotfiles linked
//! into the home directory, an existing file kept. A bad URL is refused
//! with its code; `--unset` clears it, and the next workspace gets none.

use berth_tests::git::repo_cluster;
use berth_tests::Cluster;
use serde_json::Value;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(90);

/// Waits until `ws`'s `dotfiles` init step is done; the workspace.
async fn dotfiles_done(c: &Cluster, ws: &str) -> Value {
    let deadline = Instant::now() + T;
    loop {
        let (_, w) = c.get(&format!("/v1/workspaces/{ws}")).await;
        let step = w["init"]["steps"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == "dotfiles").cloned());
        if let Some(s) = step {
            assert_ne!(s["state"], "failed", "{w}");
            if s["state"] == "done" {
                return w;
            }
        }
        assert!(Instant::now() < deadline, "dotfiles not applied: {w}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Creates `ws` from the default image (`dev`, which has git) and waits
/// until it runs.
async fn create(c: &Cluster, ws: &str) {
    let (s, w) = c
        .post(
            "/v1/workspaces",
            serde_json::json!({ "name": ws, "tier": "small" }),
        )
        .await;
    assert_eq!(s, 201, "{w}");
    c.wait_state(ws, "running", T).await;
}

async fn out(c: &Cluster, ws: &str, script: &str) -> String {
    c.exec_ok(ws, script).await["stdout"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_dotfiles_are_installed_or_linked_in_each_new_workspace() {
    let (c, git, _dir) = repo_cluster().await;
    let linked = git.repo(
        "dots",
        &[
            (".aliases", "alias ll='ls -l'\n"),
            (".profile", "# theirs\n"),
        ],
    );
    let scripted = git.repo(
        "dots-install",
        &[(
            "install.sh",
            "#!/bin/sh\necho \"installed by $(id -un)\" > \"$HOME/.installed\"\n",
        )],
    );
    let tok = c.admin_token.clone();
    // Refused: not http(s), or with credentials in it.
    for bad in ["ftp://x/dots.git", "https://user:pw@example.com/dots.git"] {
        let (code, _, err) = c.berth(&tok, &["config", "dotfiles", bad]).await;
        assert_eq!(code, 1, "{bad}");
        assert!(err.contains("invalid_dotfiles"), "{err}");
    }

    // Without an install script: its dotfiles linked; an existing one kept.
    let (code, o, err) = c.berth(&tok, &["config", "dotfiles", &linked]).await;
    assert_eq!(code, 0, "{o}{err}");
    let (code, o, _) = c.berth(&tok, &["config"]).await;
    assert_eq!(
        (code, o.trim()),
        (0, format!("dotfiles: {linked}").as_str())
    );
    create(&c, "dot1").await;
    dotfiles_done(&c, "dot1").await;
    let got = out(
        &c,
        "dot1",
        "readlink ~/.aliases; cat ~/.aliases; test -L ~/.profile && echo replaced || echo kept",
    )
    .await;
    assert!(
        got.contains(".dotfiles/.aliases") && got.contains("alias ll"),
        "{got}"
    );
    assert!(
        got.trim_end().ends_with("kept"),
        "an existing file was replaced: {got}"
    );

    // With one: it runs, as the workspace's user.
    let (code, _, _) = c.berth(&tok, &["config", "dotfiles", &scripted]).await;
    assert_eq!(code, 0);
    create(&c, "dot2").await;
    dotfiles_done(&c, "dot2").await;
    let user = out(&c, "dot2", "id -un").await;
    assert_eq!(
        out(&c, "dot2", "cat ~/.installed").await,
        format!("installed by {}", user.trim()) + "\n"
    );
    let log = c.berth(&tok, &["logs", "dot2", "--init"]).await.1;
    assert!(log.contains("dotfiles: running install.sh"), "{log}");

    // Cleared: the next workspace gets none.
    let (code, o, _) = c.berth(&tok, &["config", "dotfiles", "--unset"]).await;
    assert_eq!((code, o.trim()), (0, "dotfiles: none"));
    create(&c, "dot3").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        out(&c, "dot3", "test -e ~/.dotfiles && echo yes || echo no").await,
        "no\n"
    );
    c.finish().await;
}
