//! Signing in and out of the console: `POST /ui/api/sign-in` with the master key or a key of a
//! user (`proxy_admin`, `proxy_admin_viewer`, a team admin, an `internal_user`: see
//! `admin::roles`; a key of no user may not sign in) opens a session (an HttpOnly, SameSite=Strict cookie; Secure with
//! `gateway.console.secure_cookie`); `GET /ui/api/session` says who is signed in and hands the
//! page its CSRF token; `POST /ui/api/sign-out` ends the session.

use super::session::COOKIE;
use super::{check_csrf, session_of};
use crate::admin::Answer;
use crate::error::GatewayError;
use crate::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

/// The largest sign-in body read: a key, in JSON.
const MAX_SIGN_IN_BYTES: usize = 4096;

fn cookie(state: &AppState, value: &str, max_age_secs: u64) -> String {
    let secure = if state.console.secure_cookie { "; Secure" } else { "" };
    format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}")
}

fn enabled(state: &AppState) -> Result<(), GatewayError> {
    if state.console.enabled {
        Ok(())
    } else {
        Err(GatewayError::RouteNotFound("the console is turned off (gateway.console.enabled)".into()))
    }
}

/// `POST /ui/api/sign-in` with `{"key": "..."}`.
pub(crate) async fn sign_in(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> Answer {
    enabled(&state)?;
    let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
    let ip = req.peer_addr().map(|a| a.ip());
    if let Err(retry_after_secs) = state.console.throttle.attempt(ip, now) {
        metrics::counter!("tollgate_console_sign_ins_total", "outcome" => "throttled").increment(1);
        return Err(GatewayError::SignInThrottled { retry_after_secs });
    }
    if body.len() > MAX_SIGN_IN_BYTES {
        return Err(GatewayError::BodyTooLarge { limit: MAX_SIGN_IN_BYTES });
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct SignIn {
        key: String,
    }
    let given: SignIn = serde_json::from_slice(&body)
        .map_err(|_| GatewayError::field("key", "the body must be {\"key\": \"<your key>\"}"))?;
    let who = match crate::admin::roles::role_of(&state, given.key.trim()).await {
        Ok(who) => who,
        Err(e) => {
            metrics::counter!("tollgate_console_sign_ins_total", "outcome" => "refused").increment(1);
            return Err(e);
        }
    };
    let (id, session) =
        state.console.sessions.open(given.key.trim()).map_err(|_| GatewayError::Internal("no random source".into()))?;
    metrics::counter!("tollgate_console_sign_ins_total", "outcome" => "signed_in").increment(1);
    Ok(super::assets::secured(HttpResponse::Ok())
        .insert_header(("set-cookie", cookie(&state, &id, state.console.sessions.ttl().as_secs())))
        .json(json!({
            "role": who.role,
            "user_id": who.user_id,
            "teams": who.teams,
            "csrf_token": session.csrf,
            "expires_at": session.expires_at,
        })))
}

/// `GET /ui/api/session`: the signed-in role (checked afresh; with a user's id and the teams it
/// administers), the CSRF token and the expiry;
/// `{"role": null}` when no session is live (a page's first question, not an error).
pub(crate) async fn current(req: HttpRequest, state: web::Data<AppState>) -> Answer {
    enabled(&state)?;
    let Ok(Some((_, session))) = session_of(&req, &state) else {
        return Ok(super::assets::secured(HttpResponse::Ok()).json(json!({"role": null})));
    };
    let who = crate::admin::roles::role_of(&state, session.key.expose()).await?;
    Ok(super::assets::secured(HttpResponse::Ok()).json(json!({
        "role": who.role,
        "user_id": who.user_id,
        "teams": who.teams,
        "csrf_token": session.csrf,
        "expires_at": session.expires_at,
    })))
}

/// `POST /ui/api/sign-out` (with the CSRF token): ends the session and clears the cookie.
pub(crate) async fn sign_out(req: HttpRequest, state: web::Data<AppState>) -> Answer {
    enabled(&state)?;
    if let Some((id, session)) = session_of(&req, &state)? {
        check_csrf(&req, &session)?;
        state.console.sessions.close(&id);
    }
    Ok(super::assets::secured(HttpResponse::Ok())
        .insert_header(("set-cookie", cookie(&state, "", 0)))
        .json(json!({"signed_out": true})))
}
