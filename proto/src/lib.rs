//! Berth's wire messages and the framing they travel in.
//!
//! Every message is a protobuf (prost) preceded by its length as a 4-byte
//! big-endian integer. The same framing is used on the agent's local control
//! socket and on QUIC streams between agent and coordinator.
#![forbid(unsafe_code)]

pub mod api;
pub mod codes;
pub mod exec_stream;
pub mod files;
pub mod frame;
pub mod image_ref;
pub mod net;
pub mod tls;
pub mod units;

/// Generated code, nested as the protobuf packages are (so cross-package references resolve).
pub mod berth {
    /// `berth.agent.*`
    pub mod agent {
        /// Messages between a client (local tool or coordinator) and an agent.
        pub mod v1 {
            #![allow(missing_docs, clippy::all)]
            include!(concat!(env!("OUT_DIR"), "/berth.agent.v1.rs"));

            impl std::fmt::Debug for GitCredential {
                fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.debug_struct("GitCredential")
                        .field("username", &self.username)
                        .field(
                            "token",
                            &if self.token.is_empty() {
                                ""
                            } else {
                                "<redacted>"
                            },
                        )
                        .finish()
                }
            }

            impl std::fmt::Debug for Secret {
                fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.debug_struct("Secret")
                        .field("name", &self.name)
                        .field("value", &format_args!("<{} bytes>", self.value.len()))
                        .field("file", &self.file)
                        .finish()
                }
            }
        }
    }
    /// `berth.link.*`
    pub mod link {
        /// Messages between an agent and the coordinator on the QUIC link.
        pub mod v1 {
            #![allow(missing_docs, clippy::all)]
            include!(concat!(env!("OUT_DIR"), "/berth.link.v1.rs"));
        }
    }
}

pub use berth::agent::v1 as agent;
pub use berth::link::v1 as link;

/// The interactive shell of a workspace (SSH sessions, the web terminal):
/// bash if the image has it, else sh; a login shell, in /workspace.
pub fn login_shell() -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        "cd /workspace 2>/dev/null; if [ -x /bin/bash ]; then exec /bin/bash -l; else exec /bin/sh -l; fi"
            .into(),
    ]
}

/// ALPN of the mutual-TLS agent link.
pub const ALPN_LINK: &[u8] = b"berth/1";
/// ALPN of the join exchange (server-authenticated; the token authenticates the agent).
pub const ALPN_JOIN: &[u8] = b"berth-join/1";

pub use frame::{read_frame, write_frame, FrameError, MAX_FRAME};
