//! The mock provider playing AWS Bedrock's runtime Converse API (`converse` answers JSON,
//! `converse-stream` AWS's binary event-stream), so Bedrock routes can be tested and measured
//! like the others.
//!
//! Every request must be signed with SigV4 by [`ACCESS_KEY_ID`] and [`SECRET_ACCESS_KEY`] for
//! service `bedrock`: the mock recomputes the signature from the request as it arrived (method,
//! path, query, the signed headers' values, a hash of the body) and answers 403
//! `InvalidSignatureException` on any difference, so a test through it proves the gateway's
//! signing. A `Authorization: Bearer <key>` (a Bedrock API key) is accepted too, except `bad`.
//!
//! Token counts follow the other mocks: prompt tokens = 1 + bytes of the `text` of `system` and
//! `messages` / 4; output tokens = `inferenceConfig.maxTokens`, or 16. The answer is
//! "tok tok ...", one `contentBlockDelta` per token when streamed; with `toolConfig`, a `toolUse`
//! of the first tool with `{"location": "Paris"}`.
//!
//! Routes: `POST /model/{modelId}/converse` and `/model/{modelId}/converse-stream`, and the same
//! behind the behaviour prefixes of the OpenAI mock: `/delay/{ms}`, `/status/{code}` (`429` is a
//! `ThrottlingException`, `400` a `ValidationException` for an over-long input, `403` an
//! `AccessDeniedException`), `/fail-first/{n}` (503 `ServiceUnavailableException`),
//! `/stall/{ms}` (the stream waits before its second message), and `/exception/{n}` (a stream
//! of `n` messages, then a `throttlingException` message in place of the rest).
//!
//! It never calls the network.

use crate::mock_gemini::{mock_text, seen_before};
use crate::mock_provider::{paced, Behaviour};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use std::time::Duration;
use tollgate_gateway::providers::bedrock::eventstream::encode;
use tollgate_gateway::providers::bedrock::sigv4::{signature, Request, Scope, SERVICE};

/// The access key the mock accepts signatures of.
pub const ACCESS_KEY_ID: &str = "AKIDMOCKBEDROCK";
/// The secret key the mock checks signatures with.
pub const SECRET_ACCESS_KEY: &str = "mock/bedrock+secret-access-key";

const DEFAULT_OUTPUT_TOKENS: u64 = 16;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/model/{model}/{operation}", web::post().to(converse))
        .route("/{mode}/{arg}/model/{model}/{operation}", web::post().to(converse));
}

/// An error as Bedrock sends it: `{"message"}`, the type in `x-amzn-ErrorType`.
fn error(status: StatusCode, kind: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header(("x-amzn-ErrorType", format!("{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/")))
        .json(json!({ "message": message }))
}

/// Why a signature is refused, or `Ok` when it matches the request.
fn check_signature(req: &HttpRequest, body: &[u8]) -> Result<(), String> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let auth = header("authorization").ok_or("no Authorization header")?;
    if let Some(key) = auth.strip_prefix("Bearer ") {
        return if key == "bad" { Err("the API key is not valid".into()) } else { Ok(()) };
    }
    let rest = auth.strip_prefix("AWS4-HMAC-SHA256 ").ok_or("not AWS4-HMAC-SHA256")?;
    let field = |name: &str| rest.split(", ").find_map(|p| p.strip_prefix(name)).ok_or(format!("no {name}"));
    let credential: Vec<&str> = field("Credential=")?.split('/').collect();
    let [key, date, region, service, "aws4_request"] = credential[..] else { return Err("bad credential".into()) };
    if key != ACCESS_KEY_ID || service != SERVICE {
        return Err(format!("unknown access key or service {service}"));
    }
    let amz_date = header("x-amz-date").ok_or("no x-amz-date")?;
    if !amz_date.starts_with(date) {
        return Err("the credential's date is not the request's".into());
    }
    let names: Vec<&str> = field("SignedHeaders=")?.split(';').collect();
    for required in ["host", "x-amz-date"] {
        if !names.contains(&required) {
            return Err(format!("{required} is not signed"));
        }
    }
    if header("x-amz-security-token").is_some() && !names.contains(&"x-amz-security-token") {
        return Err("the session token is not signed".into());
    }
    let mut headers = Vec::with_capacity(names.len());
    for name in &names {
        headers
            .push(((*name).to_owned(), header(name).ok_or(format!("signed header {name} missing"))?.trim().to_owned()));
    }
    let request = Request {
        method: req.method().as_str(),
        host: "",
        path: req.uri().path(),
        query: req.uri().query().unwrap_or_default(),
        headers: &[],
        body,
    };
    let scope = Scope { date, region, service };
    let (_, expected) = signature(SECRET_ACCESS_KEY, &scope, amz_date, &request, &headers);
    if field("Signature=")? == expected {
        Ok(())
    } else {
        Err("The request signature we calculated does not match the signature you provided.".into())
    }
}

