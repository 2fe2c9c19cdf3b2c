//! `berth backups`, `berth backup`, `berth restore`.

use super::{ws_path, Ui};
use crate::args::Target;
use crate::client::Client;
use crate::output::{age, size, table};
use crate::Outcome;
use berth_proto::api::{Backup, BackupStatus, Backups, RestoreBody, Restored};
use berth_proto::units::{now_ms, rfc3339};

/// Lists a workspace's backups, newest first, with their status; with
/// `exclude_ignored`, sets whether they leave out what .gitignore ignores.
pub(crate) async fn list(c: &Client, ui: Ui, t: Target, exclude_ignored: Option<bool>) -> Outcome {
    let b: Backups = match exclude_ignored {
        Some(on) => {
            let body = serde_json::json!({ "exclude_ignored": on });
            c.post(&ws_path(&t, "/backups/settings"), &body).await?
        }
        None => c.get(&ws_path(&t, "/backups")).await?,
    };
    let now = now_ms();
    ui.print(&b, || {
        let rows: Vec<Vec<String>> = b
            .backups
            .iter()
            .map(|x| {
                vec![
                    x.id.clone(),
                    rfc3339(x.taken_at_ms.div_euclid(1000)),
                    age(x.taken_at_ms, now),
                    x.node.clone(),
                    size(x.bytes_total),
                    size(x.bytes_added),
                    x.files.to_string(),
                    x.consistency.clone(),
                    format!("{} ms", x.pause_ms),
                    match x.bytes_excluded {
                        0 => "-".into(),
                        n => size(n),
                    },
                ]
            })
            .collect();
        let mut out = table(
            &[
                "ID", "TAKEN", "AGE", "NODE", "SIZE", "ADDED", "FILES", "KIND", "PAUSE", "IGNORED",
            ],
            &rows,
        );
        out.push_str(&status_lines(&b.status, now));
        out
    });
    Ok(0)
}

/// The status in words: failures, when the next is due.
pub(crate) fn status_lines(s: &BackupStatus, now: i64) -> String {
    let mut out = String::new();
    if s.exclude_ignored {
        out.push_str("Leaves out: what /workspace's .gitignore files ignore\n");
    }
    if let Some(e) = &s.error {
        out.push_str(&format!(
            "Failing: {} attempt(s) since the last backup: {e}\n",
            s.failures
        ));
    }
    match s.next_at_ms {
        Some(at) if at > now => out.push_str(&format!("Next: in {}\n", age(now, at))),
        Some(_) => out.push_str("Next: due now\n"),
        None => {}
    }
    out
}

/// One line on a backup for `berth get`.
pub(crate) fn summary(s: &BackupStatus, now: i64) -> String {
    let last = match &s.last {
        Some(b) => format!(
            "{} ago ({}, {} of {}), {} in all",
            age(b.taken_at_ms, now),
            b.id,
            b.consistency,
            size(b.bytes_total),
            s.count
        ),
        None => "none yet".into(),
    };
    match &s.error {
        Some(e) => format!("{last}; FAILING ({} attempts): {e}", s.failures),
        None => last,
    }
}

/// Backs a workspace up now and waits for it to be confirmed.
pub(crate) async fn now(c: &Client, ui: Ui, t: Target) -> Outcome {
    let b: Backup = c
        .post(&ws_path(&t, "/backups"), &serde_json::json!({}))
        .await?;
    ui.print(&b, || {
        format!(
            "backup {} of {}: {} covered, {} added, {} ms ({}, writes paused {} ms)\n",
            b.id,
            t.name,
            size(b.bytes_total),
            size(b.bytes_added),
            b.duration_ms,
            b.consistency,
            b.pause_ms
        )
    });
    Ok(0)
}

/// Puts a backup back into a stopped workspace.
pub(crate) async fn restore(
    c: &Client,
    ui: Ui,
    t: Target,
    id: Option<String>,
    at: Option<String>,
) -> Outcome {
    let body = RestoreBody { id, at };
    let r: Restored = c.post(&ws_path(&t, "/restore"), &body).await?;
    ui.print(&r, || match &r.moved_from {
        Some(node) => format!(
            "{}: node {node} is lost; it starts on another node from backup {} of {} ({}); \
             what was written after that backup is not in it (`berth get {}` follows it)\n",
            t.name,
            r.backup.id,
            rfc3339(r.backup.taken_at_ms.div_euclid(1000)),
            size(r.backup.bytes_total),
            t.name
        ),
        None => format!(
            "{} restored from backup {} of {} ({}) in {} ms\n",
            t.name,
            r.backup.id,
            rfc3339(r.backup.taken_at_ms.div_euclid(1000)),
            size(r.backup.bytes_total),
            r.duration_ms
        ),
    });
    Ok(0)
}
