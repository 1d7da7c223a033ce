//! The tags of a request's usage event (docs/design.md §4.2, "Tags"): the key's tags, its
//! team's, then the request's own (`metadata.tags` in the body, the `x-litellm-tags` header,
//! comma separated), each once, in that order, at most [`MAX_EVENT_TAGS`]. Each tag becomes a
//! ledger scope `tag/<tag>`, so every tag is held to the bounds of a scope part (no `/`, no
//! whitespace or control characters, at most 128 bytes): a request's tag that breaks them is
//! refused with a 400 naming the field; a key's or team's that does (the admin API allows
//! them) is left out of the event.

use crate::error::GatewayError;
use crate::tenancy::auth::Principal;
use actix_web::HttpRequest;
use serde_json::Value;
use tollgate_schemas::limits::{check_scope_tag, MAX_EVENT_TAGS};

/// The header LiteLLM clients tag requests with.
pub const TAGS_HEADER: &str = "x-litellm-tags";
/// The body field, within `metadata`.
const BODY_FIELD: &str = "metadata.tags";

/// `metadata.tags` of a request body's raw `metadata` (JSON text, already bounded in size):
/// absent, `null` or an array of at most [`MAX_EVENT_TAGS`] tags.
pub fn body_tags(metadata: Option<&str>) -> Result<Vec<String>, GatewayError> {
    let Some(raw) = metadata else { return Ok(Vec::new()) };
    let metadata: Value = serde_json::from_str(raw)
        .map_err(|_| GatewayError::invalid("`metadata` must be an object", Some("metadata")))?;
    let tags = match metadata.get("tags") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(tags)) => tags,
        Some(_) => return Err(GatewayError::field(BODY_FIELD, "`metadata.tags` must be an array of strings")),
    };
    if tags.len() > MAX_EVENT_TAGS {
        return Err(GatewayError::field(BODY_FIELD, format!("`metadata.tags` takes at most {MAX_EVENT_TAGS} tags")));
    }
    let mut out = Vec::with_capacity(tags.len());
    for (i, tag) in tags.iter().enumerate() {
        let field = format!("{BODY_FIELD}[{i}]");
        let Some(tag) = tag.as_str() else {
            return Err(GatewayError::field(field.clone(), format!("`{field}` must be a string")));
        };
        check_scope_tag(&field, tag).map_err(|e| GatewayError::field(field.clone(), e.to_string()))?;
        out.push(tag.to_owned());
    }
    Ok(out)
}

/// The `x-litellm-tags` header's tags: comma separated, each trimmed, empty ones skipped.
pub fn header_tags(req: &HttpRequest) -> Result<Vec<String>, GatewayError> {
    let mut out = Vec::new();
    for value in req.headers().get_all(TAGS_HEADER) {
        let text =
            value.to_str().map_err(|_| GatewayError::field(TAGS_HEADER, format!("`{TAGS_HEADER}` must be text")))?;
        for tag in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if out.len() == MAX_EVENT_TAGS {
                return Err(GatewayError::field(
                    TAGS_HEADER,
                    format!("`{TAGS_HEADER}` takes at most {MAX_EVENT_TAGS} tags"),
                ));
            }
            check_scope_tag(TAGS_HEADER, tag).map_err(|e| GatewayError::field(TAGS_HEADER, e.to_string()))?;
            out.push(tag.to_owned());
        }
    }
    Ok(out)
}

