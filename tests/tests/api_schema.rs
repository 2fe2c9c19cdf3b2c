//! schemathesis (PyPI, `scripts/schemathesis.sh`) against a real coordinator's
//! `/v1/openapi.json`: generated valid and invalid requests, stateful
//! sequences (create → get → delete → get), missing auth. Every check must
//! hold: no 5xx, every response (status, content type, body) as documented,
//! schema-invalid input refused, schema-valid input not refused with 400/422,
//! a deleted workspace gone. First against a coordinator alone, then with an
//! agent, so exec, ports, SSH and the terminal are fuzzed past `not_running`;
//! that agent's node is confined to the test's own network (generated image
//! references are tried against nothing but this machine).

use berth_tests::{coordinator_bin, repo_root, Cluster, ClusterOptions, Coordinator};
use std::path::Path;
use std::process::Command;

/// Where schemathesis points and how to read the coordinator's log.
struct Target<'a> {
    api: &'a str,
    dir: &'a Path,
    log: &'a dyn Fn() -> String,
}

/// Operations whose valid input a schema cannot fully say (see below).
const SCHEMA_UNSAID: &str =
    "^/v1/ssh-keys$|/secrets/\\{name\\}$|/files/\\{path\\}$|/reviews$|/reviews/\\{id\\}/\\{action\\}$";

fn schemathesis(c: &Target, token: &str, checks: &str, examples: u32, extra: &[&str]) {
    let out = Command::new(repo_root().join("scripts/schemathesis.sh"))
        .arg("run")
        .args(extra)
        .arg(format!("{}/v1/openapi.json", c.api))
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["--checks", checks])
        .args(["--max-examples", &examples.to_string()])
        // One worker: schemathesis' generator is not thread-safe in 4.x.
        .args(["--workers", "1"])
        // A stream that never ends; its 200 and 401 are covered by tests/tests/cli.rs.
        .args(["--exclude-path", "/v1/events"])
        .args(["--request-timeout", "10"])
        .env("NO_COLOR", "1")
        // Its cache (.schemathesis/) goes to the test's directory, not the clone.
        .current_dir(c.dir)
        .output()
        .expect("run scripts/schemathesis.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    let log = (c.log)();
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !log.contains("panicked"),
        "the coordinator panicked:\n{log}"
    );
    println!("{text}");
}

#[test]
fn openapi_holds_under_schemathesis() {
    let co = Coordinator::start();
    let admin = co.admin_token();
    let log = || co.log();
    let c = Target {
        api: &co.api,
        dir: co.dir.path(),
        log: &log,
    };
    // An SSH key's text cannot be told valid by a schema (its base64 must
    // decode to a key): POST /v1/ssh-keys answers 422 `invalid_ssh_key` to
    // generated keys, so that one operation runs without the check that
    // schema-valid input is accepted; every other check holds for it. So do
    // a secret's: exactly one of `value` and `value_base64`, and an
    // environment variable's value UTF-8 without NUL, tie fields together
    // in ways a schema does not say (`invalid_secret`, docs/errors.md); a
    // file API path is refused for `..` and empty names (`invalid_path`); a
    // review's note or comment holds no NUL (`invalid_review`), and its
    // step is one of four names.
    let unsaid = SCHEMA_UNSAID;
    schemathesis(&c, &admin, "all", 50, &["--exclude-path-regex", unsaid]);
    schemathesis(
        &c,
        &admin,
        "all",
        50,
        &[
            "--include-path-regex",
            unsaid,
            "--exclude-checks",
            "positive_data_acceptance",
        ],
    );
    // A member meets the 403s and the owner rules.
    let member = Command::new(coordinator_bin())
        .arg("--data-dir")
        .arg(co.dir.path().join("data"))
        .args([
            "admin", "token", "create", "--user", "bob", "--role", "member",
        ])
        .output()
        .unwrap();
    assert!(member.status.success());
    let member = String::from_utf8_lossy(&member.stdout).trim().to_string();
    schemathesis(
        &c,
        &member,
        "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance",
        20,
        &[],
    );
}

/// The same with an agent: workspaces created without an image get the
/// cluster registry's `tiny` and run, so the workspace operations reach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openapi_holds_with_an_agent_behind_it() {
    let mut cl = Cluster::start(ClusterOptions::default()).await;
    cl.kill_coordinator();
    cl.set_coordinator_args(vec!["--default-image".into(), cl.tiny()]);
    cl.start_coordinator();
    cl.confine(0);
    let dir = cl.dir.join("schemathesis");
    std::fs::create_dir_all(&dir).unwrap();
    let log = || cl.coordinator_log();
    let c = Target {
        api: &cl.api,
        dir: &dir,
        log: &log,
    };
    let token = cl.admin_token.clone();
    // Two checks cannot hold against a running workspace, for documented
    // reasons: a DELETE is 202 Accepted and the workspace stays `deleting`
    // until its node confirms (the first test checks that a deleted one is
    // 404), and the tunnels (ports, SSH, terminal) answer 426 to a request
    // that is not an upgrade, which an HTTP fuzzer cannot make. And exec
    // takes a `cwd` the workspace may not have: a schema cannot say which
    // directories exist, and a missing one is 422 `invalid_command` by
    // design (tests/tests/abuse.rs), which the acceptance check counts as
    // valid data refused; exec keeps every other check.
    let limited = format!(
        "/v1/workspaces/\\{{name\\}}/(ports/\\{{port\\}}|ssh|terminal|exec|exec/stream)$|{SCHEMA_UNSAID}"
    );
    // A prebuild clones the generated repository URL on the node (a build
    // workspace per example): its runs are tests/tests/prebuilds.rs'; here
    // it is fuzzed without a node (the first test), where it fails at once.
    tokio::task::block_in_place(|| {
        schemathesis(
            &c,
            &token,
            "all",
            30,
            &[
                "--exclude-path-regex",
                &format!("({limited})|^/v1/prebuilds"),
                "--exclude-checks",
                "use_after_free",
            ],
        );
        schemathesis(
            &c,
            &token,
            "all",
            30,
            &[
                "--include-path-regex",
                &limited,
                "--exclude-checks",
                "use_after_free,positive_data_acceptance",
            ],
        );
    });
    let (_, nodes) = cl.get("/v1/nodes").await;
    assert_eq!(nodes[0]["status"], "ready", "the agent kept up: {nodes}");
    cl.finish().await;
}
