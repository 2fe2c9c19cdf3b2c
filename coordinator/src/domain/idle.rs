//! The idle policy: given what a workspace's node says it is doing (the
//! agent's verdict), its tier's policy, a keepalive and the time, whether
//! to warn it, stop it or leave it. Pure.

use berth_proto::api::{ago, Idle, Tier};

/// A tier's idle policy, in milliseconds (0: off).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    pub timeout_ms: i64,
    pub warning_ms: i64,
    pub max_lifetime_ms: i64,
    pub max_keepalive_ms: i64,
    /// A workspace stopped this long is deleted (0: never).
    pub stopped_ttl_ms: i64,
}

impl Policy {
    pub fn of(t: &Tier) -> Self {
        let ms = |s: u64| (s as i64).saturating_mul(1000);
        Self {
            timeout_ms: ms(t.idle_timeout_seconds),
            warning_ms: ms(t.idle_warning_seconds),
            max_lifetime_ms: ms(t.max_lifetime_seconds),
            max_keepalive_ms: ms(t.max_keepalive_seconds),
            stopped_ttl_ms: ms(t.stopped_ttl_seconds),
        }
    }
}

/// The idle timeout a workspace asks for (`seconds`; None: its tier's),
/// checked against its tier: at least a minute, and at most the tier's
/// `max_idle_timeout_seconds` (0: its `idle_timeout_seconds`, unless that
/// is 0, never). Its timeout in ms (0: the tier's), or why not.
pub fn own_timeout(t: &Tier, seconds: Option<u64>) -> Result<i64, String> {
    let Some(s) = seconds else {
        return Ok(0);
    };
    let bound = match (t.max_idle_timeout_seconds, t.idle_timeout_seconds) {
        (0, 0) => u64::MAX,
        (0, tier) => tier,
        (max, _) => max,
    };
    if s < 60 || s > bound {
        let most = match bound {
            u64::MAX => "no upper bound".to_string(),
            b => format!("at most {b} s"),
        };
        return Err(format!(
            "tier {} allows an idle timeout of at least 60 s and {most}",
            t.name
        ));
    }
    Ok((s as i64).saturating_mul(1000))
}

/// What a running workspace has coming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    Nothing,
    /// Warn its terminals: it stops at `stops_at_ms` for `why`.
    Warn {
        stops_at_ms: i64,
        why: String,
    },
    /// Stop it now, for this reason.
    Stop(String),
}

/// A running workspace's facts the policy reads.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub idle: Option<&'a Idle>,
    pub keepalive_until_ms: i64,
    /// When it last started running.
    pub running_since_ms: i64,
    /// When its terminals were warned of the stop now due, if they were.
    pub warned_at_ms: Option<i64>,
}

/// When it is stopped if nothing changes, and why: the earlier of its idle
/// timeout (held by a keepalive) and its maximum lifetime, never sooner than
/// a full warning period after its warning.
pub fn stops_at(p: &Policy, f: &Facts) -> Option<(i64, String)> {
    let (at, why) = due_at(p, f)?;
    Some(match f.warned_at_ms {
        Some(w) if p.warning_ms > 0 => (at.max(w.saturating_add(p.warning_ms)), why),
        _ => (at, why),
    })
}

