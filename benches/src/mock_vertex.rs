//! The mock provider playing Google Vertex AI: a service-account token endpoint and the
//! `publishers/google` (Gemini) and `publishers/anthropic` (Claude) model routes, so Vertex AI
//! deployments can be tested like the others. The answers are those of the Gemini and
//! Anthropic mocks (`mock_gemini::answer`, `mock_anthropic::answer`); what is Vertex's own is
//! the sign-in.
//!
//! Routes:
//! - `POST /vertex/token`: OAuth's JWT-bearer grant (a form with `grant_type` and `assertion`).
//!   The JWT must be RS256, signed by the key of [`TEST_SERVICE_ACCOUNT`], its `iss` that
//!   account, its `aud` ending in `/vertex/token`, its `scope` Vertex AI's, and not expired; it
//!   is answered a fresh access token valid an hour, else 400 `invalid_grant`.
//! - `GET /vertex/tokens`: `{"issued": n}`, the tokens this server has issued.
//! - `POST /vertex/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:
//!   generateContent` (and `:streamGenerateContent?alt=sse`), `.../publishers/anthropic/models/
//!   {model}:rawPredict` (and `:streamRawPredict`). Each needs `Authorization: Bearer` with a token
//!   this server issued (401 `UNAUTHENTICATED` otherwise). A Claude body must carry
//!   `anthropic_version: vertex-2023-10-16` and no `model` (400 otherwise).
//!
//! It never calls the network.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Public};
use openssl::sign::Verifier;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock, PoisonError};

/// A service account key made for the tests alone (never registered with Google; it grants
/// nothing anywhere). Its `token_uri` is a placeholder: tests point it at their mock.
pub const TEST_SERVICE_ACCOUNT: &str = include_str!("../testdata/vertex-test-service-account.json");

/// [`TEST_SERVICE_ACCOUNT`] with its `token_uri` at `token_uri` (a mock's `/vertex/token`).
pub fn test_key(token_uri: &str) -> String {
    match serde_json::from_str::<Value>(TEST_SERVICE_ACCOUNT) {
        Ok(mut key) => {
            key["token_uri"] = json!(token_uri);
            key.to_string()
        }
        Err(_) => TEST_SERVICE_ACCOUNT.to_owned(),
    }
}

/// The scope a Vertex AI token is asked for.
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The Claude body's version on Vertex AI.
const ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

/// Registers the Vertex AI routes on the mock's app.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/vertex/token", web::post().to(token)).route("/vertex/tokens", web::get().to(tokens_issued)).route(
        "/vertex/v1/projects/{project}/locations/{location}/publishers/{publisher}/models/{model_action}",
        web::post().to(predict),
    );
}

/// The tokens each mock server (by its address) has issued: `configure` runs once per worker.
fn issued() -> std::sync::MutexGuard<'static, HashMap<SocketAddr, HashSet<String>>> {
    static ISSUED: OnceLock<Mutex<HashMap<SocketAddr, HashSet<String>>>> = OnceLock::new();
    ISSUED.get_or_init(Mutex::default).lock().unwrap_or_else(PoisonError::into_inner)
}

/// The test account's email and public key.
fn test_account() -> Option<(String, PKey<Public>)> {
    let file: Value = serde_json::from_str(TEST_SERVICE_ACCOUNT).ok()?;
    let private = PKey::private_key_from_pem(file.get("private_key")?.as_str()?.as_bytes()).ok()?;
    let public = PKey::public_key_from_pem(&private.public_key_to_pem().ok()?).ok()?;
    Some((file.get("client_email")?.as_str()?.to_owned(), public))
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Why a JWT is refused, or `Ok` when it asserts the test account now.
fn check_assertion(jwt: &str) -> Result<(), &'static str> {
    let (email, public) = test_account().ok_or("the mock's test key does not load")?;
    let mut parts = jwt.split('.');
    let (Some(header), Some(claims), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a JWT");
    };
    let decode = |part: &str| -> Option<Value> { serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok() };
    let header = decode(header).ok_or("bad JWT header")?;
    if header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err("alg must be RS256");
    }
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| "bad signature encoding")?;
    let signed = &jwt[..jwt.len() - jwt.rsplit('.').next().map_or(0, str::len) - 1];
    let verified = Verifier::new(MessageDigest::sha256(), &public)
        .and_then(|mut v| v.update(signed.as_bytes()).and_then(|()| v.verify(&signature)))
        .unwrap_or(false);
    if !verified {
        return Err("invalid JWT signature");
    }
    let claims = decode(claims).ok_or("bad JWT claims")?;
    let text = |name: &str| claims.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
    let number = |name: &str| claims.get(name).and_then(Value::as_u64).unwrap_or_default();
    if text("iss") != email {
        return Err("unknown issuer");
    }
    if !text("aud").ends_with("/vertex/token") {
        return Err("wrong audience");
    }
    if text("scope").split(' ').all(|s| s != SCOPE) {
        return Err("missing scope");
    }
    let (iat, exp, now) = (number("iat"), number("exp"), now());
    if exp <= now || iat > now + 60 || exp.saturating_sub(iat) > 3600 {
        return Err("JWT expired or too long-lived");
    }
    Ok(())
}

