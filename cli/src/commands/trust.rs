//! Trusting an HTTPS coordinator at `berth login`. A certificate the usual
//! public roots vouch for needs nothing. One issued by the coordinator's own
//! CA is trusted only when the person logging in gives that CA's SHA-256
//! fingerprint (`--ca-fingerprint`, from the coordinator's admin) or the CA
//! itself (`--ca-file`); the CA is then pinned in the config file for that
//! URL. Never trusted on first sight: without either, login shows the
//! fingerprint it found and saves nothing.

use crate::client::Client;
use crate::config::Resolved;
use crate::{fail, Failure};
use berth_proto::tls::{der_to_pem, fingerprint, witness_tls};
use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use std::time::Duration;

/// `r` with the CA to pin for its URL, when one is needed and given.
pub(crate) async fn establish(mut r: Resolved, want: Option<&str>) -> Result<Resolved, Failure> {
    if !r.url.starts_with("https://") {
        if want.is_some() {
            return Err(fail("usage", "--ca-fingerprint is for an https:// URL"));
        }
        if !loopback(&r.url) {
            eprintln!(
                "berth: warning: {} is plain HTTP: the token crosses the network unencrypted",
                r.url
            );
        }
        return Ok(r);
    }
    let Some(want) = want else {
        if r.ca.is_some() {
            return Ok(r);
        }
        // Whether the usual roots vouch for it: any answer says yes (the
        // token is checked next); a refused certificate says no.
        let plain = Client::new(r.url.clone(), None, None)?;
        return match plain.get::<serde_json::Value>("/v1/whoami").await {
            Err(e) if e.code == "bad_certificate" => {
                let chain = presented(&r.url).await?;
                let found = chain.last().map(|c| fingerprint(c)).unwrap_or_default();
                Err(fail(
                    "untrusted_ca",
                    format!(
                        "{}'s certificate does not chain to a CA this machine trusts. Its CA's \
                         SHA-256 fingerprint is {found}. If the coordinator's admin gave you that \
                         fingerprint (the coordinator logs it at start; `berth-coordinator admin \
                         ca` prints it), run again with --ca-fingerprint {found}. Nothing saved.",
                        r.url
                    ),
                ))
            }
            _ => Ok(r),
        };
    };
    let want = want.replace(':', "").to_ascii_lowercase();
    let chain = presented(&r.url).await?;
    let ca = chain
        .iter()
        .skip(1)
        .find(|c| fingerprint(c) == want)
        .ok_or_else(|| {
            let found: Vec<String> = chain.iter().skip(1).map(|c| fingerprint(c)).collect();
            fail(
                "ca_mismatch",
                format!(
                    "{} presents no CA with fingerprint {want} (it presents {}): nothing saved",
                    r.url,
                    match found.is_empty() {
                        true => "none".to_string(),
                        false => found.join(", "),
                    }
                ),
            )
        })?;
    // The requests that follow trust this CA only, and check the
    // certificate itself against it (name, dates, signature).
    r.ca = Some(der_to_pem(ca));
    Ok(r)
}

/// Whether a URL's host is this machine.
fn loopback(url: &str) -> bool {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host().map(|h| h.to_owned()))
        .is_some_and(|h| match h {
            url::Host::Domain(d) => d == "localhost",
            url::Host::Ipv4(a) => a.is_loopback(),
            url::Host::Ipv6(a) => a.is_loopback(),
        })
}

/// The certificates the server at `url` presents, leaf first (seen, not
/// trusted: nothing is sent on this connection).
async fn presented(url: &str) -> Result<Vec<CertificateDer<'static>>, Failure> {
    let bad = |m: String| fail("unreachable", format!("{url}: {m}"));
    let u = reqwest::Url::parse(url).map_err(|e| bad(e.to_string()))?;
    let host = u
        .host_str()
        .ok_or_else(|| bad("no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = u.port_or_known_default().unwrap_or(443);
    let name = ServerName::try_from(host.clone()).map_err(|e| bad(e.to_string()))?;
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|_| bad("no connection within 10 s".into()))?
    .map_err(|e| bad(e.to_string()))?;
    let (cfg, seen) = witness_tls();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| bad(format!("TLS: {e}")))?;
    let chain = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(chain)
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_hosts_are_this_machine_only() {
        for (url, want) in [
            ("http://127.0.0.1:8080", true),
            ("http://localhost:1", true),
            ("http://[::1]:8080", true),
            ("http://10.0.0.1:8080", false),
            ("http://berth.example", false),
        ] {
            assert_eq!(super::loopback(url), want, "{url}");
        }
    }
}
