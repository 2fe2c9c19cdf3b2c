//! Spot preemption notices (docs/backups.md, "Spot nodes"): the agent asks
//! the cloud's metadata service (or looks for a file) every few seconds
//! whether the machine is about to be taken back, and tells the
//! coordinator, which stops the node's workspaces, backs them up and starts
//! them elsewhere.
//!
//! Sources, as the clouds document them:
//! - `aws`: IMDSv2. `PUT /latest/api/token` (header
//!   `X-aws-ec2-metadata-token-ttl-seconds`), then
//!   `GET /latest/meta-data/spot/instance-action` with the token: 404 while
//!   nothing is planned, 200 `{"action": "terminate", "time": "..."}` after.
//!   Before that, `GET /latest/meta-data/events/recommendations/rebalance`
//!   may answer 200 `{"noticeTime": "..."}`: the instance is at elevated
//!   risk; sent as a warning (the coordinator cordons the node and backs its
//!   workspaces up at once), and the agent keeps asking.
//! - `gcp`: `GET /computeMetadata/v1/instance/preempted` with
//!   `Metadata-Flavor: Google`: `TRUE` once preempted.
//! - `azure`: Scheduled Events, `GET
//!   /metadata/scheduledevents?api-version=2020-07-01` with `Metadata: true`:
//!   an event whose `EventType` is `Preempt` (a spot eviction) or
//!   `Terminate`, not before its `NotBefore` (an HTTP date).
//! - `file`: the file exists (an admin's or an orchestrator's hook); its
//!   content, if any, is an RFC 3339 time.
//!
//! What a source answers is read by pure functions (`aws_notice`,
//! `aws_rebalance`, `gcp_notice`, `azure_notice`, `file_notice`),
//! table-tested; the poller only does I/O.

use berth_proto::link as lk;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;

/// The `[preemption]` table of the agent's configuration.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PreemptionConfig {
    /// "" (off, the default), "aws", "gcp", "azure" or "file".
    pub source: String,
    /// The metadata service (default: the cloud's own address).
    pub endpoint: String,
    /// The notice file of `file` (default `<state_dir>/preempt`).
    pub file: PathBuf,
    /// Seconds between two questions (1 to 60; default 5).
    pub poll_seconds: u64,
}

impl PreemptionConfig {
    /// Checks the table and fills in the defaults.
    pub fn resolve(mut self, state_dir: &Path) -> Result<Self, (&'static str, String)> {
        let endpoint = match self.source.as_str() {
            "" | "file" => "",
            "aws" | "azure" => "http://169.254.169.254",
            "gcp" => "http://metadata.google.internal",
            other => {
                return Err((
                    "preemption.source",
                    format!("{other:?}: one of \"aws\", \"gcp\", \"azure\", \"file\" (or unset)"),
                ))
            }
        };
        if self.endpoint.is_empty() {
            self.endpoint = endpoint.into();
        } else if !self.endpoint.starts_with("http://") {
            return Err((
                "preemption.endpoint",
                "an http:// URL (metadata services are plain HTTP)".into(),
            ));
        }
        if self.file.as_os_str().is_empty() {
            self.file = state_dir.join("preempt");
        }
        if self.poll_seconds == 0 {
            self.poll_seconds = 5;
        }
        if self.poll_seconds > 60 {
            return Err(("preemption.poll_seconds", "1 to 60".into()));
        }
        Ok(self)
    }
}

/// What an AWS `spot/instance-action` answer means.
pub fn aws_notice(status: u16, body: &str) -> Option<lk::Preemption> {
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let action = v.get("action")?.as_str()?;
    Some(lk::Preemption {
        source: "aws".into(),
        at_ms: v.get("time").and_then(|t| t.as_str()).map_or(0, parse_time),
        detail: action.into(),
        warning: false,
    })
}

/// What an AWS `events/recommendations/rebalance` answer means: a warning.
pub fn aws_rebalance(status: u16, body: &str) -> Option<lk::Preemption> {
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let at = v.get("noticeTime")?.as_str()?;
    Some(lk::Preemption {
        source: "aws".into(),
        at_ms: 0,
        detail: format!("rebalance recommendation at {at}"),
        warning: true,
    })
}

