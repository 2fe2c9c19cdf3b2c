//! Review requests: their priorities and the steps between their states
//! (pending → in_review → approved or changes_requested; changes_requested
//! → pending when resubmitted). Pure rules; the service applies them.

use crate::error::{Error, Result};

/// Most characters of a note or a comment.
pub const TEXT_MAX: usize = 2000;

/// A note or comment: at most `TEXT_MAX` characters, no control
/// characters but newlines and tabs.
pub fn text(what: &str, t: &str) -> Result<()> {
    if t.chars().count() > TEXT_MAX || t.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(Error::invalid(
            "invalid_review",
            format!(
                "a review's {what} is at most {TEXT_MAX} characters, without control characters"
            ),
        ));
    }
    Ok(())
}

/// Who takes a step: the reviewer (anyone else who may read the
/// workspace), or the author (who may act on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    Reviewer,
    Author,
}

/// A step: (the state it starts from, the state it leads to, who takes it).
pub fn step(action: &str) -> Result<(&'static str, &'static str, By)> {
    Ok(match action {
        "start" => ("pending", "in_review", By::Reviewer),
        "approve" => ("in_review", "approved", By::Reviewer),
        "request-changes" => ("in_review", "changes_requested", By::Reviewer),
        "resubmit" => ("changes_requested", "pending", By::Author),
        other => {
            return Err(Error::not_found(format!(
                "no review action {other:?}: start, approve, request-changes or resubmit"
            )))
        }
    })
}

/// Whether a review in `state` is still open (a workspace has one at most).
pub fn is_open(state: &str) -> bool {
    matches!(state, "pending" | "in_review" | "changes_requested")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_lead_where_the_workflow_says() {
        assert_eq!(
            step("start").unwrap(),
            ("pending", "in_review", By::Reviewer)
        );
        assert_eq!(step("approve").unwrap().1, "approved");
        assert_eq!(step("request-changes").unwrap().1, "changes_requested");
        assert_eq!(
            step("resubmit").unwrap(),
            ("changes_requested", "pending", By::Author)
        );
        assert!(step("merge").is_err());
        assert!(is_open("changes_requested") && !is_open("approved"));
        assert!(text("note", &"x".repeat(2001)).is_err());
        assert!(text("note", "a\0b").is_err());
        assert!(text("note", "line\nline").is_ok());
    }
}
