//! The Berth coordinator. Its store, scheduler, agent link and API are the
//! subject of issue 3; this crate exists so the workspace layout is complete.
#![forbid(unsafe_code)]
