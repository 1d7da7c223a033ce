//! The gateway's one route table: every path with its method and its handler, listed once.
//! [`crate::run`] serves it; the admin API's list of routes (which `openapi/admin.yaml` must
//! document) is read from it. Only routing lives here: never any request logic.
//!
//! A path has one line per method it is served with (most have one; OpenAI's `/batches` has GET
//! and POST, `/files/{id}` GET and DELETE; the pass-through routes one set of methods,
//! `Method::Provider`). Each line is its own resource guarded by its method(s), so a request with
//! another method, or for a path not listed, matches no route and gets the app's default answer:
//! 404 `route_not_found` in the OpenAI envelope.

use super::{anthropic, batches, files, openai, passthrough, spend};
use crate::admin::{self, budgets, customers, key_list, keys, lists, organizations, teams, users};
use crate::console;
use actix_web::{web, Route};
use tollgate_schemas::tenancy::{BudgetRecord, CustomerRecord, OrganizationRecord, TeamRecord, UserRecord};

/// The HTTP method of a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Delete,
    /// The methods a provider's own API uses: GET, POST, PUT, PATCH and DELETE (the
    /// pass-through routes).
    Provider,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Delete => "DELETE",
            Method::Provider => "GET|POST|PUT|PATCH|DELETE",
        }
    }
}

/// The API a route belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// OpenAI's API: also served under `/v1`.
    OpenAi,
    /// Anthropic's Messages API: also served under `/v1`.
    Anthropic,
    /// Provider APIs passed through (`/openai/...`, `/anthropic/...`, `/gemini/...`).
    PassThrough,
    Health,
    /// `/metrics`: on the main listener, and alone on `gateway.metrics.listen` when set.
    Metrics,
    /// The admin API (`openapi/admin.yaml`).
    Admin,
    Spend,
    /// The web console: its files and its sign-in (docs/console.md).
    Console,
}

impl Api {
    /// Whether its routes are served under `/v1` as well as without it.
    fn also_under_v1(self) -> bool {
        matches!(self, Api::OpenAi | Api::Anthropic)
    }

    /// Whether it moves to the admin listener when `gateway.admin.listen` is set.
    pub fn admin_side(self) -> bool {
        matches!(self, Api::Admin | Api::Spend | Api::Console)
    }
}

/// One route: `handler` hands the route (its method already set) to the handler function.
pub struct Endpoint {
    pub api: Api,
    pub method: Method,
    /// The path without the `/v1` prefix.
    pub path: &'static str,
    handler: fn(Route) -> Route,
}

impl Endpoint {
    /// Every path it is served at: with `/v1` first where its API has it.
    pub fn paths(&self) -> Vec<String> {
        let bare = self.path.to_owned();
        if self.api.also_under_v1() {
            vec![format!("/v1{bare}"), bare]
        } else {
            vec![bare]
        }
    }

    fn route(&self) -> Route {
        let route = match self.method {
            Method::Get => web::get(),
            Method::Post => web::post(),
            Method::Delete => web::delete(),
            Method::Provider => {
                use actix_web::guard;
                web::route().guard(
                    guard::Any(guard::Get()).or(guard::Post()).or(guard::Put()).or(guard::Patch()).or(guard::Delete()),
                )
            }
        };
        (self.handler)(route)
    }
}

const fn get(api: Api, path: &'static str, handler: fn(Route) -> Route) -> Endpoint {
    Endpoint { api, method: Method::Get, path, handler }
}

const fn post(api: Api, path: &'static str, handler: fn(Route) -> Route) -> Endpoint {
    Endpoint { api, method: Method::Post, path, handler }
}

const fn delete(api: Api, path: &'static str, handler: fn(Route) -> Route) -> Endpoint {
    Endpoint { api, method: Method::Delete, path, handler }
}

const fn provider(api: Api, path: &'static str, handler: fn(Route) -> Route) -> Endpoint {
    Endpoint { api, method: Method::Provider, path, handler }
}

