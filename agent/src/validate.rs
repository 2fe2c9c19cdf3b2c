//! Pure validation of what a caller asks for, before anything is touched.

use crate::error::{AgentError, Result};
use berth_proto::agent::WorkspaceSpec;

/// Smallest volume we make: ext4 needs room for its own metadata.
pub const MIN_DISK_BYTES: u64 = 16 * 1024 * 1024;
/// Smallest memory limit we accept; below this the runtime itself cannot start.
pub const MIN_MEMORY_BYTES: u64 = 8 * 1024 * 1024;

/// Checks a workspace name: a DNS label of 1 to 40 characters, so that the
/// names derived from it (veth, cgroup, snapshot) stay within kernel limits.
pub fn name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(AgentError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() || name.len() > 40 {
        return bad("must be 1 to 40 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad("only a-z, 0-9 and '-' are allowed");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return bad("must start and end with a letter or digit");
    }
    Ok(())
}

/// Checks the resources of a spec.
pub fn spec(spec: &WorkspaceSpec) -> Result<()> {
    name(&spec.name)?;
    if !spec.hostname.is_empty() {
        // The same rules: a DNS label (the prompt shows it).
        name(&spec.hostname)?;
    }
    let bad = |m: String| Err(AgentError::InvalidResources(m));
    if spec.cpu_millis == 0 {
        return bad("cpu_millis must be > 0".into());
    }
    if spec.memory_bytes < MIN_MEMORY_BYTES {
        return bad(format!("memory_bytes must be >= {MIN_MEMORY_BYTES}"));
    }
    if spec.pids == 0 {
        return bad("pids must be > 0".into());
    }
    if spec.disk_bytes < MIN_DISK_BYTES {
        return bad(format!("disk_bytes must be >= {MIN_DISK_BYTES}"));
    }
    if spec.image.trim().is_empty() {
        return Err(AgentError::InvalidImage {
            reference: spec.image.clone(),
            reason: "empty".into(),
        });
    }
    for cidr in &spec.egress_allow {
        // Metadata (169.254/16) stays refused whatever is listed: its drop
        // rule comes first.
        berth_proto::net::parse_ipv4_cidr(cidr)
            .map_err(|e| AgentError::InvalidRequest(format!("egress_allow: {e}")))?;
    }
    if spec.egress_allow.len() > 64 {
        return Err(AgentError::InvalidRequest(
            "egress_allow: at most 64 ranges".into(),
        ));
    }
    for key in spec.env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(AgentError::InvalidRequest(format!(
                "invalid environment variable name {key:?}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> WorkspaceSpec {
        WorkspaceSpec {
            name: "ws-1".into(),
            image: "127.0.0.1:5000/tiny:latest".into(),
            cpu_millis: 500,
            memory_bytes: 64 << 20,
            pids: 64,
            disk_bytes: 64 << 20,
            ..Default::default()
        }
    }

    #[test]
    fn names() {
        for ok in ["a", "ws-1", "0abc", &"a".repeat(40)] {
            assert!(name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a_b",
            "a.b",
            "a/b",
            &"a".repeat(41),
            "ü",
        ] {
            let err = name(bad).unwrap_err();
            assert_eq!(err.code(), "invalid_name", "{bad}");
        }
    }

    #[test]
    fn resources() {
        assert!(spec(&good()).is_ok());
        type Mutation = fn(&mut WorkspaceSpec);
        let cases: [(Mutation, &str); 6] = [
            (|s| s.cpu_millis = 0, "invalid_resources"),
            (|s| s.memory_bytes = 0, "invalid_resources"),
            (|s| s.pids = 0, "invalid_resources"),
            (|s| s.disk_bytes = 1, "invalid_resources"),
            (|s| s.image = " ".into(), "invalid_image"),
            (
                |s| {
                    s.env.insert("A=B".into(), "x".into());
                },
                "invalid_request",
            ),
        ];
        for (mutate, code) in cases {
            let mut s = good();
            mutate(&mut s);
            assert_eq!(spec(&s).unwrap_err().code(), code);
        }
    }
}
