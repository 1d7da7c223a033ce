//! The admin API's OpenAPI document (`gateway/openapi/admin.yaml`) against the gateway itself:
//! the document names exactly the admin routes of the gateway's route table, and a live
//! gateway (real Kafka and Cassandra) answers every route, valid and invalid requests alike,
//! with the status and the body the document promises. The requests sent are checked against
//! the documented request schemas too, so the document neither refuses what the gateway takes
//! nor takes what the gateway refuses.

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use tollgate_tests::*;

/// The OpenAPI document and the JSON Schema validators compiled from it.
struct Spec {
    doc: Value,
    validators: BTreeMap<String, jsonschema::Validator>,
}

impl Spec {
    fn load() -> Result<Spec> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../gateway/openapi/admin.yaml");
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let doc: Value = serde_yaml::from_str(&text).context("admin.yaml is not valid YAML")?;
        Spec::new(doc)
    }

    fn new(doc: Value) -> Result<Spec> {
        ensure!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "not an OpenAPI 3.1 document");
        ensure!(doc["components"]["schemas"].is_object(), "the document has no components.schemas");
        Ok(Spec { doc, validators: BTreeMap::new() })
    }

    /// Every documented operation as (METHOD, path).
    fn routes(&self) -> Result<BTreeSet<(String, String)>> {
        let paths = self.doc["paths"].as_object().context("the document has no paths")?;
        let mut routes = BTreeSet::new();
        for (path, item) in paths {
            let item = item.as_object().with_context(|| format!("{path} is not an object"))?;
            for method in item.keys() {
                ensure!(["get", "post"].contains(&method.as_str()), "{path}: unexpected key {method:?}");
                routes.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
        Ok(routes)
    }

    fn operation(&self, method: &str, path: &str) -> Result<&Value> {
        let op = &self.doc["paths"][path][method.to_ascii_lowercase()];
        ensure!(op.is_object(), "{method} {path} is not documented");
        Ok(op)
    }

    /// Follows a `$ref` to another part of the document (`#/components/...`).
    fn deref<'a>(&'a self, v: &'a Value) -> Result<&'a Value> {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let pointer = r.strip_prefix('#').with_context(|| format!("external $ref {r}"))?;
                self.doc.pointer(pointer).with_context(|| format!("dangling $ref {r}"))
            }
            None => Ok(v),
        }
    }

    /// The documented schema of the answer to `method path` with `status`.
    fn response_schema(&self, method: &str, path: &str, status: u16) -> Result<Value> {
        let op = self.operation(method, path)?;
        let response = op["responses"]
            .get(status.to_string())
            .with_context(|| format!("{method} {path}: status {status} is not documented"))?;
        let schema = &self.deref(response)?["content"]["application/json"]["schema"];
        ensure!(schema.is_object(), "{method} {path} {status}: no application/json schema");
        Ok(schema.clone())
    }

    /// The documented schema of the request body of `method path`, if it takes one.
    fn request_schema(&self, method: &str, path: &str) -> Result<Option<Value>> {
        let op = self.operation(method, path)?;
        match op.get("requestBody") {
            None => Ok(None),
            Some(body) => {
                let schema = &self.deref(body)?["content"]["application/json"]["schema"];
                ensure!(schema.is_object(), "{method} {path}: request body without a schema");
                Ok(Some(schema.clone()))
            }
        }
    }

    /// Whether a request body of `method path` is required by the document.
    fn body_required(&self, method: &str, path: &str) -> Result<bool> {
        Ok(self.operation(method, path)?["requestBody"]["required"] == true)
    }

    /// The required query parameters of `method path`.
    fn required_query(&self, method: &str, path: &str) -> Result<Vec<String>> {
        let op = self.operation(method, path)?;
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        Ok(params
            .iter()
            .filter(|p| p["in"] == "query" && p["required"] == true)
            .filter_map(|p| p["name"].as_str().map(str::to_owned))
            .collect())
    }

    /// The errors of `instance` against `schema` (a schema of the document: its `$ref`s point
    /// into `components`), as readable lines; empty when it is valid.
    fn errors(&mut self, schema: &Value, instance: &Value) -> Result<Vec<String>> {
        let cache_key = schema.to_string();
        if !self.validators.contains_key(&cache_key) {
            // The schema as the root of a document that also holds the components, so that
            // `#/components/schemas/...` resolves within it.
            let mut root = match schema {
                Value::Object(o) => o.clone(),
                other => bail!("a schema must be an object: {other}"),
            };
            root.insert("$schema".into(), json!("https://json-schema.org/draft/2020-12/schema"));
            root.insert("components".into(), self.doc["components"].clone());
            let validator = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .should_validate_formats(true)
                .build(&Value::Object(root))
                .map_err(|e| anyhow::anyhow!("the schema {schema} does not compile: {e}"))?;
            self.validators.insert(cache_key.clone(), validator);
        }
        let validator = self.validators.get(&cache_key).context("validator just compiled")?;
        Ok(validator.iter_errors(instance).map(|e| format!("at {}: {e}", e.instance_path())).collect())
    }
}

