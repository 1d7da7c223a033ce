//! The sub-path and query of a pass-through request, validated before any of it reaches a
//! provider's URL: bounded, no traversal (`.`, `..`, their percent-encoded forms, encoded
//! slashes and backslashes), no absolute or protocol-relative URL, and the query without the
//! client's key. The URL built from them is checked to stay on the deployment's origin.

use crate::error::GatewayError;

/// The longest sub-path accepted, in bytes.
pub const MAX_PATH_BYTES: usize = 2048;
/// The longest query accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 2048;
/// Query parameters that carry a key: never sent on.
const KEY_PARAMS: &[&str] = &["key", "api_key", "api-key"];

fn refuse(why: &str) -> GatewayError {
    GatewayError::invalid(format!("pass-through path refused: {why}"), None)
}

/// Checks the raw (still percent-encoded) sub-path that follows the family prefix.
pub fn check_tail(tail: &str) -> Result<&str, GatewayError> {
    if tail.len() > MAX_PATH_BYTES {
        return Err(refuse(&format!("longer than {MAX_PATH_BYTES} bytes")));
    }
    if !tail.starts_with('/') || tail.len() < 2 {
        return Err(refuse("it must name a path after the provider prefix"));
    }
    if tail.starts_with("//") || tail.contains("://") {
        return Err(refuse("absolute URLs are not forwarded"));
    }
    if tail.bytes().any(|b| !b.is_ascii_graphic() || b == b'\\' || b == b'#') {
        return Err(refuse("only visible ASCII without `\\` or `#`"));
    }
    let lower = tail.to_ascii_lowercase();
    // Encoded dots, slashes, backslashes and percents could become traversal once decoded.
    if ["%2e", "%2f", "%5c", "%25", "%00"].iter().any(|e| lower.contains(e)) {
        return Err(refuse("encoded dots, slashes or percents"));
    }
    if tail.split('/').any(|segment| segment == "." || segment == "..") {
        return Err(refuse("`.` and `..` segments"));
    }
    Ok(tail)
}

/// The query to send on: bounded, visible ASCII, without the parameters that carry a key.
pub fn forwarded_query(query: &str) -> Result<String, GatewayError> {
    if query.len() > MAX_QUERY_BYTES {
        return Err(refuse(&format!("a query longer than {MAX_QUERY_BYTES} bytes")));
    }
    if query.bytes().any(|b| !b.is_ascii_graphic() || b == b'#') {
        return Err(refuse("a query of visible ASCII only"));
    }
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let name = pair.split('=').next().unwrap_or_default();
        // An encoded name (`%6Bey`) is decoded upstream: it could carry a key past the check.
        if name.contains(['%', '+']) {
            return Err(refuse("percent-encoded query parameter names"));
        }
        if !KEY_PARAMS.iter().any(|k| k.eq_ignore_ascii_case(name)) {
            kept.push(pair);
        }
    }
    Ok(kept.join("&"))
}

/// The value of the query parameter `key` (Gemini's way of sending a key), if any.
pub fn query_key(query: &str) -> Option<&str> {
    query.split('&').find_map(|p| p.strip_prefix("key=")).filter(|k| !k.is_empty())
}

/// An API version as a path segment: `v1`, `v2`, `v1beta`, `v1alpha`, `v1beta1`.
fn is_api_version(segment: &str) -> bool {
    let Some(rest) = segment.strip_prefix('v') else { return false };
    let after_digits = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    let label = after_digits.trim_end_matches(|c: char| c.is_ascii_digit());
    segment.len() <= 12 && after_digits.len() < rest.len() && label.bytes().all(|b| b.is_ascii_lowercase())
}

