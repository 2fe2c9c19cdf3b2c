//! What a backup leaves out when a workspace asks it to skip what its
//! repository ignores (docs/backups.md, "Leaving out ignored files"): the
//! `.gitignore` files under `/workspace`, read with the `ignore` crate
//! (ripgrep's matcher, git's rules) and never by running git, whose
//! repository configuration could run commands as the agent. Symbolic
//! links are not followed; the `.git` directory itself is kept (its
//! history is work).

use std::path::{Path, PathBuf};

/// The files (not directories: restic backs up a listed directory whole)
/// under `root/dir` that no `.gitignore` ignores, relative to `root`, and
/// the bytes of the files left out.
pub fn included(root: &Path, dir: &str) -> std::io::Result<(Vec<PathBuf>, u64)> {
    let base = root.join(dir);
    let mut kept = Vec::new();
    let mut kept_bytes = 0u64;
    let walk = ignore::WalkBuilder::new(&base)
        .standard_filters(false)
        .git_ignore(true)
        .require_git(false)
        .follow_links(false)
        .build();
    for entry in walk {
        let entry = entry.map_err(std::io::Error::other)?;
        let Some(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            continue;
        }
        if let Ok(rel) = entry.path().strip_prefix(root) {
            kept.push(rel.to_path_buf());
        }
        if kind.is_file() {
            kept_bytes += entry.metadata().map_or(0, |m| m.len());
        }
    }
    let all_bytes = total_bytes(&base);
    Ok((kept, all_bytes.saturating_sub(kept_bytes)))
}

/// The bytes of the regular files under `dir` (links not followed).
fn total_bytes(dir: &Path) -> u64 {
    ignore::WalkBuilder::new(dir)
        .standard_filters(false)
        .follow_links(false)
        .build()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_some_and(|t| t.is_file()))
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_gitignore_files_ignore_is_left_out_and_counted() {
        let t = tempfile::tempdir().unwrap();
        let ws = t.path().join("workspace");
        let w = |p: &str, body: &str| {
            let path = ws.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, body).unwrap();
        };
        w(".gitignore", "node_modules/\n/build\n*.log\n!keep.log\n");
        w("src/main.js", "console.log(1)\n");
        w("node_modules/left-pad/index.js", &"x".repeat(1000));
        w("build/out.bin", &"y".repeat(500));
        w(
            "src/build/kept.txt",
            "anchored /build is the top one only\n",
        );
        w("debug.log", "zzz");
        w("keep.log", "negated: kept\n");
        w("sub/.gitignore", "secret-cache/\n");
        w("sub/secret-cache/c", &"c".repeat(20));
        w(".env", "TOKEN=1\n");
        w(".git/HEAD", "ref: refs/heads/main\n");
        std::os::unix::fs::symlink("/etc", ws.join("etc-link")).unwrap();
        let (kept, left_out) = included(t.path(), "workspace").unwrap();
        let mut kept: Vec<String> = kept.iter().map(|p| p.display().to_string()).collect();
        kept.sort();
        assert_eq!(
            kept,
            [
                "workspace/.env",
                "workspace/.git/HEAD",
                "workspace/.gitignore",
                "workspace/etc-link",
                "workspace/keep.log",
                "workspace/src/build/kept.txt",
                "workspace/src/main.js",
                "workspace/sub/.gitignore",
            ]
        );
        assert_eq!(left_out, 1000 + 500 + 3 + 20);
    }
}
