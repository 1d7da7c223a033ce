//! AWS Signature Version 4 for Bedrock's runtime API: the `Authorization` header of a request
//! from its method, URL, signed headers and body (AWS's "Create a signed AWS API request").
//!
//! Pure: the time is an argument. The secret key only ever enters an HMAC; it never appears in
//! what is returned, logged or shown by `Debug` (it is a [`Secret`]).

use crate::config::Secret;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Static AWS credentials and the region they sign for.
#[derive(Clone, Debug)]
pub struct AwsCredentials {
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
    pub region: String,
}

/// Bedrock's service name in a credential scope.
pub const SERVICE: &str = "bedrock";

/// What is signed of one request.
#[derive(Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    /// `host` or `host:port`, as the `Host` header carries it.
    pub host: &'a str,
    /// The path as sent: already percent-encoded (`/model/a.b-v1%3A0/converse`).
    pub path: &'a str,
    /// The query as sent, without `?` (empty when none).
    pub query: &'a str,
    /// Signed headers besides `host`, `x-amz-date` and `x-amz-security-token`.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

/// The headers that authenticate a request: `x-amz-date`, the session token when there is one,
/// and `Authorization`.
#[derive(Debug)]
pub struct Signed {
    pub amz_date: String,
    pub security_token: Option<String>,
    pub authorization: String,
}

/// Signs `request` at `time` for `service` in the credentials' region.
pub fn sign(
    credentials: &AwsCredentials,
    service: &str,
    request: &Request<'_>,
    time: chrono::DateTime<chrono::Utc>,
) -> Signed {
    let amz_date = time.format("%Y%m%dT%H%M%SZ").to_string();
    let token = credentials.session_token.as_ref().map(|t| t.expose().to_owned());
    let mut headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_owned()))
        .chain([("host".to_owned(), request.host.to_owned()), ("x-amz-date".to_owned(), amz_date.clone())])
        .chain(token.iter().map(|t| ("x-amz-security-token".to_owned(), t.clone())))
        .collect();
    headers.sort();
    let scope = Scope { date: &amz_date[..8], region: &credentials.region, service };
    let (signed_headers, signature) =
        signature(credentials.secret_access_key.expose(), &scope, &amz_date, request, &headers);
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential={}/{}, SignedHeaders={signed_headers}, Signature={signature}",
        credentials.access_key_id.expose(),
        scope.text()
    );
    Signed { amz_date, security_token: token, authorization }
}

/// A credential scope: `date/region/service/aws4_request`.
#[derive(Debug)]
pub struct Scope<'a> {
    pub date: &'a str,
    pub region: &'a str,
    pub service: &'a str,
}

impl Scope<'_> {
    pub fn text(&self) -> String {
        format!("{}/{}/{}/aws4_request", self.date, self.region, self.service)
    }
}

/// `(signed header names, signature)` of a request whose signed headers (names lower case,
/// sorted) are `headers`.
pub fn signature(
    secret: &str,
    scope: &Scope<'_>,
    amz_date: &str,
    request: &Request<'_>,
    headers: &[(String, String)],
) -> (String, String) {
    let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    let signed_headers = names.join(";");
    let canonical_headers: String = headers.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let canonical = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{}",
        request.method,
        canonical_uri(request.path),
        canonical_query(request.query),
        hex::encode(Sha256::digest(request.body)),
    );
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{}\n{}",
        scope.text(),
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let key = signing_key(secret, scope);
    (signed_headers, hex::encode(hmac(&key, to_sign.as_bytes())))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// The day's signing key: HMACs of the date, region, service and `aws4_request`.
pub fn signing_key(secret: &str, scope: &Scope<'_>) -> Vec<u8> {
    let date = hmac(format!("AWS4{secret}").as_bytes(), scope.date.as_bytes());
    let region = hmac(&date, scope.region.as_bytes());
    let service = hmac(&region, scope.service.as_bytes());
    hmac(&service, b"aws4_request")
}

/// RFC 3986 encoding as SigV4 wants it: unreserved characters kept, the rest `%XX` upper case.
pub(super) fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(byte as char),
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// The canonical URI of a path as sent. Services other than S3 encode each segment of the
/// already-encoded path once more: `%3A` in a Bedrock model id is signed as `%253A`.
pub fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".to_owned();
    }
    uri_encode(path, true)
}

/// The query's `name=value` pairs sorted by name, then value (each as sent, already encoded).
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(&str, &str)> =
        query.split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap_or((p, ""))).collect();
    pairs.sort_unstable();
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn example() -> AwsCredentials {
        AwsCredentials {
            access_key_id: Secret::new("AKIDEXAMPLE"),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session_token: None,
            region: "us-east-1".into(),
        }
    }

    fn at_example_time() -> chrono::DateTime<chrono::Utc> {
        chrono::Utc.with_ymd_and_hms(2015, 8, 30, 12, 36, 0).single().unwrap()
    }

    fn get(query: &str) -> Signed {
        let request =
            Request { method: "GET", host: "example.amazonaws.com", path: "/", query, headers: &[], body: b"" };
        sign(&example(), "service", &request, at_example_time())
    }

    /// AWS's SigV4 test suite: `get-vanilla` and `get-vanilla-query-order-key-case`.
    #[test]
    fn matches_the_aws_test_suite() {
        let prefix = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                      SignedHeaders=host;x-amz-date, Signature=";
        let vanilla = get("");
        assert_eq!(vanilla.amz_date, "20150830T123600Z");
        assert_eq!(
            vanilla.authorization,
            format!("{prefix}5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
        );
        assert_eq!(
            get("Param2=value2&Param1=value1").authorization,
            format!("{prefix}b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500")
        );
    }

    #[test]
    fn model_ids_are_signed_encoded_twice_and_tokens_are_signed() {
        assert_eq!(canonical_uri("/model/a.b-v1%3A0/converse"), "/model/a.b-v1%253A0/converse");
        let mut credentials = example();
        credentials.session_token = Some(Secret::new("token"));
        let request = Request {
            method: "POST",
            host: "h",
            path: "/",
            query: "",
            headers: &[("Content-Type", "application/json")],
            body: b"{}",
        };
        let signed = sign(&credentials, SERVICE, &request, at_example_time());
        assert_eq!(signed.security_token.as_deref(), Some("token"));
        assert!(signed.authorization.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token,"));
        assert!(!signed.authorization.contains("wJalr"), "the secret key is never in the header");
    }
}