/// The upstream URL: `base` then `tail`, where a base whose path ends with the tail's first
/// segment (`/v1`, `/v1beta`) does not repeat it, and one that ends with another API version
/// takes the client's instead (Google's SDK asks for `/v1/models/...` of a deployment based on
/// `.../v1beta`). Refused unless it stays on the base's scheme, host and port, under the base's
/// path (without its version).
pub fn upstream_url(base: &str, tail: &str, query: &str) -> Result<reqwest::Url, GatewayError> {
    let base = base.trim_end_matches('/');
    let first = tail.split('/').nth(1).unwrap_or_default();
    let joined_base = match base.rsplit_once('/') {
        Some((shorter, last))
            if !first.is_empty()
                && (last == first || (is_api_version(last) && is_api_version(first)))
                && shorter.contains("://")
                && shorter.len() > "https://".len() =>
        {
            shorter
        }
        _ => base,
    };
    let mut text = format!("{joined_base}{tail}");
    if !query.is_empty() {
        text.push('?');
        text.push_str(query);
    }
    let url = reqwest::Url::parse(&text).map_err(|_| refuse("not a URL once joined to the provider's base"))?;
    let base_url = reqwest::Url::parse(joined_base).map_err(|_| refuse("the deployment's base is not a URL"))?;
    let same_origin = url.scheme() == base_url.scheme()
        && url.host_str() == base_url.host_str()
        && url.port_or_known_default() == base_url.port_or_known_default();
    if !same_origin || !url.path().starts_with(base_url.path().trim_end_matches('/')) {
        return Err(refuse("it leaves the provider's base URL"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_paths_pass() {
        for tail in ["/v1/chat/completions", "/v1beta/models/gemini-2.0-flash:generateContent", "/v1/messages"] {
            assert_eq!(check_tail(tail).ok(), Some(tail));
        }
    }

    #[test]
    fn traversal_and_absolute_urls_are_refused() {
        for tail in [
            "/v1/../admin",
            "/..",
            "/./v1",
            "/v1/%2e%2e/admin",
            "/v1/%2E%2E/admin",
            "/v1%2fadmin",
            "/v1/%5c..",
            "/v1/%252e%252e/x",
            "//evil.example/v1",
            "/http://evil.example/v1",
            "/v1\\..\\x",
            "/v1/a b",
            "/v1/x#frag",
            "/",
            "",
            "v1/chat",
        ] {
            assert!(check_tail(tail).is_err(), "{tail} should be refused");
        }
    }

    #[test]
    fn the_path_is_bounded() {
        let longest = format!("/{}", "a".repeat(MAX_PATH_BYTES - 1));
        assert!(check_tail(&longest).is_ok());
        assert!(check_tail(&format!("{longest}a")).is_err());
        let query = "a=".to_owned() + &"b".repeat(MAX_QUERY_BYTES - 2);
        assert!(forwarded_query(&query).is_ok());
        assert!(forwarded_query(&format!("{query}b")).is_err());
    }

    #[test]
    fn keys_leave_the_query() {
        assert_eq!(forwarded_query("key=sk-virtual&alt=sse").ok().as_deref(), Some("alt=sse"));
        assert_eq!(forwarded_query("api_key=x&api-key=y").ok().as_deref(), Some(""));
        assert_eq!(forwarded_query("KEY=x&Api_Key=y&alt=sse").ok().as_deref(), Some("alt=sse"));
        // Names that would decode into a key's are refused, values may be encoded.
        assert!(forwarded_query("%6Bey=sk-virtual").is_err());
        assert!(forwarded_query("api%5Fkey=sk-virtual").is_err());
        assert_eq!(forwarded_query("q=a%20b").ok().as_deref(), Some("q=a%20b"));
        assert_eq!(query_key("alt=sse&key=sk-1"), Some("sk-1"));
        assert_eq!(query_key("keys=1"), None);
    }

    #[test]
    fn the_url_stays_under_the_base() {
        let url = |base, tail, q| upstream_url(base, tail, q).map(|u| u.to_string()).ok();
        assert_eq!(
            url("http://mock:9/v1", "/v1/chat/completions", "").as_deref(),
            Some("http://mock:9/v1/chat/completions")
        );
        assert_eq!(
            url("https://api.anthropic.com", "/v1/messages", "").as_deref(),
            Some("https://api.anthropic.com/v1/messages")
        );
        assert_eq!(
            url("http://mock:9/gemini/v1beta/", "/v1beta/models/g:generateContent", "alt=sse").as_deref(),
            Some("http://mock:9/gemini/v1beta/models/g:generateContent?alt=sse")
        );
        assert_eq!(url("http://mock:9/v1", "/@evil.example/x", ""), Some("http://mock:9/v1/@evil.example/x".into()));
        // The client's API version wins over the base's.
        assert_eq!(
            url("https://generativelanguage.googleapis.com/v1beta", "/v1/models/g:generateContent", "").as_deref(),
            Some("https://generativelanguage.googleapis.com/v1/models/g:generateContent")
        );
        assert_eq!(
            url("http://mock:9/gemini/v1", "/v1beta/models/g:streamGenerateContent", "alt=sse").as_deref(),
            Some("http://mock:9/gemini/v1beta/models/g:streamGenerateContent?alt=sse")
        );
        // A base without a version, or a tail not starting with one, is joined as it is.
        assert_eq!(
            url("http://mock:9/gemini", "/v1/models/g", "").as_deref(),
            Some("http://mock:9/gemini/v1/models/g")
        );
        assert_eq!(url("http://mock:9/v1", "/models/g", "").as_deref(), Some("http://mock:9/v1/models/g"));
        assert_eq!(url("http://mock:9/v1beta", "/vx/models", "").as_deref(), Some("http://mock:9/v1beta/vx/models"));
        // A bare host's version is not stripped into nothing.
        assert_eq!(url("http://v1", "/v2/x", "").as_deref(), Some("http://v1/v2/x"));
    }

    #[test]
    fn api_versions_are_told_apart() {
        for v in ["v1", "v2", "v1beta", "v1alpha", "v1beta1", "v10"] {
            assert!(is_api_version(v), "{v}");
        }
        for not in ["v", "vx", "models", "v1-beta", "V1", "v1Beta", "1", "", "v1betaverylong"] {
            assert!(!is_api_version(not), "{not}");
        }
    }
}
