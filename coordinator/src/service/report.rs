//! The capacity and cost reports, and the usage sampler that keeps the
//! history they read: every `[cost] sample_seconds` each running
//! workspace's share of the interval (running, idle by its verdict, and
//! what its reservation costs on its node) and the fleet's allocation.

use super::Service;
use crate::domain::lifecycle::State;
use crate::domain::node::{NodeRow, NodeStatus};
use crate::domain::report::{self, Rates};
use crate::domain::scheduler::{NodeView, Request, Resources};
use crate::error::{Error, Result};
use crate::store::{CapacitySample, UsageSample, WorkspaceFilter};
use berth_proto::api::{
    CapacityReport, FleetCost, Forecast, NodeCapacity, NodeResources, NodesNeeded, TierCapacity,
    UsageReport, UsageRow,
};
use std::collections::HashMap;
use std::time::Duration;

const HOUR_MS: i64 = 3_600_000;
/// How far back the forecast's trend looks.
const FORECAST_WINDOW_MS: i64 = 14 * 24 * HOUR_MS;

fn resources(r: Resources, workspaces: u32) -> NodeResources {
    NodeResources {
        cpu_millis: r.cpu_millis,
        memory_bytes: r.memory_bytes,
        disk_bytes: r.disk_bytes,
        workspaces,
    }
}

/// What a node's state is called in the report.
fn state_of(row: &NodeRow, view: &NodeView) -> String {
    match row.status {
        NodeStatus::Ready if !view.ready => "unreachable".into(),
        NodeStatus::Ready if row.draining => "draining".into(),
        NodeStatus::Ready if row.cordoned => "cordoned".into(),
        s => s.as_str().into(),
    }
}

impl Service {
    /// How many workspaces there are of each (state, tier).
    pub async fn workspace_counts(
        &self,
    ) -> Result<std::collections::BTreeMap<(String, String), i64>> {
        self.inner.store.workspace_counts().await
    }

    /// The capacity report, for one tier or all; with `more`, the nodes
    /// like `like` (default: the largest) needed to hold that many more.
    pub async fn capacity_report(
        &self,
        tier: Option<&str>,
        more: Option<u64>,
        like: Option<&str>,
    ) -> Result<CapacityReport> {
        let tiers = match tier {
            Some(t) => vec![self
                .inner
                .tiers
                .get(t)
                .cloned()
                .ok_or_else(|| Error::not_found(format!("no tier named {t:?}")))?],
            None => self.inner.tiers.all(),
        };
        let now = self.now();
        let rows = self.inner.store.nodes().await?;
        let views = self.views(&rows, now);
        let prices = &self.inner.cost.prices;
        let rates: Vec<Rates> = views.iter().map(|v| prices.rates(v)).collect();
        let like_view = match like {
            Some(id) => Some(
                views
                    .iter()
                    .find(|v| v.id == id)
                    .ok_or_else(|| Error::not_found(format!("no node named {id:?}")))?,
            ),
            None => views
                .iter()
                .max_by_key(|v| (v.capacity.cpu_millis, v.capacity.memory_bytes)),
        };

        let nodes = rows
            .iter()
            .zip(&views)
            .zip(&rates)
            .map(|((row, view), rate)| NodeCapacity {
                id: row.id.clone(),
                state: state_of(row, view),
                allocatable: resources(row.capacity, row.slots),
                allocated: resources(row.allocated, row.allocated_slots),
                used: self
                    .inner
                    .stats
                    .used_by(
                        &row.id,
                        now - 3 * self.inner.timing.unreachable_after.as_millis() as i64,
                    )
                    .map(|u| resources(u, row.allocated_slots)),
                cached_images: row.cached_images.iter().cloned().collect(),
                cached_prebuilds: row.cached_prebuilds.len() as u64,
                hourly: rate.hourly,
                allocated_hourly: rate.of(row.allocated),
            })
            .collect::<Vec<_>>();

        let rate_of: HashMap<&str, &Rates> =
            views.iter().map(|v| v.id.as_str()).zip(&rates).collect();
        let tiers = tiers
            .iter()
            .map(|t| {
                let req = Request {
                    resources: Resources {
                        cpu_millis: u64::from(t.cpu_millis),
                        memory_bytes: t.memory_bytes,
                        disk_bytes: t.disk_bytes,
                    },
                    ..Request::default()
                };
                let fit = report::fit(&req, &views);
                let hourly = fit
                    .by_node
                    .keys()
                    .filter_map(|n| rate_of.get(n.as_str()))
                    .map(|r| r.of(req.resources))
                    .min_by(|a, b| a.total_cmp(b));
                let needed = more.zip(like_view).map(|(more, like)| NodesNeeded {
                    more,
                    like: like.id.clone(),
                    nodes: report::nodes_needed(&req, like, more, fit.more),
                });
                TierCapacity {
                    tier: t.name.clone(),
                    fits: fit.more,
                    by_node: fit.by_node,
                    stranded: resources(fit.stranded, 0),
                    hourly,
                    needed,
                }
            })
            .collect();

        let hourly: f64 = rates.iter().map(|r| r.hourly).sum();
        let allocated_hourly: f64 = nodes.iter().map(|n| n.allocated_hourly).sum();
        let cost = FleetCost {
            hourly,
            allocated_hourly,
            idle_hourly: (hourly - allocated_hourly).max(0.0),
        };
        let forecast = self.forecast(&rows, now).await?;
        Ok(CapacityReport {
            at_ms: now,
            nodes,
            tiers,
            cost,
            forecast,
        })
    }

