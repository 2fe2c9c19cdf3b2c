//! SSH to workspaces with plain OpenSSH: `berth ssh --stdio` is the
//! ProxyCommand (the SSH bytes go over an HTTP upgrade to the coordinator,
//! which relays them to the agent serving SSH for the workspace), and
//! `berth ssh --known-hosts` the KnownHostsCommand (the host key comes from
//! the coordinator, so there is nothing to accept by hand). `berth ssh WS`
//! runs `ssh` with both; `berth config-ssh` writes them into
//! `~/.ssh/config` for `Host berth.*`, which VS Code Remote-SSH reads.

use super::tunnels::ensure_running;
use super::{ws_path, Ui};
use crate::args::Target;
use crate::client::Client;
use crate::{fail, Failure, Outcome};
use anyhow::Context;
use std::path::{Path, PathBuf};

/// The prefix of the SSH host names of workspaces (`berth.NAME`).
pub const HOST_PREFIX: &str = "berth.";
const BEGIN: &str =
    "# --- BEGIN berth (written by `berth config-ssh`; edits here are replaced) ---";
const END: &str = "# --- END berth ---";

/// A workspace name from what OpenSSH passes: `berth.NAME`, `NAME`, or a
/// known_hosts form such as `[berth.NAME]:22`.
pub fn workspace_of(host: &str) -> String {
    let h = host.strip_prefix('[').unwrap_or(host);
    let h = match h.find(']') {
        Some(i) => &h[..i],
        None => h,
    };
    h.strip_prefix(HOST_PREFIX).unwrap_or(h).to_string()
}

/// The ProxyCommand: relays standard input and output to the workspace's
/// SSH server, starting the workspace first if needed (progress on stderr).
pub async fn stdio(c: &Client, target: Target) -> Outcome {
    let target = Target {
        name: workspace_of(&target.name),
        owner: target.owner,
    };
    // Progress lines only: standard output carries the SSH protocol.
    let ui = Ui {
        json: false,
        quiet: false,
    };
    ensure_running(c, ui, &target).await?;
    let up = c.upgrade(&ws_path(&target, "/ssh"), "berth-ssh").await?;
    let (mut rd, mut wr) = tokio::io::split(up);
    use tokio::io::AsyncWriteExt;
    let to_ws = async {
        let mut stdin = tokio::io::stdin();
        let _ = tokio::io::copy(&mut stdin, &mut wr).await;
        let _ = wr.shutdown().await;
        std::future::pending::<()>().await;
    };
    let from_ws = async {
        let mut stdout = tokio::io::stdout();
        let _ = tokio::io::copy(&mut rd, &mut stdout).await;
        let _ = stdout.flush().await;
    };
    // The session is over when the server side ends.
    tokio::select! {
        _ = to_ws => {}
        _ = from_ws => {}
    }
    Ok(0)
}

/// The KnownHostsCommand: prints `HOST KEY` for the workspace's node.
pub async fn known_hosts(c: &Client, target: Target) -> Outcome {
    let host = target.name.clone();
    let target = Target {
        name: workspace_of(&target.name),
        owner: target.owner,
    };
    let k: serde_json::Value = c.get(&ws_path(&target, "/ssh-host-key")).await?;
    let key = k["host_key"]
        .as_str()
        .ok_or_else(|| fail("bad_response", "no host_key in the answer"))?;
    println!("{host} {key}");
    Ok(0)
}

/// How this binary is named in ssh options (quoted if it has spaces).
fn self_exe() -> Result<String, Failure> {
    let p = std::env::current_exe().context("find the berth binary")?;
    let s = p.to_string_lossy().into_owned();
    Ok(if s.contains(char::is_whitespace) {
        format!("\"{s}\"")
    } else {
        s
    })
}

/// The ssh options that reach workspaces through Berth.
fn options(owner: Option<&str>) -> Result<Vec<(String, String)>, Failure> {
    let exe = self_exe()?;
    let owner = owner.map(|o| format!(" --owner {o}")).unwrap_or_default();
    Ok(vec![
        (
            "ProxyCommand".into(),
            format!("{exe} ssh --stdio{owner} %n"),
        ),
        (
            "KnownHostsCommand".into(),
            format!("{exe} ssh --known-hosts{owner} %H"),
        ),
        // Only the key the coordinator vouches for, never a prompt.
        ("StrictHostKeyChecking".into(), "yes".into()),
        ("UserKnownHostsFile".into(), "/dev/null".into()),
        ("GlobalKnownHostsFile".into(), "/dev/null".into()),
        ("UpdateHostKeys".into(), "no".into()),
    ])
}

