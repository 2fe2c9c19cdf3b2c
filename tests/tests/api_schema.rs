//! schemathesis (PyPI, `scripts/schemathesis.sh`) against a real coordinator's
//! `/v1/openapi.json`: generated valid and invalid requests, stateful
//! sequences (create → get → delete → get), missing auth. Every check must
//! hold: no 5xx, every response (status, content type, body) as documented,
//! schema-invalid input refused, schema-valid input not refused with 400/422,
//! a deleted workspace gone. The coordinator runs with no agent, so no
//! generated image reference is ever pulled: nothing leaves this machine.

use berth_tests::{coordinator_bin, repo_root, Coordinator};
use std::process::Command;

fn schemathesis(c: &Coordinator, token: &str, checks: &str, examples: u32, extra: &[&str]) {
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
        .current_dir(c.dir.path())
        .output()
        .expect("run scripts/schemathesis.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    let log = c.log();
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
    let c = Coordinator::start();
    let admin = c.admin_token();
    // An SSH key's text cannot be told valid by a schema (its base64 must
    // decode to a key): POST /v1/ssh-keys answers 422 `invalid_ssh_key` to
    // generated keys, so that one operation runs without the check that
    // schema-valid input is accepted; every other check holds for it.
    schemathesis(&c, &admin, "all", 50, &["--exclude-path", "/v1/ssh-keys"]);
    schemathesis(
        &c,
        &admin,
        "all",
        50,
        &[
            "--include-path",
            "/v1/ssh-keys",
            "--exclude-checks",
            "positive_data_acceptance",
        ],
    );
    // A member meets the 403s and the owner rules.
    let member = Command::new(coordinator_bin())
        .arg("--data-dir")
        .arg(c.dir.path().join("data"))
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
