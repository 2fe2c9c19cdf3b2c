//! Idle detection: the agent samples each running workspace every few
//! seconds (`[idle] sample_seconds`) and a pure detector per workspace turns
//! the samples into a verdict, awake with reasons or idle since when. The
//! verdict is part of the workspace's status; the coordinator decides what
//! to do with it (warn, then stop), as its tier's policy says.

pub mod detector;
pub mod sample;

pub use detector::{Detector, Limits, Verdict};