/// Runs OpenSSH's `ssh` to the workspace (replacing this process), with the
/// coordinator, token and CA file passed on to the ProxyCommand in the environment.
pub fn exec_ssh(
    target: Target,
    argv: Vec<String>,
    url: &str,
    token: Option<&str>,
    ca_file: Option<&std::path::Path>,
) -> Outcome {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(std::env::var_os("BERTH_SSH").unwrap_or("ssh".into()));
    for (k, v) in options(target.owner.as_deref())? {
        cmd.arg("-o").arg(format!("{k}={v}"));
    }
    cmd.arg(format!("{HOST_PREFIX}{}", target.name));
    if !argv.is_empty() {
        cmd.arg("--").args(argv);
    }
    cmd.env("BERTH_URL", url);
    if let Some(t) = token {
        cmd.env("BERTH_TOKEN", t);
    }
    if let Some(f) = ca_file {
        cmd.env("BERTH_CA_FILE", f);
    }
    let e = cmd.exec();
    Err(fail(
        "ssh_not_found",
        format!("cannot run ssh (install OpenSSH's client): {e}"),
    ))
}

/// The block `config-ssh` keeps in `~/.ssh/config`.
fn block() -> Result<String, Failure> {
    let mut b = format!("{BEGIN}\nHost {HOST_PREFIX}*\n");
    for (k, v) in options(None)? {
        b.push_str(&format!("    {k} {v}\n"));
    }
    b.push_str(&format!("{END}\n"));
    Ok(b)
}

/// `text` with the berth block replaced (or added at the end).
fn with_block(text: &str, block: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in text.lines() {
        if line.trim() == BEGIN {
            skipping = true;
            continue;
        }
        if skipping {
            if line.trim() == END {
                skipping = false;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    // `Host` blocks run to the next `Host`: ours goes first so that no
    // user block swallows it, and options set earlier win in ssh_config.
    format!("{block}\n{}", out.trim_start_matches('\n'))
}

/// The default ssh config path (`~/.ssh/config`).
pub fn default_config() -> Option<PathBuf> {
    Some(
        PathBuf::from(std::env::var_os("HOME")?)
            .join(".ssh")
            .join("config"),
    )
}

/// Writes the berth block into an ssh config file, keeping the rest.
pub fn config_ssh(path: &Path, dry_run: bool) -> Outcome {
    let old = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context(format!("read {}", path.display()))
                .into())
        }
    };
    let new = with_block(&old, &block()?);
    if dry_run {
        print!("{new}");
        return Ok(0);
    }
    if new != old {
        berth_proto::files::write_private(path, new.as_bytes())
            .with_context(|| format!("write {}", path.display()))?;
    }
    println!(
        "Wrote Host {HOST_PREFIX}* to {}: `ssh {HOST_PREFIX}NAME` (and VS Code Remote-SSH) now reach workspace NAME",
        path.display()
    );
    Ok(0)
}

/// The public key file `ssh-key add` reads by default.
pub fn default_public_key() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("HOME")?).join(".ssh");
    ["id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_map_to_workspaces() {
        assert_eq!(workspace_of("berth.demo"), "demo");
        assert_eq!(workspace_of("[berth.demo]:22"), "demo");
        assert_eq!(workspace_of("demo"), "demo");
    }

    #[test]
    fn the_block_is_replaced_not_repeated_and_the_rest_is_kept() {
        let user = "Host example\n    User me\n";
        let once = with_block(user, "B1\n");
        assert!(once.starts_with("B1\n"));
        assert!(once.contains("Host example\n    User me\n"));
        let b = format!("{BEGIN}\nHost berth.*\n{END}\n");
        let first = with_block(user, &b);
        let second = with_block(&first, &b);
        assert_eq!(first, second);
        assert_eq!(second.matches(BEGIN).count(), 1);
    }
}
