//! The provider's Files and Batch API (OpenAI's: `{api_base}/files`, `{api_base}/batches`),
//! called with the deployment's key. Ids that go into a URL are checked first ([`good_id`]);
//! every answer is read within a bound and the deployment's timeout. Within a traced request
//! each call is an `upstream_call` span of its own ([`call_span`]), whose `traceparent` the
//! provider receives; the poller's calls, outside any request, are not traced.
//!
//! A batch is created with its owner in its `metadata` (`tollgate_key_id`, `tollgate_model`,
//! `tollgate_customer_id`, `tollgate_tags`), which clients never see nor set ([`strip_owner`]): a gateway that
//! did not create a batch charges it to the parties it names, and a restarted one finds the
//! batches it has to bill by them (`poller`).

use crate::error::GatewayError;
use crate::providers::{AnswerError, Deployment, UpstreamError};
use crate::tenancy::auth::Principal;
use crate::AppState;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::sync::Arc;
use tollgate_schemas::telemetry::recorder::Child;
use tollgate_schemas::telemetry::span::{SpanKind, Text, Value as SpanValue};

/// Metadata keys the gateway keeps on a batch; a client's may not start with this.
pub const OWNER_PREFIX: &str = "tollgate_";
pub const OWNER_KEY: &str = "tollgate_key_id";
pub const OWNER_MODEL: &str = "tollgate_model";
pub const OWNER_CUSTOMER: &str = "tollgate_customer_id";
/// The request's own tags (`x-litellm-tags`), comma separated, when it had any.
pub const OWNER_TAGS: &str = "tollgate_tags";

/// Largest answer of a provider about a file or a batch (not a file's content).
const MAX_OBJECT_BYTES: usize = 1024 * 1024;

/// An id a provider gave (`file-…`, `batch_…`) as it may go into a URL path and a
/// `request_id`: 1 to 63 letters, digits, `-` or `_`.
pub fn good_id(id: &str) -> bool {
    (1..=63).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A provider's answer, read whole.
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
}

impl Answer {
    pub fn ok(&self) -> bool {
        self.status == 200
    }
}

/// The parts of a batch object the gateway reads.
#[derive(Deserialize, Debug, Default)]
pub struct BatchObject {
    pub id: String,
    #[serde(default)]
    pub status: String,
    pub output_file_id: Option<String>,
    pub error_file_id: Option<String>,
    pub created_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub cancelled_at: Option<i64>,
    pub expired_at: Option<i64>,
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
}

impl BatchObject {
    pub fn owner(&self, field: &str) -> Option<&str> {
        self.metadata.as_ref()?.get(field)?.as_str()
    }
}

fn url(deployment: &Deployment, path: &str) -> Result<reqwest::Url, GatewayError> {
    let url = format!("{}/{path}", deployment.api_base.trim_end_matches('/'));
    reqwest::Url::parse(&url).map_err(|_| GatewayError::UpstreamUnavailable { model: deployment.model_name.clone() })
}

/// Sends `request` to `path` of the deployment's API and reads the answer within `limit`.
async fn send(
    state: &AppState,
    deployment: &Deployment,
    method: reqwest::Method,
    path: &str,
    body: Option<(String, Vec<u8>)>,
    limit: usize,
) -> Result<Answer, GatewayError> {
    let model = || deployment.model_name.clone();
    let mut span = call_span(deployment, &method, path);
    let mut request = state.client.request(method, url(deployment, path)?);
    if let Some((content_type, bytes)) = body {
        request = request.header("content-type", content_type).body(bytes);
    }
    if let Some(traceparent) = span.traceparent() {
        request = request.header("traceparent", traceparent);
    }
    let request = deployment.api.authenticate(request, deployment.api_key.as_ref());
    let call = async {
        let response = request.send().await.map_err(|e| crate::providers::classify(&e))?;
        let status = response.status().as_u16();
        let content_type = crate::providers::content_type_of(&response);
        let body = crate::providers::read_answer(response, limit).await.map_err(|e| match e {
            AnswerError::TooLarge { .. } => None,
            AnswerError::Transport(_) => Some(UpstreamError::Unavailable(String::new())),
        });
        Ok::<_, UpstreamError>((status, content_type, body))
    };
    let answer = tokio::time::timeout(deployment.timeout, call).await;
    span.record(|s| {
        let failure = match &answer {
            Ok(Ok((status, _, Ok(_)))) => {
                s.add("http.response.status_code", SpanValue::I64(i64::from(*status)));
                None
            }
            Ok(Ok((_, _, Err(None)))) => Some("too_large"),
            Ok(Ok((_, _, Err(Some(_))))) | Ok(Err(UpstreamError::Unavailable(_))) => Some("unavailable"),
            Ok(Err(UpstreamError::Timeout)) | Err(_) => Some("timeout"),
        };
        if let Some(error) = failure {
            s.add("error.type", SpanValue::Str(Text::new(error)));
            s.set_error(error);
        }
    });
    drop(span);
    match answer {
        Ok(Ok((status, content_type, Ok(body)))) => Ok(Answer { status, content_type, body }),
        Ok(Ok((_, _, Err(None)))) => Err(GatewayError::UpstreamResponseTooLarge { model: model(), limit }),
        Ok(Ok((_, _, Err(Some(_))))) | Ok(Err(UpstreamError::Unavailable(_))) => {
            Err(GatewayError::UpstreamUnavailable { model: model() })
        }
        Ok(Err(UpstreamError::Timeout)) | Err(_) => Err(GatewayError::UpstreamTimeout {
            model: model(),
            timeout_ms: u64::try_from(deployment.timeout.as_millis()).unwrap_or(u64::MAX),
        }),
    }
}

