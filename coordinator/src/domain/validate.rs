//! Checks of user input, each failing with a stable code (422).

use crate::error::{Error, Result};

/// A DNS label of at most `max` characters: `[a-z0-9]([a-z0-9-]*[a-z0-9])?`.
fn dns_label(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A workspace name: 1 to 40 of a-z, 0-9 and "-", not starting or ending with "-".
pub fn workspace_name(s: &str) -> Result<()> {
    if dns_label(s, 40) {
        Ok(())
    } else {
        Err(Error::invalid(
            "invalid_name",
            format!("invalid workspace name {s:?}: use 1 to 40 of a-z, 0-9 and '-', not starting or ending with '-'"),
        ))
    }
}

/// A tier name: a DNS label of at most 32 characters.
pub fn tier_name(s: &str) -> std::result::Result<(), String> {
    match dns_label(s, 32) {
        true => Ok(()),
        false => Err(format!(
            "invalid tier name {s:?}: use 1 to 32 of a-z, 0-9 and '-'"
        )),
    }
}

/// A node id: a DNS label of at most 63 characters.
pub fn node_id(s: &str) -> Result<()> {
    if dns_label(s, 63) {
        Ok(())
    } else {
        Err(Error::invalid(
            "invalid_node_id",
            format!("invalid node id {s:?}: use 1 to 63 of a-z, 0-9 and '-'"),
        ))
    }
}

/// A user name: 1 to 64 of a-z, 0-9, '-', '_', '.', '@'.
pub fn user_name(s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"-_.@".contains(&c));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "invalid_user",
            format!("invalid user name {s:?}: use 1 to 64 of a-z, 0-9, '-', '_', '.', '@'"),
        ))
    }
}

/// An image reference: host[:port]/repository[:tag|@digest], printable, no spaces.
pub fn image(s: &str) -> Result<()> {
    berth_proto::image_ref::Reference::parse(s)
        .map(|_| ())
        .map_err(|e| Error::invalid("invalid_image", e.to_string()))
}

/// Pattern of a node label's name (what `label` accepts).
pub const LABEL_KEY: &str = "^[A-Za-z0-9]([A-Za-z0-9._/-]{0,251}[A-Za-z0-9])?$";
/// Pattern of a node label's value (what `label` accepts); may be empty.
pub const LABEL_VALUE: &str = "^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$";

/// A node label `k=v`, as in a node selector: a name of 1 to 253 of
/// `A-Za-z0-9._/-` and a value of at most 63 of `A-Za-z0-9._-`, each starting
/// and ending alphanumeric.
pub fn label(k: &str, v: &str) -> Result<()> {
    fn ok(s: &str, max: usize, extra: &[u8]) -> bool {
        let b = s.as_bytes();
        !b.is_empty()
            && b.len() <= max
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
    }
    if ok(k, 253, b"._/-") && (v.is_empty() || ok(v, 63, b"._-")) {
        Ok(())
    } else {
        Err(Error::invalid(
            "invalid_node_selector",
            format!("invalid label {k:?}={v:?}: names of 1 to 253 of A-Za-z0-9._/-, values of at most 63 of A-Za-z0-9._-, alphanumeric at both ends"),
        ))
    }
}

/// An environment variable name.
pub fn env_key(k: &str) -> Result<()> {
    let b = k.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 256
        && !b[0].is_ascii_digit()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "invalid_env",
            format!("invalid environment variable name {k:?}"),
        ))
    }
}

/// Most bytes of a file API path.
pub const FILE_PATH_MAX: usize = 4096;

/// A file API path, relative to /workspace: `/`-separated names, empty and
/// `.` parts dropped; `..`, NUL and names over 255 bytes refused
/// (`invalid_path`). "" is /workspace itself. Symlinks are the agent's to
/// refuse: it resolves every path beneath /workspace.
pub fn file_path(s: &str) -> Result<String> {
    let bad = |why: &str| Error::bad_request("invalid_path", format!("invalid path {s:?}: {why}"));
    if s.len() > FILE_PATH_MAX {
        return Err(bad("longer than 4096 bytes"));
    }
    if s.contains('\0') {
        return Err(bad("a NUL byte"));
    }
    let mut parts = Vec::new();
    for part in s.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(bad("`..` is not allowed")),
            p if p.len() > 255 => return Err(bad("a name longer than 255 bytes")),
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "dev-1", "x0"] {
            assert!(workspace_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", &"a".repeat(41), "a b", "ä"] {
            assert_eq!(
                workspace_name(bad).unwrap_err().code,
                "invalid_name",
                "{bad}"
            );
        }
        assert!(node_id(&"n".repeat(63)).is_ok());
        assert!(node_id(&"n".repeat(64)).is_err());
    }

    #[test]
    fn labels() {
        assert!(label("zone", "eu-1").is_ok());
        assert!(label("berth.dev/gpu", "").is_ok());
        for (k, v) in [
            ("", "x"),
            ("-a", "x"),
            ("a", "-x"),
            ("a b", "x"),
            ("a", "x/y"),
            ("ä", "x"),
        ] {
            assert!(label(k, v).is_err(), "{k}={v}");
        }
        assert!(label(&"k".repeat(254), "").is_err());
        assert!(label("k", &"v".repeat(64)).is_err());
    }

    #[test]
    fn images_and_env() {
        assert!(image("127.0.0.1:5000/tiny:latest").is_ok());
        for bad in ["", "tiny", "/x", "a b/c", "x/", "127.0.0.1:5000/UPPER::x"] {
            assert!(image(bad).is_err(), "{bad}");
        }
        assert!(env_key("PATH_2").is_ok());
        for bad in ["", "1A", "A-B", "A=B"] {
            assert!(env_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn file_paths_stay_relative_and_never_climb() {
        assert_eq!(file_path("/a//./b/").unwrap(), "a/b");
        assert_eq!(file_path("").unwrap(), "");
        for bad in ["../etc/passwd", "a/../../b", "a/..", "a\0b"] {
            assert_eq!(file_path(bad).unwrap_err().code, "invalid_path", "{bad}");
        }
        assert!(file_path(&"x".repeat(256)).is_err());
        assert!(file_path(&"x/".repeat(2100)).is_err());
    }
}