fn invalid_grant(description: &str) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({"error": "invalid_grant", "error_description": description}))
}

async fn token(req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let form: HashMap<String, String> = match web::Query::from_query(&String::from_utf8_lossy(&body)) {
        Ok(form) => web::Query::into_inner(form),
        Err(_) => return invalid_grant("not a form"),
    };
    if form.get("grant_type").map(String::as_str) != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return HttpResponse::BadRequest().json(json!({"error": "unsupported_grant_type"}));
    }
    if let Err(why) = check_assertion(form.get("assertion").map_or("", String::as_str)) {
        return invalid_grant(why);
    }
    let access_token = format!("ya29.mock-{}", uuid::Uuid::now_v7().simple());
    issued().entry(req.app_config().local_addr()).or_default().insert(access_token.clone());
    HttpResponse::Ok().json(json!({"access_token": access_token, "expires_in": 3599, "token_type": "Bearer"}))
}

async fn tokens_issued(req: HttpRequest) -> HttpResponse {
    let n = issued().get(&req.app_config().local_addr()).map_or(0, HashSet::len);
    HttpResponse::Ok().json(json!({"issued": n}))
}

/// An error in Google's shape.
fn google_error(status: StatusCode, name: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": {"code": status.as_u16(), "message": message, "status": name}}))
}

async fn predict(req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let bearer =
        req.headers().get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let known = bearer.is_some_and(|t| issued().get(&req.app_config().local_addr()).is_some_and(|s| s.contains(t)));
    if !known {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token.",
        );
    }
    let publisher = req.match_info().get("publisher").unwrap_or_default().to_owned();
    let model_action = req.match_info().get("model_action").unwrap_or_default().to_owned();
    match publisher.as_str() {
        "google" => crate::mock_gemini::answer(&req, &body, &model_action).await,
        "anthropic" => claude(&req, &body, &model_action).await,
        _ => google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Publisher not found."),
    }
}

/// Claude on Vertex AI: the model from the URL, the version from the body.
async fn claude(req: &HttpRequest, body: &[u8], model_action: &str) -> HttpResponse {
    let bad = |message: &str| {
        HttpResponse::BadRequest()
            .json(json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}}))
    };
    let (model, stream) = match model_action.rsplit_once(':') {
        Some((model, "rawPredict")) => (model, false),
        Some((model, "streamRawPredict")) => (model, true),
        _ => return google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "The requested URL was not found."),
    };
    let Ok(Value::Object(mut fields)) = serde_json::from_slice::<Value>(body) else { return bad("invalid JSON") };
    if fields.get("anthropic_version").and_then(Value::as_str) != Some(ANTHROPIC_VERSION) {
        return bad("anthropic_version: must be vertex-2023-10-16");
    }
    if fields.contains_key("model") {
        return bad("model: Extra inputs are not permitted");
    }
    if stream != (fields.get("stream").and_then(Value::as_bool) == Some(true)) {
        return bad("stream must be set for streamRawPredict, and only for it");
    }
    fields.insert("model".to_owned(), json!(model));
    crate::mock_anthropic::answer(req, Value::Object(fields).to_string().as_bytes()).await
}

#[cfg(test)]
mod tests;
