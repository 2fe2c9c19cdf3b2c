//! The coordinator's certificate authority: node certificates from CSRs,
//! the coordinator's own server certificate, join tokens, and the rustls
//! configurations of both ends of the link.
//!
//! Identity of a node = the DNS SAN `<node-id>.node.berth` of a certificate
//! this CA signed. The coordinator's server certificate always carries the
//! logical name [`SERVER_NAME`], whatever address an agent dials, and its
//! chain includes the CA so a joining agent can check the CA against the
//! fingerprint in its join token.

use crate::error::Error;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

use berth_proto::tls::provider;
pub use berth_proto::tls::{
    fingerprint, hash_secret, pem_to_der, JoinToken, NODE_SAN_SUFFIX, SERVER_NAME,
};

/// A CA certificate and its key, both PEM.
#[derive(Clone)]
pub struct Ca {
    pub cert_pem: String,
    key: Arc<KeyPair>,
    issuer: Arc<rcgen::Certificate>,
    der: CertificateDer<'static>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

/// A certificate issued to a node.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub not_after_unix: i64,
}

fn pki_err(e: impl std::fmt::Display) -> Error {
    Error::internal(format!("pki: {e}"))
}

impl Ca {
    /// A new CA (ECDSA P-256, ten years).
    pub fn generate() -> Result<(String, String), Error> {
        let key = KeyPair::generate().map_err(pki_err)?;
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(pki_err)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Berth cluster CA");
        p.distinguished_name = dn;
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + time::Duration::days(3650);
        let cert = p.self_signed(&key).map_err(pki_err)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Loads a CA from its PEM certificate and key.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Self, Error> {
        let key = KeyPair::from_pem(key_pem).map_err(pki_err)?;
        let params = CertificateParams::from_ca_cert_pem(cert_pem).map_err(pki_err)?;
        // Re-signing the parsed parameters gives an issuer object with the
        // same subject and key: what signing needs. The served CA stays the original.
        let issuer = params.self_signed(&key).map_err(pki_err)?;
        Ok(Self {
            cert_pem: cert_pem.to_string(),
            der: pem_to_der(cert_pem).map_err(pki_err)?,
            key: Arc::new(key),
            issuer: Arc::new(issuer),
        })
    }

    /// SHA-256 of the CA certificate (what join tokens pin).
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.der)
    }

    /// The CA certificate, DER.
    pub fn der(&self) -> CertificateDer<'static> {
        self.der.clone()
    }

    /// Signs a node's CSR: the only name in the result is the node's SAN,
    /// usable for client authentication only, valid `lifetime` from now
    /// (backdated five minutes for clock skew).
    pub fn sign_node(
        &self,
        node_id: &str,
        csr_der: &[u8],
        lifetime: Duration,
    ) -> Result<Issued, Error> {
        // Backdated for clocks a little behind ours, by at most a quarter
        // of the lifetime: agents renew at two thirds of the whole span, so
        // a fixed 5 minutes would make a short-lived certificate renew at
        // every heartbeat.
        let now = OffsetDateTime::now_utc();
        let backdate = (lifetime / 4).min(Duration::from_secs(300));
        self.sign_node_between(node_id, csr_der, now - backdate, now + lifetime)
    }

    /// Like `sign_node` with an explicit validity window (tests make expired ones).
    pub fn sign_node_between(
        &self,
        node_id: &str,
        csr_der: &[u8],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Issued, Error> {
        let der = rustls::pki_types::CertificateSigningRequestDer::from(csr_der.to_vec());
        let mut csr = CertificateSigningRequestParams::from_der(&der)
            .map_err(|e| Error::invalid("bad_csr", format!("the CSR does not parse: {e}")))?;
        let san = format!("{node_id}{NODE_SAN_SUFFIX}");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node_id);
        let p = &mut csr.params;
        p.distinguished_name = dn;
        p.subject_alt_names = vec![SanType::DnsName(san.try_into().map_err(pki_err)?)];
        p.is_ca = IsCa::NoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.not_before = not_before;
        p.not_after = not_after;
        p.serial_number = Some(rand::random::<u64>().into());
        let cert = csr.signed_by(&self.issuer, &self.key).map_err(pki_err)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            not_after_unix: not_after.unix_timestamp(),
        })
    }

    /// A server certificate for the coordinator, with its key (PKCS#8 DER).
    pub fn server_cert(
        &self,
        extra_names: &[String],
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Error> {
        let key = KeyPair::generate().map_err(pki_err)?;
        let mut names = vec![SERVER_NAME.to_string()];
        names.extend(extra_names.iter().cloned());
        let mut p = CertificateParams::new(names).map_err(pki_err)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, SERVER_NAME);
        p.distinguished_name = dn;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::minutes(5);
        p.not_after = now + time::Duration::days(30);
        let cert = p
            .signed_by(&key, &self.issuer, &self.key)
            .map_err(pki_err)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((vec![cert.der().clone(), self.der.clone()], key_der))
    }
}

/// TLS of the link endpoint: TLS 1.3, our chain, client certificates of
/// our CA verified when presented (a join connection presents none; a link
/// connection without one is refused after the handshake).
pub fn server_tls(
    ca: &Ca,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: &[&[u8]],
) -> Result<rustls::ServerConfig, Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der()).map_err(pki_err)?;
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()
            .map_err(pki_err)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(pki_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(pki_err)?;
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_a_csr_with_the_node_san_only() {
        let (cert, key) = Ca::generate().unwrap();
        let ca = Ca::load(&cert, &key).unwrap();
        let (_key, csr) = berth_proto::tls::node_csr("evil.node.berth-other").unwrap();
        let issued = ca
            .sign_node("node-1", &csr, Duration::from_secs(600))
            .unwrap();
        let der = pem_to_der(&issued.cert_pem).unwrap();
        assert_eq!(
            berth_proto::tls::node_id_of(&der).as_deref(),
            Some("node-1")
        );
        assert!(
            berth_proto::tls::not_after(&der).unwrap() > OffsetDateTime::now_utc().unix_timestamp()
        );
        // A CA loaded twice signs certificates the same root verifies.
        let again = Ca::load(&cert, &key).unwrap();
        assert_eq!(again.fingerprint(), ca.fingerprint());
    }

    #[test]
    fn refuses_a_garbage_csr() {
        let (cert, key) = Ca::generate().unwrap();
        let ca = Ca::load(&cert, &key).unwrap();
        let e = ca
            .sign_node("n", b"not a csr", Duration::from_secs(1))
            .unwrap_err();
        assert_eq!(e.code, "bad_csr");
    }
}
