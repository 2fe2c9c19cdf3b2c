//! Review requests: submitted by whoever may act on a workspace, taken and
//! decided by someone else who may read it (a viewer it is shared with, a
//! team member, a platform admin). Every step is an API request, so the
//! audit log has each one.

use super::Service;
use crate::domain::review::{self, By};
use crate::domain::team::Need;
use crate::error::{Error, Result};
use crate::store::ReviewRow;
use berth_proto::api::{Review, ReviewInput};

fn view(r: ReviewRow) -> Review {
    Review {
        id: r.id,
        workspace: r.name,
        owner: r.owner,
        note: r.note,
        priority: r.priority,
        state: r.state,
        requested_by: r.requested_by,
        reviewer: r.reviewer,
        comment: r.comment,
        created_at_ms: r.created_at_ms,
        updated_at_ms: r.updated_at_ms,
    }
}

impl Service {
    /// Whether `caller` may read (`Need::Read`) or act on `r`'s workspace.
    async fn may(&self, caller: &str, admin: bool, r: &ReviewRow, need: Need) -> bool {
        admin
            || r.owner == caller
            || self
                .may_access(caller, &r.owner, &r.name, need)
                .await
                .is_ok()
    }

    /// Submits `owner`'s workspace `name` for review (the caller may act on it).
    pub async fn submit_review(
        &self,
        caller: &str,
        owner: &str,
        name: &str,
        input: ReviewInput,
    ) -> Result<Review> {
        let priority = input.priority.as_str();
        review::text("note", &input.note)?;
        let w = self.find(owner, name).await?;
        let row = ReviewRow {
            id: format!("rv{}", hex::encode(rand::random::<[u8; 8]>())),
            workspace_id: w.id.clone(),
            owner: w.owner.clone(),
            name: w.name.clone(),
            note: input.note,
            priority: priority.into(),
            state: "pending".into(),
            requested_by: caller.into(),
            reviewer: String::new(),
            comment: String::new(),
            created_at_ms: self.now(),
            updated_at_ms: self.now(),
        };
        if !self.inner.store.put_review(&row).await? {
            return Err(Error::conflict(
                "review_open",
                format!("{name} already has an open review request"),
            ));
        }
        Ok(view(row))
    }

    /// The reviews `caller` may see: of the workspaces they may read.
    pub async fn reviews(&self, caller: &str, admin: bool) -> Result<Vec<Review>> {
        let mut out = Vec::new();
        for r in self.inner.store.reviews().await? {
            if self.may(caller, admin, &r, Need::Read).await {
                out.push(view(r));
            }
        }
        Ok(out)
    }

    /// Takes step `action` of review `id` as `caller`, with `comment`.
    pub async fn review_step(
        &self,
        caller: &str,
        admin: bool,
        id: &str,
        action: &str,
        comment: &str,
    ) -> Result<Review> {
        let (from, to, by) = review::step(action)?;
        review::text("comment", comment)?;
        let missing = || Error::not_found(format!("no review {id:?}"));
        let r = self.inner.store.review(id).await?.ok_or_else(missing)?;
        if !self.may(caller, admin, &r, Need::Read).await {
            return Err(missing());
        }
        let allowed = match by {
            // Never the author's own review, nor another reviewer's.
            By::Reviewer => {
                caller != r.requested_by
                    && caller != r.owner
                    && (from == "pending" || r.reviewer == caller)
            }
            By::Author => self.may(caller, admin, &r, Need::Act).await,
        };
        if !allowed {
            return Err(Error::forbidden(match by {
                By::Reviewer if from == "pending" => {
                    "a review is taken by someone other than its author".to_string()
                }
                By::Reviewer => format!("{} reviews this; only they decide it", r.reviewer),
                By::Author => "only who may change the workspace resubmits it".to_string(),
            }));
        }
        let reviewer = (from == "pending" && by == By::Reviewer).then_some(caller);
        let comment = (by == By::Reviewer && from == "in_review").then_some(comment);
        if !self
            .inner
            .store
            .step_review(id, from, to, reviewer, comment, self.now())
            .await?
        {
            return Err(Error::conflict(
                "review_state",
                format!(
                    "review {id} is {}, not {from}: {action} does not apply",
                    r.state
                ),
            ));
        }
        let now = self.inner.store.review(id).await?.ok_or_else(missing)?;
        Ok(view(now))
    }
}