fn text_bytes(blocks: Option<&Value>) -> usize {
    let blocks = blocks.and_then(Value::as_array).into_iter().flatten();
    blocks.filter_map(|b| b.get("text").and_then(Value::as_str)).map(str::len).sum()
}

/// Prompt tokens the mock reports for a Converse body.
pub fn prompt_tokens_for(body: &Value) -> u64 {
    let messages = body.get("messages").and_then(Value::as_array).into_iter().flatten();
    let bytes = text_bytes(body.get("system")) + messages.map(|m| text_bytes(m.get("content"))).sum::<usize>();
    1 + bytes as u64 / 4
}

/// Output tokens the mock reports for a Converse body.
pub fn output_tokens_for(body: &Value) -> u64 {
    body.pointer("/inferenceConfig/maxTokens").and_then(Value::as_u64).unwrap_or(DEFAULT_OUTPUT_TOKENS)
}

#[allow(clippy::result_large_err)] // a handler-local early return
async fn gate(req: &HttpRequest, body: &[u8]) -> Result<Behaviour, HttpResponse> {
    if let Err(why) = check_signature(req, body) {
        return Err(error(StatusCode::FORBIDDEN, "InvalidSignatureException", &why));
    }
    let behaviour = Behaviour::from_request(req);
    match behaviour {
        Behaviour::Delay(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
        Behaviour::Status(429) => {
            let message = "Too many requests, please wait before trying again.";
            return Err(error(StatusCode::TOO_MANY_REQUESTS, "ThrottlingException", message));
        }
        Behaviour::Status(400) => {
            return Err(error(StatusCode::BAD_REQUEST, "ValidationException", "Input is too long for requested model."))
        }
        Behaviour::Status(403) => {
            let message = "You don't have access to the model with the specified model ID.";
            return Err(error(StatusCode::FORBIDDEN, "AccessDeniedException", message));
        }
        Behaviour::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Err(error(status, "InternalServerException", "The mock was told to fail"));
        }
        Behaviour::FailFirst(n) if seen_before(req) < n => {
            return Err(error(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailableException", "Service unavailable."));
        }
        _ => {}
    }
    Ok(behaviour)
}

fn first_tool(body: &Value) -> Option<&str> {
    body.pointer("/toolConfig/tools/0/toolSpec/name").and_then(Value::as_str)
}

async fn converse(req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let stream = match req.match_info().get("operation") {
        Some("converse") => false,
        Some("converse-stream") => true,
        _ => return error(StatusCode::NOT_FOUND, "UnknownOperationException", "Unknown operation"),
    };
    let behaviour = match gate(&req, &body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, "ValidationException", &format!("Malformed input: {e}")),
    };
    if body.get("messages").and_then(Value::as_array).is_none_or(Vec::is_empty) {
        return error(StatusCode::BAD_REQUEST, "ValidationException", "A conversation must start with a user message.");
    }
    let (prompt, output) = (prompt_tokens_for(&body), output_tokens_for(&body));
    let usage = json!({"inputTokens": prompt, "outputTokens": output, "totalTokens": prompt + output});
    let tool = first_tool(&body)
        .map(|name| json!({"toolUseId": "tooluse_mock", "name": name, "input": {"location": "Paris"}}));
    let stop = if tool.is_some() {
        "tool_use"
    } else if body.pointer("/inferenceConfig/maxTokens").is_some() {
        "max_tokens"
    } else {
        "end_turn"
    };
    if !stream {
        let content = match &tool {
            Some(call) => json!([{ "toolUse": call }]),
            None => json!([{ "text": mock_text(output) }]),
        };
        return HttpResponse::Ok().json(json!({
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": stop, "usage": usage, "metrics": {"latencyMs": 1},
        }));
    }
    let mut events = vec![("messageStart", json!({"role": "assistant"}))];
    match tool {
        Some(call) => {
            let start = json!({"toolUseId": call["toolUseId"], "name": call["name"]});
            events.push(("contentBlockStart", json!({"contentBlockIndex": 0, "start": {"toolUse": start}})));
            let input = json!({"toolUse": {"input": call["input"].to_string()}});
            events.push(("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": input})));
        }
        None => events.extend((0..output).map(|i| {
            let text = if i == 0 { "tok" } else { " tok" };
            ("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": text}}))
        })),
    }
    events.push(("contentBlockStop", json!({"contentBlockIndex": 0})));
    events.push(("messageStop", json!({"stopReason": stop})));
    events.push(("metadata", json!({"usage": usage, "metrics": {"latencyMs": 1}})));
    let stall = match behaviour {
        Behaviour::Stall(ms) => Duration::from_millis(ms),
        _ => Duration::ZERO,
    };
    // `/exception/{n}`: `n` messages, then a throttling exception in place of the rest.
    let exception_after = match req.match_info().get("mode") {
        Some("exception") => req.match_info().get("arg").and_then(|a| a.parse::<usize>().ok()),
        _ => None,
    };
    events.truncate(exception_after.unwrap_or(usize::MAX));
    let mut frames: Vec<(Duration, web::Bytes)> = events
        .into_iter()
        .enumerate()
        .map(|(i, (kind, payload))| {
            let headers = [(":message-type", "event"), (":event-type", kind), (":content-type", "application/json")];
            let delay = if i == 1 { stall } else { Duration::ZERO };
            (delay, web::Bytes::from(encode(&headers, payload.to_string().as_bytes())))
        })
        .collect();
    if exception_after.is_some() {
        let headers = [(":message-type", "exception"), (":exception-type", "throttlingException")];
        let payload = br#"{"message":"Too many tokens, please wait before trying again."}"#;
        frames.push((Duration::ZERO, web::Bytes::from(encode(&headers, payload))));
    }
    HttpResponse::Ok().content_type("application/vnd.amazon.eventstream").streaming(paced(frames))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test as actix_test;
    use actix_web::App;
    use tollgate_gateway::config::Secret;
    use tollgate_gateway::providers::bedrock::eventstream::Decoder;
    use tollgate_gateway::providers::bedrock::sigv4::{sign, AwsCredentials};

    fn credentials(secret: &str) -> AwsCredentials {
        AwsCredentials {
            access_key_id: Secret::new(ACCESS_KEY_ID),
            secret_access_key: Secret::new(secret),
            session_token: Some(Secret::new("session")),
            region: "us-east-1".into(),
        }
    }

    async fn call(path: &str, secret: &str, body: Value) -> (StatusCode, Vec<u8>) {
        let app = actix_test::init_service(App::new().configure(configure)).await;
        let bytes = body.to_string().into_bytes();
        let request = Request {
            method: "POST",
            host: "localhost:8080",
            path,
            query: "",
            headers: &[("content-type", "application/json")],
            body: &bytes,
        };
        let signed = sign(&credentials(secret), SERVICE, &request, chrono::Utc::now());
        let req = actix_test::TestRequest::post()
            .uri(path)
            .insert_header(("host", "localhost:8080"))
            .insert_header(("content-type", "application/json"))
            .insert_header(("x-amz-date", signed.amz_date))
            .insert_header(("x-amz-security-token", "session"))
            .insert_header(("authorization", signed.authorization))
            .set_payload(bytes)
            .to_request();
        let resp = actix_test::call_service(&app, req).await;
        let status = resp.status();
        (status, actix_test::read_body(resp).await.to_vec())
    }

    fn hello() -> Value {
        json!({"messages": [{"role": "user", "content": [{"text": "12345678"}]}], "inferenceConfig": {"maxTokens": 3}})
    }

    #[actix_web::test]
    async fn answers_signed_requests_and_refuses_wrong_signatures() {
        let path = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse";
        let (status, body) = call(path, SECRET_ACCESS_KEY, hello()).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["output"]["message"]["content"][0]["text"], "tok tok tok");
        assert_eq!(v["usage"], json!({"inputTokens": 3, "outputTokens": 3, "totalTokens": 6}));

        let (status, body) = call(path, "another secret", hello()).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(String::from_utf8_lossy(&body).contains("signature"));
        let (status, _) = call("/status/429/model/m/converse", SECRET_ACCESS_KEY, hello()).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    }

    #[actix_web::test]
    async fn streams_one_event_per_token() {
        let (status, body) = call("/model/m/converse-stream", SECRET_ACCESS_KEY, hello()).await;
        assert_eq!(status, StatusCode::OK);
        let mut decoder = Decoder::default();
        decoder.extend(&body);
        let mut kinds = Vec::new();
        while let Some(m) = decoder.next_message().unwrap() {
            kinds.push(m.header(":event-type").unwrap_or_default().to_owned());
        }
        assert_eq!(kinds.iter().filter(|k| *k == "contentBlockDelta").count(), 3);
        assert_eq!(kinds.first().map(String::as_str), Some("messageStart"));
        assert_eq!(kinds.last().map(String::as_str), Some("metadata"));
    }
}
