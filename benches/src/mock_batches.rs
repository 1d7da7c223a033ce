//! The mock provider's Files and Batch API, in OpenAI's shapes: `POST /v1/files` (multipart
//! `file` and `purpose`), `GET` and `DELETE /v1/files/{id}`, `GET /v1/files/{id}/content`, `POST /v1/batches`,
//! `GET /v1/batches/{id}`, `POST /v1/batches/{id}/cancel`, `GET /v1/batches`.
//!
//! A batch is `in_progress` when created (its `created_at` the time it was) and `completed`,
//! [`RUNS_FOR_SECS`] later by its `completed_at`, at its first retrieval:
//! the mock then reads its input file (refusing one that is not OpenAI's JSONL), answers each
//! line as `/v1/chat/completions` or `/v1/embeddings` would (the same token counts as
//! `mock_provider`), and writes the output file, `custom_id` echoed. A line whose request holds
//! [`FAIL_MARKER`] is answered with an error instead, in the output file too (as OpenAI does
//! with `response.status_code` 400), and counted failed. `metadata` is kept as given.

use crate::mock_provider::{completion_tokens_for, error, gate, prompt_tokens_for, MockState};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A request line holding this text fails.
pub const FAIL_MARKER: &str = "[fail this line]";
/// The instant the mock says every file and chat completion was created.
pub const CREATED_AT: i64 = 1_765_000_000;
/// Seconds from a batch's `created_at` (when the mock was asked for it) to its `completed_at`,
/// so a test knows the `occurred_at` of the events.
pub const RUNS_FOR_SECS: i64 = 60;

/// Files and batches, by id (shared by every worker).
#[derive(Default)]
pub struct Store {
    next: AtomicU64,
    files: Mutex<BTreeMap<String, (Value, Vec<u8>)>>,
    batches: Mutex<BTreeMap<String, Value>>,
}

impl Store {
    fn id(&self, prefix: &str) -> String {
        format!("{prefix}{:06}", self.next.fetch_add(1, Ordering::Relaxed))
    }

