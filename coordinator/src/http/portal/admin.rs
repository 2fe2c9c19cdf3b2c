//! `/w/admin` (platform admins): the nodes (state, allocation, use, cache,
//! price; cordon, uncordon, drain), capacity per tier with the fleet's
//! allocation over 14 days drawn and the forecast, cost per team over 30
//! days, the audit log (filtered by actor and action), and the prebuilds.
//! Rendered from the same service calls as `/v1/admin/*`.

use super::{caller, gib, layout, page, when};
use crate::error::{Error, Result};
use crate::http::AppState;
use crate::store::AuditFilter;
use axum::extract::State as AxState;
use axum::http::HeaderMap;
use axum::response::Response;
use maud::{html, Markup, PreEscaped};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub(super) struct AdminQuery {
    actor: Option<String>,
    action: Option<String>,
}

/// An SVG line per resource: its allocated share of allocatable per hour.
fn chart(history: &[(i64, [(i64, i64); 4])]) -> Markup {
    const W: f64 = 640.0;
    const H: f64 = 140.0;
    let names = ["CPU", "memory", "disk", "slots"];
    let colours = ["#0b5cad", "#0f6b2f", "#7a4b00", "#a4141c"];
    if history.len() < 2 {
        return html! { p { "Not enough hourly samples yet to draw (" (history.len()) ")." } };
    }
    let (t0, t1) = (history[0].0, history[history.len() - 1].0);
    let span = (t1 - t0).max(1) as f64;
    let mut svg = format!(
        r##"<svg viewBox="0 0 {W} {H}" role="img" aria-label="Allocated share of the fleet per hour" class="chart"><line x1="0" y1="{H}" x2="{W}" y2="{H}" stroke="#8c959f"/>"##
    );
    for (i, colour) in colours.iter().enumerate() {
        let points: Vec<String> = history
            .iter()
            .map(|(t, r)| {
                let share = if r[i].1 > 0 {
                    r[i].0 as f64 / r[i].1 as f64
                } else {
                    0.0
                };
                format!(
                    "{:.1},{:.1}",
                    (t - t0) as f64 / span * W,
                    H - share.clamp(0.0, 1.0) * (H - 4.0)
                )
            })
            .collect();
        svg.push_str(&format!(
            r##"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"##,
            points.join(" ")
        ));
    }
    svg.push_str("</svg>");
    html! {
        (PreEscaped(svg))
        p.legend { @for (i, n) in names.iter().enumerate() {
            span style={"color:" (colours[i])} { "▬ " (n) } " " } " (0 to 100% of allocatable, " (when(t0)) " to " (when(t1)) ")" }
    }
}

