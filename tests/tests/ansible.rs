//! The Ansible playbooks (`ansible/`) against real machines: three bare
//! Debian 12 systems booted with systemd-nspawn (`berth_tests::targets`),
//! reachable over SSH. One `ansible-playbook site.yml` installs the
//! coordinator on one and agents on two from the packages `make dist` makes;
//! each agent gets a one-time join token from the coordinator (a delegated
//! task) and joins; the coordinator's API then lists both nodes, connected.
//! A second run changes nothing (`changed=0` on every host). `drain.yml`
//! drains a node and removes it. `ansible-lint` passes on all of it.

use berth_tests::targets::{dist_packages, Targets};
use std::time::{Duration, Instant};

/// `ansible-playbook PLAYBOOK` against `t` with `extra` vars: (ok, output, seconds).
fn playbook(
    t: &Targets,
    inventory: &std::path::Path,
    book: &str,
    extra: &str,
) -> (bool, String, f64) {
    let started = Instant::now();
    let out = std::process::Command::new("ansible-playbook")
        .current_dir(berth_tests::repo_root().join("ansible"))
        .args(["-i", inventory.to_str().unwrap(), book, "-e", extra])
        .env("ANSIBLE_HOST_KEY_CHECKING", "False")
        .env(
            "ANSIBLE_SSH_ARGS",
            "-o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
        )
        .env("ANSIBLE_PRIVATE_KEY_FILE", &t.key)
        .env("ANSIBLE_NOCOLOR", "1")
        .output()
        .expect("ansible-playbook (Debian package ansible)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        started.elapsed().as_secs_f64(),
    )
}

/// The `changed=N` of each host in a play recap.
fn changed(recap: &str) -> Vec<(String, u32)> {
    recap
        .lines()
        .skip_while(|l| !l.starts_with("PLAY RECAP"))
        .filter_map(|l| {
            let (host, rest) = l.split_once(" : ")?;
            let n = rest
                .split_whitespace()
                .find_map(|f| f.strip_prefix("changed="))?;
            Some((host.trim().to_string(), n.parse().ok()?))
        })
        .collect()
}

#[test]
fn one_playbook_installs_a_coordinator_and_two_joined_nodes_and_a_second_run_changes_nothing() {
    let debs = tempfile::tempdir().unwrap();
    dist_packages(debs.path(), "0.1.0-1");
    let t = Targets::boot(&["coord", "node1", "node2"]);
    let inventory = debs.path().join("inventory.ini");
    std::fs::write(
        &inventory,
        format!(
            "[coordinators]\ncoord ansible_host={}\n\n[nodes]\nnode1 ansible_host={}\nnode2 ansible_host={} spot=true\n\n\
             [all:vars]\nansible_user=root\nansible_python_interpreter=/usr/bin/python3\n",
            t.targets[0].ip, t.targets[1].ip, t.targets[2].ip
        ),
    )
    .unwrap();
    let extra = format!(
        "berth_packages_dir={} berth_api_listen=0.0.0.0:8080",
        debs.path().display()
    );
    let (ok, out, first) = playbook(&t, &inventory, "site.yml", &extra);
    assert!(ok, "site.yml:\n{out}\n{}", t.log(1));
    println!("ansible-playbook site.yml, bare Debian 12 to a 3-machine Berth: {first:.1} s");

    // Both nodes joined and are connected to the coordinator.
    let (_, token, _) = t.ssh(0, "cat /var/lib/berth/coordinator/admin.token");
    let api = format!("http://{}:8080", t.targets[0].ip);
    let nodes = connected_nodes(&api, token.trim(), 2);
    assert_eq!(
        nodes.as_deref(),
        Some(&["node1".to_string(), "node2".to_string()][..]),
        "{}",
        t.ssh(1, "journalctl -u berth-agent --no-pager | tail -20")
            .1
    );
    // The agent's unit as installed: a restart leaves workspaces running.
    let (_, unit, _) = t.ssh(1, "systemctl show berth-agent -p KillMode -p Delegate");
    assert!(
        unit.contains("KillMode=process") && unit.contains("Delegate=yes"),
        "{unit}"
    );
    let (_, spot, _) = t.ssh(2, "cat /etc/berth/agent.toml");
    assert!(
        spot.contains("source = \"gcp\""),
        "the spot node watches for preemption: {spot}"
    );

    // A second run changes nothing.
    let (ok, out, second) = playbook(&t, &inventory, "site.yml", &extra);
    assert!(ok, "second run:\n{out}");
    let recap = changed(&out);
    assert_eq!(recap.len(), 3, "{out}");
    assert!(
        recap.iter().all(|(_, n)| *n == 0),
        "changed: {recap:?}\n{out}"
    );
    println!("the idempotent second run: {second:.1} s");

    // A version bump upgrades in place: every package at the new version,
    // the agents restarted by their units (KillMode=process: workspaces
    // would stay; tests/tests/daemonset.rs and the agent's restart tests
    // show they do), both nodes back and connected.
    let pids = |i: usize| t.ssh(i, "systemctl show -p MainPID --value berth-agent").1;
    let before = (pids(1), pids(2));
    let bumped = tempfile::tempdir().unwrap();
    dist_packages(bumped.path(), "0.1.1-1");
    let (ok, out, _) = playbook(
        &t,
        &inventory,
        "site.yml",
        &format!(
            "berth_packages_dir={} berth_api_listen=0.0.0.0:8080 berth_version=0.1.1-1",
            bumped.path().display()
        ),
    );
    assert!(ok, "the upgrade run:\n{out}");
    for (i, package) in ["berth-coordinator", "berth-agent", "berth-agent"]
        .iter()
        .enumerate()
    {
        let (_, v, _) = t.ssh(i, &format!("dpkg-query -W -f '${{Version}}' {package}"));
        assert_eq!(v.trim(), "0.1.1-1", "{package} on {}", t.targets[i].ip);
    }
    assert!(
        pids(1) != before.0 && pids(2) != before.1,
        "the agents were not restarted: {before:?}"
    );
    assert_eq!(
        connected_nodes(&api, token.trim(), 2).as_deref(),
        Some(&["node1".to_string(), "node2".to_string()][..]),
        "the nodes did not come back after the upgrade"
    );

    // drain.yml drains node2 and removes its agent.
    let (ok, out, _) = playbook(&t, &inventory, "drain.yml", &format!("{extra} node=node2"));
    assert!(ok, "drain.yml:\n{out}");
    let (_, gone, _) = t.ssh(2, "dpkg-query -W -f '${Status}' berth-agent 2>&1; true");
    assert!(!gone.contains("install ok installed"), "{gone}");
}