/// The span of one call to the provider's Files or Batch API: the deployment, the method and
/// which API (`files` or `batches`; never the ids in the path). Empty outside a traced request.
fn call_span(deployment: &Deployment, method: &reqwest::Method, path: &str) -> Child {
    let mut span = crate::traces::child("upstream_call");
    span.record(|s| {
        let text = |v: &str| SpanValue::Str(Text::new(v));
        s.kind = SpanKind::Client;
        s.add("gen_ai.provider.name", text(crate::traces::provider_name(&deployment.provider)));
        s.add("tollgate.deployment", text(&deployment.id));
        s.add("http.request.method", text(method.as_str()));
        s.add("tollgate.upstream_api", text(path.split('/').next().unwrap_or_default()));
    });
    span
}

/// Uploads a checked input file (`purpose=batch`).
pub async fn upload(state: &AppState, deployment: &Deployment, file: Vec<u8>) -> Result<Answer, GatewayError> {
    // A boundary of 122 random bits, made after the file was written: no line can hold it.
    let boundary = format!("tollgate-{}", uuid::Uuid::new_v4().simple());
    let mut body = Vec::with_capacity(file.len() + 512);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\ncontent-disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--{boundary}\r\n\
             content-disposition: form-data; name=\"file\"; filename=\"batch_input.jsonl\"\r\n\
             content-type: application/jsonl\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(&file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let content_type = format!("multipart/form-data; boundary={boundary}");
    send(state, deployment, reqwest::Method::POST, "files", Some((content_type, body)), MAX_OBJECT_BYTES).await
}

/// `GET {path}`, a file or batch object (or a list of them).
pub async fn get(state: &AppState, deployment: &Deployment, path: &str) -> Result<Answer, GatewayError> {
    object(state, deployment, reqwest::Method::GET, path).await
}

/// `method` (`GET`, `DELETE`) on `{path}`, without a body, answered with a file or batch object
/// (or a list of them).
pub async fn object(
    state: &AppState,
    deployment: &Deployment,
    method: reqwest::Method,
    path: &str,
) -> Result<Answer, GatewayError> {
    send(state, deployment, method, path, None, MAX_OBJECT_BYTES).await
}

/// A file's content, within `gateway.max_response_bytes`.
pub async fn content(state: &AppState, deployment: &Deployment, file_id: &str) -> Result<Answer, GatewayError> {
    let path = format!("files/{file_id}/content");
    send(state, deployment, reqwest::Method::GET, &path, None, state.max_response_bytes).await
}

/// `POST {path}` with a JSON body.
pub async fn post(state: &AppState, deployment: &Deployment, path: &str, body: &Value) -> Result<Answer, GatewayError> {
    let bytes = serde_json::to_vec(body).map_err(|e| GatewayError::Internal(format!("cannot encode a batch: {e}")))?;
    send(state, deployment, reqwest::Method::POST, path, Some(("application/json".into(), bytes)), MAX_OBJECT_BYTES)
        .await
}

/// The batch `id` as its provider has it, when its answer is a batch object.
pub async fn retrieve(
    state: &AppState,
    deployment: &Deployment,
    id: &str,
) -> Result<(Answer, BatchObject), GatewayError> {
    let answer = get(state, deployment, &format!("batches/{id}")).await?;
    let object =
        if answer.ok() { serde_json::from_slice(&answer.body).unwrap_or_default() } else { BatchObject::default() };
    Ok((answer, object))
}

/// The deployments whose Batch API a key may reach: OpenAI's family, one per provider account
/// (`api_base` and key), of model groups the key may use.
pub fn reachable(state: &AppState, principal: &Principal) -> Vec<Arc<Deployment>> {
    accounts(state, |d| crate::pipeline::check_model(state, principal, &d.model_name).is_ok())
}

/// One deployment of OpenAI's family per provider account, of those `take` keeps, in config
/// order.
pub fn accounts(state: &AppState, take: impl Fn(&Deployment) -> bool) -> Vec<Arc<Deployment>> {
    let mut out: Vec<Arc<Deployment>> = Vec::new();
    let same_account = |a: &Deployment, b: &Deployment| {
        a.api_base == b.api_base && a.api_key.as_ref().map(|k| k.expose()) == b.api_key.as_ref().map(|k| k.expose())
    };
    for d in state.router.deployments().filter(|d| d.api.name() == "openai") {
        if take(d) && !out.iter().any(|o| same_account(o, d)) {
            out.push(d.clone());
        }
    }
    out
}

/// Removes the gateway's metadata from a batch object, or from each batch of a list.
pub fn strip_owner(value: &mut Value) {
    let strip = |batch: &mut Value| {
        if let Some(m) = batch.get_mut("metadata").and_then(Value::as_object_mut) {
            m.retain(|k, _| !k.starts_with(OWNER_PREFIX));
        }
    };
    match value.get_mut("data").and_then(Value::as_array_mut) {
        Some(list) => list.iter_mut().for_each(strip),
        None => strip(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_that_could_leave_their_path_are_refused() {
        assert!(good_id("batch_abc-123") && good_id("file-XYZ"));
        for bad in ["", "../admin", "a/b", "a%2fb", "a b", "a?x=1", "a#b", "é", &"x".repeat(64)] {
            assert!(!good_id(bad), "{bad}");
        }
    }

    #[test]
    fn the_owner_is_stripped_from_a_batch_and_from_a_list() {
        let mut one = json!({"id": "b", "metadata": {"tollgate_key_id": "k", "mine": "x"}});
        strip_owner(&mut one);
        assert_eq!(one["metadata"], json!({"mine": "x"}));
        let mut list = json!({"data": [{"metadata": {"tollgate_model": "m"}}, {"metadata": null}]});
        strip_owner(&mut list);
        assert_eq!(list["data"][0]["metadata"], json!({}));
    }
}
