//! Crash points for fault tests: when `BERTH_FAILPOINT` names a point, the
//! agent SIGKILLs itself there, exactly as `kill -9` at that step would.
//! Unset (always, outside tests), a point is one cached comparison.

use std::sync::OnceLock;

/// Every crash point of create / stop / delete, in the order they pass them
/// (tests/faults.rs kills the agent at each).
pub const POINTS: [&str; 11] = [
    "create:after_record",
    "create:after_snapshot",
    "create:after_volume",
    "create:mid_network",
    "create:after_netns",
    "create:after_container",
    "create:after_idmap",
    "create:before_reply",
    "stop:after_signal",
    "delete:after_mark",
    "delete:before_forget",
];

/// A start's crash point between its task starting and its CPU quota being
/// set (tests/limits.rs).
pub const START_BEFORE_QUOTA: &str = "start:before_quota";

/// Kills the process if `BERTH_FAILPOINT` equals `name`.
pub fn hit(name: &str) {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| std::env::var("BERTH_FAILPOINT").ok());
    if armed.as_deref() == Some(name) {
        tracing::error!(failpoint = name, "failpoint hit: killing the agent");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
    }
}
