//! The web console (docs/console.md): a single-page app embedded in the binary and served under
//! `/ui` (`assets`), and the sessions it runs on (`session`, `signin`, `throttle`).
//!
//! The console has no API of its own beyond signing in and out: its pages call the admin and
//! spend APIs, which accept the session cookie in place of a Bearer key ([`key_of`]) and apply
//! the same role checks to the key behind it. Every POST made with the cookie must carry the
//! session's CSRF token. This module must never log a key, a session id or a token.

pub(crate) mod assets;
pub mod session;
pub(crate) mod signin;
pub mod throttle;

use crate::config::ConsoleSettings;
use crate::error::GatewayError;
use crate::tenancy::auth::raw_key;
use crate::AppState;
use actix_web::http::Method;
use actix_web::HttpRequest;
use session::{Session, Sessions, COOKIE, CSRF_HEADER};
use std::sync::Arc;
use std::time::Duration;
use throttle::SignInThrottle;

/// The console's state in the gateway.
pub struct Console {
    pub enabled: bool,
    pub secure_cookie: bool,
    pub sessions: Sessions,
    pub throttle: SignInThrottle,
}

impl Console {
    pub fn new(settings: &ConsoleSettings) -> Console {
        Console {
            enabled: settings.enabled,
            secure_cookie: settings.secure_cookie,
            sessions: Sessions::new(
                Duration::from_secs(settings.session_ttl_secs),
                Duration::from_secs(settings.session_idle_secs),
                settings.max_sessions,
            ),
            throttle: SignInThrottle::new(settings.sign_in_per_ip_per_minute, settings.sign_in_per_minute),
        }
    }
}

/// The value of cookie `name` in the request, if sent.
fn cookie<'r>(req: &'r HttpRequest, name: &str) -> Option<&'r str> {
    req.headers()
        .get_all(actix_web::http::header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(k, v)| (k == name).then_some(v))
}

/// The request's console session and its id, if its cookie names a live one.
pub(crate) fn session_of(req: &HttpRequest, state: &AppState) -> Result<Option<(String, Arc<Session>)>, GatewayError> {
    if !state.console.enabled {
        return Ok(None);
    }
    let Some(id) = cookie(req, COOKIE) else { return Ok(None) };
    let session = state.console.sessions.get(id).ok_or(GatewayError::SessionExpired)?;
    Ok(Some((id.to_owned(), session)))
}

/// Refuses a POST made with the cookie that does not carry its session's CSRF token.
pub(crate) fn check_csrf(req: &HttpRequest, session: &Session) -> Result<(), GatewayError> {
    if req.method() == Method::GET {
        return Ok(());
    }
    let given = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if crate::admin::constant_time_eq(given, &session.csrf) {
        Ok(())
    } else {
        Err(GatewayError::CsrfMismatch)
    }
}

/// The key an admin or spend call is made with: the request's own key (Bearer, `x-api-key`),
/// else the key behind its console session, whose CSRF token a POST must carry.
pub(crate) fn key_of(req: &HttpRequest, state: &AppState) -> Result<String, GatewayError> {
    if let Some(raw) = raw_key(req.headers()) {
        return Ok(raw.to_owned());
    }
    let (_, session) = session_of(req, state)?.ok_or(GatewayError::MissingKey)?;
    check_csrf(req, &session)?;
    Ok(session.key.expose().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let req = TestRequest::default().insert_header(("cookie", "a=1; tollgate_session=abc; b=2")).to_http_request();
        assert_eq!(cookie(&req, COOKIE), Some("abc"));
        assert_eq!(cookie(&TestRequest::default().to_http_request(), COOKIE), None);
    }

    #[test]
    fn a_post_needs_the_sessions_csrf_token() {
        let s = Session {
            key: tollgate_schemas::secret::Secret::new("sk"),
            csrf: "t".repeat(64),
            expires_at: chrono::Utc::now(),
        };
        let get = TestRequest::get().to_http_request();
        assert!(check_csrf(&get, &s).is_ok());
        let bare = TestRequest::post().to_http_request();
        assert!(matches!(check_csrf(&bare, &s), Err(GatewayError::CsrfMismatch)));
        let wrong = TestRequest::post().insert_header((CSRF_HEADER, "u".repeat(64))).to_http_request();
        assert!(matches!(check_csrf(&wrong, &s), Err(GatewayError::CsrfMismatch)));
        let right = TestRequest::post().insert_header((CSRF_HEADER, "t".repeat(64))).to_http_request();
        assert!(check_csrf(&right, &s).is_ok());
    }
}
