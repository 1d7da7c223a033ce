//! `cache_params` TLS settings read through the whole config loader: what is accepted, and
//! every refusal naming its field (and the file's path), never a password or a key.

use crate::config::cache_tls::CertReqs;
use crate::config::tests::MINIMAL;
use crate::config::Config;
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::BasicConstraints;
use openssl::x509::{X509NameBuilder, X509};
use std::path::Path;

fn with(params: &str) -> String {
    format!("{MINIMAL}litellm_settings:\n  cache: true\n  cache_params: {params}\n")
}

/// A self-signed certificate (a CA when `ca`) and its key, as PEM.
fn certificate(ca: bool) -> (Vec<u8>, Vec<u8>) {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key: PKey<Private> = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "tollgate test").unwrap();
    let name = name.build();
    let mut cert = X509::builder().unwrap();
    cert.set_version(2).unwrap();
    cert.set_serial_number(&BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap()).unwrap();
    cert.set_subject_name(&name).unwrap();
    cert.set_issuer_name(&name).unwrap();
    cert.set_pubkey(&key).unwrap();
    cert.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
    cert.set_not_after(&Asn1Time::days_from_now(1).unwrap()).unwrap();
    if ca {
        cert.append_extension(BasicConstraints::new().critical().ca().build().unwrap()).unwrap();
    }
    cert.sign(&key, MessageDigest::sha256()).unwrap();
    (cert.build().to_pem().unwrap(), key.private_key_to_pem_pkcs8().unwrap())
}

fn write(dir: &Path, name: &str, contents: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path.display().to_string()
}

#[test]
fn tls_is_on_with_ssl_or_a_rediss_url_and_reads_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _) = certificate(true);
    let (client_cert, client_key) = certificate(false);
    let ca = write(dir.path(), "ca.pem", &ca);
    let cert = write(dir.path(), "client.pem", &client_cert);
    let key = write(dir.path(), "client.key", &client_key);

    // LiteLLM's host/port/password/ssl, with a CA and a client certificate.
    let text = with(&format!(
        "{{type: redis, host: cache.internal, port: 6380, username: app, password: \"p@ss\", ssl: True, \
         ssl_ca_certs: \"{ca}\", ssl_certfile: \"{cert}\", ssl_keyfile: \"{key}\"}}"
    ));
    let params = Config::parse(&text, "t.yaml").unwrap().litellm_settings.response_cache().unwrap();
    assert_eq!(params.redis_url().unwrap().expose(), "rediss://app:p%40ss@cache.internal:6380");
    let tls = params.redis_tls().unwrap().unwrap();
    assert_eq!(tls.cert_reqs, CertReqs::Required);
    assert_eq!(tls.ca_pem.as_deref(), Some(std::fs::read(&ca).unwrap().as_slice()));
    assert_eq!(tls.client.as_ref().map(|c| c.key_pem.as_slice()), Some(client_key.as_slice()));
    let shown = format!("{tls:?}");
    assert!(!shown.contains("PRIVATE KEY") && !shown.contains("BEGIN"), "{shown}");

    // A `rediss://` url is TLS by itself; `ssl` from the environment, as LiteLLM's REDIS_SSL.
    std::env::set_var("TOLLGATE_TEST_REDIS_SSL", "true");
    for params in [
        "{type: redis, redis_url: \"rediss://:pw@10.0.0.5:6380/1\"}",
        "{type: redis, host: h, ssl: os.environ/TOLLGATE_TEST_REDIS_SSL}",
    ] {
        let c = Config::parse(&with(params), "t.yaml").unwrap();
        let params = c.litellm_settings.response_cache().unwrap();
        assert!(params.redis_tls().unwrap().is_some(), "{params:?}");
        assert!(params.redis_url().unwrap().expose().starts_with("rediss://"));
    }
    // Plaintext stays plaintext.
    let c = Config::parse(&with("{type: redis, host: h, ssl: false}"), "t.yaml").unwrap();
    let params = c.litellm_settings.response_cache().unwrap();
    assert!(params.redis_tls().unwrap().is_none());
    assert_eq!(params.redis_url().unwrap().expose(), "redis://h:6379");
    // Verifying nothing is possible, but only said in so many words.
    let c = Config::parse(&with("{type: redis, host: h, ssl: true, ssl_cert_reqs: none}"), "t.yaml").unwrap();
    let tls = c.litellm_settings.response_cache().unwrap().redis_tls().unwrap().unwrap();
    assert_eq!(tls.cert_reqs, CertReqs::None);
}

