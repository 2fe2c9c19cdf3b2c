//! Prebuilds, in pure parts (docs/prebuilds.md): the key a prebuild is
//! held under, the hash of the configuration it was built with, and which
//! lifecycle steps a build runs and a workspace started from it skips.

use super::devcontainer::Step;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

fn hash(domain: &str, parts: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(domain.as_bytes());
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The hash of a resolved configuration: where it came from, its text
/// (empty when detected), the image it resolved to (the chain id covers a
/// Dockerfile, features and the base image's digest) and a command given
/// in place of the detected one.
pub fn config_hash(source: &str, text: &str, chain_id: &str, init_command: Option<&str>) -> String {
    hash(
        "berth-prebuild-config-v1\0",
        &[source, text, chain_id, init_command.unwrap_or("\0none")],
    )
}

/// The key of a prebuild: repository, commit and configuration.
pub fn key(url: &str, commit: &str, config_hash: &str) -> String {
    hash("berth-prebuild-key-v1\0", &[url, commit, config_hash])[..32].to_string()
}

/// Whether `s` is a key `key` could have made (it names a snapshot).
pub fn is_key(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// What a run of lifecycle steps is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A plain workspace: every step.
    Plain,
    /// Building a prebuild: onCreateCommand and updateContentCommand only.
    Build,
    /// A workspace from a prebuild: what the prebuild ran is not run again,
    /// unless the branch moved on since (updateContentCommand again) or the
    /// configuration is not the one it was built with (both again).
    FromPrebuild { moved: bool, same_config: bool },
}

/// Whether step `s` runs in `mode`; `Some(why)` when it is left out.
pub fn left_out(mode: Mode, s: Step) -> Option<&'static str> {
    match (mode, s) {
        (Mode::Plain, _) => None,
        (Mode::Build, Step::OnCreate | Step::UpdateContent) => None,
        (Mode::Build, _) => Some("not run in a prebuild"),
        (Mode::FromPrebuild { same_config, .. }, Step::OnCreate) if same_config => {
            Some("ran in the prebuild")
        }
        (Mode::FromPrebuild { same_config, moved }, Step::UpdateContent)
            if same_config && !moved =>
        {
            Some("ran in the prebuild")
        }
        (Mode::FromPrebuild { .. }, _) => None,
    }
}

/// How a workspace used the prebuild it was given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Used {
    pub key: String,
    pub commit: String,
    pub built_at_ms: i64,
    /// "used", "updated" or "missing".
    pub outcome: String,
    pub note: String,
}

/// The git commands that bring a prebuild's repository to what a workspace
/// asked for (`branch`, `commit`, either may be empty), whatever branch the
/// prebuild was built from: a fetch, then a checkout (onto a local branch of
/// that name, tracking the remote's, when a branch is named; local changes
/// the init made to tracked files are dropped, as a fresh clone has none).
/// The third, setting the upstream of a branch checked out at a commit,
/// may fail without failing the update.
pub fn update_commands(
    branch: &str,
    commit: &str,
) -> (Vec<String>, Vec<String>, Option<Vec<String>>) {
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<String>>();
    let remote = format!("origin/{branch}");
    let fetch = match branch {
        "" => v(&["fetch", "--no-tags", "origin", "--", "HEAD"]),
        b => v(&[
            "fetch",
            "--no-tags",
            "origin",
            "--",
            &format!("+refs/heads/{b}:refs/remotes/origin/{b}"),
        ]),
    };
    let (checkout, upstream) = match (branch, commit) {
        ("", "") => (v(&["reset", "--hard", "-q", "FETCH_HEAD", "--"]), None),
        ("", c) => (v(&["checkout", "-q", "-f", "--detach", c, "--"]), None),
        (b, "") => (
            v(&["checkout", "-q", "-f", "-B", b, "--track", &remote, "--"]),
            None,
        ),
        (b, c) => (
            v(&["checkout", "-q", "-f", "-B", b, c, "--"]),
            Some(v(&["branch", "-q", "--set-upstream-to", &remote])),
        ),
    };
    (fetch, checkout, upstream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_fetches_the_branch_asked_for_and_checks_it_out() {
        let (fetch, co, up) = update_commands("feature", "");
        assert_eq!(
            fetch.join(" "),
            "fetch --no-tags origin -- +refs/heads/feature:refs/remotes/origin/feature"
        );
        assert_eq!(
            co.join(" "),
            "checkout -q -f -B feature --track origin/feature --"
        );
        assert_eq!(up, None);
        let (_, co, up) = update_commands("feature", "abc123");
        assert_eq!(co.join(" "), "checkout -q -f -B feature abc123 --");
        assert_eq!(
            up.map(|u| u.join(" ")).as_deref(),
            Some("branch -q --set-upstream-to origin/feature"),
            "the upstream is set apart: it may fail"
        );
        let (fetch, co, _) = update_commands("", "abc123");
        assert_eq!(fetch.last().unwrap(), "HEAD");
        assert_eq!(co.join(" "), "checkout -q -f --detach abc123 --");
        let (_, co, _) = update_commands("", "");
        assert_eq!(co.join(" "), "reset --hard -q FETCH_HEAD --");
    }

    #[test]
    fn keys_change_with_each_part_and_are_names() {
        let c = config_hash(".devcontainer.json", "{}", "sha256:a", None);
        let k = key("http://h/r.git", "abc", &c);
        assert!(is_key(&k));
        for other in [
            key("http://h/s.git", "abc", &c),
            key("http://h/r.git", "abd", &c),
            key(
                "http://h/r.git",
                "abc",
                &config_hash(".devcontainer.json", "{ }", "sha256:a", None),
            ),
            key(
                "http://h/r.git",
                "abc",
                &config_hash(".devcontainer.json", "{}", "sha256:b", None),
            ),
            key(
                "http://h/r.git",
                "abc",
                &config_hash(".devcontainer.json", "{}", "sha256:a", Some("")),
            ),
        ] {
            assert_ne!(k, other);
        }
        // Parts are length-prefixed: moving a byte between them changes the key.
        assert_ne!(key("ab", "c", "x"), key("a", "bc", "x"));
        for bad in ["", "../x", &"A".repeat(32), &"a".repeat(33)] {
            assert!(!is_key(bad), "{bad}");
        }
    }

    #[test]
    fn steps_left_out_by_mode() {
        use Step::*;
        let same = Mode::FromPrebuild {
            moved: false,
            same_config: true,
        };
        let moved = Mode::FromPrebuild {
            moved: true,
            same_config: true,
        };
        let changed = Mode::FromPrebuild {
            moved: false,
            same_config: false,
        };
        let table = [
            (Mode::Plain, [true, true, true, true]),
            (Mode::Build, [true, true, false, false]),
            (same, [false, false, true, true]),
            (moved, [false, true, true, true]),
            (changed, [true, true, true, true]),
        ];
        for (mode, runs) in table {
            for (s, run) in [OnCreate, UpdateContent, PostCreate, PostStart]
                .into_iter()
                .zip(runs)
            {
                assert_eq!(left_out(mode, s).is_none(), run, "{mode:?} {s:?}");
            }
        }
    }
}
