//! Workspaces from a repository, end to end through the CLI: a real git
//! server (Git's `git http-backend` behind Basic authentication, beside the
//! cluster on its bridge address, which the test's tier may reach), a
//! coordinator and an agent. What is checked is what a user and an
//! attacker see: the files in the workspace and who owns them, the
//! lifecycle commands' order and environment, the labels of forwarded
//! ports, the init log, every refusal with its code, and that a token given
//! for a private repository is nowhere on disk or in a log.

use berth_tests::git::GitServer;
use berth_tests::Cluster;
use serde_json::{json, Value};
use std::time::Duration;

const T: Duration = Duration::from_secs(180);

async fn cluster() -> (Cluster, GitServer, tempfile::TempDir) {
    berth_tests::git::repo_cluster().await
}

/// Runs `script` in workspace `name` as its user; (exit code, stdout).
async fn sh(c: &Cluster, name: &str, script: &str) -> (i64, String) {
    let (s, out) = c
        .post(
            &format!("/v1/workspaces/{name}/exec"),
            json!({"argv": ["sh", "-c", script]}),
        )
        .await;
    assert_eq!(s, 200, "{out}");
    (
        out["exit_code"].as_i64().unwrap_or(-1),
        out["stdout"].as_str().unwrap_or("").to_string(),
    )
}

/// `berth create NAME ARGS...` as the admin; (exit code, stdout, stderr).
async fn create(c: &Cluster, name: &str, args: &[&str]) -> (i32, String, String) {
    let mut a = vec!["create", name];
    a.extend_from_slice(args);
    c.berth(&c.admin_token, &a).await
}

async fn get(c: &Cluster, name: &str) -> Value {
    let (s, w) = c.get(&format!("/v1/workspaces/{name}")).await;
    assert_eq!(s, 200, "{w}");
    w
}

fn step<'a>(w: &'a Value, name: &str) -> &'a Value {
    w["init"]["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no step {name}: {w}"))
}

