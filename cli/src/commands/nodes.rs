//! `berth nodes [list|get|cordon|uncordon|drain]` (admins).

use super::Ui;
use crate::args::NodesCmd;
use crate::client::{enc, Client};
use crate::output::{age, cores, size, table};
use crate::Outcome;
use berth_proto::api::Node;
use berth_proto::units::now_ms;
use serde_json::json;

pub(crate) async fn run(c: &Client, ui: Ui, cmd: NodesCmd) -> Outcome {
    let one = |id: &str, verb: &str| format!("/v1/nodes/{}{verb}", enc(id));
    let node: Node = match cmd {
        NodesCmd::List => {
            let list: Vec<Node> = c.get("/v1/nodes").await?;
            ui.print(&list, || node_table(&list));
            return Ok(0);
        }
        NodesCmd::Get { id } => c.get(&one(&id, "")).await?,
        NodesCmd::Cordon { id } => c.post(&one(&id, "/cordon"), &json!({})).await?,
        NodesCmd::Uncordon { id } => c.post(&one(&id, "/uncordon"), &json!({})).await?,
        NodesCmd::Drain { id, deadline } => {
            let body = json!({ "deadline_seconds": deadline.map_or(0, |d| d.as_secs()) });
            c.post(&one(&id, "/drain"), &body).await?
        }
    };
    ui.print(&node, || node_table(std::slice::from_ref(&node)));
    Ok(0)
}

fn node_table(list: &[Node]) -> String {
    let now = now_ms();
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|n| {
            let mut flags = vec![];
            if n.cordoned {
                flags.push("cordoned");
            }
            if n.drained {
                flags.push("drained");
            } else if n.draining {
                flags.push("draining");
            }
            vec![
                n.id.clone(),
                n.status.to_string(),
                if flags.is_empty() {
                    "-".into()
                } else {
                    flags.join(",")
                },
                format!("{}/{}", n.allocated.workspaces, n.capacity.workspaces),
                format!(
                    "{}/{}",
                    cores(n.allocated.cpu_millis),
                    cores(n.capacity.cpu_millis)
                ),
                format!(
                    "{}/{}",
                    size(n.allocated.memory_bytes),
                    size(n.capacity.memory_bytes)
                ),
                format!(
                    "{}/{}",
                    size(n.allocated.disk_bytes),
                    size(n.capacity.disk_bytes)
                ),
                n.cached_images.len().to_string(),
                if n.last_seen_ms > 0 {
                    age(n.last_seen_ms, now)
                } else {
                    "-".into()
                },
                n.agent_version.clone(),
            ]
        })
        .collect();
    table(
        &[
            "NODE",
            "STATUS",
            "FLAGS",
            "WORKSPACES",
            "CPU",
            "MEMORY",
            "DISK",
            "IMAGES",
            "SEEN",
            "VERSION",
        ],
        &rows,
    )
}
