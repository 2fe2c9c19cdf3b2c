//! Who may do what: API tokens and join tokens, users' SSH keys, and which
//! ports of a workspace have public previews.

use super::Service;
use crate::domain::workspace::WorkspaceRow;
use crate::error::{Error, Result};
use crate::pki::hash_secret;
use crate::store::{Principal, SshKeyRow};
use berth_proto::api::Role;

/// Most SSH keys a user may register.
const MAX_KEYS: usize = 100;

impl Service {
    /// Who the API token `token` belongs to (`unauthorized` if nobody).
    pub async fn principal(&self, token: &str) -> Result<Principal> {
        if !token.starts_with("bt_") || token.len() > 128 {
            return Err(Error::unauthorized("invalid token"));
        }
        self.inner
            .store
            .principal(&hash_secret(token))
            .await?
            .ok_or_else(|| Error::unauthorized("invalid token"))
    }

    /// Makes an API token for `user`; returns it (the only time it is seen).
    pub async fn create_api_token(&self, user: &str, role: Role) -> Result<String> {
        crate::domain::validate::user_name(user)?;
        crate::auth::create_api_token(&self.inner.store, user, role == Role::Admin).await
    }

    /// Makes a join token valid `ttl_seconds` for `uses` nodes, by `by`.
    pub async fn create_join_token(
        &self,
        by: &str,
        ttl_seconds: u64,
        uses: u32,
    ) -> Result<(String, i64)> {
        crate::auth::create_join_token(
            &self.inner.store,
            &self.inner.ca_fingerprint,
            by,
            ttl_seconds,
            uses,
            self.now(),
        )
        .await
    }

    /// Revokes the join token with this id (or the token itself).
    pub async fn revoke_join_token(&self, id_or_token: &str) -> Result<()> {
        let id = berth_proto::tls::JoinToken::parse(id_or_token)
            .map(|t| t.id)
            .unwrap_or_else(|_| id_or_token.to_string());
        match self.inner.store.revoke_join_token(&id, self.now()).await? {
            true => Ok(()),
            false => Err(
                crate::error::Error::not_found(format!("no join token {id:?}"))
                    .with_code("join_token_not_found"),
            ),
        }
    }

    /// Registers an SSH public key line of `owner`, named `name` (default:
    /// its comment).
    pub async fn add_ssh_key(
        &self,
        owner: &str,
        line: &str,
        name: Option<String>,
    ) -> Result<SshKeyRow> {
        let key = parse_public_key(line)?;
        let name = match name {
            Some(n) => {
                if n.len() > 100 || !n.chars().all(|c| (' '..='~').contains(&c)) {
                    return Err(Error::invalid(
                        "invalid_name",
                        "a key name is at most 100 printable ASCII characters",
                    ));
                }
                n
            }
            None => key
                .comment()
                .as_str_lossy()
                .chars()
                .filter(|c| (' '..='~').contains(c))
                .take(100)
                .collect(),
        };
        if self.inner.store.ssh_keys(owner).await?.len() >= MAX_KEYS {
            return Err(Error::conflict(
                "too_many_ssh_keys",
                format!("at most {MAX_KEYS} SSH keys per user"),
            ));
        }
        let mut bare = key.clone();
        bare.set_comment("");
        let row = SshKeyRow {
            id: format!("key-{:016x}", rand::random::<u64>()),
            owner: owner.to_string(),
            name,
            public_key: bare
                .to_openssh()
                .map_err(|e| Error::internal(e.to_string()))?,
            fingerprint: key.fingerprint(russh::keys::HashAlg::Sha256).to_string(),
            created_at_ms: self.now(),
        };
        self.inner.store.add_ssh_key(&row).await?;
        Ok(row)
    }

    /// `owner`'s SSH keys.
    pub async fn ssh_keys(&self, owner: &str) -> Result<Vec<SshKeyRow>> {
        self.inner.store.ssh_keys(owner).await
    }

    /// Removes one of `owner`'s SSH keys, by id or fingerprint.
    pub async fn delete_ssh_key(&self, owner: &str, key: &str) -> Result<()> {
        if self.inner.store.delete_ssh_key(owner, key).await? {
            Ok(())
        } else {
            Err(Error::not_found(format!("no SSH key {key:?}")))
        }
    }

    /// Makes a port's preview public (anyone with the link) or owner-only.
    pub async fn set_port_public(&self, w: &WorkspaceRow, port: u16, public: bool) -> Result<()> {
        self.inner.store.set_port_public(&w.id, port, public).await
    }

    /// The ports of a workspace whose previews are public.
    pub async fn public_ports(&self, w: &WorkspaceRow) -> Result<Vec<u16>> {
        self.inner.store.public_ports(&w.id).await
    }

    /// Whether a port's preview is public.
    pub async fn port_is_public(&self, w: &WorkspaceRow, port: u16) -> Result<bool> {
        self.inner.store.port_is_public(&w.id, port).await
    }

    /// The SSH host key of a workspace's node, and the node.
    pub async fn ssh_host_key(&self, w: &WorkspaceRow) -> Result<(String, String)> {
        let not_placed = || {
            Error::conflict(
                "not_placed",
                format!("workspace {} is not on a node yet", w.name),
            )
        };
        let node = w.node.clone().ok_or_else(not_placed)?;
        let n = self.inner.store.node(&node).await?.ok_or_else(not_placed)?;
        if n.ssh_host_key.is_empty() {
            return Err(not_placed());
        }
        Ok((node, n.ssh_host_key))
    }
}

/// Parses one OpenSSH public key line; weak or unknown key types are refused.
fn parse_public_key(line: &str) -> Result<russh::keys::PublicKey> {
    use russh::keys::ssh_key::public::KeyData;
    let bad = |why: String| Error::invalid("invalid_ssh_key", why);
    let line = line.trim();
    if line.is_empty() || line.contains('\n') || line.contains('\0') {
        return Err(bad("give exactly one OpenSSH public key line".into()));
    }
    let key = russh::keys::PublicKey::from_openssh(line)
        .map_err(|e| bad(format!("not an OpenSSH public key: {e}")))?;
    match key.key_data() {
        KeyData::Ed25519(_)
        | KeyData::Ecdsa(_)
        | KeyData::SkEd25519(_)
        | KeyData::SkEcdsaSha2NistP256(_) => {}
        KeyData::Rsa(r) => {
            let bits = r.key_size();
            if bits < 2048 {
                return Err(bad(format!(
                    "an RSA key of {bits} bits is too weak (2048 at least)"
                )));
            }
        }
        other => {
            return Err(bad(format!(
                "key type {} is not accepted",
                other.algorithm()
            )))
        }
    }
    Ok(key)
}