/// `/w/admin`.
pub(super) async fn admin_page(
    AxState(s): AxState<AppState>,
    axum::extract::Query(q): axum::extract::Query<AdminQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    let a = match caller(&s, &headers, "/w/admin").await? {
        Ok(a) => a,
        Err(to_login) => return Ok(to_login),
    };
    if !a.admin {
        return Err(Error::forbidden("the admin pages are for platform admins"));
    }
    let report = s.svc.capacity_report(None, None, None).await?;
    let history = s.svc.capacity_history().await?;
    let since = s.svc.now() - 30 * 24 * 3_600_000;
    let teams = s.svc.usage_report(since, "team").await?;
    let audit = s
        .svc
        .audit(&AuditFilter {
            actor: q.actor.clone().filter(|v| !v.is_empty()),
            action: q.action.clone().filter(|v| !v.is_empty()),
            limit: 50,
            newest_first: true,
            ..Default::default()
        })
        .await?;
    let prebuilds = s.svc.prebuilds(None).await?;
    let body = html! {
        h1 { "Admin" }
        section aria-labelledby="nodes-h" {
            h2 #nodes-h { "Nodes" }
            div.scroll { table #nodes {
                thead { tr { th { "Node" } th { "State" } th { "CPU allocated / allocatable" }
                    th { "Memory GiB" } th { "Disk GiB" } th { "Slots" } th { "Used CPU · memory" }
                    th { "Cache" } th { "$/h" } th { "Actions" } } }
                tbody { @for n in &report.nodes {
                    tr data-node=(n.id) {
                        td data-label="Node" { strong { (n.id) } }
                        td data-label="State" { (n.state) }
                        td data-label="CPU" { (n.allocated.cpu_millis) "m / " (n.allocatable.cpu_millis) "m" }
                        td data-label="Memory GiB" { (gib(n.allocated.memory_bytes)) " / " (gib(n.allocatable.memory_bytes)) }
                        td data-label="Disk GiB" { (gib(n.allocated.disk_bytes)) " / " (gib(n.allocatable.disk_bytes)) }
                        td data-label="Slots" { (n.allocated.workspaces) " / " (n.allocatable.workspaces) }
                        td data-label="Used" { @if let Some(u) = &n.used { (u.cpu_millis) "m · " (gib(u.memory_bytes)) " GiB" } @else { "-" } }
                        td data-label="Cache" { (n.cached_images.len()) " images, " (n.cached_prebuilds) " prebuilds" }
                        td data-label="$/h" { (format!("{:.3}", n.hourly)) }
                        td.actions data-label="Actions" {
                            @if n.state == "cordoned" || n.state == "draining" {
                                button data-node-act="uncordon" { "Uncordon" }
                            } @else {
                                button data-node-act="cordon" { "Cordon" }
                            }
                            button.danger data-node-act="drain" { "Drain" }
                        }
                    }
                } }
            } }
            p #message role="status" {}
        }
        section aria-labelledby="cap-h" {
            h2 #cap-h { "Capacity" }
            div.scroll { table #tiers {
                thead { tr { th { "Tier" } th { "More that fit" } th { "By node" } th { "$/h each" } } }
                tbody { @for t in &report.tiers {
                    tr { td data-label="Tier" { (t.tier) } td data-label="More that fit" { (t.fits) }
                         td data-label="By node" { @for (n, k) in &t.by_node { (n) ": " (k) " " } }
                         td data-label="$/h each" { @if let Some(h) = t.hourly { (format!("{h:.3}")) } @else { "-" } } }
                } }
            } }
            p { "Fleet: " (format!("${:.2}", report.cost.hourly)) " per hour, "
                (format!("${:.2}", report.cost.allocated_hourly)) " allocated to workspaces, "
                (format!("${:.2}", report.cost.idle_hourly)) " idle." }
            h3 { "Allocation over 14 days" }
            (chart(&history))
            h3 { "Forecast" }
            ul #forecast { @for f in &report.forecast {
                li { (f.resource) ": " (f.allocated) " of " (f.allocatable) " allocated; "
                    @match f.runs_out_in_hours {
                        Some(h) => { "runs out in about " (format!("{h:.0}")) " h" }
                        None => { "not running out (" (f.samples) " samples)" }
                    } }
            } }
        }
        section aria-labelledby="cost-h" {
            h2 #cost-h { "Cost per team, 30 days" }
            div.scroll { table #cost {
                thead { tr { th { "Team" } th { "Workspaces" } th { "Hours" } th { "Idle hours" } th { "Cost" } th { "Idle cost" } } }
                tbody { @for r in &teams.rows {
                    tr { td data-label="Team" { (if r.key.is_empty() { "(personal)" } else { &r.key }) }
                         td data-label="Workspaces" { (r.workspaces) }
                         td data-label="Hours" { (format!("{:.1}", r.hours)) }
                         td data-label="Idle hours" { (format!("{:.1}", r.idle_hours)) }
                         td data-label="Cost" { (format!("${:.2}", r.cost)) }
                         td data-label="Idle cost" { (format!("${:.2}", r.idle_cost)) } }
                } }
            } }
        }
        section aria-labelledby="audit-h" {
            h2 #audit-h { "Audit log" }
            form #audit-filter method="get" action="/w/admin" {
                fieldset {
                    legend { "Filter" }
                    label { "Actor " input name="actor" value=(q.actor.clone().unwrap_or_default()); }
                    label { "Action starts with " input name="action" placeholder="POST /v1/workspaces" value=(q.action.clone().unwrap_or_default()); }
                    button type="submit" { "Filter" }
                }
            }
            div.scroll { table #audit {
                thead { tr { th { "#" } th { "When" } th { "Actor" } th { "Action" } th { "Resource" } th { "Status" } } }
                tbody { @for e in &audit {
                    tr { td data-label="#" { (e.seq) } td data-label="When" { (when(e.at_ms)) }
                         td data-label="Actor" { (e.actor) } td data-label="Action" { (e.action) }
                         td data-label="Resource" { (e.resource) }
                         td data-label="Status" { (e.status) @if !e.error_code.is_empty() { " " (e.error_code) } } }
                } }
            } }
        }
        section aria-labelledby="pb-h" {
            h2 #pb-h { "Prebuilds" }
            (super::prebuilds::table(&prebuilds))
        }
    };
    let scripts = html! { script src="/w/assets/admin.js" {} };
    Ok(page(layout("Admin", &a, scripts, body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_draws_each_share_of_allocatable_over_time() {
        let h = |t: i64, cpu: i64| (t, [(cpu, 1000), (0, 10), (10, 10), (5, 0)]);
        let svg = chart(&[h(0, 0), h(3_600_000, 500), h(7_200_000, 1000)]).into_string();
        assert_eq!(svg.matches("<polyline").count(), 4, "{svg}");
        // CPU: 0% at the left edge (bottom), 50% mid-way, 100% at the right (top).
        assert!(
            svg.contains(r#"points="0.0,140.0 320.0,72.0 640.0,4.0""#),
            "{svg}"
        );
        // Disk is full throughout; slots with nothing allocatable draw at 0.
        assert!(
            svg.contains(r#"points="0.0,4.0 320.0,4.0 640.0,4.0""#),
            "{svg}"
        );
        assert!(chart(&[h(0, 0)]).into_string().contains("Not enough"));
    }
}