    /// The fleet's hourly allocation over the forecast's window (14 days),
    /// oldest first: (hour, CPU allocated / allocatable, memory, disk, slots).
    pub async fn capacity_history(&self) -> Result<Vec<(i64, [(i64, i64); 4])>> {
        let since = self.now() - FORECAST_WINDOW_MS;
        Ok(self
            .inner
            .store
            .capacity_samples(since)
            .await?
            .into_iter()
            .map(|c| (c.hour_ms, [c.cpu, c.memory, c.disk, c.workspaces]))
            .collect())
    }

    /// When each resource runs out, from the hourly samples.
    async fn forecast(&self, rows: &[NodeRow], now: i64) -> Result<Vec<Forecast>> {
        let history = self
            .inner
            .store
            .capacity_samples(now - FORECAST_WINDOW_MS)
            .await?;
        let fleet = fleet_sample(rows, now);
        type Pick = fn(&CapacitySample) -> (i64, i64);
        let resources: [(&str, Pick); 4] = [
            ("cpu_millis", |c| c.cpu),
            ("memory_bytes", |c| c.memory),
            ("disk_bytes", |c| c.disk),
            ("workspaces", |c| c.workspaces),
        ];
        Ok(resources
            .iter()
            .map(|(name, pick)| {
                let points: Vec<(f64, f64)> = history
                    .iter()
                    .map(|c| ((c.hour_ms as f64) / HOUR_MS as f64, pick(c).0 as f64))
                    .collect();
                let (allocated, allocatable) = pick(&fleet);
                Forecast {
                    resource: name.to_string(),
                    allocated: allocated.max(0) as u64,
                    allocatable: allocatable.max(0) as u64,
                    samples: points.len() as u64,
                    runs_out_in_hours: report::runs_out_in_hours(&points, allocatable as f64),
                }
            })
            .collect())
    }

    /// Samples usage every `[cost] sample_seconds`, for ever.
    pub(super) async fn usage_loop(&self) {
        let every = Duration::from_millis(self.inner.cost.sample_ms.max(100) as u64);
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = self.sample_usage().await {
                tracing::warn!(error = %e, "usage sample failed");
            }
        }
    }

    /// One sample: each running workspace's share of the interval, and the
    /// fleet's allocation for the hour.
    pub async fn sample_usage(&self) -> Result<()> {
        let now = self.now();
        let interval = self.inner.cost.sample_ms;
        let store = &self.inner.store;
        let rows = store.nodes().await?;
        let views = self.views(&rows, now);
        let prices = &self.inner.cost.prices;
        let rates: HashMap<&str, Rates> = views
            .iter()
            .map(|v| (v.id.as_str(), prices.rates(v)))
            .collect();
        let running = store
            .workspaces(&WorkspaceFilter {
                state: Some(State::Running),
                ..WorkspaceFilter::default()
            })
            .await?;
        let samples: Vec<UsageSample> = running
            .iter()
            .map(|w| {
                let rate = w
                    .node
                    .as_deref()
                    .and_then(|n| rates.get(n))
                    .copied()
                    .unwrap_or_default();
                let cost = rate.of(w.resources) * interval as f64 / HOUR_MS as f64;
                let idle = w.idle.as_ref().is_some_and(|i| i.idle_since_ms.is_some());
                UsageSample {
                    workspace_id: w.id.clone(),
                    owner: w.owner.clone(),
                    team: w.team.clone(),
                    tier: w.tier.clone(),
                    running_ms: interval,
                    idle_ms: if idle { interval } else { 0 },
                    cost,
                    idle_cost: if idle { cost } else { 0.0 },
                }
            })
            .collect();
        let hour = now - now.rem_euclid(HOUR_MS);
        store.add_usage(hour, now, interval / 2, &samples).await?;
        store.put_capacity_sample(&fleet_sample(&rows, hour)).await
    }

    /// Workspace hours and cost since `since_ms`, by user, team, tier or workspace.
    pub async fn usage_report(&self, since_ms: i64, by: &str) -> Result<UsageReport> {
        let column = match by {
            "user" => "owner",
            "tier" => "tier",
            "workspace" => "workspace_id",
            "team" => "team",
            _ => {
                return Err(Error::bad_request(
                    "invalid_query",
                    "by is user, tier or workspace",
                ))
            }
        };
        let hours = |ms: i64| ms as f64 / HOUR_MS as f64;
        let rows = self
            .inner
            .store
            .usage_sums(
                since_ms.saturating_sub(since_ms.rem_euclid(HOUR_MS)),
                column,
            )
            .await?
            .into_iter()
            .map(|u| UsageRow {
                key: u.key,
                workspaces: u.workspaces.max(0) as u64,
                hours: hours(u.running_ms),
                idle_hours: hours(u.idle_ms),
                cost: u.cost,
                idle_cost: u.idle_cost,
            })
            .collect();
        Ok(UsageReport {
            since_ms,
            by: by.to_string(),
            rows,
        })
    }
}

/// The fleet's allocation now (nodes not lost), for hour `hour_ms`.
fn fleet_sample(rows: &[NodeRow], hour_ms: i64) -> CapacitySample {
    let mut c = CapacitySample {
        hour_ms,
        ..CapacitySample::default()
    };
    let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    for n in rows.iter().filter(|n| n.status != NodeStatus::Lost) {
        c.cpu.0 += i(n.allocated.cpu_millis);
        c.cpu.1 += i(n.capacity.cpu_millis);
        c.memory.0 += i(n.allocated.memory_bytes);
        c.memory.1 += i(n.capacity.memory_bytes);
        c.disk.0 += i(n.allocated.disk_bytes);
        c.disk.1 += i(n.capacity.disk_bytes);
        c.workspaces.0 += i64::from(n.allocated_slots);
        c.workspaces.1 += i64::from(n.slots);
    }
    c
}
