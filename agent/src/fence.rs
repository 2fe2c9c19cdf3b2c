//! Fencing (TEST-PLAN 6, docs/backups.md): a node cut off from every
//! coordinator for `[coordinator] stop_after_seconds` stops its running
//! workspaces, then backs each up stopped, tagged `consistency=fenced`
//! with its generation. Stopped first, so the backup holds every write
//! the workload saw acknowledged; fenced, so the coordinator (which
//! finds that backup in the shared store) may start the workspace on
//! another node with all its data, and there is never a second running
//! copy: the node starts nothing by itself, and once it is back the
//! coordinator deletes the copy it left.

use crate::backup::Store;
use crate::workspace::Manager;
use berth_proto::agent as pb;
use std::time::Duration;
use tokio::sync::watch;

/// First wait before a failed fenced backup is tried again; it doubles.
const RETRY_MIN: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// Watches the link (`up`: connected to a coordinator) and fences the
/// node's workspaces when it stays down `stop_after`; never returns.
/// `stop_after` zero: never.
pub async fn watch(m: Manager, stop_after: Duration, mut up: watch::Receiver<bool>) {
    if stop_after.is_zero() {
        return std::future::pending().await;
    }
    loop {
        if up.wait_for(|u| !*u).await.is_err() {
            return std::future::pending().await;
        }
        if tokio::time::timeout(stop_after, up.wait_for(|u| *u))
            .await
            .is_ok()
        {
            continue;
        }
        tracing::warn!(
            seconds = stop_after.as_secs(),
            "no coordinator heard for stop_after_seconds: stopping and backing up the workspaces"
        );
        fence(&m, &up).await;
        if up.wait_for(|u| *u).await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Stops every running workspace, then backs each up to the store it was
/// last backed up to, retrying while the link stays down.
async fn fence(m: &Manager, up: &watch::Receiver<bool>) {
    let running: Vec<String> = match m.list().await {
        Ok(l) => l
            .workspaces
            .into_iter()
            .filter(|w| w.state == pb::State::Running as i32)
            .map(|w| w.name)
            .collect(),
        Err(e) => {
            tracing::error!(error = %e, "fence: workspaces not listed");
            return;
        }
    };
    for name in &running {
        match m.stop(name, 0, 0).await {
            Ok(_) => tracing::warn!(workspace = %name, "fenced: stopped"),
            Err(e) => tracing::error!(workspace = %name, error = %e, "fence: not stopped"),
        }
    }
    for name in &running {
        match m.known_store(name) {
            Some(store) => back_up(m, name, &store, up).await,
            None => tracing::warn!(
                workspace = %name,
                "fenced without a backup: no store known for it since the agent started (its data stays on this node)"
            ),
        }
    }
}

/// Backs `name` up fenced, with backoff, until it is done or the link is
/// back (the coordinator then decides).
async fn back_up(m: &Manager, name: &str, store: &Store, up: &watch::Receiver<bool>) {
    let mut wait = RETRY_MIN;
    while !*up.borrow() {
        match m.back_up(name, store, true, false).await {
            Ok(b) => {
                tracing::warn!(workspace = %name, id = %b.id, bytes = b.bytes_total, "fenced: backed up stopped");
                return;
            }
            Err(e) => {
                tracing::warn!(workspace = %name, error = %e, retry_s = wait.as_secs(), "fenced backup failed")
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(RETRY_MAX);
    }
}
