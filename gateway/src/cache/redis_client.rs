//! The Redis client of the shared cache, from `cache_params`: plaintext, or TLS (rustls) with the
//! system's roots plus `ssl_ca_certs`, an optional client certificate, and, only when
//! `ssl_cert_reqs: none` says so, no verification at all (warned about at start).
//!
//! It must never put the password, the URL or a key file's contents in an error or a log line.

use super::redis_store::BadAddress;
use crate::config::cache_tls::{CertReqs, RedisTls};
use crate::config::CacheParams;
use base64::Engine;
use redis::{ClientTlsConfig, ConnectionAddr, IntoConnectionInfo, TlsCertificates};

/// The client `params` describe (already checked by the config).
pub fn client(params: &CacheParams) -> Result<redis::Client, BadAddress> {
    let url = params.redis_url().ok_or_else(|| BadAddress("no address".to_owned()))?;
    // The error of a bad URL may quote it, password and all: only its kind is told.
    let kind = |e: redis::RedisError| BadAddress(format!("{:?}", e.kind()));
    let tls = params.redis_tls().map_err(|(field, message)| BadAddress(format!("`{field}` {message}")))?;
    let Some(tls) = tls else {
        return redis::Client::open(url.expose()).map_err(kind);
    };
    let info = url.expose().into_connection_info().map_err(kind)?;
    let ConnectionAddr::TcpTls { host, port, .. } = info.addr().clone() else {
        return Err(BadAddress("TLS needs a `rediss://` address".to_owned()));
    };
    // rustls needs a process-wide crypto provider; another part of the process may have
    // installed one already, which serves as well.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let insecure = tls.cert_reqs == CertReqs::None;
    if insecure {
        tracing::warn!(
            "response cache: `ssl_cert_reqs: none`: the Redis server's certificate is not verified; anyone on the \
             path can read and fill the cache"
        );
    }
    let info = info.set_addr(ConnectionAddr::TcpTls { host, port, insecure, tls_params: None });
    redis::Client::build_with_tls(info, certificates(tls)).map_err(kind)
}

/// The certificates redis-rs is given. Its root store, when set, replaces the system's: the
/// configured CA is added to the system's roots here, as redis-py (LiteLLM) trusts both.
fn certificates(tls: RedisTls) -> TlsCertificates {
    let root_cert = tls.ca_pem.map(|ca| {
        let mut pem = system_roots_pem();
        pem.extend_from_slice(&ca);
        pem
    });
    let client_tls = tls.client.map(|c| ClientTlsConfig { client_cert: c.cert_pem, client_key: c.key_pem });
    TlsCertificates { client_tls, root_cert }
}

/// The system's trusted roots, as PEM. Certificates the system store holds but cannot be read
/// are left out (and said so once).
fn system_roots_pem() -> Vec<u8> {
    let found = rustls_native_certs::load_native_certs();
    if !found.errors.is_empty() {
        tracing::warn!(
            errors = found.errors.len(),
            "response cache: some of the system's CA certificates could not be read; trusting the rest and \
             `ssl_ca_certs`"
        );
    }
    let mut pem = Vec::new();
    for cert in &found.certs {
        pem.extend_from_slice(&to_pem(cert.as_ref()));
    }
    pem
}

/// `der` as a PEM certificate.
fn to_pem(der: &[u8]) -> Vec<u8> {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = b"-----BEGIN CERTIFICATE-----\n".to_vec();
    for line in body.as_bytes().chunks(64) {
        pem.extend_from_slice(line);
        pem.push(b'\n');
    }
    pem.extend_from_slice(b"-----END CERTIFICATE-----\n");
    pem
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    #[test]
    fn pem_encoding_reads_back_as_the_same_certificate() {
        let der: Vec<u8> = (0..=255u8).cycle().take(700).collect();
        let pem = to_pem(&der);
        let back: Vec<CertificateDer<'_>> = CertificateDer::pem_slice_iter(&pem).collect::<Result<_, _>>().unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].as_ref(), der.as_slice());
        assert!(pem.split(|b| *b == b'\n').all(|line| line.len() <= 64));
    }

    #[test]
    fn a_configured_ca_is_trusted_besides_the_system_roots() {
        let ca = to_pem(b"not really a certificate, only bytes to find");
        let tls = RedisTls { cert_reqs: CertReqs::Required, ca_pem: Some(ca.clone()), client: None };
        let roots = certificates(tls).root_cert.unwrap();
        assert!(roots.ends_with(&ca));
        assert_eq!(roots.len() - ca.len(), system_roots_pem().len());
        let without = RedisTls { cert_reqs: CertReqs::Required, ca_pem: None, client: None };
        assert!(certificates(without).root_cert.is_none(), "without a CA redis-rs loads the system's roots itself");
    }
}
