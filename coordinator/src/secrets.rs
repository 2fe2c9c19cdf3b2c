//! Secrets the coordinator keeps for users (git tokens), sealed with
//! AES-256-GCM under a key that lives outside the store: a file, made on
//! first start (`--secrets-key-file`, default `<data-dir>/secrets.key`,
//! mode 0600). Coordinators sharing one PostgreSQL must be given the same
//! file; the store keeps a value sealed with the first key used, so a
//! coordinator with another one refuses to start instead of failing a
//! user's clone later. Each sealed value is bound to what it belongs to
//! (the associated data): moved to another row, it does not open.

use crate::error::{Error, Result};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use std::path::Path;

/// What a sealed value starts with (the format's version).
const PREFIX: &str = "v1:";
/// What the store's check value is bound to.
const CHECK: &[u8] = b"berth secrets check";

/// Seals and opens secrets with the coordinators' key.
#[derive(Clone)]
pub struct Sealer {
    cipher: Aes256Gcm,
    /// The key the audit log's chain is made with, derived from this one.
    audit_key: [u8; 32],
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer with a 32-byte key.
    pub fn new(key: [u8; 32]) -> Self {
        use hmac::Mac;
        let mut m = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&key)
            .expect("HMAC takes any key length");
        m.update(b"berth audit chain v1");
        Self {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key)),
            audit_key: m.finalize().into_bytes().into(),
        }
    }

    /// The key of the audit log's HMAC chain (one file outside the store
    /// holds both keys; neither opens with the other).
    pub fn audit_key(&self) -> [u8; 32] {
        self.audit_key
    }

    /// The key in `path` (64 hex digits), made there on first use.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bad = |e: &dyn std::fmt::Display| {
            Error::internal(format!("secrets key {}: {e}", path.display()))
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes = hex::decode(text.trim()).map_err(|e| bad(&e))?;
                let key: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| bad(&"not 32 bytes (64 hex digits)"))?;
                Ok(Self::new(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                berth_proto::files::write_private(path, hex::encode(key).as_bytes())
                    .map_err(|e| bad(&e))?;
                tracing::info!(path = %path.display(), "made the secrets key");
                Ok(Self::new(key))
            }
            Err(e) => Err(bad(&e)),
        }
    }

    /// Seals `secret`, bound to `context`.
    pub fn seal(&self, secret: &[u8], context: &[u8]) -> String {
        let nonce: [u8; 12] = rand::random();
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret,
                    aad: context,
                },
            )
            // AES-GCM fails only beyond 64 GiB per message.
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend(sealed);
        format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        )
    }

    /// Opens what `seal` made with the same key and context.
    pub fn open(&self, sealed: &str, context: &[u8]) -> Option<Vec<u8>> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(sealed.strip_prefix(PREFIX)?)
            .ok()?;
        if raw.len() < 12 {
            return None;
        }
        let (nonce, body) = raw.split_at(12);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: context,
                },
            )
            .ok()
    }

    /// The store's check value, made with this key.
    pub fn check_value(&self) -> String {
        self.seal(CHECK, CHECK)
    }

    /// Whether a check value was made with this key.
    pub fn matches(&self, check: &str) -> bool {
        self.open(check, CHECK).as_deref() == Some(CHECK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let a = Sealer::new([1; 32]);
        let b = Sealer::new([2; 32]);
        let s = a.seal(b"tok3n", b"alice\0git.example");
        assert!(!s.contains("tok3n"));
        assert_eq!(
            a.open(&s, b"alice\0git.example").as_deref(),
            Some(&b"tok3n"[..])
        );
        assert_eq!(a.open(&s, b"mallory\0git.example"), None);
        assert_eq!(b.open(&s, b"alice\0git.example"), None);
        assert_ne!(
            s,
            a.seal(b"tok3n", b"alice\0git.example"),
            "a fresh nonce each time"
        );
        assert!(a.matches(&a.check_value()));
        assert!(!b.matches(&a.check_value()));
        assert_eq!(a.open("v1:!!", b""), None);
        assert_eq!(a.open("plain", b""), None);
    }

    #[test]
    fn the_key_file_is_made_once_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("secrets.key");
        let a = Sealer::from_file(&p).unwrap();
        let b = Sealer::from_file(&p).unwrap();
        assert!(b.matches(&a.check_value()));
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&p, "abcd").unwrap();
        assert!(Sealer::from_file(&p).is_err());
    }
}