/// The event's tags: the key's and team's (those that can be scopes), then the request's
/// `body` and `header` tags, each once, in that order. With `reject_client` a request that
/// tags itself is refused (LiteLLM's `reject_clientside_metadata_tags`). The request's tags
/// must fit in what the key's and team's leave of [`MAX_EVENT_TAGS`]; the key's and team's
/// beyond it are left out.
pub fn event_tags(
    principal: &Principal,
    body: Vec<String>,
    header: Vec<String>,
    reject_client: bool,
) -> Result<Vec<String>, GatewayError> {
    if reject_client {
        if !body.is_empty() {
            return Err(GatewayError::field(
                BODY_FIELD,
                "`metadata.tags` is not allowed: tags come from the key and its team \
                 (`reject_clientside_metadata_tags`)",
            ));
        }
        if !header.is_empty() {
            return Err(GatewayError::field(
                TAGS_HEADER,
                format!(
                    "`{TAGS_HEADER}` is not allowed: tags come from the key and its team \
                     (`reject_clientside_metadata_tags`)"
                ),
            ));
        }
    }
    let mut tags = inherited(principal);
    for (field, own) in [(BODY_FIELD, body), (TAGS_HEADER, header)] {
        for tag in own {
            if tags.contains(&tag) {
                continue;
            }
            if tags.len() == MAX_EVENT_TAGS {
                return Err(GatewayError::field(
                    field,
                    format!("a request carries at most {MAX_EVENT_TAGS} tags, its key's and team's included"),
                ));
            }
            tags.push(tag);
        }
    }
    Ok(tags)
}

/// The key's and its team's tags that can be scopes, each once, at most [`MAX_EVENT_TAGS`].
fn inherited(principal: &Principal) -> Vec<String> {
    let team = principal.team.as_ref().map(|t| t.tags.as_slice()).unwrap_or_default();
    let mut tags: Vec<String> = Vec::new();
    for tag in principal.key.tags.iter().chain(team) {
        if tags.len() < MAX_EVENT_TAGS && check_scope_tag("tag", tag).is_ok() && !tags.contains(tag) {
            tags.push(tag.clone());
        }
    }
    tags
}

