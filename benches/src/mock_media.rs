//! The mock provider's media endpoints, in OpenAI's shapes: `/v1/audio/speech` (audio bytes),
//! `/v1/images/generations` (`n` images as URLs or base64; no usage, as OpenAI's DALL·E), and
//! `/v1/audio/transcriptions` and `/v1/audio/translations` (a multipart upload; the audio
//! lasts [`BYTES_PER_SECOND`] bytes a second, reported as OpenAI does: `usage.seconds` in
//! `json`, `duration` in `verbose_json`, nothing in `text`). A test computes the expected cost
//! from its own request.

use crate::mock_provider::{error, gate, parse, MockState};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

/// A prompt that starts with this gets one image whatever `n` asks: a provider that answers
/// fewer images than asked, for tests of what is charged.
pub const ONE_IMAGE_ONLY: &str = "[one image only]";

/// The audio's bytes a second of the mock's transcriptions: a file of `n` bytes lasts
/// `n / 1000` seconds.
pub const BYTES_PER_SECOND: f64 = 1_000.0;

/// The mock's routes, under `/v1` and behind the behaviour prefixes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/audio/transcriptions", web::post().to(transcriptions))
        .route("/{mode}/{arg}/v1/audio/transcriptions", web::post().to(transcriptions))
        .route("/v1/audio/translations", web::post().to(transcriptions))
        .route("/{mode}/{arg}/v1/audio/translations", web::post().to(transcriptions))
        .route("/v1/audio/speech", web::post().to(audio_speech))
        .route("/{mode}/{arg}/v1/audio/speech", web::post().to(audio_speech))
        .route("/v1/images/generations", web::post().to(image_generations))
        .route("/{mode}/{arg}/v1/images/generations", web::post().to(image_generations));
}

/// A request's JSON body, once the behaviour prefix and the key let it through.
#[allow(clippy::result_large_err)] // a handler-local early return
async fn gated_json(req: &HttpRequest, body: &[u8], state: &MockState) -> Result<Value, HttpResponse> {
    gate(req, state).await?;
    parse(body)
}

/// OpenAI's speech answer: audio bytes, here `ID3` and the text read, as `audio/mpeg` (or
/// `audio/wav` for `response_format: wav`). Like OpenAI's, it says nothing of usage.
async fn audio_speech(req: HttpRequest, body: web::Bytes, state: web::Data<MockState>) -> HttpResponse {
    let body = match gated_json(&req, &body, &state).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let Some(input) = body.get("input").and_then(Value::as_str) else {
        return error(StatusCode::BAD_REQUEST, "`input` is required", "invalid_request_error", None);
    };
    let content_type = match body.get("response_format").and_then(Value::as_str) {
        Some("wav") => "audio/wav",
        _ => "audio/mpeg",
    };
    HttpResponse::Ok().content_type(content_type).body([&b"ID3"[..], input.as_bytes()].concat())
}

/// OpenAI's image answer: `created` and `n` images (default 1) in `data`, each a URL or, for
/// `response_format: b64_json`, a small base64 PNG header, with the prompt as `revised_prompt`.
async fn image_generations(req: HttpRequest, body: web::Bytes, state: web::Data<MockState>) -> HttpResponse {
    let body = match gated_json(&req, &body, &state).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let Some(prompt) = body.get("prompt").and_then(Value::as_str) else {
        return error(StatusCode::BAD_REQUEST, "`prompt` is required", "invalid_request_error", None);
    };
    let asked = body.get("n").and_then(Value::as_u64).unwrap_or(1);
    let n = if prompt.starts_with(ONE_IMAGE_ONLY) { 1 } else { asked.min(10) };
    let served = state.served.fetch_add(1, Ordering::Relaxed);
    let b64 = body.get("response_format").and_then(Value::as_str) == Some("b64_json");
    let data: Vec<Value> = (0..n)
        .map(|i| match b64 {
            true => json!({"b64_json": "iVBORw0KGgo=", "revised_prompt": prompt}),
            false => json!({"url": format!("https://images.mock.invalid/{served}/{i}.png"), "revised_prompt": prompt}),
        })
        .collect();
    HttpResponse::Ok().json(json!({"created": 1_700_000_000 + served, "data": data}))
}

/// The form of a transcription: `(model, response_format, bytes of the file)`.
async fn read_form(req: &HttpRequest, body: web::Bytes) -> Result<(String, String, usize), String> {
    let content_type = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let boundary = multer::parse_boundary(content_type).map_err(|e| e.to_string())?;
    let stream = futures::stream::once(async move { Ok::<web::Bytes, std::io::Error>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let (mut model, mut format, mut file) = (None, "json".to_owned(), None);
    while let Some(field) = form.next_field().await.map_err(|e| e.to_string())? {
        let name = field.name().unwrap_or_default().to_owned();
        let data = field.bytes().await.map_err(|e| e.to_string())?;
        match name.as_str() {
            "model" => model = Some(String::from_utf8_lossy(&data).into_owned()),
            "response_format" => format = String::from_utf8_lossy(&data).into_owned(),
            "file" => file = Some(data.len()),
            _ => {}
        }
    }
    Ok((model.ok_or("`model` is required")?, format, file.ok_or("`file` is required")?))
}

/// OpenAI's transcription (and translation) answers: `json` with `usage` of type `duration`,
/// `verbose_json` with `duration`, `text` as plain text. The text names the model the mock was
/// sent and the file's size.
async fn transcriptions(req: HttpRequest, body: web::Bytes, state: web::Data<MockState>) -> HttpResponse {
    if let Err(resp) = gate(&req, &state).await {
        return resp;
    }
    let (model, format, bytes) = match read_form(&req, body).await {
        Ok(form) => form,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message, "invalid_request_error", None),
    };
    state.served.fetch_add(1, Ordering::Relaxed);
    let duration = bytes as f64 / BYTES_PER_SECOND;
    let text = format!("{model} heard {bytes} bytes");
    match format.as_str() {
        "text" => HttpResponse::Ok().content_type("text/plain; charset=utf-8").body(text),
        "verbose_json" => HttpResponse::Ok().json(json!({
            "task": "transcribe", "language": "english", "duration": duration, "text": text, "segments": [],
        })),
        _ => HttpResponse::Ok().json(json!({
            "text": text, "usage": {"type": "duration", "seconds": duration.ceil() as u64},
        })),
    }
}