/// Every route of the gateway. The admin routes keep the order of `openapi/admin.yaml`.
pub static ROUTES: &[Endpoint] = &[
    post(Api::OpenAi, "/chat/completions", |r| r.to(openai::chat_completions)),
    post(Api::OpenAi, "/completions", |r| r.to(openai::completions)),
    post(Api::OpenAi, "/embeddings", |r| r.to(openai::embeddings)),
    post(Api::OpenAi, "/responses", |r| r.to(openai::responses)),
    post(Api::OpenAi, "/moderations", |r| r.to(openai::moderations)),
    post(Api::OpenAi, "/rerank", |r| r.to(openai::rerank)),
    post(Api::OpenAi, "/audio/speech", |r| r.to(openai::audio_speech)),
    post(Api::OpenAi, "/images/generations", |r| r.to(openai::image_generations)),
    post(Api::OpenAi, "/audio/transcriptions", |r| r.to(openai::audio_transcriptions)),
    post(Api::OpenAi, "/audio/translations", |r| r.to(openai::audio_translations)),
    get(Api::OpenAi, "/models", |r| r.to(openai::list_models)),
    get(Api::OpenAi, "/models/{model:.*}", |r| r.to(openai::get_model)),
    get(Api::OpenAi, "/model/info", |r| r.to(openai::model_info)),
    post(Api::OpenAi, "/files", |r| r.to(files::create_file)),
    get(Api::OpenAi, "/files/{id}", |r| r.to(files::get_file)),
    delete(Api::OpenAi, "/files/{id}", |r| r.to(files::delete_file)),
    get(Api::OpenAi, "/files/{id}/content", |r| r.to(files::file_content)),
    post(Api::OpenAi, "/batches", |r| r.to(batches::create_batch)),
    get(Api::OpenAi, "/batches", |r| r.to(batches::list_batches)),
    get(Api::OpenAi, "/batches/{id}", |r| r.to(batches::get_batch)),
    post(Api::OpenAi, "/batches/{id}/cancel", |r| r.to(batches::cancel_batch)),
    post(Api::Anthropic, "/messages", |r| r.to(anthropic::anthropic_messages)),
    post(Api::Anthropic, "/messages/count_tokens", |r| r.to(anthropic::count_tokens)),
    provider(Api::PassThrough, "/openai/{tail:.*}", |r| r.to(passthrough::openai)),
    provider(Api::PassThrough, "/anthropic/{tail:.*}", |r| r.to(passthrough::anthropic)),
    provider(Api::PassThrough, "/gemini/{tail:.*}", |r| r.to(passthrough::gemini)),
    get(Api::Health, "/health", |r| r.to(super::health)),
    get(Api::Health, "/health/liveliness", |r| r.to(super::health)),
    get(Api::Health, "/health/readiness", |r| r.to(super::readiness)),
    get(Api::Metrics, "/metrics", |r| r.to(super::prometheus)),
    post(Api::Admin, "/key/generate", |r| r.to(keys::generate)),
    post(Api::Admin, "/key/update", |r| r.to(keys::update)),
    post(Api::Admin, "/key/delete", |r| r.to(keys::delete)),
    get(Api::Admin, "/key/info", |r| r.to(keys::info)),
    get(Api::Admin, "/key/list", |r| r.to(key_list::list)),
    post(Api::Admin, "/key/block", |r| r.to(keys::block)),
    post(Api::Admin, "/key/unblock", |r| r.to(keys::unblock)),
    post(Api::Admin, "/key/regenerate", |r| r.to(keys::regenerate)),
    post(Api::Admin, "/key/{key}/regenerate", |r| r.to(keys::regenerate_named)),
    post(Api::Admin, "/team/new", |r| r.to(admin::create::<TeamRecord>)),
    post(Api::Admin, "/team/update", |r| r.to(admin::update::<TeamRecord>)),
    post(Api::Admin, "/team/delete", |r| r.to(teams::delete)),
    get(Api::Admin, "/team/info", |r| r.to(teams::info)),
    get(Api::Admin, "/team/list", |r| r.to(lists::list::<TeamRecord>)),
    get(Api::Admin, "/team/statement", |r| r.to(admin::statements::team_statement)),
    post(Api::Admin, "/team/member_add", |r| r.to(teams::member_add)),
    post(Api::Admin, "/team/member_delete", |r| r.to(teams::member_delete)),
    post(Api::Admin, "/team/block", |r| r.to(teams::block)),
    post(Api::Admin, "/team/unblock", |r| r.to(teams::unblock)),
    post(Api::Admin, "/user/new", |r| r.to(users::new)),
    post(Api::Admin, "/user/update", |r| r.to(admin::update::<UserRecord>)),
    post(Api::Admin, "/user/delete", |r| r.to(users::delete)),
    get(Api::Admin, "/user/info", |r| r.to(users::info)),
    get(Api::Admin, "/user/list", |r| r.to(lists::list::<UserRecord>)),
    post(Api::Admin, "/customer/new", |r| r.to(admin::create::<CustomerRecord>)),
    post(Api::Admin, "/customer/update", |r| r.to(admin::update::<CustomerRecord>)),
    post(Api::Admin, "/customer/delete", |r| r.to(customers::delete)),
    get(Api::Admin, "/customer/info", |r| r.to(customers::info)),
    get(Api::Admin, "/customer/list", |r| r.to(lists::list::<CustomerRecord>)),
    get(Api::Admin, "/customer/statement", |r| r.to(admin::statements::customer_statement)),
    post(Api::Admin, "/customer/block", |r| r.to(customers::block)),
    post(Api::Admin, "/customer/unblock", |r| r.to(customers::unblock)),
    post(Api::Admin, "/organization/new", |r| r.to(admin::create::<OrganizationRecord>)),
    post(Api::Admin, "/organization/update", |r| r.to(admin::update::<OrganizationRecord>)),
    post(Api::Admin, "/organization/delete", |r| r.to(organizations::delete)),
    get(Api::Admin, "/organization/info", |r| r.to(organizations::info)),
    get(Api::Admin, "/organization/list", |r| r.to(lists::list::<OrganizationRecord>)),
    get(Api::Admin, "/organization/statement", |r| r.to(admin::statements::organization_statement)),
    post(Api::Admin, "/budget/new", |r| r.to(admin::create::<BudgetRecord>)),
    post(Api::Admin, "/budget/update", |r| r.to(admin::update::<BudgetRecord>)),
    post(Api::Admin, "/budget/delete", |r| r.to(budgets::delete)),
    post(Api::Admin, "/budget/info", |r| r.to(budgets::info)),
    get(Api::Admin, "/budget/list", |r| r.to(admin::list::<BudgetRecord>)),
    get(Api::Admin, "/ledger/health", |r| r.to(admin::ledger_health::ledger_health)),
    get(Api::Admin, "/model/health", |r| r.to(admin::model_health::model_health)),
    get(Api::Spend, "/spend/logs", |r| r.to(spend::spend_logs)),
    get(Api::Spend, "/global/spend/report", |r| r.to(spend::spend_report)),
    get(Api::Spend, "/spend/daily", |r| r.to(spend::spend_daily)),
    get(Api::Spend, "/spend/tags", |r| r.to(spend::spend_tags)),
    post(Api::Console, "/ui/api/sign-in", |r| r.to(console::signin::sign_in)),
    get(Api::Console, "/ui/api/session", |r| r.to(console::signin::current)),
    post(Api::Console, "/ui/api/sign-out", |r| r.to(console::signin::sign_out)),
    get(Api::Console, "/ui", |r| r.to(console::assets::index)),
    // Last: it takes every other path under /ui/.
    get(Api::Console, "/ui/{file:.*}", |r| r.to(console::assets::asset)),
];

