//! Image references such as `127.0.0.1:5000/team/app:1.0@sha256:…`: one
//! parser for the coordinator's API (which refuses a bad one at once) and the
//! agent (which pulls it).

/// Why a reference does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {reference:?}: {reason}")]
pub struct RefError {
    pub reference: String,
    pub reason: String,
}

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// host[:port] of the registry.
    pub registry: String,
    /// Repository path inside the registry.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Reference {
    /// Parses a reference; the registry part is required (Berth never guesses Docker Hub).
    pub fn parse(s: &str) -> Result<Self, RefError> {
        let bad = |reason: &str| RefError {
            reference: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() || s.len() > 512 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("empty, too long or containing whitespace"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(d.to_string())),
            None => (s, None),
        };
        if let Some(d) = &digest {
            let hex = d
                .strip_prefix("sha256:")
                .ok_or_else(|| bad("digest must be sha256:<hex>"))?;
            if hex.len() != 64
                || !hex
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            {
                return Err(bad("digest must be sha256 with 64 lowercase hex digits"));
            }
        }
        let (registry, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("must name a registry: host[:port]/repository[:tag]"))?;
        if !(registry.contains('.') || registry.contains(':') || registry == "localhost") {
            return Err(bad("must name a registry: host[:port]/repository[:tag]"));
        }
        let (repository, tag) = match path.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, Some(t.to_string())),
            _ => (path, None),
        };
        let repo_ok = !repository.is_empty()
            && repository.split('/').all(|c| {
                !c.is_empty()
                    && c.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
            });
        if !repo_ok {
            return Err(bad("repository must be lowercase path components"));
        }
        if let Some(t) = &tag {
            if t.is_empty()
                || t.len() > 128
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                return Err(bad("invalid tag"));
            }
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".into())
        } else {
            tag
        };
        Ok(Self {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag,
            digest,
        })
    }

    /// What to ask the registry for: the digest if pinned, else the tag.
    pub fn manifest_ref(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// Whether the registry is on this machine (served over plain HTTP).
    pub fn is_loopback(&self) -> bool {
        let host = self
            .registry
            .rsplit_once(':')
            .map_or(self.registry.as_str(), |(h, _)| h);
        host == "localhost" || host.starts_with("127.") || host == "[::1]"
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let r = Reference::parse("127.0.0.1:5000/tiny").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "tiny", Some("latest"))
        );
        assert!(r.is_loopback());
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("reg.example:443/a/b:1.0@{d}")).unwrap();
        assert_eq!(r.repository, "a/b");
        assert_eq!(r.manifest_ref(), d);
        assert_eq!(r.to_string(), format!("reg.example:443/a/b:1.0@{d}"));
        assert!(!r.is_loopback());
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "tiny",
            "tiny:latest",
            "127.0.0.1:5000/",
            "127.0.0.1:5000/Tiny",
            "127.0.0.1:5000/a:",
            "127.0.0.1:5000/a@sha256:xyz",
            "127.0.0.1:5000/a b",
            "127.0.0.1:5000//a",
            "127.0.0.1:5000/a:t$g",
            "127.0.0.1:5000/UPPER::x",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }
}
