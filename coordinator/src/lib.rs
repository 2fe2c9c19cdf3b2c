//! The Berth coordinator. This crate holds, so far, its pure cores: the
//! scheduler (where a workspace goes) and the workspace lifecycle (what a
//! workspace's state becomes on each event). The store, agent link and API
//! that drive them are the rest of issue 3.
#![forbid(unsafe_code)]

pub mod lifecycle;
pub mod scheduler;
