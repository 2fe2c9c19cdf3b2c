//! Git, as the agent drives it inside a workspace: the command lines of a
//! clone and a sync, the askpass helper that reads a credential from a
//! one-use pipe, and what git's messages mean (a stable code each). Pure.

use berth_proto::codes::Code;

/// The askpass helper git runs for a user name or a password: the name
/// comes from the environment, the password is one line read from the pipe
/// the agent feeds (so the token is never in a file, an argument or the
/// environment).
pub const ASKPASS: &str = r#"#!/bin/sh
case "$1" in
  Username*) printf '%s\n' "$BERTH_GIT_USERNAME" ;;
  *) IFS= read -r line < "$BERTH_GIT_PIPE" && printf '%s\n' "$line" ;;
esac
"#;

/// Options given on every git command line: no credential helper from the
/// image's configuration (one would store the token), no prompt on a
/// terminal, no advice.
pub fn base_args() -> Vec<String> {
    [
        "git",
        "-c",
        "credential.helper=",
        "-c",
        "core.askPass=",
        "-c",
        "advice.detachedHead=false",
    ]
    .map(String::from)
    .to_vec()
}

/// The directory a repository is cloned into by default: the last part of
/// its URL's path without `.git`, kept to letters, digits, `.`, `_` and `-`.
pub fn repo_name(url: &str) -> String {
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .trim_end_matches('/');
    let last = path.rsplit('/').next().unwrap_or("");
    let last = last.strip_suffix(".git").unwrap_or(last);
    let name: String = last
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .collect();
    match name.trim_start_matches('.') {
        "" => "repo".into(),
        n => n.into(),
    }
}

/// `git clone` of `url` into `dest`.
pub fn clone_args(url: &str, branch: &str, partial: bool, dest: &str) -> Vec<String> {
    let mut a = base_args();
    a.extend(["clone", "--recurse-submodules", "--progress"].map(String::from));
    if partial {
        a.push("--filter=blob:none".into());
    }
    if !branch.is_empty() {
        a.extend(["--branch".into(), branch.into()]);
    }
    // `--` so a URL or path is never read as an option.
    a.extend(["--".into(), url.into(), dest.into()]);
    a
}

/// What a failed git command's output means.
pub fn classify(output: &str) -> Code {
    let o = output.to_ascii_lowercase();
    let any = |needles: &[&str]| needles.iter().any(|n| o.contains(n));
    if any(&[
        "no space left on device",
        "disk quota exceeded",
        "file too large",
        // What checkout says when a write fails for want of space (it
        // does not pass the errno on); the clone's directory is new and
        // the user's, so a failed write there is the volume filling up.
        "unable to write file",
    ]) {
        Code::GitRepoTooBig
    } else if any(&[
        "authentication failed",
        "could not read username",
        "could not read password",
        "terminal prompts disabled",
        "the requested url returned error: 401",
        "the requested url returned error: 403",
        "invalid username or password",
    ]) {
        Code::GitAuthFailed
    } else if any(&[
        "remote branch",
        "couldn't find remote ref",
        "not found in upstream origin",
    ]) {
        Code::GitBranchNotFound
    } else if any(&[
        "repository not found",
        "the requested url returned error: 404",
        "does not appear to be a git repository",
        "not found",
    ]) {
        Code::GitRepoNotFound
    } else if any(&[
        "could not resolve host",
        "couldn't connect",
        "failed to connect",
        "connection refused",
        "connection timed out",
        "network is unreachable",
        "no route to host",
        "operation timed out",
    ]) {
        Code::GitUnreachable
    } else {
        Code::GitCloneFailed
    }
}

/// The last `n` lines of `text` (what a failed step shows).
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .flat_map(|l| l.rsplit('\r').next())
        .filter(|l| !l.trim().is_empty())
        .collect();
    let start = lines.len().saturating_sub(n);
    let mut t = lines[start..].join("\n");
    if t.len() > 4096 {
        let cut = t.len() - 4096;
        let cut = (cut..t.len()).find(|i| t.is_char_boundary(*i)).unwrap_or(0);
        t = t[cut..].to_string();
    }
    t
}

