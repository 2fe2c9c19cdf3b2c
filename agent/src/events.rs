//! Follows containerd's task events (exit, OOM) and records them, resubscribing
//! with backoff whenever the stream ends, e.g. because containerd restarted.

use crate::workspace::Manager;
use containerd_client::events::{TaskExit, TaskOom};
use futures::StreamExt;
use prost::Message;
use std::time::Duration;

const TOPICS: [&str; 2] = ["/tasks/exit", "/tasks/oom"];

/// Runs until the future is dropped.
pub async fn watch(m: Manager) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let subscribe = m.containerd().subscribe(&TOPICS);
        tokio::pin!(subscribe);
        // Events published while we were not subscribed are gone: once the
        // request is on its way, read the tasks' real state to catch them.
        let sweep = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            m.sweep_exits().await;
            std::future::pending::<()>().await
        };
        let subscribed = tokio::select! {
            s = &mut subscribe => s,
            _ = sweep => unreachable!("the sweep never completes"),
        };
        match subscribed {
            Ok(mut stream) => {
                backoff = Duration::from_millis(100);
                m.sweep_exits().await;
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(env) => handle(&m, &env.topic, env.event).await,
                        Err(e) => {
                            tracing::warn!(error = %e, "containerd event stream broke");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot subscribe to containerd events"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn handle(m: &Manager, topic: &str, event: Option<prost_types::Any>) {
    let Some(any) = event else { return };
    match topic {
        "/tasks/exit" => {
            if let Ok(e) = TaskExit::decode(any.value.as_slice()) {
                // Exec'd processes exit too; only the init process ends the workspace.
                if e.id == e.container_id {
                    tracing::info!(workspace = %e.container_id, exit = e.exit_status, "workspace process exited");
                    m.note_exit(&e.container_id, e.exit_status).await;
                }
            }
        }
        "/tasks/oom" => {
            if let Ok(e) = TaskOom::decode(any.value.as_slice()) {
                tracing::warn!(workspace = %e.container_id, "OOM kill in workspace");
                m.note_oom(&e.container_id).await;
            }
        }
        _ => {}
    }
}