/// The stop the policy aims at, before any warning: what a warning is about.
pub fn due_at(p: &Policy, f: &Facts) -> Option<(i64, String)> {
    let idle = f
        .idle
        .and_then(|i| i.idle_since_ms)
        .filter(|_| p.timeout_ms > 0)
        .map(|since| {
            let at = since.saturating_add(p.timeout_ms).max(f.keepalive_until_ms);
            (at, format!("idle for {}", ago(at - since)))
        });
    let life = (p.max_lifetime_ms > 0).then(|| {
        (
            f.running_since_ms.saturating_add(p.max_lifetime_ms),
            format!("ran for its maximum lifetime of {}", ago(p.max_lifetime_ms)),
        )
    });
    match (idle, life) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// What is due at `now_ms`. A stop always follows a warning by the full
/// warning period, even when the idleness is only known late (a verdict
/// that dates it back).
pub fn due(p: &Policy, f: &Facts, now_ms: i64) -> Due {
    let Some((at, why)) = due_at(p, f) else {
        return Due::Nothing;
    };
    if p.warning_ms == 0 {
        return if now_ms >= at {
            Due::Stop(why)
        } else {
            Due::Nothing
        };
    }
    match f.warned_at_ms {
        None if now_ms >= at - p.warning_ms => Due::Warn {
            stops_at_ms: at.max(now_ms + p.warning_ms),
            why,
        },
        Some(w) if now_ms >= at.max(w + p.warning_ms) => Due::Stop(why),
        _ => Due::Nothing,
    }
}

/// The notice written to a workspace's terminals before it stops.
pub fn warning(name: &str, stops_at_ms: i64, why: &str, now_ms: i64) -> String {
    format!(
        "berth: workspace {name} is {why} and stops in {}. Run `berth keepalive {name}` to keep it running.",
        ago(stops_at_ms - now_ms)
    )
}

/// What the TTL of a stopped workspace says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ttl {
    /// No TTL, or not reached: nothing.
    Keep,
    /// Reached, and a backup holds all it had: delete it now.
    Delete(String),
    /// Reached, but no confirmed backup holds all it had yet: its data is
    /// never deleted before one does.
    Held,
}

