//! Idleness: what a workspace's agent sees it doing, and when its tier's
//! policy stops it.

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// The idle detector's verdict on a running workspace (its node's last
/// report), with what the coordinator's policy makes of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Idle {
    /// Set when idle: since when (Unix ms); absent while awake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_since_ms: Option<i64>,
    /// Why it is awake (empty when idle).
    #[serde(default)]
    pub reasons: Vec<IdleReason>,
    /// When its node last sampled it.
    pub sampled_at_ms: i64,
    /// How many processes it runs, and the newest one's command.
    #[serde(default)]
    pub processes: u32,
    #[serde(default)]
    pub newest: String,
    /// The verdict in words as of the read: "awake: cpu 40% (npm run
    /// build, 12 min)" or "idle for 27 min".
    #[serde(default)]
    pub summary: String,
    /// When the policy stops it if nothing happens before (absent: never,
    /// or not idle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stops_at_ms: Option<i64>,
    /// A `berth keepalive` holds it until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_until_ms: Option<i64>,
    /// Its idle timeout: its own (`berth idle-timeout`) or its tier's (0:
    /// never stopped for being idle).
    #[serde(default)]
    pub timeout_seconds: u64,
}

/// Sets a workspace's own idle timeout, within its tier's bound.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct IdleTimeout {
    /// Seconds (at least 60, at most the tier's `max_idle_timeout_seconds`,
    /// or its `idle_timeout_seconds` when that is 0); null: the tier's.
    #[cfg_attr(feature = "openapi", schema(minimum = 60))]
    #[serde(default, deserialize_with = "super::whole::opt_u64")]
    pub seconds: Option<u64>,
}

/// One reason a workspace is awake.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct IdleReason {
    /// "cpu", "tty", "ssh", "port", "preview", "terminal" or "network".
    pub kind: String,
    /// A command, a terminal, a count of sessions or connections.
    pub detail: String,
    /// CPU use in percent of one core, for "cpu".
    #[serde(default)]
    pub percent: u32,
    /// Since when it holds, and when it last held (Unix ms).
    pub since_ms: i64,
    pub last_ms: i64,
}

/// Keeps a workspace from being stopped for idleness for a while.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Keepalive {
    /// How long, in seconds (at most the tier's `max_keepalive_seconds`;
    /// 0 ends an earlier keepalive).
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    #[serde(deserialize_with = "super::whole::u64")]
    pub seconds: u64,
}

impl Idle {
    /// The verdict in words as of `now_ms`.
    pub fn describe(&self, now_ms: i64) -> String {
        let age = |t: i64| ago(now_ms.saturating_sub(t));
        match self.idle_since_ms {
            Some(since) => format!("idle for {}", age(since)),
            None => {
                let parts: Vec<String> = self
                    .reasons
                    .iter()
                    .map(|r| match r.kind.as_str() {
                        "cpu" => format!("cpu {}% ({}, {})", r.percent, r.detail, age(r.since_ms)),
                        "tty" => format!("terminal {}, {} ago", r.detail, age(r.last_ms)),
                        k => format!("{k} session ({})", r.detail),
                    })
                    .collect();
                format!("awake: {}", parts.join("; "))
            }
        }
    }
}

/// A duration in its largest whole unit: "45 s", "12 min", "3 h".
pub fn ago(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        _ => format!("{} h", s / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_read_as_words() {
        let cpu = IdleReason {
            kind: "cpu".into(),
            detail: "npm run build".into(),
            percent: 40,
            since_ms: 0,
            last_ms: 0,
        };
        let tty = IdleReason {
            kind: "tty".into(),
            detail: "bash on pts/0 (input)".into(),
            percent: 0,
            since_ms: 11 * 60_000,
            last_ms: 11 * 60_000,
        };
        let awake = Idle {
            reasons: vec![cpu, tty],
            ..Default::default()
        };
        assert_eq!(
            awake.describe(12 * 60_000),
            "awake: cpu 40% (npm run build, 12 min); terminal bash on pts/0 (input), 60 s ago"
        );
        let idle = Idle {
            idle_since_ms: Some(1000),
            ..Default::default()
        };
        assert_eq!(idle.describe(27 * 60_000 + 1000), "idle for 27 min");
        assert_eq!(ago(3 * 3_600_000 + 5), "3 h");
    }
}