/// The tags of usage billed after its request (a batch's lines): the key's and team's as they
/// are now, then the request's own as it was made (`own`, comma separated, as a batch keeps
/// them in its metadata), each once. Never refused: what does not fit in [`MAX_EVENT_TAGS`] or
/// is not a scope part is left out.
pub fn past_usage_tags(principal: &Principal, own: Option<&str>) -> Vec<String> {
    let mut tags = inherited(principal);
    for tag in own.unwrap_or_default().split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if tags.len() < MAX_EVENT_TAGS && check_scope_tag("tag", tag).is_ok() && !tags.iter().any(|t| t == tag) {
            tags.push(tag.to_owned());
        }
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tollgate_schemas::tenancy::{KeyRecord, TeamRecord};

    fn principal(key: &[&str], team: &[&str]) -> Principal {
        let strings = |t: &[&str]| t.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        Principal {
            team: Some(Arc::new(TeamRecord { team_id: "t".into(), tags: strings(team), ..TeamRecord::default() })),
            ..Principal::of_key(KeyRecord { key_id: "k".into(), tags: strings(key), ..KeyRecord::default() })
        }
    }

    #[test]
    fn past_usage_keeps_what_fits_and_never_refuses() {
        let p = principal(&["k1", "bad tag"], &["t1", "k1"]);
        assert_eq!(past_usage_tags(&p, None), ["k1", "t1"]);
        assert_eq!(past_usage_tags(&p, Some(" nightly, ,t1,a/b,eval ")), ["k1", "t1", "nightly", "eval"]);
        let many: Vec<String> = (0..20).map(|i| format!("x{i}")).collect();
        assert_eq!(past_usage_tags(&p, Some(&many.join(","))).len(), MAX_EVENT_TAGS);
    }

    fn field_of(e: GatewayError) -> String {
        match e {
            GatewayError::InvalidField { field, .. } => field,
            GatewayError::InvalidRequest { param, .. } => param.unwrap_or_default().to_owned(),
            other => panic!("not a field error: {other:?}"),
        }
    }

    #[test]
    fn body_tags_are_an_array_of_scope_safe_strings() {
        assert_eq!(body_tags(None).unwrap(), Vec::<String>::new());
        assert_eq!(body_tags(Some(r#"{"other": 1}"#)).unwrap(), Vec::<String>::new());
        assert_eq!(body_tags(Some(r#"{"tags": ["a", "b"]}"#)).unwrap(), ["a", "b"]);
        assert_eq!(field_of(body_tags(Some(r#"{"tags": "a"}"#)).unwrap_err()), "metadata.tags");
        assert_eq!(field_of(body_tags(Some(r#"{"tags": ["a", 7]}"#)).unwrap_err()), "metadata.tags[1]");
        assert_eq!(field_of(body_tags(Some(r#"{"tags": ["a/model/x"]}"#)).unwrap_err()), "metadata.tags[0]");
        assert_eq!(field_of(body_tags(Some(r#"{"tags": ["a b"]}"#)).unwrap_err()), "metadata.tags[0]");
        assert_eq!(field_of(body_tags(Some(r#"{"tags": ["\u0007"]}"#)).unwrap_err()), "metadata.tags[0]");
        let long = format!(r#"{{"tags": ["{}"]}}"#, "t".repeat(129));
        assert_eq!(field_of(body_tags(Some(&long)).unwrap_err()), "metadata.tags[0]");
        let many = format!("{{\"tags\": {:?}}}", (0..9).map(|i| format!("t{i}")).collect::<Vec<_>>());
        assert_eq!(field_of(body_tags(Some(&many)).unwrap_err()), "metadata.tags");
    }

    #[test]
    fn header_tags_are_comma_separated_and_bounded() {
        let req = actix_web::test::TestRequest::default().insert_header((TAGS_HEADER, " a, b ,,c ")).to_http_request();
        assert_eq!(header_tags(&req).unwrap(), ["a", "b", "c"]);
        let bad = actix_web::test::TestRequest::default().insert_header((TAGS_HEADER, "a,b/c")).to_http_request();
        assert_eq!(field_of(header_tags(&bad).unwrap_err()), TAGS_HEADER);
        let many = (0..9).map(|i| format!("t{i}")).collect::<Vec<_>>().join(",");
        let many = actix_web::test::TestRequest::default().insert_header((TAGS_HEADER, many)).to_http_request();
        assert_eq!(field_of(header_tags(&many).unwrap_err()), TAGS_HEADER);
    }

    #[test]
    fn key_then_team_then_request_each_once() {
        let p = principal(&["prod", "bad tag", "shared"], &["shared", "payments"]);
        let tags = event_tags(&p, vec!["exp".into(), "prod".into()], vec!["hdr".into(), "exp".into()], false).unwrap();
        assert_eq!(tags, ["prod", "shared", "payments", "exp", "hdr"]);
    }

    #[test]
    fn client_tags_are_refused_when_rejected_and_key_tags_kept() {
        let p = principal(&["prod"], &[]);
        assert_eq!(event_tags(&p, vec![], vec![], true).unwrap(), ["prod"]);
        assert_eq!(field_of(event_tags(&p, vec!["x".into()], vec![], true).unwrap_err()), "metadata.tags");
        assert_eq!(field_of(event_tags(&p, vec![], vec!["x".into()], true).unwrap_err()), TAGS_HEADER);
    }

    #[test]
    fn request_tags_fit_beside_the_keys_or_are_refused() {
        let key: Vec<String> = (0..6).map(|i| format!("k{i}")).collect();
        let key: Vec<&str> = key.iter().map(String::as_str).collect();
        let p = principal(&key, &["t0", "t1", "t2"]);
        let tags = event_tags(&p, vec![], vec![], false).unwrap();
        assert_eq!(tags.len(), MAX_EVENT_TAGS, "the key's and team's beyond the bound are left out");
        assert_eq!(field_of(event_tags(&p, vec!["x".into()], vec![], false).unwrap_err()), "metadata.tags");
        assert_eq!(event_tags(&p, vec!["k0".into()], vec![], false).unwrap().len(), MAX_EVENT_TAGS, "already there");
    }
}
