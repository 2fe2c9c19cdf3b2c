//! Image references: the parser is berth-proto's, shared with the
//! coordinator's API, so a reference the API accepts is one the agent pulls.

use crate::error::AgentError;
pub use berth_proto::image_ref::{RefError, Reference};

impl From<RefError> for AgentError {
    fn from(e: RefError) -> Self {
        AgentError::InvalidImage {
            reference: e.reference,
            reason: e.reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_reference_is_invalid_image() {
        let e: AgentError = Reference::parse("127.0.0.1:5000/UPPER::x")
            .unwrap_err()
            .into();
        assert_eq!(e.code(), "invalid_image");
    }
}
