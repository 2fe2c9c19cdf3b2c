//! `COPY` / `ADD` of context files: read from the repository through
//! `Context` (no link followed), written into a new snapshot's upper
//! directory through `Target` (no link followed), parents the image has
//! keeping their mode and owner.

use super::{failed, in_image, normalize, State, BUILD_LEASE};
use crate::build::{self as b, Context, Kind, Target};
use crate::error::Result;
use crate::workspace::{rootfs, Manager};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

impl Manager {
    /// Copies context files into a new snapshot `name`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn build_copy(
        &self,
        st: &State,
        ctx: &Context,
        sources: &[String],
        dest: &str,
        chown: Option<&str>,
        line: usize,
        name: &str,
    ) -> Result<()> {
        let ctd = &self.inner.ctd;
        let active = format!("berth-build-active-copy-{:08x}", rand::random::<u32>());
        let mounts = ctd
            .prepare(Some(BUILD_LEASE), &active, &st.parent, HashMap::new())
            .await?;
        let copied = copy_into(st, ctx, sources, dest, chown, &mounts)
            .map_err(|e| failed(line, format!("COPY {}: {e}", sources.join(" "))));
        self.settle(&active, name, copied).await
    }
}

/// Writes `sources` of the context at `dest` into the active snapshot's
/// upper directory.
fn copy_into(
    st: &State,
    ctx: &Context,
    sources: &[String],
    dest: &str,
    chown: Option<&str>,
    mounts: &[containerd_client::types::Mount],
) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let bad = |m: String| std::io::Error::other(m);
    let upper = b::upperdir(mounts).ok_or_else(|| bad("no upper directory".into()))?;
    let lowers: Vec<PathBuf> = rootfs::lowers(mounts)
        .into_iter()
        .map(PathBuf::from)
        .collect();
    let owner = match chown {
        None => (0, 0),
        Some(c) => {
            b::lookup_user(&lowers, c).ok_or_else(|| bad(format!("--chown={c}: no such user")))?
        }
    };
    let abs = st.absolute(dest);
    let dest_rel = normalize(&abs).ok_or_else(|| bad(format!("{dest}: not a path")))?;
    // No parent may be a link in the image: the write would land beside
    // the directory the link names, not in it.
    let mut prefix = PathBuf::new();
    for c in dest_rel.components() {
        prefix.push(c);
        if in_image(&lowers, &prefix).is_some_and(|m| m.file_type().is_symlink()) {
            return Err(bad(format!(
                "{} is a symbolic link in the image: name the directory it points to",
                Path::new("/").join(&prefix).display()
            )));
        }
    }
    let existing = |p: &Path| {
        in_image(&lowers, p)
            .filter(|m| m.is_dir())
            .map(|m| (m.mode() & 0o7777, (m.uid(), m.gid())))
    };
    let into_dir = abs.ends_with('/')
        || sources.len() > 1
        || in_image(&lowers, &dest_rel).is_some_and(|m| m.is_dir());
    let target = Target::open(&upper)?;
    for src in sources {
        let entries = ctx.entries(src)?;
        let top_is_dir = entries.first().is_some_and(|e| e.kind == Kind::Dir);
        let at = match (top_is_dir, into_dir) {
            (true, _) | (false, false) => dest_rel.clone(),
            (false, true) => dest_rel.join(
                Path::new(src.trim_end_matches('/'))
                    .file_name()
                    .ok_or_else(|| bad(format!("{src}: no file name")))?,
            ),
        };
        if let Some(parent) = at.parent().filter(|p| !p.as_os_str().is_empty()) {
            target.mkdir_p(parent, 0o755, owner, &existing)?;
        }
        for e in entries {
            let path = match e.rel.as_os_str().is_empty() {
                true => at.clone(),
                false => at.join(&e.rel),
            };
            match &e.kind {
                Kind::Dir => target.mkdir_p(&path, e.mode, owner, &existing)?,
                Kind::File { .. } => {
                    let mut f = ctx.open_file(src, &e.rel)?;
                    target.write_file(&path, e.mode, owner, &mut f)?;
                }
                Kind::Link(to) => target.symlink(&path, to, owner)?,
            }
        }
    }
    Ok(())
}