/// A gateway, the caller's key and the document; records what was called.
struct Checker {
    spec: Spec,
    client: reqwest::Client,
    base: String,
    /// Routes answered 200 to a valid request.
    answered: BTreeSet<(String, String)>,
}

/// A request to the admin API: `route` is the documented path, `url` what is sent (path
/// parameters filled in, query string added).
struct Call<'a> {
    method: &'a str,
    route: &'a str,
    url: String,
    body: Option<Value>,
    key: Option<&'a str>,
}

fn post<'a>(route: &'a str, body: Value) -> Call<'a> {
    Call { method: "POST", route, url: route.to_owned(), body: Some(body), key: Some(MASTER_KEY) }
}

fn get<'a>(route: &'a str, query: &str) -> Call<'a> {
    let url = if query.is_empty() { route.to_owned() } else { format!("{route}?{query}") };
    Call { method: "GET", route, url, body: None, key: Some(MASTER_KEY) }
}

impl<'a> Call<'a> {
    fn with_key(self, key: Option<&'a str>) -> Call<'a> {
        Call { key, ..self }
    }
}

impl Checker {
    async fn send(&self, call: &Call<'_>) -> Result<(u16, Value)> {
        let url = format!("{}{}", self.base, call.url);
        let mut request = match call.method {
            "GET" => self.client.get(url),
            _ => self.client.post(url),
        };
        if let Some(key) = call.key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        let resp = request.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let body = serde_json::from_str(&text)
            .with_context(|| format!("{} {}: answer {status} is not JSON: {text:?}", call.method, call.url))?;
        Ok((status, body))
    }

    /// The request's errors against the documented request schema (empty: the document takes it).
    fn request_errors(&mut self, call: &Call<'_>) -> Result<Vec<String>> {
        let what = format!("{} {}", call.method, call.url);
        let query: BTreeSet<String> = call
            .url
            .split_once('?')
            .map(|(_, q)| q.split('&').filter_map(|kv| kv.split('=').next()).map(str::to_owned).collect())
            .unwrap_or_default();
        let mut errors: Vec<String> = self
            .spec
            .required_query(call.method, call.route)?
            .into_iter()
            .filter(|p| !query.contains(p))
            .map(|p| format!("required query parameter {p} missing"))
            .collect();
        match (self.spec.request_schema(call.method, call.route)?, &call.body) {
            (Some(schema), Some(body)) => errors.extend(self.spec.errors(&schema, body)?),
            (Some(_), None) if self.spec.body_required(call.method, call.route)? => {
                errors.push("request body missing".into())
            }
            (None, Some(body)) => bail!("{what}: the document takes no body, the test sends {body}"),
            _ => {}
        }
        Ok(errors)
    }

    /// A valid request: the document must take it, the gateway must answer 200, and the answer
    /// must be of the documented schema.
    async fn ok(&mut self, call: Call<'_>) -> Result<Value> {
        let what = format!("{} {}", call.method, call.url);
        let refused = self.request_errors(&call)?;
        ensure!(refused.is_empty(), "{what}: the document refuses a valid request {:?}: {refused:#?}", call.body);
        let (status, body) = self.send(&call).await?;
        ensure!(status == 200, "{what} {:?}: {status} {body}", call.body);
        let schema = self.spec.response_schema(call.method, call.route, 200)?;
        let errors = self.spec.errors(&schema, &body)?;
        ensure!(errors.is_empty(), "{what}: the answer is not of the documented schema: {errors:#?}\n{body:#}");
        self.answered.insert((call.method.to_owned(), call.route.to_owned()));
        Ok(body)
    }

