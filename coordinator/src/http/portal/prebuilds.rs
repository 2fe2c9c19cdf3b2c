//! The prebuilds table, on the admin page (all of them) and on the
//! workspaces page (those of the caller's repositories): state, commit,
//! where it is held, and its log: live while it builds, the failed step's
//! error after, the steps of a ready one.

use super::gib;
use berth_proto::api::Prebuild;
use maud::{html, Markup};

/// The table of `prebuilds`, newest first as given.
pub(super) fn table(prebuilds: &[Prebuild]) -> Markup {
    html! {
        div.scroll { table #prebuilds {
            thead { tr { th { "Repository" } th { "Branch" } th { "State" } th { "Commit" }
                th { "Nodes" } th { "Size" } th { "Log" } } }
            tbody { @for p in prebuilds {
                tr data-prebuild=(p.id) {
                    td data-label="Repository" { (p.repo_url) }
                    td data-label="Branch" { (p.branch) }
                    td data-label="State" { span class={"state " (p.state)} { (p.state) }
                        @if !p.error_code.is_empty() { " (" (p.error_code) ")" } }
                    td data-label="Commit" { code { (p.commit.chars().take(8).collect::<String>()) } }
                    td data-label="Nodes" { (p.nodes.join(", ")) }
                    td data-label="Size" { (gib(p.bytes)) " GiB" }
                    td data-label="Log" {
                        @if p.state == "building" {
                            a href={"/v1/prebuilds/" (p.id) "/log?follow=true"} { "live log" }
                        } @else if !p.error.is_empty() {
                            details { summary { "error" } pre.log { (p.error) } }
                        } @else {
                            a href={"/v1/prebuilds/" (p.id)} { "steps" }
                        }
                    }
                }
            } }
            @if prebuilds.is_empty() { tbody { tr { td colspan="7" { "No prebuilds." } } } }
        } }
    }
}
