//! The Kubernetes manifests (`deploy/kubernetes/`), validated offline and
//! strictly against the Kubernetes 1.30 API schemas (PyPI
//! kubernetes-validate, pinned: `scripts/kubernetes-validate.sh`), with a
//! control (a misspelt field is refused); the agent's DaemonSet has what
//! the agent needs on a node; every environment variable the manifests set
//! is one the binaries read; the agent's configuration in its ConfigMap is
//! one the agent accepts.

use berth_tests::kubelet::{kind, manifest};
use std::process::Command;

fn validate(files: &[std::path::PathBuf]) -> (bool, String) {
    let out = Command::new(berth_tests::repo_root().join("scripts/kubernetes-validate.sh"))
        .args(files)
        .output()
        .expect("scripts/kubernetes-validate.sh");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The `BERTH_*` variables a binary's `--help` names.
fn env_read_by(bin: &std::path::Path) -> String {
    let out = Command::new(bin).arg("--help").output().expect("--help");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_manifests_are_valid_and_give_the_agent_what_it_needs() {
    let dir = berth_tests::repo_root().join("deploy/kubernetes");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    let (ok, out) = validate(&files);
    assert!(ok, "{out}");

    // The control: strict validation refuses a misspelt field.
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.yaml");
    let text = std::fs::read_to_string(dir.join("agent.yaml")).unwrap();
    std::fs::write(&bad, text.replace("hostPID: true", "hostPid: true")).unwrap();
    let (ok, out) = validate(&[bad]);
    assert!(!ok && out.contains("hostPid"), "{out}");

    // The DaemonSet: privileged, the host's PID and network namespaces,
    // every node, critical, rolled one node at a time, ready when the
    // agent answers on its socket; the host paths it works on.
    let agent = manifest("agent.yaml");
    let ds = kind(&agent, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["tolerations"][0]["operator"], "Exists");
    assert_eq!(
        ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
        1
    );
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["privileged"], true);
    assert!(c["readinessProbe"]["exec"]["command"]
        .to_string()
        .contains("ctl"));
    let mount = |path: &str| {
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == path)
            .cloned()
            .unwrap_or_else(|| panic!("no mount at {path}"))
    };
    assert_eq!(
        mount("/var/lib/berth/agent")["mountPropagation"],
        "Bidirectional"
    );
    assert_eq!(mount("/run/berth")["mountPropagation"], "Bidirectional");
    for path in [
        "/sys/fs/cgroup",
        "/run/containerd/containerd.sock",
        "/var/lib/containerd",
        "/dev",
    ] {
        mount(path);
    }

    // Its configuration is one the agent accepts, on containerd namespace
    // "berth" (never the kubelet's "k8s.io").
    let toml = kind(&agent, "ConfigMap")["data"]["agent.toml"]
        .as_str()
        .unwrap()
        .to_string();
    let cfg = tmp.path().join("agent.toml");
    std::fs::write(&cfg, &toml).unwrap();
    let out = Command::new(berth_tests::agent_bin())
        .arg("--config")
        .arg(&cfg)
        .arg("config")
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && shown.contains("namespace: \"berth\""),
        "{shown}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Every BERTH_* variable set is one the binary reads.
    let coordinator = manifest("coordinator.yaml");
    let deployment = kind(&coordinator, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    for (container, help) in [
        (
            &deployment["spec"]["template"]["spec"]["containers"][0],
            env_read_by(&berth_tests::coordinator_bin()),
        ),
        (c, env_read_by(&berth_tests::agent_bin())),
    ] {
        for e in container["env"].as_array().unwrap() {
            let name = e["name"].as_str().unwrap();
            if name.starts_with("BERTH_") {
                assert!(
                    help.contains(&format!("env: {name}")),
                    "{name} is not read:\n{help}"
                );
            }
        }
    }
}
