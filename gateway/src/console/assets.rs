//! The console's files, built by `gateway/ui/build` into `gateway/ui/dist` and embedded in the
//! binary at compile time: nothing is read from disk at run time. Every answer carries a strict
//! Content-Security-Policy (scripts and styles from this origin only, no inline script, no
//! framing).

use crate::AppState;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{web, HttpRequest, HttpResponse};

/// Scripts, styles, images and calls from this origin only; nothing inline, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// (name under `/ui/`, content type, content).
static FILES: &[(&str, &str, &[u8])] = &[
    ("index.html", "text/html; charset=utf-8", include_bytes!("../../ui/dist/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../../ui/dist/app.js")),
    ("app.css", "text/css; charset=utf-8", include_bytes!("../../ui/dist/app.css")),
];

/// The security headers of every console answer (files and sign-in alike).
pub(crate) fn secured(mut response: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    response
        .insert_header(("content-security-policy", CONTENT_SECURITY_POLICY))
        .insert_header(("x-content-type-options", "nosniff"))
        .insert_header(("referrer-policy", "no-referrer"))
        .insert_header(("x-frame-options", "DENY"))
        .insert_header((CACHE_CONTROL, "no-cache"));
    response
}

fn file(name: &str) -> HttpResponse {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, body)) => secured(HttpResponse::Ok()).insert_header((CONTENT_TYPE, *kind)).body(*body),
        None => secured(HttpResponse::NotFound()).content_type("text/plain").body("not found"),
    }
}

/// `GET /ui`: the app's page.
pub(crate) async fn index(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if !state.console.enabled {
        return crate::http::not_found(req).await;
    }
    file("index.html")
}

/// `GET /ui/{file}`: one of the app's files.
pub(crate) async fn asset(req: HttpRequest, path: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    if !state.console.enabled {
        return crate::http::not_found(req).await;
    }
    let name = path.into_inner();
    file(if name.is_empty() { "index.html" } else { &name })
}