#[test]
fn every_tls_mistake_names_its_field_and_never_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, ca_key) = certificate(true);
    let ca = write(dir.path(), "ca.pem", &ca);
    let key = write(dir.path(), "ca.key", &ca_key);
    let junk_der = write(dir.path(), "junk.pem", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    let garbage = write(
        dir.path(),
        "garbage.pem",
        b"-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
    );
    let empty = write(dir.path(), "empty.pem", b"");
    let huge = write(dir.path(), "huge.pem", &vec![b'a'; (super::MAX_PEM_BYTES + 1) as usize]);
    let missing = dir.path().join("missing.pem").display().to_string();
    let base = "type: redis, host: h, password: hunter2-secret";
    for (params, field, also) in [
        (format!("{{{base}, ssl: maybe}}"), "cache_params.ssl", ""),
        ("{type: redis, url: \"redis://:hunter2-secret@h:1\", ssl: true}".to_owned(), "cache_params.ssl", "rediss://"),
        ("{type: redis, url: \"rediss://:hunter2-secret@h:1\", ssl: false}".to_owned(), "cache_params.ssl", ""),
        (
            "{type: redis, url: \"rediss://:hunter2-secret@h:1/#insecure\"}".to_owned(),
            "cache_params.url",
            "ssl_cert_reqs",
        ),
        (format!("{{{base}, ssl_ca_certs: \"{ca}\"}}"), "cache_params.ssl_ca_certs", "ssl: true"),
        (format!("{{{base}, ssl_cert_reqs: none}}"), "cache_params.ssl_cert_reqs", "ssl: true"),
        (format!("{{{base}, ssl: true, ssl_cert_reqs: optional}}"), "cache_params.ssl_cert_reqs", "required"),
        (
            format!("{{{base}, ssl: true, ssl_cert_reqs: none, ssl_ca_certs: \"{ca}\"}}"),
            "cache_params.ssl_ca_certs",
            "",
        ),
        (format!("{{{base}, ssl: true, ssl_ca_certs: \"{missing}\"}}"), "cache_params.ssl_ca_certs", &missing),
        (format!("{{{base}, ssl: true, ssl_ca_certs: \"{empty}\"}}"), "cache_params.ssl_ca_certs", &empty),
        (format!("{{{base}, ssl: true, ssl_ca_certs: \"{garbage}\"}}"), "cache_params.ssl_ca_certs", &garbage),
        (format!("{{{base}, ssl: true, ssl_ca_certs: \"{huge}\"}}"), "cache_params.ssl_ca_certs", "larger"),
        (
            format!("{{{base}, ssl: true, ssl_ca_certs: \"{junk_der}\"}}"),
            "cache_params.ssl_ca_certs",
            "not a usable CA",
        ),
        (format!("{{{base}, ssl: true, ssl_certfile: \"{ca}\"}}"), "cache_params.ssl_keyfile", ""),
        (format!("{{{base}, ssl: true, ssl_keyfile: \"{key}\"}}"), "cache_params.ssl_certfile", ""),
        (
            format!("{{{base}, ssl: true, ssl_certfile: \"{ca}\", ssl_keyfile: \"{ca}\"}}"),
            "cache_params.ssl_keyfile",
            "private key",
        ),
        (
            format!("{{{base}, ssl: true, ssl_certfile: \"{key}\", ssl_keyfile: \"{key}\"}}"),
            "cache_params.ssl_certfile",
            "",
        ),
        ("{type: redis, host: h, username: app}".to_owned(), "cache_params.username", ""),
        ("{type: redis, url: \"redis://h:1\", password: hunter2-secret}".to_owned(), "cache_params.url", ""),
        ("{type: local, ssl: true}".to_owned(), "cache_params.type", ""),
        ("{type: local, password: hunter2-secret}".to_owned(), "cache_params.type", ""),
        (format!("{{{base}, ssl: true, ssl_check_hostname: false}}"), "ssl_check_hostname", ""),
    ] {
        let err = Config::parse(&with(&params), "t.yaml").unwrap_err().to_string();
        assert!(err.contains(field) && err.contains(also), "{params}: {err}");
        assert!(!err.contains("hunter2"), "{params}: {err}");
        assert!(!err.contains("PRIVATE"), "{params}: {err}");
    }
}
