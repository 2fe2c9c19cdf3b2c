//! Layers unpacked for the node's user-namespace id map: after containerd's
//! diff service writes a layer into an extraction snapshot, the owners of
//! what it wrote are shifted into the map (once per layer and node).

use crate::error::{AgentError, Result};
use crate::idmap::IdMap;
use containerd_client::types::Mount;
use std::path::Path;
use std::time::Instant;

/// Shifts the owners in the writable dir of an extraction snapshot.
pub(super) async fn shift_layer(mounts: &[Mount], map: IdMap) -> Result<()> {
    let dir = mounts
        .first()
        .and_then(writable_dir)
        .ok_or_else(|| AgentError::Containerd {
            context: "unpack".into(),
            status: tonic::Status::internal("extraction snapshot has no writable dir"),
        })?;
    let shown = dir.clone();
    let t = Instant::now();
    let changed =
        tokio::task::spawn_blocking(move || crate::idmap::shift_tree(Path::new(&dir), map))
            .await
            .map_err(|e| AgentError::io("shift layer owners")(std::io::Error::other(e)))?
            .map_err(AgentError::io(format!("shift owners under {shown}")))?;
    tracing::debug!(dir = %shown, changed, ms = t.elapsed().as_millis() as u64, "layer owners shifted");
    Ok(())
}

/// The directory an extraction snapshot's mount writes to: a bind mount's
/// source, or an overlay's upperdir.
pub fn writable_dir(m: &Mount) -> Option<String> {
    match m.r#type.as_str() {
        "bind" => Some(m.source.clone()),
        "overlay" => m
            .options
            .iter()
            .find_map(|o| o.strip_prefix("upperdir=").map(String::from)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_dir_an_extraction_writes_to() {
        let m = |t: &str, source: &str, options: &[&str]| Mount {
            r#type: t.into(),
            source: source.into(),
            target: String::new(),
            options: options.iter().map(|o| o.to_string()).collect(),
        };
        assert_eq!(
            writable_dir(&m("bind", "/s/1/fs", &["rbind"])).as_deref(),
            Some("/s/1/fs")
        );
        let o = m(
            "overlay",
            "overlay",
            &["workdir=/s/2/work", "upperdir=/s/2/fs", "lowerdir=/s/1/fs"],
        );
        assert_eq!(writable_dir(&o).as_deref(), Some("/s/2/fs"));
        assert_eq!(writable_dir(&m("tmpfs", "tmpfs", &[])), None);
    }
}