/// The TTL of a workspace stopped since `stopped_since_ms`, whose newest
/// confirmed backup was taken at `backup` (Unix ms, and whether of it
/// stopped).
pub fn ttl(p: &Policy, stopped_since_ms: i64, backup: Option<(i64, bool)>, now: i64) -> Ttl {
    if p.stopped_ttl_ms <= 0 || now < stopped_since_ms.saturating_add(p.stopped_ttl_ms) {
        return Ttl::Keep;
    }
    match backup {
        Some((at, true)) if at >= stopped_since_ms => Ttl::Delete(format!(
            "stopped for {} (the tier's TTL is {}); its backups are kept",
            ago(now - stopped_since_ms),
            ago(p.stopped_ttl_ms)
        )),
        _ => Ttl::Held,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn policy() -> Policy {
        Policy {
            timeout_ms: 30 * MIN,
            warning_ms: 5 * MIN,
            max_lifetime_ms: 0,
            max_keepalive_ms: 8 * 60 * MIN,
            stopped_ttl_ms: 0,
        }
    }

    fn idle(since: Option<i64>) -> Idle {
        Idle {
            idle_since_ms: since,
            ..Default::default()
        }
    }

    #[test]
    fn the_policy_in_a_table() {
        let awake = idle(None);
        let idle10 = idle(Some(10 * MIN));
        let no_timeout = Policy {
            timeout_ms: 0,
            ..policy()
        };
        let lifetime = Policy {
            max_lifetime_ms: 60 * MIN,
            ..policy()
        };
        let f = |idle, keep, since| Facts {
            idle,
            keepalive_until_ms: keep,
            running_since_ms: since,
            warned_at_ms: Some(0),
        };
        let unwarned = |idle| Facts {
            warned_at_ms: None,
            ..f(idle, 0, 0)
        };
        let stop = |s: &str| Due::Stop(s.into());
        // (what, policy, facts, now, due)
        let table = [
            (
                "awake",
                policy(),
                f(Some(&awake), 0, 0),
                500 * MIN,
                Due::Nothing,
            ),
            (
                "never sampled",
                policy(),
                f(None, 0, 0),
                500 * MIN,
                Due::Nothing,
            ),
            (
                "idle, not yet",
                policy(),
                f(Some(&idle10), 0, 0),
                30 * MIN,
                Due::Nothing,
            ),
            (
                "idle, warned 5 min before",
                policy(),
                unwarned(Some(&idle10)),
                35 * MIN,
                Due::Warn {
                    stops_at_ms: 40 * MIN,
                    why: "idle for 30 min".into(),
                },
            ),
            (
                "not warned before that",
                policy(),
                unwarned(Some(&idle10)),
                34 * MIN,
                Due::Nothing,
            ),
            (
                "idleness known late: warned first, stopped a full period later",
                policy(),
                unwarned(Some(&idle10)),
                60 * MIN,
                Due::Warn {
                    stops_at_ms: 65 * MIN,
                    why: "idle for 30 min".into(),
                },
            ),
            (
                "warned late: not stopped before the period ends",
                policy(),
                Facts {
                    warned_at_ms: Some(60 * MIN),
                    ..f(Some(&idle10), 0, 0)
                },
                64 * MIN,
                Due::Nothing,
            ),
            (
                "idle past the timeout",
                policy(),
                f(Some(&idle10), 0, 0),
                40 * MIN,
                stop("idle for 30 min"),
            ),
            (
                "a keepalive holds it",
                policy(),
                f(Some(&idle10), 90 * MIN, 0),
                60 * MIN,
                Due::Nothing,
            ),
            (
                "until it ends",
                policy(),
                f(Some(&idle10), 90 * MIN, 0),
                90 * MIN,
                stop("idle for 80 min"),
            ),
            (
                "no idle timeout",
                no_timeout,
                f(Some(&idle10), 0, 0),
                900 * MIN,
                Due::Nothing,
            ),
            (
                "lifetime, even awake",
                lifetime,
                f(Some(&awake), 0, 5 * MIN),
                65 * MIN,
                stop("ran for its maximum lifetime of 60 min"),
            ),
            (
                "the earlier of the two",
                lifetime,
                f(Some(&idle10), 0, 0),
                40 * MIN,
                stop("idle for 30 min"),
            ),
        ];
        for (what, p, facts, now, want) in table {
            assert_eq!(due(&p, &facts, now), want, "{what}");
        }
    }

    #[test]
    fn a_workspace_s_own_timeout_keeps_within_its_tier() {
        let tier = |timeout, max| Tier {
            name: "small".into(),
            idle_timeout_seconds: timeout,
            max_idle_timeout_seconds: max,
            ..crate::domain::tier::Tiers::default()
                .get("small")
                .unwrap()
                .clone()
        };
        let cases: &[(Tier, Option<u64>, Result<i64, ()>)] = &[
            // Its tier's: nothing to check.
            (tier(1800, 0), None, Ok(0)),
            // Shorter than the tier's: yes; longer: only up to the bound.
            (tier(1800, 0), Some(600), Ok(600_000)),
            (tier(1800, 0), Some(1800), Ok(1_800_000)),
            (tier(1800, 0), Some(1801), Err(())),
            (tier(1800, 7200), Some(7200), Ok(7_200_000)),
            (tier(1800, 7200), Some(7201), Err(())),
            // Under a minute, never.
            (tier(1800, 0), Some(59), Err(())),
            (tier(1800, 0), Some(0), Err(())),
            // A tier that never stops: any minute and up.
            (tier(0, 0), Some(86_400), Ok(86_400_000)),
        ];
        for (t, asked, want) in cases {
            let got = own_timeout(t, *asked).map_err(drop);
            assert_eq!(
                &got, want,
                "{asked:?} under {}/{}",
                t.idle_timeout_seconds, t.max_idle_timeout_seconds
            );
        }
        assert!(own_timeout(&tier(1800, 0), Some(5000))
            .unwrap_err()
            .contains("at most 1800 s"));
    }

    #[test]
    fn the_warning_names_the_way_out() {
        let w = warning("api", 40 * MIN, "idle for 30 min", 35 * MIN);
        assert_eq!(
            w,
            "berth: workspace api is idle for 30 min and stops in 5 min. Run `berth keepalive api` to keep it running."
        );
    }

    #[test]
    fn a_stopped_workspace_goes_after_its_ttl_only_once_backed_up() {
        let p = Policy {
            stopped_ttl_ms: 1000,
            ..Policy::default()
        };
        let off = Policy::default();
        let held = Some((600, true));
        assert_eq!(ttl(&off, 500, held, 1_000_000), Ttl::Keep, "no TTL");
        assert_eq!(ttl(&p, 500, held, 1499), Ttl::Keep, "not yet");
        assert!(matches!(ttl(&p, 500, held, 1500), Ttl::Delete(_)));
        // No backup, one from before the stop, or one of it running: held.
        assert_eq!(ttl(&p, 500, None, 9000), Ttl::Held);
        assert_eq!(ttl(&p, 500, Some((499, true)), 9000), Ttl::Held);
        assert_eq!(ttl(&p, 500, Some((600, false)), 9000), Ttl::Held);
    }
}