/// What an Azure Scheduled Events answer means: a `Preempt` (or
/// `Terminate`) event, due at its `NotBefore`.
pub fn azure_notice(status: u16, body: &str) -> Option<lk::Preemption> {
    if status != 200 {
        return None;
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Event {
        event_type: String,
        #[serde(default)]
        not_before: String,
        #[serde(default)]
        event_id: String,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Events {
        events: Vec<Event>,
    }
    let events: Events = serde_json::from_str(body).ok()?;
    let e = events
        .events
        .into_iter()
        .find(|e| matches!(e.event_type.as_str(), "Preempt" | "Terminate"))?;
    Some(lk::Preemption {
        source: "azure".into(),
        at_ms: parse_http_date(&e.not_before),
        detail: format!("{} {}", e.event_type, e.event_id).trim().into(),
        warning: false,
    })
}

/// What a GCP `instance/preempted` answer means.
pub fn gcp_notice(status: u16, body: &str) -> Option<lk::Preemption> {
    (status == 200 && body.trim() == "TRUE").then(|| lk::Preemption {
        source: "gcp".into(),
        at_ms: 0,
        detail: "TRUE".into(),
        warning: false,
    })
}

/// What the notice file's content (when it exists) means.
pub fn file_notice(content: &str) -> lk::Preemption {
    lk::Preemption {
        source: "file".into(),
        at_ms: parse_time(content.trim()),
        detail: content.trim().chars().take(200).collect(),
        warning: false,
    }
}

/// An RFC 3339 time as Unix ms; 0 if it is not one.
fn parse_time(s: &str) -> i64 {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_or(0, |t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// An HTTP date ("Mon, 19 Sep 2016 18:29:47 GMT") as Unix ms; 0 if it is
/// not one.
fn parse_http_date(s: &str) -> i64 {
    let s = s.trim().replace(" GMT", " +0000");
    time::OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc2822)
        .map_or(0, |t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// Asks the configured source every `poll_seconds` until it gives a notice,
/// then publishes it and stops asking (a machine is preempted once). A
/// warning is published once, and the asking goes on.
/// Never returns when no source is configured.
pub async fn watch(cfg: PreemptionConfig, tx: watch::Sender<Option<lk::Preemption>>) {
    if cfg.source.is_empty() {
        return std::future::pending().await;
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
        .unwrap_or_default();
    let mut warned = false;
    let mut cautioned = false;
    loop {
        match ask(&cfg, &http).await {
            Ok(Some(notice)) if notice.warning => {
                if !cautioned {
                    tracing::warn!(source = %notice.source, detail = %notice.detail, "preemption warning: the node is at risk");
                    let _ = tx.send(Some(notice));
                    cautioned = true;
                }
            }
            Ok(Some(notice)) => {
                tracing::warn!(source = %notice.source, detail = %notice.detail, at_ms = notice.at_ms, "preemption notice: the node is being taken back");
                let _ = tx.send(Some(notice));
                return std::future::pending().await;
            }
            Ok(None) => warned = false,
            Err(e) if !warned => {
                tracing::warn!(source = %cfg.source, error = %e, "preemption source not answering; still asking");
                warned = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_secs(cfg.poll_seconds)).await;
    }
}

async fn ask(
    cfg: &PreemptionConfig,
    http: &reqwest::Client,
) -> Result<Option<lk::Preemption>, String> {
    let base = cfg.endpoint.trim_end_matches('/');
    // A GET with one header: its status and body.
    let get = |path: &str, header: (&'static str, String)| {
        let req = http.get(format!("{base}{path}")).header(header.0, header.1);
        async move {
            let r = req.send().await.map_err(|e| e.to_string())?;
            let status = r.status().as_u16();
            let body = r.text().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((status, body))
        }
    };
    match cfg.source.as_str() {
        "aws" => {
            let token = http
                .put(format!("{base}/latest/api/token"))
                .header("X-aws-ec2-metadata-token-ttl-seconds", "300")
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !token.status().is_success() {
                return Err(format!("IMDSv2 token: {}", token.status()));
            }
            let token = token.text().await.map_err(|e| e.to_string())?;
            let token = ("X-aws-ec2-metadata-token", token.trim().to_string());
            let (status, body) =
                get("/latest/meta-data/spot/instance-action", token.clone()).await?;
            if let Some(n) = aws_notice(status, &body) {
                return Ok(Some(n));
            }
            let (status, body) =
                get("/latest/meta-data/events/recommendations/rebalance", token).await?;
            Ok(aws_rebalance(status, &body))
        }
        "azure" => {
            let (status, body) = get(
                "/metadata/scheduledevents?api-version=2020-07-01",
                ("Metadata", "true".to_string()),
            )
            .await?;
            Ok(azure_notice(status, &body))
        }
        "gcp" => {
            let (status, body) = get(
                "/computeMetadata/v1/instance/preempted",
                ("Metadata-Flavor", "Google".to_string()),
            )
            .await?;
            Ok(gcp_notice(status, &body))
        }
        _ => match tokio::fs::read_to_string(&cfg.file).await {
            Ok(content) => Ok(Some(file_notice(&content))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", cfg.file.display())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_read_as_the_clouds_document_them() {
        let n = aws_notice(
            200,
            r#"{"action": "terminate", "time": "2026-12-03T18:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(
            (n.detail.as_str(), n.at_ms),
            ("terminate", 1_796_320_800_000)
        );
        assert_eq!(aws_notice(200, r#"{"action":"stop"}"#).unwrap().at_ms, 0);
        // Nothing planned, or not an answer.
        assert!(aws_notice(404, "<html>Not Found</html>").is_none());
        assert!(aws_notice(200, "not json").is_none());
        assert!(aws_notice(200, r#"{"time":"2026-12-03T18:00:00Z"}"#).is_none());
        assert!(gcp_notice(200, "TRUE\n").is_some());
        assert!(gcp_notice(200, "FALSE").is_none());
        assert!(gcp_notice(503, "TRUE").is_none());
        assert_eq!(
            file_notice("2026-12-03T18:00:00Z\n").at_ms,
            1_796_320_800_000
        );
        assert_eq!(file_notice("").at_ms, 0);
        // AWS's rebalance recommendation: a warning only.
        let r = aws_rebalance(200, r#"{"noticeTime": "2026-12-03T17:58:00Z"}"#).unwrap();
        assert!(r.warning && r.detail.contains("rebalance"), "{r:?}");
        assert!(aws_rebalance(404, "").is_none());
        assert!(aws_rebalance(200, "{}").is_none());
        // Azure: a Preempt among other events, at its NotBefore.
        let body = r#"{"DocumentIncarnation": 2, "Events": [
            {"EventId": "A1", "EventType": "Freeze", "ResourceType": "VirtualMachine",
             "Resources": ["vm0"], "EventStatus": "Scheduled", "NotBefore": "Thu, 03 Dec 2026 17:00:00 GMT"},
            {"EventId": "B2", "EventType": "Preempt", "ResourceType": "VirtualMachine",
             "Resources": ["vm0"], "EventStatus": "Scheduled", "NotBefore": "Thu, 03 Dec 2026 18:00:00 GMT"}]}"#;
        let n = azure_notice(200, body).unwrap();
        assert_eq!(
            (n.detail.as_str(), n.at_ms, n.warning),
            ("Preempt B2", 1_796_320_800_000, false)
        );
        // Nothing scheduled, only maintenance, or not an answer.
        assert!(azure_notice(200, r#"{"DocumentIncarnation": 1, "Events": []}"#).is_none());
        assert!(azure_notice(200, &body.replace("Preempt", "Reboot")).is_none());
        assert!(azure_notice(500, body).is_none());
        assert!(azure_notice(200, "<html>").is_none());
    }
}
