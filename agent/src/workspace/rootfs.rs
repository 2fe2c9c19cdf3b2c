//! A workspace's root filesystem: containerd's overlay of the image layers,
//! with the upper and work dirs moved onto the workspace's own volume so
//! that every byte written outside /workspace (/tmp, /var, /etc) counts
//! against its disk limit, not the node's disk; and the lower layers seen
//! through idmapped mounts of the workspace's own id range. Pure.

use crate::error::{AgentError, Result};
use containerd_client::types::Mount;
use std::path::Path;

/// Rewrites the snapshot's `mounts` to write into `upper` / `work`.
pub fn on_volume(mounts: Vec<Mount>, upper: &Path, work: &Path) -> Result<Vec<Mount>> {
    let [m] = <[Mount; 1]>::try_from(mounts).map_err(|ms| {
        AgentError::InvalidRequest(format!("rootfs: expected one mount, got {}", ms.len()))
    })?;
    let upper = upper.to_string_lossy();
    match m.r#type.as_str() {
        "overlay" => {
            let mut options: Vec<String> = m
                .options
                .into_iter()
                .filter(|o| !o.starts_with("upperdir=") && !o.starts_with("workdir="))
                .collect();
            options.push(format!("upperdir={upper}"));
            options.push(format!("workdir={}", work.to_string_lossy()));
            Ok(vec![Mount { options, ..m }])
        }
        // An image of one empty layer: the root is the upper dir alone.
        "bind" => Ok(vec![Mount {
            r#type: "bind".into(),
            source: upper.into_owned(),
            target: String::new(),
            options: vec!["rbind".into(), "rw".into()],
        }]),
        other => Err(AgentError::InvalidRequest(format!(
            "rootfs: cannot move a {other} mount onto the volume"
        ))),
    }
}

/// The lower dirs of an overlay rootfs, top first (none for a bind root).
pub fn lowers(mounts: &[Mount]) -> Vec<String> {
    mounts
        .iter()
        .filter(|m| m.r#type == "overlay")
        .flat_map(|m| m.options.iter())
        .filter_map(|o| o.strip_prefix("lowerdir="))
        .flat_map(|l| l.split(':'))
        .map(String::from)
        .collect()
}

/// The same mounts with the overlay's lower dirs replaced by `lowers` (in
/// the order `lowers()` gave them).
pub fn with_lowers(mounts: Vec<Mount>, lowers: &[String]) -> Vec<Mount> {
    mounts
        .into_iter()
        .map(|m| match m.r#type.as_str() {
            "overlay" => Mount {
                options: m
                    .options
                    .into_iter()
                    .map(|o| match o.starts_with("lowerdir=") {
                        true => format!("lowerdir={}", lowers.join(":")),
                        false => o,
                    })
                    .collect(),
                ..m
            },
            _ => m,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(t: &str, options: &[&str]) -> Mount {
        Mount {
            r#type: t.into(),
            source: t.into(),
            target: String::new(),
            options: options.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn the_upper_and_work_dirs_move_to_the_volume() {
        let m = mount(
            "overlay",
            &[
                "index=off",
                "workdir=/c/snapshots/9/work",
                "upperdir=/c/snapshots/9/fs",
                "lowerdir=/c/snapshots/2/fs:/c/snapshots/1/fs",
            ],
        );
        let out = on_volume(
            vec![m],
            Path::new("/v/ws/rootfs/upper"),
            Path::new("/v/ws/rootfs/work"),
        )
        .unwrap();
        assert_eq!(
            out[0].options,
            [
                "index=off",
                "lowerdir=/c/snapshots/2/fs:/c/snapshots/1/fs",
                "upperdir=/v/ws/rootfs/upper",
                "workdir=/v/ws/rootfs/work"
            ]
        );
        assert_eq!(out[0].r#type, "overlay");
    }

    #[test]
    fn lower_dirs_are_replaced_in_order() {
        let m = mount(
            "overlay",
            &["index=off", "lowerdir=/s/2/fs:/s/1/fs", "upperdir=/u"],
        );
        assert_eq!(lowers(std::slice::from_ref(&m)), ["/s/2/fs", "/s/1/fs"]);
        let out = with_lowers(vec![m], &["/i/0".into(), "/i/1".into()]);
        assert_eq!(
            out[0].options,
            ["index=off", "lowerdir=/i/0:/i/1", "upperdir=/u"]
        );
        assert!(lowers(&[mount("bind", &["rbind"])]).is_empty());
    }

    #[test]
    fn a_bind_root_becomes_the_upper_dir_and_others_are_refused() {
        let out = on_volume(
            vec![mount("bind", &["rbind", "rw"])],
            Path::new("/u"),
            Path::new("/w"),
        )
        .unwrap();
        assert_eq!(out[0].source, "/u");
        assert!(on_volume(vec![mount("tmpfs", &[])], Path::new("/u"), Path::new("/w")).is_err());
        assert!(on_volume(vec![], Path::new("/u"), Path::new("/w")).is_err());
    }
}
