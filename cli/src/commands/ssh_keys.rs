//! `berth ssh-key add|list|remove`: the keys `berth ssh` logs in with.

use super::ssh;
use super::Ui;
use crate::args::SshKeyCmd;
use crate::client::{enc, Client};
use crate::output::{age, table};
use crate::{fail, Outcome};
use anyhow::Context;
use berth_proto::api::{AddSshKey, SshKey};
use berth_proto::units::now_ms;
use std::io::Read;

pub(crate) async fn run(c: &Client, ui: Ui, cmd: SshKeyCmd) -> Outcome {
    match cmd {
        SshKeyCmd::Add { file, name } => {
            let text = match file.or_else(ssh::default_public_key) {
                Some(p) if p.as_os_str() == "-" => {
                    let mut s = String::new();
                    std::io::stdin()
                        .read_to_string(&mut s)
                        .context("read standard input")?;
                    s
                }
                Some(p) => std::fs::read_to_string(&p)
                    .with_context(|| format!("read {}", p.display()))?,
                None => {
                    return Err(fail(
                        "usage",
                        "no ~/.ssh/id_ed25519.pub (or id_ecdsa.pub, id_rsa.pub): give the public key file",
                    ))
                }
            };
            let add = AddSshKey {
                public_key: text.trim().to_string(),
                name,
            };
            let k: SshKey = c.post("/v1/ssh-keys", &add).await?;
            ui.print(&k, || {
                format!("Added {} {} ({})\n", k.fingerprint, k.name, k.id)
            });
            Ok(0)
        }
        SshKeyCmd::List => {
            let keys: Vec<SshKey> = c.get("/v1/ssh-keys").await?;
            ui.print(&keys, || {
                let rows: Vec<Vec<String>> = keys
                    .iter()
                    .map(|k| {
                        vec![
                            k.id.clone(),
                            k.fingerprint.clone(),
                            k.name.clone(),
                            age(k.created_at_ms, now_ms()),
                        ]
                    })
                    .collect();
                table(&["ID", "FINGERPRINT", "NAME", "ADDED"], &rows)
            });
            Ok(0)
        }
        SshKeyCmd::Remove { key } => {
            c.delete_empty(&format!("/v1/ssh-keys/{}", enc(&key)))
                .await?;
            if !ui.quiet {
                eprintln!("Removed {key}");
            }
            Ok(0)
        }
    }
}