const DEVCONTAINER: &str = r#"// Every field Berth honours.
{
  "name": "api",
  "image": "REGISTRY/dev:latest",
  "containerEnv": { "STAGE": "container" },
  "remoteEnv": { "ROUTE": "${containerEnv:STAGE}-remote", "WHERE": "${containerWorkspaceFolder}" },
  "remoteUser": "dev",
  "workspaceFolder": "/workspace/src/api",
  "forwardPorts": [3000, 9229],
  "portsAttributes": { "3000": { "label": "Web app" }, "9229": { "label": "Debugger" } },
  "hostRequirements": { "cpus": 1, "memory": "512mb", "storage": "100mb" },
  "onCreateCommand": "echo onCreate $STAGE $ROUTE $(id -u) $(pwd) >> steps.log",
  "updateContentCommand": ["sh", "-c", "echo updateContent >> steps.log"],
  "postCreateCommand": { "a": "echo postCreate-a >> post-a.log", "b": ["sh", "-c", "echo postCreate-b >> post-b.log"] },
  "postStartCommand": "echo postStart >> steps.log",
  "waitFor": "updateContentCommand",
  "customizations": { "vscode": { "extensions": ["x"] } },
  "someFutureKey": true
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_project_is_made_from_its_devcontainer_json() {
    let (c, git, _dir) = cluster().await;
    let config = DEVCONTAINER.replace("REGISTRY", &c.registry.addr);
    let url = git.repo(
        "api",
        &[
            (".devcontainer/devcontainer.json", &config),
            (
                "package.json",
                "{\"name\": \"api\", \"version\": \"1.0.0\"}\n",
            ),
            ("src/index.js", "console.log('hi')\n"),
        ],
    );
    let (code, out, err) = create(&c, "api", &["--repo", &url]).await;
    assert_eq!(code, 0, "{out}{err}\n{}", c.coordinator_log());
    let w = get(&c, "api").await;
    assert_eq!(w["state"], "running");
    assert_eq!(w["repo"]["url"], url.as_str());
    let init = &w["init"];
    assert_eq!(init["source"], ".devcontainer/devcontainer.json", "{w}");
    assert_eq!(init["folder"], "/workspace/src/api");
    assert_eq!(init["commit"].as_str().unwrap().len(), 40, "{w}");
    for s in [
        "clone",
        "configure",
        "onCreateCommand",
        "updateContentCommand",
    ] {
        assert_eq!(step(&w, s)["state"], "done", "{s}: {w}");
    }
    assert!(
        init["warnings"].to_string().contains("someFutureKey"),
        "unknown keys are listed: {w}"
    );
    assert!(!init["warnings"].to_string().contains("customizations"));

    // The files are there, owned by the workspace's user (not root).
    let (code, owners) = sh(&c, "api", "stat -c '%u:%g %n' /workspace/src/api/package.json /workspace/src/api/src/index.js /workspace/src/api/.git").await;
    assert_eq!(code, 0, "{owners}");
    assert!(
        owners.lines().all(|l| l.starts_with("1000:1000 ")),
        "{owners}"
    );
    // Its own name and localhost resolve without DNS (its /etc/hosts): what
    // git asks for an identity, and a JVM or sudo for the host.
    // (`ahosts` asks as getaddrinfo does, for any family.)
    let (code, hosts) = sh(
        &c,
        "api",
        "getent ahosts \"$(hostname)\" && getent ahosts localhost",
    )
    .await;
    assert_eq!(code, 0, "{hosts}");
    assert!(hosts.starts_with("10."), "{hosts}");
    // The lifecycle commands ran in order, in the folder, as the user, with
    // containerEnv and remoteEnv; the parallel parts each ran.
    let wait_for_post = async {
        for _ in 0..60 {
            let w = get(&c, "api").await;
            if step(&w, "postStartCommand")["state"] == "done" {
                return w;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("postStartCommand never done: {}", get(&c, "api").await);
    };
    let w = wait_for_post.await;
    assert_eq!(step(&w, "postCreateCommand")["state"], "done", "{w}");
    let (_, steps) = sh(&c, "api", "cat /workspace/src/api/steps.log /workspace/src/api/post-a.log /workspace/src/api/post-b.log").await;
    assert_eq!(
        steps,
        "onCreate container container-remote 1000 /workspace/src/api\nupdateContent\npostStart\npostCreate-a\npostCreate-b\n"
    );
    let (_, env) = sh(&c, "api", "echo $STAGE $ROUTE $WHERE").await;
    assert_eq!(
        env, "container container-remote /workspace/src/api\n",
        "exec sees the env"
    );

    // Forwarded ports with their labels, and their preview URLs.
    let (code, out, err) = c.berth(&c.admin_token, &["ports", "api"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("3000") && out.contains("Web app"), "{out}");
    assert!(out.contains("9229") && out.contains("Debugger"), "{out}");
    assert!(out.contains("/w/api/3000/"), "{out}");
    // berth get shows the repository and the steps.
    let (_, out, _) = c.berth(&c.admin_token, &["get", "api"]).await;
    for want in [
        "Repo:",
        &url,
        "Commit:",
        "Init steps:",
        "onCreateCommand",
        "done",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    // The init log has the clone and every command's output.
    let (code, log, err) = c.berth(&c.admin_token, &["logs", "api", "--init"]).await;
    assert_eq!(code, 0, "{err}");
    for want in [
        "==> git clone",
        "Cloning into",
        "==> onCreateCommand",
        "==> postStartCommand",
    ] {
        assert!(log.contains(want), "{want}: {log}");
    }

    // postStartCommand runs again on each start, the others do not.
    for verb in ["stop", "start"] {
        let (code, _, err) = c.berth(&c.admin_token, &[verb, "api"]).await;
        assert_eq!(code, 0, "{verb}: {err}");
    }
    let again = async {
        for _ in 0..60 {
            let (_, s) = sh(&c, "api", "cat /workspace/src/api/steps.log").await;
            if s.matches("postStart").count() == 2 {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("postStartCommand did not run again");
    };
    let s = again.await;
    assert_eq!(s.matches("onCreate").count(), 1, "{s}");

    // A failing lifecycle command: its step failed with the exit status and
    // the output's end; the workspace runs, the later steps are skipped.
    let url = git.repo(
        "broken",
        &[(
            ".devcontainer.json",
            "{\"onCreateCommand\": \"echo about to fail; exit 3\", \"postCreateCommand\": \"true\", \"waitFor\": \"postCreateCommand\"}",
        )],
    );
    let (code, out, err) = create(&c, "broken", &["--repo", &url]).await;
    assert_eq!(code, 0, "{out}{err}");
    let w = get(&c, "broken").await;
    assert_eq!(w["state"], "running");
    let failed = step(&w, "onCreateCommand");
    assert_eq!(failed["state"], "failed", "{w}");
    assert_eq!(failed["exit_code"], 3, "{w}");
    assert!(
        failed["tail"].as_str().unwrap().contains("about to fail"),
        "{w}"
    );
    assert_eq!(step(&w, "postCreateCommand")["state"], "skipped", "{w}");
    let (_, out, _) = c.berth(&c.admin_token, &["get", "broken"]).await;
    assert!(out.contains("about to fail"), "{out}");
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_python_project_is_detected_and_a_private_one_needs_its_token() {
    let (c, git, dir) = cluster().await;
    let url = git.repo(
        "tool",
        &[
            ("requirements.txt", "# nothing to install offline\n"),
            ("tool.py", "print('ok')\n"),
        ],
    );
    let (code, out, err) = create(&c, "tool", &["--repo", &url]).await;
    assert_eq!(code, 0, "{out}{err}");
    let w = get(&c, "tool").await;
    assert_eq!(w["init"]["source"], "detected: python", "{w}");
    assert_eq!(step(&w, "onCreateCommand")["state"], "done", "{w}");
    assert!(step(&w, "onCreateCommand")["command"]
        .as_str()
        .unwrap()
        .contains("python3 -m venv .venv"));
    let (code, out) = sh(&c, "tool", "cd /workspace/tool && .venv/bin/python tool.py").await;
    assert_eq!((code, out.as_str()), (0, "ok\n"), "the venv works");
    // The detected command can be replaced.
    let (code, _, err) = create(
        &c,
        "tool2",
        &["--repo", &url, "--init", "touch made-by-override"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let (code, _) = sh(
        &c,
        "tool2",
        "test -f /workspace/tool/made-by-override && test ! -d /workspace/tool/.venv",
    )
    .await;
    assert_eq!(code, 0);

    // A private repository: refused without the token, with git's message.
    let token = format!("tok-{:032x}", rand::random::<u128>());
    let url = git.repo("secret", &[("README.md", "secret\n")]);
    git.private("secret", "alice", &token);
    let (code, _, err) = create(&c, "nocred", &["--repo", &url]).await;
    assert_ne!(code, 0);
    assert!(err.contains("git_auth_failed"), "{err}");
    let w = get(&c, "nocred").await;
    assert_eq!(w["state"], "failed");
    assert!(
        w["reason"].as_str().unwrap().contains("git_auth_failed"),
        "{w}"
    );
    // With the user's token for the host it clones.
    let host = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let (code, _, err) = c
        .berth(
            &c.admin_token,
            &[
                "git-credential",
                "add",
                &host,
                "--git-token",
                &token,
                "--username",
                "alice",
            ],
        )
        .await;
    assert_eq!(code, 0, "{err}");
    let (_, list, _) = c.berth(&c.admin_token, &["git-credential", "list"]).await;
    assert!(list.contains(&host) && !list.contains(&token), "{list}");
    let (code, out, err) = create(&c, "secret", &["--repo", &url]).await;
    assert_eq!(code, 0, "{out}{err}");
    let (_, readme) = sh(
        &c,
        "secret",
        "cat /workspace/secret/README.md; git -C /workspace/secret config --list --show-origin",
    )
    .await;
    assert!(readme.starts_with("secret\n"), "{readme}");
    assert!(
        !readme.contains(&token),
        "the token is in git's config: {readme}"
    );
    assert!(
        git.seen()
            .iter()
            .any(|s| s.user.as_deref() == Some("alice") && s.allowed),
        "the server saw the token"
    );
    // The token is nowhere: not on the volume, in an image layer, in the
    // agent's state, in a log. A control first: the same search finds it
    // where it is written.
    let control = dir.path().join("control");
    std::fs::write(&control, format!("x{token}x")).unwrap();
    let grep = |path: &std::path::Path| {
        std::process::Command::new("grep")
            .args(["-r", "-a", "-l", "-F", &token])
            .arg(path)
            .output()
            .unwrap()
    };
    assert!(grep(dir.path()).status.success(), "the control is found");
    // Everything of the cluster: its nodes (containerd's content and
    // snapshots, the agent's state, the volumes' images, the logs), the
    // coordinator's store and logs, the git server aside (it has to know it).
    let mut searched = vec![c.coordinators[0].dir.clone()];
    for n in &c.nodes {
        searched.push(n.dir.clone());
        searched.push(n.state_dir.clone());
        searched.push(n.containerd.dir.clone());
    }
    for p in &searched {
        let out = grep(p);
        assert!(
            out.stdout.is_empty(),
            "the token is in {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // A deleted credential is not used any more.
    let (code, _, _) = c
        .berth(&c.admin_token, &["git-credential", "remove", &host])
        .await;
    assert_eq!(code, 0);
    let (code, _, err) = create(&c, "again", &["--repo", &url]).await;
    assert_ne!(code, 0);
    assert!(err.contains("git_auth_failed"), "{err}");
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals_have_codes_and_never_hang() {
    let (c, git, _dir) = cluster().await;
    let url = git.repo("plain", &[("README.md", "hi\n")]);
    let unreachable = format!("http://{}:9/none.git", c.host_ip);
    let missing = format!("{}/nothing-here.git", git.url);
    let big = {
        // 40 MiB of hex of random bytes (about 20 MiB packed) for a 32 MiB volume.
        let blob: String = (0..(20 << 20) / 16)
            .map(|_| format!("{:032x}", rand::random::<u128>()))
            .collect();
        git.repo("big", &[("README.md", "big\n")]);
        git.commit("big", "main", &[("blob.txt", &blob)]);
        format!("{}/big.git", git.url)
    };
    let configs = [
        (
            "init-cmd",
            r#"{"initializeCommand": "id"}"#,
            "devcontainer_refused",
            "initializeCommand",
        ),
        (
            "mounts",
            r#"{"mounts": ["source=/,target=/host,type=bind"]}"#,
            "devcontainer_refused",
            "mounts",
        ),
        (
            "privileged",
            r#"{"privileged": true}"#,
            "devcontainer_refused",
            "privileged",
        ),
        (
            "caps",
            r#"{"capAdd": ["SYS_ADMIN"]}"#,
            "devcontainer_refused",
            "capAdd",
        ),
        (
            "runargs",
            r#"{"runArgs": ["--net=host"]}"#,
            "devcontainer_refused",
            "runArgs",
        ),
        (
            "syntax",
            "{\n  \"image\": \"x\",\n  \"oops\" 1\n}",
            "devcontainer_invalid",
            "line 3",
        ),
        (
            "needs",
            r#"{"hostRequirements": {"cpus": 16}}"#,
            "host_requirements_unmet",
            "16 CPUs",
        ),
        (
            "folder",
            r#"{"workspaceFolder": "/etc"}"#,
            "devcontainer_refused",
            "workspaceFolder",
        ),
        (
            "nobody",
            r#"{"remoteUser": "no-such-user"}"#,
            "devcontainer_invalid",
            "no-such-user",
        ),
    ];
    let mut cases: Vec<(String, Vec<String>, &str, String)> = vec![
        (
            "branch".into(),
            vec![
                "--repo".into(),
                url.clone(),
                "--branch".into(),
                "nope".into(),
            ],
            "git_branch_not_found",
            "nope".into(),
        ),
        (
            "commit".into(),
            vec![
                "--repo".into(),
                url.clone(),
                "--commit".into(),
                "deadbeef".into(),
            ],
            "git_commit_not_found",
            "deadbeef".into(),
        ),
        (
            "unreach".into(),
            vec!["--repo".into(), unreachable],
            "git_unreachable",
            String::new(),
        ),
        (
            "missing".into(),
            vec!["--repo".into(), missing],
            "git_repo_not_found",
            String::new(),
        ),
        (
            "big".into(),
            vec!["--repo".into(), big, "--tier".into(), "tiny".into()],
            "git_repo_too_big",
            String::new(),
        ),
    ];
    for (name, config, code, says) in configs {
        let url = git.repo(name, &[(".devcontainer.json", config)]);
        cases.push((name.into(), vec!["--repo".into(), url], code, says.into()));
    }
    // Four at a time: each is a workspace started, a clone and a verdict.
    use futures::StreamExt;
    futures::stream::iter(&cases)
        .for_each_concurrent(4, |(name, args, code, says)| {
            let c = &c;
            async move {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let started = std::time::Instant::now();
                let (exit, _, err) = create(c, name, &args).await;
                assert_ne!(exit, 0, "{name}");
                assert!(err.contains(code), "{name}: wanted {code}: {err}");
                assert!(err.contains(says.as_str()), "{name}: {says}: {err}");
                assert!(
                    started.elapsed() < Duration::from_secs(120),
                    "{name} took {:?}",
                    started.elapsed()
                );
                let w = get(c, name).await;
                assert_eq!(w["state"], "failed", "{w}");
            }
        })
        .await;
    // Refused before anything is stored: URLs that would leak or reach the node.
    for (url, why) in [
        (
            "https://user:pw@git.example/r.git",
            "credentials in the URL",
        ),
        ("file:///etc/passwd", "not supported"),
        ("git@git.example:r.git", "invalid_repo"),
    ] {
        let (code, _, err) = create(&c, "bad", &["--repo", url]).await;
        assert_ne!(code, 0);
        assert!(
            err.contains("invalid_repo") && err.contains(why),
            "{url}: {err}"
        );
    }
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_pulls_pushes_and_names_conflicts() {
    let (c, git, _dir) = cluster().await;
    let url = git.repo("app", &[("a.txt", "one\n"), ("b.txt", "b\n")]);
    let (code, _, err) = create(&c, "app", &["--repo", &url]).await;
    assert_eq!(code, 0, "{err}");
    let cfg = "git -C /workspace/app -c user.name=U -c user.email=u@x";
    let (_, out, err) = c.berth(&c.admin_token, &["sync", "app"]).await;
    assert!(out.contains("up to date"), "{out}{err}");
    // Upstream moved: a fast-forward.
    let head = git.commit("app", "main", &[("c.txt", "c\n")]);
    let (code, out, err) = c
        .berth(&c.admin_token, &["--json", "sync", "app", "--pull"])
        .await;
    assert_eq!(code, 0, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (r["outcome"].as_str(), r["commit"].as_str()),
        (Some("fast_forwarded"), Some(head.as_str())),
        "{r}"
    );
    // A local commit pushed.
    let (code, _) = sh(
        &c,
        "app",
        &format!("echo local > /workspace/app/d.txt && {cfg} add d.txt && {cfg} commit -qm local"),
    )
    .await;
    assert_eq!(code, 0);
    let (code, out, err) = c.berth(&c.admin_token, &["sync", "app", "--push"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("pushed"), "{out}");
    // A conflicting change on both sides: named, and the rebase undone.
    git.commit("app", "main", &[("a.txt", "theirs\n")]);
    let (code, _) = sh(
        &c,
        "app",
        &format!("echo mine > /workspace/app/a.txt && {cfg} commit -qam mine"),
    )
    .await;
    assert_eq!(code, 0);
    let (code, out, err) = c.berth(&c.admin_token, &["--json", "sync", "app"]).await;
    assert_eq!(code, 1, "{out}{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["outcome"], "conflict", "{r}");
    assert_eq!(r["files"], json!(["a.txt"]), "{r}");
    let (_, status) = sh(
        &c,
        "app",
        "git -C /workspace/app status --porcelain; cat /workspace/app/a.txt",
    )
    .await;
    assert_eq!(status, "mine\n", "the rebase was undone: {status}");
    // Pushing now is rejected, with git's lines.
    let (code, out, _) = c
        .berth(&c.admin_token, &["--json", "sync", "app", "--push"])
        .await;
    assert_eq!(code, 1);
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["outcome"], "rejected", "{r}");
    // Sync of a workspace not made from a repository.
    let (s, w) = c.create("plain").await;
    assert_eq!(s, 201, "{w}");
    c.wait_state("plain", "running", T).await;
    let (code, _, err) = c.berth(&c.admin_token, &["sync", "plain"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("not_a_repository"), "{err}");
    // Created stopped: cloned and configured, then stopped; the steps after
    // waitFor skipped; the clone is there at the next start.
    let url = git.repo(
        "cold",
        &[
            ("f.txt", "cold\n"),
            (
                ".devcontainer.json",
                r#"{"onCreateCommand": "echo made > made.txt", "postCreateCommand": "echo never > never.txt"}"#,
            ),
        ],
    );
    let (code, _, err) = create(&c, "cold", &["--repo", &url, "--no-start"]).await;
    assert_eq!(code, 0, "{err}");
    let w = get(&c, "cold").await;
    assert_eq!(w["state"], "stopped", "{w}");
    assert_eq!(step(&w, "clone")["state"], "done", "{w}");
    assert_eq!(step(&w, "onCreateCommand")["state"], "done", "{w}");
    assert_eq!(step(&w, "postCreateCommand")["state"], "skipped", "{w}");
    let (code, _, err) = c.berth(&c.admin_token, &["start", "cold"]).await;
    assert_eq!(code, 0, "{err}");
    let (_, files) = sh(
        &c,
        "cold",
        "cd /workspace/cold && cat f.txt made.txt; test -e never.txt && echo ran || echo skipped",
    )
    .await;
    assert_eq!(files, "cold\nmade\nskipped\n", "{files}");
    c.finish().await;
}

const DOCKERFILE: &str = r#"# Every instruction the builder supports.
FROM REGISTRY/dev:latest
# The dev image's USER is its non-root user, as in Docker: root to install.
USER root
ARG GREETING=hello
ENV FROM_ENV=set
LABEL purpose=test
EXPOSE 8080
WORKDIR /opt/app
COPY hello.txt ./
COPY src/ /opt/src/
COPY leak /opt/leak
SHELL ["/bin/sh", "-c"]
RUN echo "$GREETING $FROM_ENV" > greeting && id -u > built-by && cat hello.txt >> greeting
RUN rm -f /etc/motd && mkdir -p /var/cache/probe && touch /var/cache/probe/x
USER 1000
RUN id -u > /tmp/as-user
"#;

/// A devcontainer feature: options with defaults, an environment of its
/// own, a file beside its install.sh, a lifecycle command Berth does not
/// run (a warning).
const FEATURE: [(&str, &str); 3] = [
    (
        "devcontainer-feature.json",
        r#"{"id": "hello", "version": "1.0.0", "name": "Hello",
            "options": {"greeting": {"type": "string", "default": "hey"},
                        "loud": {"type": "boolean", "default": true}},
            "containerEnv": {"HELLO_HOME": "/opt/hello"},
            "postCreateCommand": "true"}"#,
    ),
    (
        "install.sh",
        "#!/bin/sh\nset -e\nmkdir -p \"$HELLO_HOME\"\n\
         echo \"$GREETING $LOUD $_REMOTE_USER $_REMOTE_USER_HOME $(id -u) $(pwd)\" > \"$HELLO_HOME/installed\"\n\
         cp lib/say.sh /usr/local/bin/hello\n",
    ),
    ("lib/say.sh", "#!/bin/sh\necho hello from the feature\n"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dockerfile_is_built_on_containerd_once_and_cached() {
    let (c, git, _dir) = cluster().await;
    let dockerfile = DOCKERFILE.replace("REGISTRY", &c.registry.addr);
    let hello = berth_tests::oci::push_feature(
        &c.registry.addr,
        "berth-test/features/hello",
        "1",
        &FEATURE,
    )
    .await;
    let config = format!(
        r#"{{"build": {{"dockerfile": "Dockerfile", "context": "..", "args": {{"GREETING": "hi"}}}},
            "features": {{"{hello}": {{"greeting": "hi"}}}}}}"#
    );
    let files = [
        (".devcontainer/devcontainer.json", config.as_str()),
        (".devcontainer/Dockerfile", dockerfile.as_str()),
        ("hello.txt", "from-the-context\n"),
        ("src/lib/one.txt", "one\n"),
        // A link to the node's secrets: copied as the link, never through it.
        ("leak", "symlink:/etc/shadow"),
    ];
    let url = git.repo("built", &files);
    let (code, out, err) = create(&c, "built", &["--repo", &url]).await;
    assert_eq!(code, 0, "{out}{err}");
    let w = get(&c, "built").await;
    let build = step(&w, "build");
    assert_eq!(build["state"], "done", "{w}");
    assert!(
        build["command"]
            .as_str()
            .unwrap()
            .contains("Dockerfile + 1 feature (7 steps run, 0 cached)"),
        "{build}"
    );
    let (code, probe) = sh(
        &c,
        "built",
        "cat /opt/app/greeting /opt/app/built-by /tmp/as-user; stat -c '%u %a' /opt/app/greeting /opt/src/lib/one.txt; \
         readlink /opt/leak; test -e /etc/motd && echo motd-still-there; ls /var/cache/probe; echo env=$FROM_ENV",
    )
    .await;
    assert_eq!(code, 0, "{probe}");
    assert_eq!(
        probe, "hi set\nfrom-the-context\n0\n1000\n0 644\n0 644\n/etc/shadow\nx\nenv=set\n",
        "the build's files, owners, whiteout and environment"
    );
    // The feature: installed as root with its options (a default and the
    // configuration's value), the remote user and its home, from its own
    // folder, which is not in the image; its environment is the workspace's.
    let (code, probe) = sh(
        &c,
        "built",
        "cat /opt/hello/installed; hello; echo home=$HELLO_HOME; ls /tmp/dev-container-features 2>&1 >/dev/null | wc -l",
    )
    .await;
    assert_eq!(code, 0, "{probe}");
    assert_eq!(
        probe,
        "hi true 1000 /home/dev 0 /tmp/dev-container-features/hello_0\nhello from the feature\nhome=/opt/hello\n1\n"
    );
    assert!(
        w["init"]["warnings"]
            .to_string()
            .contains("postCreateCommand of a feature is not run"),
        "{w}"
    );
    // What the RUN wrote as root is the image's root inside, not the node's
    // root: the workspace's root sees it as 0, its user cannot change it.
    let (code, _) = sh(&c, "built", "echo x >> /opt/app/greeting").await;
    assert_ne!(
        code, 0,
        "the workspace user wrote a root-owned file of the build"
    );

    // The same repository again: every step from the cache.
    let (code, out, err) = create(&c, "again", &["--repo", &url]).await;
    assert_eq!(code, 0, "{out}{err}");
    let w = get(&c, "again").await;
    let build = step(&w, "build");
    assert!(
        build["command"]
            .as_str()
            .unwrap()
            .contains("0 steps run, 7 cached"),
        "{build}"
    );
    let (_, greeting) = sh(&c, "again", "cat /opt/app/greeting").await;
    assert_eq!(greeting, "hi set\nfrom-the-context\n");

    // A RUN writing past the workspace's disk fails the build and leaves the
    // node's disk alone; the same RUN within the disk builds (above).
    let big = "FROM REGISTRY/dev:latest\nRUN dd if=/dev/zero of=/big bs=1M count=96\n"
        .replace("REGISTRY", &c.registry.addr);
    let url = git.repo(
        "fills",
        &[
            (
                ".devcontainer.json",
                r#"{"build": {"dockerfile": "Dockerfile"}}"#,
            ),
            ("Dockerfile", &big),
        ],
    );
    let used_before = used_bytes(&c.dir);
    let (code, _, err) = create(&c, "fills", &["--repo", &url, "--tier", "tiny"]).await;
    assert_ne!(code, 0);
    assert!(
        err.contains("build_failed") && err.contains("line 2"),
        "{err}"
    );
    assert!(
        used_bytes(&c.dir) < used_before + (48 << 20),
        "the RUN wrote to the node's disk"
    );
    // An instruction the builder does not run: refused with its line.
    let url = git.repo(
        "health",
        &[
            (
                ".devcontainer.json",
                r#"{"build": {"dockerfile": "Dockerfile"}}"#,
            ),
            ("Dockerfile", "FROM x/y:z\n\nHEALTHCHECK CMD true\n"),
        ],
    );
    let (code, _, err) = create(&c, "health", &["--repo", &url]).await;
    assert_ne!(code, 0);
    assert!(
        err.contains("dockerfile_invalid") && err.contains("line 3"),
        "{err}"
    );
    // A feature asking for a privileged container is refused; one that is
    // not in the registry fails the build, naming it.
    let privileged = berth_tests::oci::push_feature(
        &c.registry.addr,
        "berth-test/features/privileged",
        "1",
        &[
            (
                "devcontainer-feature.json",
                r#"{"id": "privileged", "privileged": true}"#,
            ),
            ("install.sh", "#!/bin/sh\ntrue\n"),
        ],
    )
    .await;
    let missing = format!("{}/berth-test/features/missing:1", c.registry.addr);
    for (name, feature, code_want) in [
        ("priv", privileged.as_str(), "devcontainer_refused"),
        ("missing", missing.as_str(), "build_failed"),
    ] {
        let config = format!(
            r#"{{"image": "{}/dev:latest", "features": {{"{feature}": {{}}}}}}"#,
            c.registry.addr
        );
        let url = git.repo(name, &[(".devcontainer.json", config.as_str())]);
        let (code, _, err) = create(&c, name, &["--repo", &url]).await;
        assert_ne!(code, 0);
        assert!(
            err.contains(code_want) && err.contains(feature),
            "{name}: {err}"
        );
    }
    c.finish().await;
}

/// Bytes the files under `dir` take on its file system (the cluster's
/// nodes, their containerd and volume images; not what other tests write,
/// nor what is mounted there).
fn used_bytes(dir: &std::path::Path) -> u64 {
    let out = std::process::Command::new("du")
        .args(["-sx", "--block-size=1"])
        .arg(dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().next().unwrap().parse().unwrap()
}