/// How a `git pull --rebase` or `git push` went, from its exit status and
/// output, and the unmerged files listed after it.
pub fn sync_outcome(
    push: bool,
    code: i32,
    output: &str,
    unmerged: &[String],
) -> (&'static str, Vec<String>) {
    let o = output.to_ascii_lowercase();
    if push {
        return match code {
            0 if o.contains("everything up-to-date") => ("up_to_date", vec![]),
            0 => ("pushed", vec![]),
            _ if o.contains("[rejected]")
                || o.contains("non-fast-forward")
                || o.contains("fetch first") =>
            {
                (
                    "rejected",
                    output
                        .lines()
                        .filter(|l| {
                            l.contains("[rejected]") || l.contains("hint:") || l.contains("error:")
                        })
                        .map(|l| l.trim().to_string())
                        .collect(),
                )
            }
            _ => ("failed", vec![]),
        };
    }
    if !unmerged.is_empty() || o.contains("conflict") {
        return ("conflict", unmerged.to_vec());
    }
    match code {
        0 if o.contains("up to date") || o.contains("up-to-date") => ("up_to_date", vec![]),
        0 if o.contains("fast-forward") => ("fast_forwarded", vec![]),
        0 => ("rebased", vec![]),
        _ => ("failed", vec![]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_command_lines() {
        assert_eq!(repo_name("https://git.example/team/api.git"), "api");
        assert_eq!(repo_name("https://git.example/team/api/"), "api");
        assert_eq!(
            repo_name("http://h:8080/x/My_Repo.v2.git?x=1"),
            "My_Repo.v2"
        );
        assert_eq!(repo_name("https://h/.."), "repo");
        let a = clone_args("https://h/r.git", "dev", true, "/workspace/r");
        assert_eq!(
            a[a.len() - 5..],
            ["--branch", "dev", "--", "https://h/r.git", "/workspace/r"]
        );
        assert!(a.contains(&"--filter=blob:none".to_string()));
        assert!(a.contains(&"credential.helper=".to_string()));
        let a = clone_args("https://h/r.git", "", false, "/w");
        assert!(!a
            .iter()
            .any(|x| x == "--branch" || x.starts_with("--filter")));
    }

    #[test]
    fn git_messages_have_codes() {
        let table = [
            ("fatal: Authentication failed for 'http://h/r.git/'", Code::GitAuthFailed),
            ("fatal: could not read Username for 'http://h': terminal prompts disabled", Code::GitAuthFailed),
            ("fatal: Remote branch nope not found in upstream origin", Code::GitBranchNotFound),
            ("fatal: repository 'http://h/none.git/' not found", Code::GitRepoNotFound),
            ("fatal: unable to access 'http://h/': Could not resolve host: h", Code::GitUnreachable),
            ("fatal: unable to access 'http://10.1.1.1/': Failed to connect to 10.1.1.1 port 80: Connection refused", Code::GitUnreachable),
            ("error: unable to write file big.bin: No space left on device", Code::GitRepoTooBig),
            ("error: unable to write file blob.txt\nfatal: unable to checkout working tree", Code::GitRepoTooBig),
            ("fatal: the remote end hung up unexpectedly", Code::GitCloneFailed),
        ];
        for (msg, code) in table {
            assert_eq!(classify(msg), code, "{msg}");
        }
    }

    #[test]
    fn tails_and_sync_outcomes() {
        assert_eq!(tail("a\nb\r c\rd\n\ne\n", 2), "d\ne");
        assert_eq!(tail(&"x".repeat(10_000), 1).len(), 4096);
        assert_eq!(
            sync_outcome(false, 0, "Already up to date.", &[]).0,
            "up_to_date"
        );
        assert_eq!(
            sync_outcome(false, 0, "Updating a..b\nFast-forward\n f | 1 +", &[]).0,
            "fast_forwarded"
        );
        assert_eq!(
            sync_outcome(
                false,
                0,
                "Successfully rebased and updated refs/heads/main.",
                &[]
            )
            .0,
            "rebased"
        );
        let (o, files) = sync_outcome(
            false,
            1,
            "CONFLICT (content): Merge conflict in f",
            &["f".into()],
        );
        assert_eq!((o, files), ("conflict", vec!["f".to_string()]));
        assert_eq!(
            sync_outcome(true, 0, "Everything up-to-date", &[]).0,
            "up_to_date"
        );
        assert_eq!(
            sync_outcome(true, 0, "   a..b  main -> main", &[]).0,
            "pushed"
        );
        let (o, lines) = sync_outcome(
            true,
            1,
            " ! [rejected]        main -> main (fetch first)\nerror: failed to push some refs",
            &[],
        );
        assert_eq!(o, "rejected");
        assert_eq!(lines.len(), 2);
    }
}
