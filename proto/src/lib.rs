//! Berth's wire messages and the framing they travel in.
//!
//! Every message is a protobuf (prost) preceded by its length as a 4-byte
//! big-endian integer. The same framing is used on the agent's local control
//! socket and on QUIC streams between agent and coordinator.
#![forbid(unsafe_code)]

pub mod frame;

/// Messages between a client (local tool or coordinator) and an agent.
pub mod agent {
    #![allow(missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/berth.agent.v1.rs"));
}

pub use frame::{read_frame, write_frame, FrameError, MAX_FRAME};