/// The nodes ready and connected to the coordinator at `api`, once there
/// are `want` of them (30 s at most).
fn connected_nodes(api: &str, token: &str, want: usize) -> Option<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = std::process::Command::new(berth_tests::cli_bin())
            .args(["--url", api, "--token", token, "--json", "nodes"])
            .output()
            .ok()
            .and_then(|out| serde_json::from_slice::<serde_json::Value>(&out.stdout).ok())
            .and_then(|v| {
                let mut ready: Vec<String> = v
                    .as_array()?
                    .iter()
                    .filter(|n| n["status"] == "ready" && n["connected_here"] == true)
                    .filter_map(|n| n["id"].as_str().map(String::from))
                    .collect();
                ready.sort();
                (ready.len() == want).then_some(ready)
            });
        match ready {
            Some(n) => return Some(n),
            None if Instant::now() > deadline => return None,
            None => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// Two coordinators on PostgreSQL (HA): the first makes the CA, the admin
/// token and the secrets key, the second takes the key; the node dials
/// both, and when the coordinator holding its link stops it moves to the
/// other. A second run changes nothing.
#[test]
fn two_coordinators_on_postgresql_share_the_store_and_the_node_moves_between_them() {
    let debs = tempfile::tempdir().unwrap();
    dist_packages(debs.path(), "0.1.0-1");
    let t = Targets::boot(&["coord1", "coord2", "node1"]);
    let pg = berth_tests::Postgres::start_on(Some(&t.host_ip));
    let url = pg.database("berth").replace("127.0.0.1", &t.host_ip);
    let inventory = debs.path().join("inventory.ini");
    std::fs::write(
        &inventory,
        format!(
            "[coordinators]\ncoord1 ansible_host={}\ncoord2 ansible_host={}\n\n[nodes]\nnode1 ansible_host={}\n\n\
             [all:vars]\nansible_user=root\nansible_python_interpreter=/usr/bin/python3\n",
            t.targets[0].ip, t.targets[1].ip, t.targets[2].ip
        ),
    )
    .unwrap();
    let extra = format!(
        "berth_packages_dir={} berth_api_listen=0.0.0.0:8080 berth_database_url={url}",
        debs.path().display()
    );
    let (ok, out, first) = playbook(&t, &inventory, "site.yml", &extra);
    assert!(ok, "site.yml:\n{out}\n{}", t.log(1));
    println!("ansible-playbook site.yml, two coordinators on PostgreSQL and a node: {first:.1} s");

    // One store: the first coordinator's admin token works on both, both
    // list the node, and the node dials both.
    let (_, token, _) = t.ssh(0, "cat /var/lib/berth/coordinator/admin.token");
    let token = token.trim();
    let apis: Vec<String> = (0..2)
        .map(|i| format!("http://{}:8080", t.targets[i].ip))
        .collect();
    let (_, env, _) = t.ssh(2, "cat /etc/berth/agent.env");
    assert!(
        env.contains(&format!(
            "{}:7443,{}:7443",
            t.targets[0].ip, t.targets[1].ip
        )),
        "{env}"
    );
    let holder = apis
        .iter()
        .position(|a| connected_nodes(a, token, 1).is_some())
        .unwrap_or_else(|| panic!("node1 is connected to no coordinator: {}", t.log(2)));
    let other = 1 - holder;
    let out = std::process::Command::new(berth_tests::cli_bin())
        .args(["--url", &apis[other], "--token", token, "--json", "nodes"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"node1\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The coordinator holding the link stops: the node moves to the other.
    let (ok, _, err) = t.ssh(holder, "systemctl stop berth-coordinator");
    assert!(ok, "{err}");
    assert_eq!(
        connected_nodes(&apis[other], token, 1).as_deref(),
        Some(&["node1".to_string()][..]),
        "node1 did not move to the other coordinator: {}",
        t.ssh(2, "journalctl -u berth-agent --no-pager | tail -20")
            .1
    );
    let (ok, _, err) = t.ssh(holder, "systemctl start berth-coordinator");
    assert!(ok, "{err}");

    // A second run changes nothing.
    let (ok, out, _) = playbook(&t, &inventory, "site.yml", &extra);
    assert!(ok, "second run:\n{out}");
    let recap = changed(&out);
    assert_eq!(recap.len(), 3, "{out}");
    assert!(
        recap.iter().all(|(_, n)| *n == 0),
        "changed: {recap:?}\n{out}"
    );
}

#[test]
fn the_playbooks_pass_ansible_lint() {
    let out = std::process::Command::new("ansible-lint")
        .current_dir(berth_tests::repo_root().join("ansible"))
        .args(["--offline", "site.yml", "drain.yml"])
        .env("ANSIBLE_NOCOLOR", "1")
        .output()
        .expect("ansible-lint (Debian package ansible-lint)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