    /// An invalid or refused request: the gateway must answer `status` (documented for the
    /// route) with an error of the documented schema naming `param`. With `doc_refuses`, the
    /// documented request schema must refuse the request too.
    async fn fails(&mut self, call: Call<'_>, status: u16, param: Option<&str>, doc_refuses: bool) -> Result<Value> {
        let what = format!("{} {} {:?}", call.method, call.url, call.body);
        if doc_refuses {
            let refused = self.request_errors(&call)?;
            ensure!(!refused.is_empty(), "{what}: the document takes a request the gateway refuses");
        }
        let (got, body) = self.send(&call).await?;
        ensure!(got == status, "{what}: expected {status}, got {got} {body}");
        let schema = self.spec.response_schema(call.method, call.route, status)?;
        let errors = self.spec.errors(&schema, &body)?;
        ensure!(
            errors.is_empty(),
            "{what}: the {status} answer is not of the documented schema: {errors:#?}\n{body:#}"
        );
        let shown = body["error"]["param"].as_str();
        ensure!(shown == param, "{what}: error.param is {shown:?}, expected {param:?}: {body}");
        Ok(body)
    }
}

fn text(v: &Value, field: &str) -> Result<String> {
    v[field].as_str().map(str::to_owned).with_context(|| format!("no {field} in {v}"))
}

#[test]
fn the_document_names_exactly_the_admin_routes() -> Result<()> {
    let spec = Spec::load()?;
    let documented = spec.routes()?;
    let routes = tollgate_gateway::admin::routes();
    let served: BTreeSet<(String, String)> = routes.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
    ensure!(served.len() == routes.len(), "the route table lists an admin route twice");
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    ensure!(undocumented.is_empty() && unserved.is_empty(), "undocumented: {undocumented:?}; not served: {unserved:?}");
    // Every operation documents a JSON answer for 200 and the envelope for each error status.
    for (method, path) in &documented {
        spec.response_schema(method, path, 200)?;
        let op = spec.operation(method, path)?;
        let statuses = op["responses"].as_object().context("no responses")?;
        for status in statuses.keys().filter(|s| *s != "200") {
            let schema = spec.response_schema(method, path, status.parse()?)?;
            let name = schema["$ref"].as_str().unwrap_or_default();
            let resolved = spec.deref(&schema)?;
            ensure!(
                resolved["allOf"][0]["$ref"] == "#/components/schemas/Error",
                "{method} {path} {status}: the error schema {name} is not the Error envelope"
            );
        }
        for status in ["401", "403", "500"] {
            ensure!(statuses.contains_key(status), "{method} {path}: status {status} is not documented");
        }
        if let Some(schema) = spec.request_schema(method, path)? {
            let resolved = spec.deref(&schema)?;
            ensure!(resolved["additionalProperties"] == false, "{method} {path}: the request schema is open");
        }
    }
    Ok(())
}

/// The validation is not vacuous: a changed type, or a field the document does not know, makes
/// a real answer invalid.
#[test]
fn a_wrong_document_fails_the_validation() -> Result<()> {
    let mut spec = Spec::load()?;
    let answer = json!({
        "key_id": "ab", "key_name": "sk-...abcd", "key_alias": null, "team_id": null, "user_id": null,
        "organization_id": null, "models": [], "max_budget": 0.1, "max_budget_nano_usd": 100_000_000,
        "soft_budget": null, "soft_budget_nano_usd": null, "budget_duration": "30d",
        "budget_reset_at": "2026-12-01T00:00:00Z", "tpm_limit": null, "rpm_limit": 5, "max_parallel_requests": null,
        "expires": null, "blocked": false, "metadata": {}, "tags": [], "created_at": "2026-11-23T10:00:00.5Z",
        "updated_at": "2026-11-23T10:00:00.5Z", "replaced_by": null,
    });
    let key = json!({"$ref": "#/components/schemas/Key"});
    ensure!(spec.errors(&key, &answer)?.is_empty(), "{:?}", spec.errors(&key, &answer)?);
    let mut unknown = answer.clone();
    unknown["colour"] = json!("red");
    ensure!(!spec.errors(&key, &unknown)?.is_empty(), "an unknown field passed");
    let mut bad_time = answer.clone();
    bad_time["created_at"] = json!("yesterday");
    ensure!(!spec.errors(&key, &bad_time)?.is_empty(), "a malformed time passed");
    let mut missing = answer.clone();
    missing.as_object_mut().context("object")?.remove("max_budget_nano_usd");
    ensure!(!spec.errors(&key, &missing)?.is_empty(), "a missing required field passed");

    let mut doc = spec.doc.clone();
    doc["components"]["schemas"]["LimitsView"]["properties"]["max_budget_nano_usd"]["type"] = json!("string");
    let mut wrong = Spec::new(doc)?;
    ensure!(!wrong.errors(&key, &answer)?.is_empty(), "a wrong type in the document passed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_route_answers_as_documented() -> Result<()> {
    let Fixture { dir, topics, keyspace: ks, mock, .. } = Fixture::start("admin-openapi", 1).await?;
    // No ledger consumer: budgets are enforced on this gateway's own spend.
    let config = GatewayConfig {
        budgets: Some(Budgets::fail_open()),
        ..GatewayConfig::tenancy("gw-openapi", mock.url()?, &topics, &ks)
    };
    let gateway = start_gateway(&dir, &config).await?;
    let mut c = Checker {
        spec: Spec::load()?,
        client: reqwest::Client::new(),
        base: gateway.url()?.to_owned(),
        answered: BTreeSet::new(),
    };
    let id = unique("");
    let (org, bud, team, user, viewer, cust) = (
        format!("org-{id}"),
        format!("budget-{id}"),
        format!("team-{id}"),
        format!("user-{id}"),
        format!("viewer-{id}"),
        format!("cust-{id}"),
    );

    // --- Organizations and reusable budgets.
    let o = c
        .ok(post(
            "/organization/new",
            json!({"organization_id": org, "organization_alias": "Acme", "models": ["gpt-4o-mini", "gpt-4o"],
                   "max_budget": "12.5", "budget_duration": "1mo", "metadata": {"tier": "gold"}}),
        ))
        .await?;
    ensure!(o["max_budget"] == 12.5 && o["max_budget_nano_usd"] == 12_500_000_000i64, "{o}");
    ensure!(o["budget_reset_at"].is_string(), "a budget with a duration shows its reset: {o}");
    c.ok(post("/organization/update", json!({"organization_id": org, "tpm_limit": 1000, "blocked": false}))).await?;
    let oi = c.ok(get("/organization/info", &format!("organization_id={org}"))).await?;
    ensure!(oi["tpm_limit"] == 1000 && oi["budget_window"].is_string(), "{oi}");
    c.ok(get("/organization/list", "")).await?;

    let b = c
        .ok(post(
            "/budget/new",
            json!({"budget_id": bud, "max_budget": 0.5, "soft_budget": "0.25", "budget_duration": "30d",
                   "rpm_limit": 60, "alert_thresholds": [90, 50, 90],
                   "model_max_budget": {"gpt-4o": 1, "gpt-4o-mini": {"max_budget": "0.000000001"}},
                   "model_rpm_limit": {"gpt-4o": 10}, "model_tpm_limit": {"gpt-4o": 1000}}),
        ))
        .await?;
    ensure!(b["soft_budget_nano_usd"] == 250_000_000 && b["alert_thresholds"] == json!([50, 90]), "{b}");
    ensure!(b["model_max_budget"]["gpt-4o-mini"] == 0.000000001, "{b}");
    c.ok(post("/budget/update", json!({"budget_id": bud, "tpm_limit": 5000, "soft_budget": null}))).await?;
    let bi = c.ok(post("/budget/info", json!({"budgets": [bud]}))).await?;
    ensure!(bi[0]["tpm_limit"] == 5000 && bi[0]["soft_budget"].is_null(), "{bi}");
    c.ok(get("/budget/list", "")).await?;
    // No ledger consumer here: no heartbeat, so the budget view is stale.
    let health = c.ok(get("/ledger/health", "")).await?;
    ensure!(health["budget_view"]["stale"] == true && health["budget_view"]["heartbeat_age_ms"].is_null(), "{health}");
    let models = c.ok(get("/model/health", "")).await?;
    ensure!(
        models["data"].as_array().is_some_and(|d| !d.is_empty() && d.iter().all(|m| m["state"] == "healthy")),
        "{models}"
    );

    // --- Users and teams.
    let u = c
        .ok(post(
            "/user/new",
            json!({"user_id": user, "user_email": "ada@example.com", "user_role": "internal_user",
                   "organization_id": org, "max_budget": 0.1, "models": ["gpt-4o-mini"]}),
        ))
        .await?;
    ensure!(u["max_budget_nano_usd"] == 100_000_000, "{u}");
    // As in LiteLLM, the new user has a key of their own (unless `auto_create_key` is false).
    ensure!(u["key"].as_str().is_some_and(|k| k.len() > 12) && u["token"].is_string(), "{u}");
    let v = c
        .ok(post("/user/new", json!({"user_id": viewer, "user_role": "proxy_admin_viewer", "auto_create_key": false})))
        .await?;
    ensure!(v.get("key").is_none(), "{v}");
    c.ok(post("/user/update", json!({"user_id": user, "user_alias": "Ada", "budget_id": bud}))).await?;
    let users = c.ok(get("/user/list", "")).await?;
    // As LiteLLM answers it: a page of users.
    let listed = users["users"]
        .as_array()
        .context("a list")?
        .iter()
        .filter(|u| u["user_id"] == user.as_str() || u["user_id"] == viewer.as_str());
    ensure!(listed.count() == 2, "both new users listed: {users}");

    let t = c
        .ok(post(
            "/team/new",
            json!({"team_id": team, "team_alias": "payments", "organization_id": org, "models": ["gpt-4o-mini"],
                   "members_with_roles": [{"user_id": user, "role": "admin", "user_email": "ada@example.com"}],
                   "max_budget": 100, "budget_duration": "30d", "tags": ["prod"], "metadata": {"cost_center": 7}}),
        ))
        .await?;
    ensure!(t["members"] == json!([{"user_id": user, "role": "admin"}]), "{t}");
    c.ok(post("/team/update", json!({"team_id": team, "rpm_limit": 100, "budget_id": bud, "team_alias": null})))
        .await?;
    c.ok(post("/team/member_add", json!({"team_id": team, "member": {"user_id": viewer}}))).await?;
    c.ok(post("/team/member_add", json!({"team_id": team, "member": [{"user_id": "someone", "role": "user"}]})))
        .await?;
    c.ok(post("/team/member_delete", json!({"team_id": team, "user_id": "someone"}))).await?;
    c.ok(post("/team/block", json!({"team_id": team}))).await?;
    let unblocked = c.ok(post("/team/unblock", json!({"team_id": team}))).await?;
    ensure!(unblocked["blocked"] == false, "{unblocked}");
    c.ok(get("/team/list", "")).await?;

    // --- Customers.
    c.ok(post(
        "/customer/new",
        json!({"user_id": cust, "alias": "Bob", "max_budget": "0.000001", "budget_duration": "30s",
               "metadata": {"plan": "free"}, "team_id": team}),
    ))
    .await?;
    c.ok(post("/customer/update", json!({"user_id": cust, "rpm_limit": 3, "budget_id": bud}))).await?;
    let blocked = c.ok(post("/customer/block", json!({"user_ids": [cust]}))).await?;
    ensure!(blocked["blocked_users"] == json!([cust]), "{blocked}");
    c.ok(post("/customer/unblock", json!({"user_ids": [cust]}))).await?;
    let ci = c.ok(get("/customer/info", &format!("end_user_id={cust}"))).await?;
    ensure!(ci["max_budget_nano_usd"] == 1000 && ci["budget_duration"] == "30s", "{ci}");
    c.ok(get("/customer/list", "")).await?;

    // --- Statements (nothing closed, nothing billed: open and empty).
    for (route, param) in [
        ("/team/statement", "team_id"),
        ("/customer/statement", "customer_id"),
        ("/organization/statement", "organization_id"),
    ] {
        let s = c.ok(get(route, &format!("{param}=x-{id}&period=2026-11"))).await?;
        ensure!(s["status"] == "open" && s["statement"]["total_nano_usd"] == 0, "{s}");
        c.fails(get(route, &format!("{param}=x-{id}&period=2026-13")), 400, Some("period"), false).await?;
    }

    // --- Keys.
    let k = c
        .ok(post(
            "/key/generate",
            json!({"key_alias": "checkout", "team_id": team, "user_id": user, "organization_id": org,
                   "models": ["gpt-4o-mini"], "duration": "1h", "metadata": {"env": "test"}, "tags": ["a"],
                   "max_budget": 1, "budget_duration": "1d", "rpm_limit": 100, "tpm_limit": 100000,
                   "max_parallel_requests": 4, "model_tpm_limit": {"gpt-4o-mini": 1000}}),
        ))
        .await?;
    let raw = text(&k, "key")?;
    ensure!(k["token"] == key_token(&raw) && k["expires"].is_string(), "{k}");
    // A request through the key, so its info has spend to show.
    let served = chat_as(&c.client, &c.base, &raw, "gpt-4o-mini", Some(&cust)).await?;
    ensure!(served.status() == 200, "chat with the new key: {}", served.status());
    let plain = text(&c.ok(post("/key/generate", json!({}))).await?, "key")?;
    let custom = format!("sk-custom-{id}");
    let ck = c.ok(post("/key/generate", json!({"key": custom, "key_alias": "custom", "expires": null}))).await?;
    ensure!(ck["key"] == custom.as_str(), "{ck}");
    let viewer_key = text(&c.ok(post("/key/generate", json!({"user_id": viewer}))).await?, "key")?;
    c.ok(post("/key/update", json!({"key": raw, "key_alias": "checkout-2", "max_budget": null}))).await?;
    let info = c.ok(get("/key/info", &format!("key={}", key_hash(&raw)))).await?;
    ensure!(info["info"]["key_alias"] == "checkout-2" && info["info"]["max_budget"].is_null(), "{info}");
    let own = c.ok(get("/key/info", "").with_key(Some(&plain))).await?;
    ensure!(own["key"] == key_token(&plain), "a key reads itself: {own}");
    let page = c.ok(get("/key/list", "page=1&size=1")).await?;
    ensure!(page["keys"].as_array().map(Vec::len) == Some(1) && page["total_count"] == 5, "{page}");
    let full = c.ok(get("/key/list", &format!("team_id={team}&return_full_object=true"))).await?;
    ensure!(full["keys"][0]["key_alias"] == "checkout-2", "{full}");
    c.ok(get("/key/list", "").with_key(Some(&viewer_key))).await?;
    let found = c.ok(get("/key/list", "search=CHECKOUT&blocked=false&return_full_object=true")).await?;
    ensure!(found["total_count"] == 1 && found["keys"][0]["key_alias"] == "checkout-2", "search by alias: {found}");
    let by_prefix = c.ok(get("/key/list", &format!("search={}", &key_token(&raw)[..12]))).await?;
    ensure!(by_prefix["keys"][0] == key_token(&raw).as_str(), "search by token prefix: {by_prefix}");
    key_list_filters(&mut c, &raw, &plain).await?;
    c.ok(post("/key/block", json!({"key": raw}))).await?;
    c.ok(post("/key/unblock", json!({"key": key_hash(&raw)}))).await?;
    let ti = c.ok(get("/team/info", &format!("team_id={team}"))).await?;
    ensure!(ti["keys"].as_array().map(Vec::len) == Some(1), "{ti}");
    let ui = c.ok(get("/user/info", &format!("user_id={user}"))).await?;
    ensure!(ui["teams"] == json!([team]), "{ui}");

    let rotated =
        c.ok(post("/key/regenerate", json!({"key": raw, "grace_period": "1h", "key_alias": "rotated"}))).await?;
    ensure!(rotated["replaced_key"] == key_token(&raw) && rotated["key_alias"] == "rotated", "{rotated}");
    let old = c.ok(get("/key/info", &format!("key={raw}"))).await?;
    ensure!(old["info"]["replaced_by"] == rotated["token"], "the old key names its successor: {old}");
    let new_raw = text(&rotated, "key")?;
    let route = "/key/{key}/regenerate";
    let again = c
        .ok(Call {
            url: format!("/key/{}/regenerate", key_hash(&new_raw)),
            ..post(route, json!({"new_key": format!("sk-rotated-{id}")}))
        })
        .await?;
    ensure!(again["key"] == format!("sk-rotated-{id}").as_str(), "{again}");

    // --- Refused requests: status, envelope and the field named.
    c.fails(post("/key/generate", json!({"favourite_colour": "red"})), 400, Some("favourite_colour"), true).await?;
    c.fails(post("/team/new", json!({"max_budget": -1})), 400, Some("max_budget"), true).await?;
    c.fails(post("/team/update", json!({"team_id": team, "soft_budget": "-0.5"})), 400, Some("soft_budget"), true)
        .await?;
    c.fails(post("/budget/new", json!({"budget_duration": "3 weeks"})), 400, Some("budget_duration"), true).await?;
    c.fails(post("/key/generate", json!({"duration": "0d"})), 400, Some("duration"), true).await?;
    c.fails(post("/customer/new", json!({"alias": "nameless"})), 400, Some("user_id"), true).await?;
    c.fails(post("/team/member_add", json!({"team_id": team})), 400, Some("member"), true).await?;
    c.fails(post("/budget/delete", json!({})), 400, Some("id"), true).await?;
    c.fails(post("/user/delete", json!({"user_ids": []})), 400, Some("user_ids"), true).await?;
    c.fails(post("/key/generate", json!({"max_budget": 0.0000000001})), 400, Some("max_budget"), false).await?;
    c.fails(post("/key/generate", json!({"rpm_limit": "ten"})), 400, Some("rpm_limit"), true).await?;
    c.fails(post("/user/new", json!({"user_role": "superuser"})), 400, Some("user_role"), true).await?;
    c.fails(post("/key/generate", json!({"team_id": "no-such-team"})), 400, Some("team_id"), false).await?;
    c.fails(post("/team/update", json!({"team_id": "no-such-team", "rpm_limit": 1})), 400, Some("team_id"), false)
        .await?;
    c.fails(post("/customer/block", json!({"user_ids": ["no-such-customer"]})), 400, Some("user_ids"), false).await?;
    c.fails(post("/team/new", json!({"budget_id": "no-such-budget"})), 400, Some("budget_id"), false).await?;
    c.fails(post("/key/generate", json!({"models": ["no-such-model"]})), 400, Some("models"), false).await?;
    c.fails(get("/key/list", "page=0"), 400, Some("page"), false).await?;
    c.fails(get("/key/list", &format!("search={}", "x".repeat(257))), 400, Some("search"), false).await?;
    c.fails(get("/key/list", "blocked=maybe"), 400, Some("blocked"), false).await?;
    c.fails(get("/team/info", ""), 400, Some("team_id"), true).await?;
    c.fails(get("/key/info", ""), 400, Some("key"), false).await?;
    c.fails(post("/key/generate", json!([1, 2])), 400, None, true).await?;
    // Not found, conflict.
    c.fails(get("/team/info", "team_id=no-such-team"), 404, None, false).await?;
    c.fails(post("/key/update", json!({"key": "sk-no-such-key-000"})), 404, None, false).await?;
    c.fails(post("/budget/info", json!({"budgets": ["no-such-budget"]})), 404, None, false).await?;
    c.fails(post("/team/new", json!({"team_id": team})), 409, None, false).await?;
    c.fails(post("/key/generate", json!({"key": custom})), 409, None, false).await?;
    // Who may call.
    c.fails(post("/team/new", json!({})).with_key(None), 401, None, false).await?;
    c.fails(get("/team/list", "").with_key(Some("sk-not-a-key-at-all")), 401, None, false).await?;
    c.fails(post("/team/new", json!({})).with_key(Some(&plain)), 403, None, false).await?;
    c.fails(get("/customer/list", "").with_key(Some(&plain)), 403, None, false).await?;
    c.fails(get("/user/list", "").with_key(Some(&plain)), 403, None, false).await?;
    c.fails(get("/ledger/health", "").with_key(Some(&plain)), 403, None, false).await?;
    c.fails(get("/model/health", "").with_key(Some(&plain)), 403, None, false).await?;
    c.fails(get("/team/statement", "team_id=t&period=2026-11").with_key(Some(&plain)), 403, None, false).await?;
    c.fails(get("/key/info", &format!("key={new_raw}")).with_key(Some(&plain)), 403, None, false).await?;
    c.fails(post("/budget/new", json!({})).with_key(Some(&viewer_key)), 403, None, false).await?;
    let viewed = c.ok(post("/budget/info", json!({"budgets": [bud]})).with_key(Some(&viewer_key))).await?;
    ensure!(viewed[0]["budget_id"] == bud.as_str(), "{viewed}");

    // --- Deletion.
    let gone = c.ok(post("/key/delete", json!({"keys": [plain], "key_aliases": ["custom"]}))).await?;
    ensure!(gone["deleted_keys"].as_array().map(Vec::len) == Some(2), "{gone}");
    c.fails(post("/key/delete", json!({"keys": [plain]})), 404, None, false).await?;
    c.ok(post("/team/delete", json!({"team_ids": [team]}))).await?;
    c.ok(post("/user/delete", json!({"user_ids": [user, viewer]}))).await?;
    c.ok(post("/customer/delete", json!({"user_ids": [cust]}))).await?;
    c.ok(post("/organization/delete", json!({"organization_ids": [org]}))).await?;
    let deleted = c.ok(post("/budget/delete", json!({"id": bud}))).await?;
    ensure!(deleted["deleted"] == json!([bud]), "{deleted}");
    c.fails(get("/organization/info", &format!("organization_id={org}")), 404, None, false).await?;

    // --- A gateway without a database: the admin API is unavailable; keys of the config file
    // still read themselves.
    let no_db = GatewayConfig {
        general_settings: Some(GeneralSettings {
            master_key: Some(MASTER_KEY.to_owned()),
            ..GeneralSettings::default()
        }),
        ..GatewayConfig::new(
            "gw-openapi-nodb",
            &[model_entry("gpt-4o-mini", &format!("{}/v1", mock.url()?))],
            &topics.usage,
            &kafka_bootstrap(),
        )
    };
    let bare = start_gateway(&dir, &no_db).await?;
    let mut b = Checker {
        spec: Spec::load()?,
        client: c.client.clone(),
        base: bare.url()?.to_owned(),
        answered: BTreeSet::new(),
    };
    b.fails(post("/team/new", json!({})), 503, None, false).await?;
    b.fails(get("/key/list", ""), 503, None, false).await?;
    let (config_key, _) = TENANT_KEYS[3];
    let mine = b.ok(get("/key/info", "").with_key(Some(config_key))).await?;
    ensure!(mine["key"] == key_hash(config_key), "{mine}");
    bare.stop().await?;

    // Every route was answered 200 at least once.
    let all: BTreeSet<(String, String)> =
        tollgate_gateway::admin::routes().iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
    let missed: Vec<_> = all.difference(&c.answered).collect();
    ensure!(missed.is_empty(), "routes never called successfully: {missed:?}");
    gateway.stop().await?;
    drop(mock);
    Ok(())
}

/// `/key/list`'s expiry and budget filters and its sort by spend. `raw` expires within the hour;
/// `plain` is given a budget of one nano-USD and spends past it with one request.
async fn key_list_filters(c: &mut Checker, raw: &str, plain: &str) -> Result<()> {
    let expiring = c.ok(get("/key/list", "expires_within_days=1")).await?;
    ensure!(expiring["keys"] == json!([key_token(raw)]), "expiring within a day: {expiring}");
    c.ok(post("/key/update", json!({"key": plain, "max_budget": 0.000000001}))).await?;
    let served = chat_as(&c.client, &c.base, plain, "gpt-4o-mini", None).await?;
    ensure!(served.status() == 200, "chat within the budget: {}", served.status());
    let over = c.ok(get("/key/list", "min_budget_percent=100")).await?;
    ensure!(over["keys"] == json!([key_token(plain)]), "keys at 100 % of their budget: {over}");
    let spends = |v: &Value| -> Vec<i64> {
        v["keys"].as_array().into_iter().flatten().map(|k| k["spend_nano_usd"].as_i64().unwrap_or(-1)).collect()
    };
    let desc = spends(&c.ok(get("/key/list", "sort=spend&order=desc&return_full_object=true&size=100")).await?);
    ensure!(desc.first() > Some(&0) && desc.windows(2).all(|w| w[0] >= w[1]), "by spend, descending: {desc:?}");
    let asc = spends(&c.ok(get("/key/list", "sort=spend&order=asc&return_full_object=true&size=100")).await?);
    ensure!(asc.windows(2).all(|w| w[0] <= w[1]) && asc.len() == desc.len(), "by spend, ascending: {asc:?}");
    for (query, param) in [
        ("expires_within_days=0", "expires_within_days"),
        ("expires_within_days=3651", "expires_within_days"),
        ("min_budget_percent=-1", "min_budget_percent"),
        ("min_budget_percent=10001", "min_budget_percent"),
        ("sort=alias", "sort"),
        ("order=sideways", "order"),
    ] {
        c.fails(get("/key/list", query), 400, Some(param), false).await?;
    }
    Ok(())
}