    fn add_file(&self, purpose: &str, data: Vec<u8>) -> Value {
        let id = self.id("file-mock");
        let object = json!({"id": id, "object": "file", "bytes": data.len(), "created_at": CREATED_AT,
                            "filename": format!("{id}.jsonl"), "purpose": purpose});
        if let Ok(mut files) = self.files.lock() {
            files.insert(id, (object.clone(), data));
        }
        object
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/files", web::post().to(create_file))
        .route("/v1/files/{id}", web::get().to(get_file))
        .route("/v1/files/{id}", web::delete().to(delete_file))
        .route("/v1/files/{id}/content", web::get().to(file_content))
        .route("/v1/batches", web::post().to(create_batch))
        .route("/v1/batches", web::get().to(list_batches))
        .route("/v1/batches/{id}", web::get().to(get_batch))
        .route("/v1/batches/{id}/cancel", web::post().to(cancel_batch));
}

fn not_found(what: &str) -> HttpResponse {
    error(StatusCode::NOT_FOUND, &format!("No such {what}"), "invalid_request_error", None)
}

fn bad(message: &str) -> HttpResponse {
    error(StatusCode::BAD_REQUEST, message, "invalid_request_error", None)
}

async fn create_file(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<MockState>,
    store: web::Data<Store>,
) -> HttpResponse {
    if let Err(resp) = gate(&req, &state).await {
        return resp;
    }
    let content_type = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let Ok(boundary) = multer::parse_boundary(content_type) else { return bad("multipart/form-data expected") };
    let stream = futures::stream::once(async move { Ok::<web::Bytes, std::io::Error>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let (mut purpose, mut file) = (None, None);
    loop {
        match form.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or_default().to_owned();
                let Ok(data) = field.bytes().await else { return bad("unreadable form") };
                match name.as_str() {
                    "purpose" => purpose = Some(String::from_utf8_lossy(&data).into_owned()),
                    "file" => file = Some(data.to_vec()),
                    _ => {}
                }
            }
            Ok(None) => break,
            Err(_) => return bad("unreadable form"),
        }
    }
    match (purpose, file) {
        (Some(p), Some(f)) => HttpResponse::Ok().json(store.add_file(&p, f)),
        _ => bad("`purpose` and `file` are required"),
    }
}

async fn get_file(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<MockState>,
    store: web::Data<Store>,
) -> HttpResponse {
    stored_file(&req, &id, &state, &store, false).await
}

async fn file_content(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<MockState>,
    store: web::Data<Store>,
) -> HttpResponse {
    stored_file(&req, &id, &state, &store, true).await
}

/// OpenAI's answer to a deletion: the id, `object: file`, `deleted: true`.
async fn delete_file(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<MockState>,
    store: web::Data<Store>,
) -> HttpResponse {
    if let Err(resp) = gate(&req, &state).await {
        return resp;
    }
    match store.files.lock().ok().and_then(|mut f| f.remove(id.as_str())) {
        Some(_) => HttpResponse::Ok().json(json!({"id": id.as_str(), "object": "file", "deleted": true})),
        None => not_found("file"),
    }
}

/// A stored file: its object, or its `content`.
async fn stored_file(req: &HttpRequest, id: &str, state: &MockState, store: &Store, content: bool) -> HttpResponse {
    if let Err(resp) = gate(req, state).await {
        return resp;
    }
    match store.files.lock().ok().and_then(|f| f.get(id).cloned()) {
        Some((_, data)) if content => HttpResponse::Ok().content_type("application/octet-stream").body(data),
        Some((object, _)) => HttpResponse::Ok().json(object),
        None => not_found("file"),
    }
}

async fn create_batch(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<MockState>,
    store: web::Data<Store>,
) -> HttpResponse {
    if let Err(resp) = gate(&req, &state).await {
        return resp;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else { return bad("invalid JSON") };
    let input = body["input_file_id"].as_str().unwrap_or_default().to_owned();
    let Some(lines) = store.files.lock().ok().and_then(|f| f.get(&input).map(|(_, d)| d.clone())) else {
        return not_found("file");
    };
    let endpoint = body["endpoint"].as_str().unwrap_or_default();
    if let Err(message) = requests(&lines, endpoint) {
        return bad(&message);
    }
    let id = store.id("batch_mock");
    let batch = json!({
        "id": id, "object": "batch", "endpoint": endpoint, "input_file_id": input,
        "completion_window": body["completion_window"], "status": "in_progress",
        "output_file_id": null, "error_file_id": null, "created_at": now(), "completed_at": null,
        "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": body["metadata"],
    });
    if let Ok(mut batches) = store.batches.lock() {
        batches.insert(id, batch.clone());
    }
    HttpResponse::Ok().json(batch)
}

/// The requests of an input file: `(custom_id, body)` of each line, all calling `endpoint`.
fn requests(data: &[u8], endpoint: &str) -> Result<Vec<(String, Value)>, String> {
    let mut out = Vec::new();
    for line in data.split(|&b| b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace)) {
        let v: Value = serde_json::from_slice(line).map_err(|e| format!("input line is not JSON: {e}"))?;
        let id = v["custom_id"].as_str().ok_or("a line has no custom_id")?;
        if v["method"] != "POST" || v["url"] != endpoint || !v["body"]["model"].is_string() {
            return Err(format!("line {id} is not a POST to {endpoint} naming a model"));
        }
        out.push((id.to_owned(), v["body"].clone()));
    }
    Ok(out)
}

/// The output line of one request.
fn answer(n: usize, custom_id: &str, endpoint: &str, body: &Value, default_completion: u64) -> (Value, bool) {
    if body.to_string().contains(FAIL_MARKER) {
        let refusal =
            json!({"error": {"message": "The mock was told to fail this line", "type": "invalid_request_error"}});
        let line = json!({"id": format!("batch_req_{n}"), "custom_id": custom_id,
                          "response": {"status_code": 400, "request_id": format!("req_{n}"), "body": refusal}, "error": null});
        return (line, false);
    }
    let model = body["model"].clone();
    let prompt = prompt_tokens_for(body);
    let answer = if endpoint == "/v1/embeddings" {
        json!({"object": "list", "model": model, "data": [{"object": "embedding", "index": 0, "embedding": [0.0, 1.0]}],
               "usage": {"prompt_tokens": prompt, "total_tokens": prompt}})
    } else {
        let completion = completion_tokens_for(body, default_completion);
        json!({"id": format!("chatcmpl-batch-{n}"), "object": "chat.completion", "created": CREATED_AT, "model": model,
               "choices": [{"index": 0, "message": {"role": "assistant", "content": "batched"}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}})
    };
    let line = json!({"id": format!("batch_req_{n}"), "custom_id": custom_id,
                      "response": {"status_code": 200, "request_id": format!("req_{n}"), "body": answer}, "error": null});
    (line, true)
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn created_at(batch: &Value) -> i64 {
    batch["created_at"].as_i64().unwrap_or_default()
}

/// Runs an `in_progress` batch to its end: the output file written, the batch `completed`.
fn complete(store: &Store, batch: &mut Value, default_completion: u64) {
    if batch["status"] != "in_progress" {
        return;
    }
    let input = batch["input_file_id"].as_str().unwrap_or_default();
    let endpoint = batch["endpoint"].as_str().unwrap_or_default().to_owned();
    let data = store.files.lock().ok().and_then(|f| f.get(input).map(|(_, d)| d.clone())).unwrap_or_default();
    let lines = requests(&data, &endpoint).unwrap_or_default();
    let (mut out, mut ok) = (Vec::new(), 0);
    for (n, (id, body)) in lines.iter().enumerate() {
        let (line, answered) = answer(n, id, &endpoint, body, default_completion);
        ok += usize::from(answered);
        out.extend_from_slice(line.to_string().as_bytes());
        out.push(b'\n');
    }
    let file = store.add_file("batch_output", out);
    batch["status"] = "completed".into();
    batch["output_file_id"] = file["id"].clone();
    batch["completed_at"] = (created_at(batch) + RUNS_FOR_SECS).into();
    batch["request_counts"] = json!({"total": lines.len(), "completed": ok, "failed": lines.len() - ok});
}

async fn get_batch(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<MockState>,
    store: web::Data<Store>,
) -> HttpResponse {
    let default_completion = state.default_completion_tokens();
    with_batch(&req, &id, &state, &store, |batch| {
        complete(&store, batch, default_completion);
        HttpResponse::Ok().json(batch.clone())
    })
    .await
}

async fn cancel_batch(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<MockState>,
    store: web::Data<Store>,
) -> HttpResponse {
    with_batch(&req, &id, &state, &store, |batch| {
        if batch["status"] != "in_progress" {
            return bad("only a batch in progress can be cancelled");
        }
        batch["status"] = "cancelled".into();
        batch["cancelled_at"] = (created_at(batch) + RUNS_FOR_SECS / 2).into();
        HttpResponse::Ok().json(batch.clone())
    })
    .await
}

/// Runs `act` on the stored batch `id` (404 when there is none), once the key is checked.
async fn with_batch(
    req: &HttpRequest,
    id: &str,
    state: &MockState,
    store: &Store,
    act: impl FnOnce(&mut Value) -> HttpResponse,
) -> HttpResponse {
    if let Err(resp) = gate(req, state).await {
        return resp;
    }
    let Ok(mut batches) = store.batches.lock() else { return not_found("batch") };
    batches.get_mut(id).map_or_else(|| not_found("batch"), act)
}

/// Newest first, `limit` (default 20) after the batch `after`.
async fn list_batches(req: HttpRequest, state: web::Data<MockState>, store: web::Data<Store>) -> HttpResponse {
    if let Err(resp) = gate(&req, &state).await {
        return resp;
    }
    let query = web::Query::<BTreeMap<String, String>>::from_query(req.query_string())
        .map(|q| q.into_inner())
        .unwrap_or_default();
    let limit = query.get("limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(20);
    let Ok(batches) = store.batches.lock() else { return not_found("batch") };
    let all: Vec<&Value> = batches.values().rev().collect();
    let start = query.get("after").and_then(|a| all.iter().position(|b| b["id"] == a.as_str())).map_or(0, |i| i + 1);
    let page: Vec<Value> = all.iter().skip(start).take(limit).map(|b| (*b).clone()).collect();
    let has_more = all.len() > start + page.len();
    HttpResponse::Ok().json(json!({"object": "list", "data": page, "has_more": has_more}))
}
