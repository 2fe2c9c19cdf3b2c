//! Berth's Debian packages (`make dist`: cargo-deb from each crate's
//! metadata and packaging/) installed with dpkg on a bare Debian 12 made by
//! mmdebstrap (`scripts/debian-rootfs.sh`, cached): their dependencies are
//! Debian's, the coordinator gets its system user and private
//! configuration, both services are enabled (the agent's unit leaves
//! workspaces running when it stops: `KillMode=process`), the shipped
//! configuration files are the ones the binaries accept, an upgrade keeps an
//! edited configuration, removal takes the programs and keeps the
//! configuration, and purge takes the rest but the user.

use berth_tests::targets::{dist_packages, rootfs_tar};
use std::path::PathBuf;

fn sh(cmd: &str) -> String {
    let (ok, out, err) = berth_tests::sh(cmd);
    assert!(ok, "{cmd}:\n{out}{err}");
    out
}

#[test]
fn the_packages_install_on_bare_debian_upgrade_and_purge() {
    let dir = tempfile::tempdir().unwrap();
    let debs = dist_packages(&dir.path().join("v1"), "0.1.0-1");
    let agent = &debs[0];

    // What the packages say before they are installed.
    let depends = sh(&format!("dpkg-deb -f {} Depends", agent.display()));
    for d in ["containerd", "runc", "nftables", "e2fsprogs", "restic"] {
        assert!(depends.contains(d), "the agent depends on {d}: {depends}");
    }
    let unit = sh(&format!(
        "dpkg-deb --fsys-tarfile {} | tar -xO lib/systemd/system/berth-agent.service",
        agent.display()
    ));
    assert!(
        unit.contains("\nKillMode=process\n") && unit.contains("\nDelegate=yes\n"),
        "{unit}"
    );

    // A bare Debian 12, Berth's packages installed with dpkg.
    let tar = rootfs_tar();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    sh(&format!(
        "tar -xf {} -C {} --numeric-owner",
        tar.display(),
        root.display()
    ));
    let r = root.display().to_string();
    let install = |debs: &[PathBuf]| {
        let names: Vec<String> = debs
            .iter()
            .map(|d| {
                let name = d.file_name().unwrap().to_string_lossy().to_string();
                std::fs::copy(d, root.join("tmp").join(&name)).unwrap();
                format!("/tmp/{name}")
            })
            .collect();
        sh(&format!("chroot {r} dpkg -i {}", names.join(" ")))
    };
    install(&debs);
    let user = sh(&format!("chroot {r} getent passwd berth"));
    assert!(user.contains(":/var/lib/berth:/usr/sbin/nologin"), "{user}");
    for unit in ["berth-agent", "berth-coordinator"] {
        // A link to /lib/systemd/system/…: absolute in the target's tree.
        let wants = root.join(format!(
            "etc/systemd/system/multi-user.target.wants/{unit}.service"
        ));
        assert!(wants.symlink_metadata().is_ok(), "{unit} is enabled");
    }
    let modes = sh(&format!(
        "chroot {r} stat -c '%n %a %U:%G' /etc/berth/coordinator.env /etc/berth/coordinator.toml /etc/berth/agent.env"
    ));
    assert_eq!(
        modes,
        "/etc/berth/coordinator.env 640 root:berth\n/etc/berth/coordinator.toml 640 root:berth\n/etc/berth/agent.env 600 root:root\n"
    );
    // The units are valid as systemd reads them, their programs there.
    sh(&format!(
        "chroot {r} systemd-analyze verify /lib/systemd/system/berth-agent.service /lib/systemd/system/berth-coordinator.service"
    ));
    // The shipped configuration is what the binaries accept.
    let effective = sh(&format!(
        "chroot {r} berth-agent --config /etc/berth/agent.toml config"
    ));
    assert!(effective.contains("namespace: \"berth\""), "{effective}");
    let ca = sh(&format!(
        "chroot {r} sh -c 'set -a; . /etc/berth/coordinator.env; BERTH_DATA_DIR=/tmp/c berth-coordinator admin ca'"
    ));
    assert_eq!(ca.lines().next().unwrap_or_default().len(), 64, "{ca}");
    assert!(sh(&format!("chroot {r} berth --version")).starts_with("berth "));

    // An upgrade keeps an edited configuration.
    sh(&format!(
        "echo BERTH_COORDINATOR=10.0.0.1:7443 >> {r}/etc/berth/agent.env"
    ));
    let v2 = dist_packages(&dir.path().join("v2"), "0.1.1-1");
    install(&v2);
    let status = sh(&format!(
        "chroot {r} dpkg-query -W -f '${{Version}} ' berth-agent berth-coordinator berth"
    ));
    assert_eq!(status, "0.1.1-1 0.1.1-1 0.1.1-1 ");
    assert!(std::fs::read_to_string(root.join("etc/berth/agent.env"))
        .unwrap()
        .contains("BERTH_COORDINATOR=10.0.0.1:7443"));

    // Removed: the programs go, the configuration stays; purged: it goes.
    sh(&format!(
        "chroot {r} dpkg -r berth-agent berth-coordinator berth"
    ));
    assert!(!root.join("usr/bin/berth-agent").exists());
    assert!(root.join("etc/berth/agent.toml").exists());
    sh(&format!(
        "chroot {r} dpkg -P berth-agent berth-coordinator berth"
    ));
    assert!(!root.join("etc/berth/agent.toml").exists());
    assert!(!root.join("etc/berth/coordinator.env").exists());
    // (Debian disables a service at purge, not at removal.)
    assert!(root
        .join("etc/systemd/system/multi-user.target.wants/berth-agent.service")
        .symlink_metadata()
        .is_err());
}
