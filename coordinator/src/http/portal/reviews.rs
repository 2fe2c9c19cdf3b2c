//! `/w/reviews`: submit a workspace for review, and the review requests
//! the caller may see, with the steps they may take (the API decides; the
//! page offers only what it would allow).

use super::{caller, layout, owner_query, page, visible};
use crate::error::Result;
use crate::http::AppState;
use axum::extract::State as AxState;
use axum::http::HeaderMap;
use axum::response::Response;
use maud::html;

/// `/w/reviews`.
pub(super) async fn reviews_page(
    AxState(s): AxState<AppState>,
    headers: HeaderMap,
) -> Result<Response> {
    let a = match caller(&s, &headers, "/w/reviews").await? {
        Ok(a) => a,
        Err(to_login) => return Ok(to_login),
    };
    let mine = visible(&s, &a).await?;
    let reviews = s.svc.reviews(&a.user, a.admin).await?;
    let me = a.user.as_str();
    let body = html! {
        h1 { "Reviews" }
        @if mine.is_empty() { p { "You have no workspace to submit for review." } p #message role="status" {} }
        @else { form #submit-review {
            fieldset {
                legend { "Submit a workspace for review" }
                label { "Workspace "
                    select name="ws" required {
                        @for w in &mine {
                            option value={(w.name) "|" (w.owner)} { (w.name) @if w.owner != me { " (" (w.owner) ")" } }
                        }
                    }
                }
                label { "Priority "
                    select name="priority" { option value="low" { "low" } option value="normal" selected { "normal" } option value="high" { "high" } }
                }
                label.wide { "Note " textarea name="note" rows="2" maxlength="2000" {} }
                button type="submit" { "Submit" }
            }
            p #message role="status" {}
        } }
        div.scroll { table #reviews {
            thead { tr { th { "Workspace" } th { "Priority" } th { "State" } th { "Requested by" }
                th { "Reviewer" } th { "Note" } th { "Comment" } th { "Act" } } }
            tbody {
                @for r in &reviews {
                    @let q = owner_query(&r.owner, me);
                    tr data-id=(r.id) data-state=(r.state) {
                        td data-label="Workspace" { a href={"/w/" (r.workspace) "/editor" (q)} { (r.workspace) }
                            @if r.owner != me { br; small { (r.owner) } } }
                        td data-label="Priority" { (r.priority) }
                        td data-label="State" { span class={"state " (r.state)} { (r.state) } }
                        td data-label="Requested by" { (r.requested_by) }
                        td data-label="Reviewer" { (r.reviewer) }
                        td data-label="Note" { (r.note) }
                        td data-label="Comment" { (r.comment) }
                        td.actions data-label="Act" {
                            @if r.state == "pending" && r.requested_by != me && r.owner != me {
                                button data-review-act="start" { "Take" }
                            }
                            @if r.state == "in_review" && r.reviewer == me {
                                input name="comment" aria-label={"Comment on " (r.workspace)} placeholder="comment";
                                button data-review-act="approve" { "Approve" }
                                button.danger data-review-act="request-changes" { "Request changes" }
                            }
                            @if r.state == "changes_requested" && (r.owner == me || r.requested_by == me) {
                                button data-review-act="resubmit" { "Resubmit" }
                            }
                        }
                    }
                }
                @if reviews.is_empty() { tr { td colspan="8" { "No review requests." } } }
            }
        } }
    };
    let scripts = html! { script src="/w/assets/reviews.js" {} };
    Ok(page(layout("Reviews", &a, scripts, body)))
}