/// The routes of one API, in table order.
pub fn of(api: Api) -> impl Iterator<Item = &'static Endpoint> {
    ROUTES.iter().filter(move |e| e.api == api)
}

/// Registers every route of the main listener: the `/v1` paths first, then the rest; without
/// the admin side's when `admin_apart` (`gateway.admin.listen` serves them).
pub fn main_listener(cfg: &mut web::ServiceConfig, admin_apart: bool) {
    let served = |e: &&Endpoint| !(admin_apart && e.api.admin_side());
    let v1 = ROUTES.iter().filter(served).filter(|e| e.api.also_under_v1()).map(|e| (format!("/v1{}", e.path), e));
    let bare = ROUTES.iter().filter(served).map(|e| (e.path.to_owned(), e));
    for (path, endpoint) in v1.chain(bare) {
        cfg.route(&path, endpoint.route());
    }
}

/// Routes of the data plane that the admin listener serves too: the console's Models page reads
/// the deployments there (LiteLLM's UI reads them the same way).
const ALSO_ON_ADMIN: &[&str] = &["/model/info"];

/// Registers the routes of the admin listener (`gateway.admin.listen`): the admin API, the
/// spend API and the console, with the health checks and [`ALSO_ON_ADMIN`].
pub fn admin_listener(cfg: &mut web::ServiceConfig) {
    let served = |e: &&Endpoint| e.api.admin_side() || e.api == Api::Health || ALSO_ON_ADMIN.contains(&e.path);
    for endpoint in ROUTES.iter().filter(served) {
        cfg.route(endpoint.path, endpoint.route());
    }
}

