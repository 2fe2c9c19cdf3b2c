//! The admin side's configuration: `[cost]` prices and `[quotas]`, every
//! user's default limits.

use super::{invalid, ConfigError};
use crate::domain::quota::Limits;
use crate::domain::report::{CostPolicy, Prices};
use berth_proto::units::parse_size;
use serde::Deserialize;

/// The `[cost]` table (docs/admin.md, "Capacity and cost").
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostFile {
    /// Price of a node per hour without a `price-per-hour` label (default 0).
    pub node_hourly: Option<f64>,
    /// Price of a node labelled `spot=true` per hour (default 0).
    pub spot_node_hourly: Option<f64>,
    /// How many times a core costs more than a GiB of memory (default 7.46).
    pub cpu_to_memory: Option<f64>,
    /// Seconds between usage samples (default 60).
    pub sample_seconds: Option<f64>,
}

/// The `[quotas]` table: every user's default limits (docs/admin.md,
/// "Quotas"); each absent is no limit.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotasFile {
    pub running: Option<u64>,
    pub workspaces: Option<u64>,
    pub cpu_millis: Option<u64>,
    /// A size: "16GiB".
    pub memory: Option<String>,
    pub disk: Option<String>,
    /// What a user's running workspaces may cost in a calendar month.
    pub monthly_budget: Option<f64>,
}

pub(super) fn validate_quotas(q: QuotasFile) -> Result<Limits, ConfigError> {
    let size = |key: &str, v: Option<String>| {
        v.map(|s| parse_size(&s).map_err(|e| invalid(key, &e.to_string())))
            .transpose()
    };
    if q.monthly_budget
        .is_some_and(|b| !(b.is_finite() && b >= 0.0))
    {
        return Err(invalid("quotas.monthly_budget", "must be 0 or more"));
    }
    Ok(Limits {
        running: q.running,
        workspaces: q.workspaces,
        cpu_millis: q.cpu_millis,
        memory_bytes: size("quotas.memory", q.memory)?,
        disk_bytes: size("quotas.disk", q.disk)?,
        monthly_budget: q.monthly_budget,
    })
}

pub(super) fn validate_cost(c: CostFile) -> Result<CostPolicy, ConfigError> {
    let d = CostPolicy::default();
    let price = |key: &str, v: Option<f64>, default: f64| match v {
        Some(p) if !(p.is_finite() && (0.0..=1e6).contains(&p)) => {
            Err(invalid(key, "must be 0 to 1000000"))
        }
        Some(p) => Ok(p),
        None => Ok(default),
    };
    let ratio = match c.cpu_to_memory {
        Some(r) if !(r.is_finite() && (0.01..=1000.0).contains(&r)) => {
            return Err(invalid("cost.cpu_to_memory", "must be 0.01 to 1000"))
        }
        Some(r) => r,
        None => d.prices.cpu_to_memory,
    };
    let sample_ms = match c.sample_seconds {
        Some(s) if !(0.1..=3600.0).contains(&s) => {
            return Err(invalid("cost.sample_seconds", "must be 0.1 to 3600"))
        }
        Some(s) => (s * 1000.0) as i64,
        None => d.sample_ms,
    };
    Ok(CostPolicy {
        prices: Prices {
            node_hourly: price("cost.node_hourly", c.node_hourly, 0.0)?,
            spot_node_hourly: price("cost.spot_node_hourly", c.spot_node_hourly, 0.0)?,
            cpu_to_memory: ratio,
        },
        sample_ms,
    })
}
