//! TLS to the response cache's Redis, in LiteLLM's (redis-py's) `cache_params` shape: `ssl`,
//! a `rediss://` url, `ssl_cert_reqs`, `ssl_ca_certs`, `ssl_certfile` and `ssl_keyfile`.
//!
//! Every combination is checked when the config is read: the files are read and parsed then
//! (so `--check-config` finds a missing CA), and a setting that could not take effect is an
//! error naming its field, never quietly dropped. A key file's contents never reach an error,
//! a log line or `Debug`.

use super::CacheParams;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt;

/// The largest PEM file read for TLS: a CA bundle of some hundred certificates fits.
pub const MAX_PEM_BYTES: u64 = 1 << 20;

/// How the server's certificate is checked (`ssl_cert_reqs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertReqs {
    /// Verified against the system's roots and `ssl_ca_certs`, and its name against the host
    /// (`required`, the default).
    Required,
    /// Not verified at all (`none`): anyone on the path can read and fill the cache. Logged as
    /// a warning at start.
    None,
}

/// The TLS of a Redis cache, with its files read.
#[derive(Clone)]
pub struct RedisTls {
    pub cert_reqs: CertReqs,
    /// The PEM certificates of `ssl_ca_certs`, trusted besides the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// The client's certificate chain and key (`ssl_certfile`, `ssl_keyfile`), PEM.
    pub client: Option<ClientCert>,
}

/// A client certificate chain and its private key, PEM.
#[derive(Clone)]
pub struct ClientCert {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTls")
            .field("cert_reqs", &self.cert_reqs)
            .field("ca", &self.ca_pem.is_some())
            .field("client_cert", &self.client.is_some())
            .finish()
    }
}

/// A TLS setting that is wrong, as (field, message).
pub type Invalid = (&'static str, String);

impl CacheParams {
    /// Whether the Redis is spoken to over TLS: `ssl: true`, or a `rediss://` url.
    pub fn redis_tls_on(&self) -> Result<bool, Invalid> {
        let ssl = match self.ssl.as_ref().map(|s| s.expose().trim().to_ascii_lowercase()) {
            None => None,
            Some(s) if s == "true" => Some(true),
            Some(s) if s == "false" => Some(false),
            Some(_) => return Err(("ssl", "must be `true` or `false`".to_owned())),
        };
        let scheme_tls = self.url.as_ref().map(|u| u.expose().starts_with("rediss://"));
        match (ssl, scheme_tls) {
            (Some(true), Some(false)) => {
                Err(("ssl", "`url` is a plaintext `redis://` URL: write `rediss://` for TLS".to_owned()))
            }
            (Some(false), Some(true)) => Err(("ssl", "`url` is a TLS `rediss://` URL: drop `ssl: false`".to_owned())),
            (ssl, scheme) => Ok(ssl.unwrap_or(false) || scheme.unwrap_or(false)),
        }
    }

    /// The TLS settings of `type: redis`, their files read and parsed; `None` without TLS.
    /// Every TLS field given without TLS, a contradiction, or a file that cannot be read or
    /// holds no certificate (or key) is an error naming the field (and the file's path).
    pub fn redis_tls(&self) -> Result<Option<RedisTls>, Invalid> {
        let files = [
            ("ssl_cert_reqs", self.ssl_cert_reqs.is_some()),
            ("ssl_ca_certs", self.ssl_ca_certs.is_some()),
            ("ssl_certfile", self.ssl_certfile.is_some()),
            ("ssl_keyfile", self.ssl_keyfile.is_some()),
        ];
        if !self.redis_tls_on()? {
            return match files.iter().find(|(_, given)| *given) {
                Some((field, _)) => Err((field, "is for TLS: set `ssl: true` or use a `rediss://` url".to_owned())),
                None => Ok(None),
            };
        }
        let cert_reqs = match self.ssl_cert_reqs.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("required") => CertReqs::Required,
            Some("none") => CertReqs::None,
            Some(_) => {
                return Err((
                    "ssl_cert_reqs",
                    "must be `required` (the default) or `none`; `optional` is not supported: the server's \
                     certificate is verified or it is not"
                        .to_owned(),
                ))
            }
        };
        if cert_reqs == CertReqs::None && self.ssl_ca_certs.is_some() {
            return Err((
                "ssl_ca_certs",
                "no certificate is verified with `ssl_cert_reqs: none`: drop one of the two".to_owned(),
            ));
        }
        let ca_pem = match &self.ssl_ca_certs {
            Some(path) => {
                let pem = read_pem("ssl_ca_certs", path)?;
                certificates("ssl_ca_certs", path, &pem, true)?;
                Some(pem)
            }
            None => None,
        };
        let client = match (&self.ssl_certfile, &self.ssl_keyfile) {
            (None, None) => None,
            (Some(_), None) => return Err(("ssl_keyfile", "`ssl_certfile` needs its key in `ssl_keyfile`".to_owned())),
            (None, Some(_)) => {
                return Err(("ssl_certfile", "`ssl_keyfile` needs its certificate in `ssl_certfile`".to_owned()))
            }
            (Some(cert_path), Some(key_path)) => {
                let cert_pem = read_pem("ssl_certfile", cert_path)?;
                certificates("ssl_certfile", cert_path, &cert_pem, false)?;
                let key_pem = read_pem("ssl_keyfile", key_path)?;
                // The parser's error may quote what it read: only the path is told.
                PrivateKeyDer::from_pem_slice(&key_pem)
                    .map_err(|_| ("ssl_keyfile", format!("`{key_path}` holds no PEM private key")))?;
                Some(ClientCert { cert_pem, key_pem })
            }
        };
        Ok(Some(RedisTls { cert_reqs, ca_pem, client }))
    }
}

/// The contents of the PEM file `path` (of setting `field`), at most [`MAX_PEM_BYTES`].
fn read_pem(field: &'static str, path: &str) -> Result<Vec<u8>, Invalid> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| (field, format!("cannot read `{path}`: {}", e.kind())))?;
    let mut pem = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut pem)
        .map_err(|e| (field, format!("cannot read `{path}`: {}", e.kind())))?;
    if u64::try_from(pem.len()).unwrap_or(u64::MAX) > MAX_PEM_BYTES {
        return Err((field, format!("`{path}` is larger than {MAX_PEM_BYTES} bytes")));
    }
    Ok(pem)
}

/// Checks that `pem` (read from `path`) holds at least one certificate, every one well formed,
/// and, for a CA (`anchors`), usable as a trust anchor.
fn certificates(field: &'static str, path: &str, pem: &[u8], anchors: bool) -> Result<(), Invalid> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| (field, format!("`{path}` holds a malformed PEM certificate")))?;
    if certs.is_empty() {
        return Err((field, format!("`{path}` holds no PEM certificate")));
    }
    if anchors {
        let mut store = rustls::RootCertStore::empty();
        for cert in certs {
            store.add(cert).map_err(|_| (field, format!("`{path}` holds a certificate that is not a usable CA")))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
