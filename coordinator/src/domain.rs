//! Pure decisions, with `now` passed in: the workspace lifecycle, placement,
//! what a workspace holds on its node, input validation, and a create
//! request resolved against the tiers. No store, no link, no clock.

pub mod audit;
pub mod backup;
pub mod capacity;
pub mod idle;
pub mod lifecycle;
pub mod node;
pub mod oidc;
pub mod pull_request;
pub mod quota;
pub mod repo;
pub mod report;
pub mod review;
pub mod scheduler;
pub mod team;
pub mod tier;
pub mod validate;
pub mod webhook;
pub mod workspace;
