//! TLS of the agent ↔ coordinator link, shared by both ends: node
//! identities (SAN `<node-id>.node.berth`), CSRs, join tokens that pin the
//! cluster CA, and the agent's rustls client configurations.

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The name the coordinator's certificate is issued for and agents verify.
pub const SERVER_NAME: &str = "berth-coordinator";
/// Suffix of a node's DNS SAN.
pub const NODE_SAN_SUFFIX: &str = ".node.berth";

/// The rustls crypto provider both ends use.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// SHA-256 of DER bytes, lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Decodes the first certificate of a PEM text.
pub fn pem_to_der(pem: &str) -> Result<CertificateDer<'static>, String> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| format!("bad certificate PEM: {e}"))
}

pub fn private_key(pem: &str) -> Result<PrivateKeyDer<'static>, String> {
    use rustls::pki_types::pem::PemObject;
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| format!("bad key PEM: {e}"))
}

/// The node id in a peer certificate's DNS SAN, if it has exactly one of ours.
pub fn node_id_of(cert: &[u8]) -> Option<String> {
    let (_, c) = x509_parser::parse_x509_certificate(cert).ok()?;
    let san = c.subject_alternative_name().ok()??;
    let mut ids = san.value.general_names.iter().filter_map(|n| match n {
        x509_parser::extensions::GeneralName::DNSName(d) => d.strip_suffix(NODE_SAN_SUFFIX),
        _ => None,
    });
    let id = ids.next()?;
    ids.next().is_none().then(|| id.to_string())
}

/// Validity end of a certificate, Unix seconds.
pub fn not_after(cert: &[u8]) -> Option<i64> {
    let (_, c) = x509_parser::parse_x509_certificate(cert).ok()?;
    Some(c.validity().not_after.timestamp())
}

/// A node's key pair and a CSR for it (made on the agent).
pub fn node_csr(node_id: &str) -> Result<(String, Vec<u8>), String> {
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut p = CertificateParams::new(vec![format!("{node_id}{NODE_SAN_SUFFIX}")])
        .map_err(|e| e.to_string())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, node_id);
    p.distinguished_name = dn;
    let csr = p.serialize_request(&key).map_err(|e| e.to_string())?;
    Ok((key.serialize_pem(), csr.der().to_vec()))
}

/// TLS of an agent's link connection: the cluster CA as the only root, the
/// node's certificate as client identity.
pub fn client_tls(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    alpn: &[u8],
) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pem_to_der(ca_pem)?).map_err(|e| e.to_string())?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![pem_to_der(cert_pem)?], private_key(key_pem)?)
        .map_err(|e| e.to_string())?;
    cfg.alpn_protocols = vec![alpn.to_vec()];
    Ok(cfg)
}

/// TLS of a join connection: no client certificate; the server's chain must
/// contain a CA whose SHA-256 is `ca_fingerprint`, and verify against it.
pub fn join_tls(ca_fingerprint: &str, alpn: &[u8]) -> Result<rustls::ClientConfig, String> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(CaVerifier {
            trust: Trust::Pinned(ca_fingerprint.to_ascii_lowercase()),
            provider: provider(),
        }))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    Ok(cfg)
}

/// A client TLS configuration that accepts any server and records the
/// chain it presents: for showing a CA's fingerprint to a person before it
/// is pinned. Nothing may be sent on a connection made with it.
pub fn witness_tls() -> (
    rustls::ClientConfig,
    Arc<std::sync::Mutex<Vec<CertificateDer<'static>>>>,
) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the provider's versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(CaVerifier {
            trust: Trust::Witness(seen.clone()),
            provider: provider(),
        }))
        .with_no_client_auth();
    (cfg, seen)
}

/// What a server's chain is checked against.
#[derive(Debug)]
enum Trust {
    /// A CA in the chain with this SHA-256, which the leaf must verify against.
    Pinned(String),
    /// Nothing: the chain is recorded here.
    Witness(Arc<std::sync::Mutex<Vec<CertificateDer<'static>>>>),
}

#[derive(Debug)]
struct CaVerifier {
    trust: Trust,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for CaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fingerprint_wanted = match &self.trust {
            Trust::Witness(seen) => {
                *seen.lock().unwrap_or_else(|p| p.into_inner()) = std::iter::once(end_entity)
                    .chain(intermediates)
                    .map(|c| c.clone().into_owned())
                    .collect();
                return Ok(ServerCertVerified::assertion());
            }
            Trust::Pinned(f) => f,
        };
        let ca = intermediates
            .iter()
            .find(|c| fingerprint(c) == *fingerprint_wanted)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the coordinator's CA does not match the join token's fingerprint".into(),
                )
            })?;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(ca.clone().into_owned())
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A DER certificate as PEM.
pub fn der_to_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// A join token as the admin sees it: `<id>.<secret>.<ca-sha256>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub id: String,
    pub secret: String,
    pub ca_fingerprint: String,
}

impl JoinToken {
    /// A fresh token for the CA with `ca_fingerprint`.
    pub fn generate(ca_fingerprint: &str) -> Self {
        Self {
            id: hex::encode(rand::random::<[u8; 6]>()),
            secret: hex::encode(rand::random::<[u8; 20]>()),
            ca_fingerprint: ca_fingerprint.to_string(),
        }
    }

    /// Parses the text form.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut parts = s.trim().split('.');
        let (Some(id), Some(secret), Some(fp), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("a join token has the form <id>.<secret>.<ca-sha256>".into());
        };
        let hexy = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !hexy(id, 12) || !hexy(secret, 40) || !hexy(fp, 64) {
            return Err("a join token has the form <id>.<secret>.<ca-sha256> (hex)".into());
        }
        Ok(Self {
            id: id.into(),
            secret: secret.to_ascii_lowercase(),
            ca_fingerprint: fp.to_ascii_lowercase(),
        })
    }

    /// What the store keeps instead of the secret.
    pub fn secret_hash(&self) -> String {
        hash_secret(&self.secret)
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.id, self.secret, self.ca_fingerprint)
    }
}

/// SHA-256 of a secret, hex: tokens are stored only in this form.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_tokens_round_trip_and_reject_garbage() {
        let t = JoinToken::generate(&"ab".repeat(32));
        assert_eq!(JoinToken::parse(&t.to_string()).unwrap(), t);
        for bad in ["", "a.b.c", "x.y", &format!("{}.{}.zz", t.id, t.secret)] {
            assert!(JoinToken::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_csr_names_the_node() {
        let (key, csr) = node_csr("node-1").unwrap();
        assert!(key.contains("PRIVATE KEY"));
        assert!(!csr.is_empty());
    }
}