/// Registers the routes of the separate metrics listener (`gateway.metrics.listen`).
pub fn metrics_listener(cfg: &mut web::ServiceConfig) {
    for endpoint in of(Api::Metrics) {
        cfg.route(endpoint.path, endpoint.route());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;
    use actix_web::App;
    use std::collections::BTreeSet;

    #[test]
    fn every_path_and_method_is_listed_once() {
        let mut seen = BTreeSet::new();
        for e in ROUTES {
            for path in e.paths() {
                assert!(seen.insert((e.method.as_str(), path.clone())), "{} {path} is listed twice", e.method.as_str());
            }
        }
        let paths: BTreeSet<_> = seen.iter().map(|(_, p)| p.clone()).collect();
        assert!(paths.contains("/v1/chat/completions") && paths.contains("/chat/completions"));
        assert!(paths.contains("/v1/messages") && !paths.contains("/v1/key/generate"));
    }

    async fn answer(method: actix_web::http::Method, path: &str) -> (u16, serde_json::Value) {
        answer_on(|cfg| main_listener(cfg, false), method, path).await
    }

    async fn answer_on(
        routes: impl FnOnce(&mut web::ServiceConfig),
        method: actix_web::http::Method,
        path: &str,
    ) -> (u16, serde_json::Value) {
        let app = actix_web::test::init_service(
            App::new().configure(routes).default_service(web::to(crate::http::not_found)),
        )
        .await;
        let resp = actix_web::test::call_service(
            &app,
            actix_web::test::TestRequest::default().method(method).uri(path).to_request(),
        )
        .await;
        let status = resp.status().as_u16();
        let body = resp.into_body().try_into_bytes().unwrap_or_default();
        (status, serde_json::from_slice(&body).unwrap_or_default())
    }

    #[actix_web::test]
    async fn a_wrong_method_is_a_route_not_found() {
        use actix_web::http::Method;
        let (status, body) = answer(Method::GET, "/health").await;
        assert_eq!((status, &body["status"]), (200, &serde_json::json!("ok")));
        // A path served with two methods reaches a handler with each (without the app's state
        // here, so not a 404 but a 500) and is a 404 with a third.
        for method in [Method::GET, Method::POST] {
            assert_eq!(answer(method.clone(), "/v1/batches").await.0, 500, "{method}");
        }
        for method in [Method::GET, Method::DELETE] {
            assert_eq!(answer(method.clone(), "/v1/files/file-x").await.0, 500, "{method}");
        }
        let wrong = [
            (Method::POST, "/health"),
            (Method::GET, "/key/generate"),
            (Method::GET, "/v1/nope"),
            (Method::HEAD, "/openai/v1/models"),
            (Method::OPTIONS, "/gemini/v1beta/models"),
            (Method::DELETE, "/v1/batches"),
            (Method::PUT, "/batches"),
            (Method::POST, "/v1/files/file-x"),
            (Method::DELETE, "/files/file-x/content"),
        ];
        for (method, path) in wrong {
            let (status, body) = answer(method.clone(), path).await;
            assert_eq!(status, 404, "{method} {path}");
            assert_eq!(body["error"]["code"], "route_not_found", "{method} {path}");
        }
    }

    #[actix_web::test]
    async fn the_admin_side_moves_to_its_own_listener_whole() {
        use actix_web::http::Method;
        let (main_apart, admin) = (|cfg: &mut web::ServiceConfig| main_listener(cfg, true), admin_listener);
        for path in ["/key/list", "/spend/daily", "/ui", "/ui/app.js", "/team/list"] {
            let (status, body) = answer_on(main_apart, Method::GET, path).await;
            assert_eq!((status, body["error"]["code"].as_str()), (404, Some("route_not_found")), "main {path}");
            // Served there (without the app's state here, a 500 rather than a 404).
            assert_ne!(answer_on(admin, Method::GET, path).await.0, 404, "admin {path}");
        }
        for path in ["/models", "/v1/models", "/openai/v1/models", "/v1/model/info"] {
            assert_eq!(answer_on(admin, Method::GET, path).await.0, 404, "admin {path}");
            assert_ne!(answer_on(main_apart, Method::GET, path).await.0, 404, "main {path}");
        }
        // The console's Models page reads the deployments on either listener.
        for app in [
            answer_on(main_apart, Method::GET, "/model/info").await,
            answer_on(admin, Method::GET, "/model/info").await,
        ] {
            assert_ne!(app.0, 404);
        }
        for app in [answer_on(main_apart, Method::GET, "/health").await, answer_on(admin, Method::GET, "/health").await]
        {
            assert_eq!(app.0, 200, "health on both");
        }
        assert_eq!(answer_on(main_apart, Method::POST, "/v1/key/generate").await.0, 404);
    }
}
