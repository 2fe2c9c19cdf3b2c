//! Pull-request workspaces (docs/prebuilds.md): a repository configured
//! with `pull_request_owner` gets a workspace when a pull request is opened
//! (GitHub `pull_request`, GitLab `Merge Request Hook`, signed with the
//! repository's secret), started from the repository's prebuild of its base
//! branch and brought up to the pull request's head, on the pull request's
//! branch; it is deleted when the pull request is closed or merged. A bad
//! signature, a fork, and new commits change nothing.

use berth_tests::Cluster;
use serde_json::{json, Value};
use std::time::Duration;

const SECRET: &str = "a-webhook-secret-of-the-repo";

use berth_tests::git::webhook as hook;

fn sign(body: &str) -> String {
    berth_tests::git::github_signature(SECRET, body)
}

async fn github(c: &Cluster, body: &str) -> (u16, Value) {
    let sig = sign(body);
    hook(
        c,
        &[
            ("x-github-event", "pull_request"),
            ("x-hub-signature-256", &sig),
        ],
        body,
    )
    .await
}

async fn sh(c: &Cluster, name: &str, script: &str) -> String {
    let (s, out) = c
        .post(
            &format!("/v1/workspaces/{name}/exec"),
            json!({"argv": ["sh", "-c", script]}),
        )
        .await;
    assert_eq!((s, &out["exit_code"]), (200, &json!(0)), "{script}: {out}");
    out["stdout"].as_str().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pull_request_gets_a_workspace_from_its_base_prebuild_until_it_closes() {
    let (mut c, git, dir) = berth_tests::git::repo_cluster().await;
    let config = json!({
        "image": format!("{}/dev:latest", c.registry.addr),
        "onCreateCommand": "echo prebuilt > deps.txt",
        "updateContentCommand": "echo update >> steps.log",
    })
    .to_string();
    let url = git.repo("app", &[(".devcontainer.json", &config)]);
    let cfg_path = dir.path().join("coordinator.toml");
    let mut cfg = std::fs::read_to_string(&cfg_path).unwrap();
    cfg.push_str(&format!(
        "\n[[prebuilds.repos]]\nurl = \"{url}\"\nbranches = [\"main\"]\nwebhook_secret = \"{SECRET}\"\n\
         pull_request_owner = \"admin\"\n"
    ));
    std::fs::write(&cfg_path, cfg).unwrap();
    c.kill_coordinator();
    c.start_coordinator();
    let (code, out, err) = c
        .berth(
            &c.admin_token,
            &["--json", "prebuild", "run", "--repo", &url],
        )
        .await;
    assert_eq!(code, 0, "{out}{err}");
    let main_prebuild: Value = serde_json::from_str(&out).unwrap();
    let head = git.commit("app", "feature", &[("feature.txt", "the change\n")]);
    let event = |action: &str, number: u64, head_repo: &str| {
        json!({
            "action": action, "number": number,
            "pull_request": {
                "head": {"ref": "feature", "sha": head, "repo": {"full_name": head_repo}},
                "base": {"ref": "main", "repo": {"full_name": "team/app"}},
            },
            "repository": {"clone_url": url, "html_url": url.trim_end_matches(".git")},
        })
        .to_string()
    };

    // Forged, from a fork, new commits: nothing happens.
    let body = event("opened", 5, "team/app");
    let (s, out) = hook(
        &c,
        &[
            ("x-github-event", "pull_request"),
            (
                "x-hub-signature-256",
                &sign(&event("opened", 6, "team/app")),
            ),
        ],
        &body,
    )
    .await;
    assert_eq!((s, &out["code"]), (401, &json!("bad_signature")), "{out}");
    for (body, why) in [
        (event("opened", 5, "someone/app"), "fork"),
        (event("synchronize", 5, "team/app"), "berth sync"),
        (event("labeled", 5, "team/app"), "does not follow"),
    ] {
        let (s, out) = github(&c, &body).await;
        assert_eq!((s, &out["outcome"]), (200, &json!("ignored")), "{out}");
        assert!(out["reason"].as_str().unwrap().contains(why), "{out}");
    }
    let (_, list) = c.get("/v1/workspaces").await;
    assert_eq!(list, json!([]), "nothing was created");

    // Opened: a workspace on the pull request's branch, from main's prebuild.
    let (s, out) = github(&c, &body).await;
    assert_eq!(
        (s, &out["outcome"]),
        (202, &json!("workspace_created")),
        "{out}"
    );
    assert_eq!(out["workspace"], "pr-5-app");
    let w = c
        .wait_state("pr-5-app", "running", Duration::from_secs(120))
        .await;
    assert_eq!(w["init"]["prebuild"]["key"], main_prebuild["key"], "{w}");
    assert_eq!(w["init"]["prebuild"]["outcome"], "updated", "{w}");
    assert_eq!(w["init"]["commit"], head.as_str(), "{w}");
    let out = sh(
        &c,
        "pr-5-app",
        "cd /workspace/app && cat feature.txt deps.txt && git rev-parse --abbrev-ref HEAD @{u}",
    )
    .await;
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["the change", "prebuilt", "feature", "origin/feature"],
        "{out}"
    );
    // Opened again: the workspace is there already.
    let (s, out) = github(&c, &event("reopened", 5, "team/app")).await;
    assert_eq!((s, &out["outcome"]), (200, &json!("ignored")), "{out}");

    // Closed: the workspace goes.
    let (s, out) = github(&c, &event("closed", 5, "team/app")).await;
    assert_eq!(
        (s, &out["outcome"]),
        (202, &json!("workspace_deleted")),
        "{out}"
    );
    c.wait_state("pr-5-app", "deleted", Duration::from_secs(60))
        .await;

    // GitLab: a merge request opened, then merged.
    let mr = |action: &str| {
        json!({
            "object_kind": "merge_request",
            "project": {"git_http_url": url},
            "object_attributes": {
                "action": action, "iid": 9, "source_branch": "feature", "target_branch": "main",
                "source_project_id": 3, "target_project_id": 3, "last_commit": {"id": head},
            },
        })
        .to_string()
    };
    let gitlab = |body: String| {
        let c = &c;
        async move {
            hook(
                c,
                &[
                    ("x-gitlab-event", "Merge Request Hook"),
                    ("x-gitlab-token", SECRET),
                ],
                &body,
            )
            .await
        }
    };
    let (s, out) = gitlab(mr("open")).await;
    assert_eq!(
        (s, &out["outcome"]),
        (202, &json!("workspace_created")),
        "{out}"
    );
    c.wait_state("pr-9-app", "running", Duration::from_secs(120))
        .await;
    let (s, out) = gitlab(mr("merge")).await;
    assert_eq!(
        (s, &out["outcome"]),
        (202, &json!("workspace_deleted")),
        "{out}"
    );
    c.wait_state("pr-9-app", "deleted", Duration::from_secs(60))
        .await;
    drop(git);
    c.finish().await;
}
