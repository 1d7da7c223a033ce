//! OpenAI wire types, kept apart from the core. Request bodies are parsed once into top-level
//! fields whose values stay raw JSON, as spans of the body ([`Fields`]); only what the gateway
//! must read is decoded, and only the model name (and, for streams, `stream_options`) is
//! spliced into the client's bytes before forwarding.

use crate::error::GatewayError;
use crate::providers::Endpoint;
pub use fields::Fields;
use serde::Deserialize;
use tollgate_schemas::limits;

mod fields;
pub mod images;
pub mod upload;

/// An OpenAI-shaped request (chat, completions, embeddings, responses): top-level fields kept as
/// raw JSON.
pub struct ProxyRequest {
    fields: Fields,
    pub endpoint: Endpoint,
    pub model: String,
    pub stream: bool,
    /// The client asked for the usage chunk itself (`stream_options.include_usage`).
    pub client_wants_usage: bool,
    /// The request's end-user id (`user`), used as the customer.
    pub user: Option<String>,
    /// The request's own tags (`metadata.tags`), checked (`tenancy::tags::body_tags`).
    pub tags: Vec<String>,
    /// The output token limit (`max_tokens`, `max_completion_tokens` or `max_output_tokens`,
    /// which must agree), when given; every provider adapter sends this value upstream.
    pub max_tokens: Option<u64>,
    /// Which field holds the prompt (`messages`, `prompt` or `input`).
    prompt_field: &'static str,
    /// Bytes of the request body: a bound on its prompt tokens (a token is at least one byte
    /// of text, and JSON spells text with at least as many).
    pub body_len: usize,
    /// Completions asked for: the largest of `n` and `best_of`, at least 1.
    pub choices: u64,
    /// Documents of a rerank request (`documents`), at most [`MAX_RERANK_DOCUMENTS`]; 0 for
    /// other endpoints.
    pub documents: u64,
    /// Characters of the text to speak (`/v1/audio/speech`'s `input`); 0 for other endpoints.
    pub characters: u64,
    /// The images asked for (`/v1/images/generations`); none for other endpoints.
    pub images: images::ImageRequest,
    /// The form of an upload (`/v1/audio/transcriptions`, `/v1/audio/translations`), sent on in
    /// place of the JSON body; the JSON fields then hold only what the gateway reads (`model`).
    pub upload: Option<std::sync::Arc<upload::Upload>>,
}

/// The most characters one speech request may read (OpenAI's limit).
pub const MAX_SPEECH_CHARACTERS: u64 = 4_096;

/// The characters of a speech request's `input`, a string of 1 to [`MAX_SPEECH_CHARACTERS`].
fn speech_characters(fields: &Fields) -> Result<u64, GatewayError> {
    let text = string_field(fields, "input")?.unwrap_or_default();
    let count = u64::try_from(text.chars().count()).unwrap_or(u64::MAX);
    if count == 0 || count > MAX_SPEECH_CHARACTERS {
        return Err(GatewayError::invalid(
            format!("`input` must be a string of 1 to {MAX_SPEECH_CHARACTERS} characters"),
            Some("input"),
        ));
    }
    Ok(count)
}

/// The most documents one rerank request may hold (Cohere's own limit is lower).
pub const MAX_RERANK_DOCUMENTS: u64 = 10_000;

/// Documents one rerank search unit covers (Cohere's billing unit).
const DOCUMENTS_PER_SEARCH_UNIT: u64 = 100;

/// The documents of a rerank request: `query` a string, `documents` an array of at most
/// [`MAX_RERANK_DOCUMENTS`] strings or objects.
fn rerank_documents(fields: &Fields) -> Result<u64, GatewayError> {
    if string_field(fields, "query")?.is_none() {
        return Err(GatewayError::invalid("`query` is required", Some("query")));
    }
    require_kind(fields, "documents", &['['], "an array")?;
    let raw = fields.get("documents").unwrap_or("[]");
    let items: Vec<serde::de::IgnoredAny> = serde_json::from_str(raw)
        .map_err(|_| GatewayError::invalid("`documents` must be an array", Some("documents")))?;
    let count = u64::try_from(items.len()).unwrap_or(u64::MAX);
    if count == 0 || count > MAX_RERANK_DOCUMENTS {
        return Err(GatewayError::invalid(
            format!("`documents` must hold 1 to {MAX_RERANK_DOCUMENTS} documents"),
            Some("documents"),
        ));
    }
    Ok(count)
}

fn string_field(fields: &Fields, name: &'static str) -> Result<Option<String>, GatewayError> {
    match fields.get(name) {
        None => Ok(None),
        Some("null") => Ok(None),
        Some(raw) => serde_json::from_str::<String>(raw)
            .map(Some)
            .map_err(|_| GatewayError::invalid(format!("`{name}` must be a string"), Some(name))),
    }
}

fn require_kind(fields: &Fields, name: &'static str, allowed: &[char], what: &str) -> Result<(), GatewayError> {
    match fields.get(name) {
        Some(raw) if raw.starts_with(allowed) => Ok(()),
        Some(_) => Err(GatewayError::invalid(format!("`{name}` must be {what}"), Some(name))),
        None => Err(GatewayError::invalid(format!("`{name}` is required"), Some(name))),
    }
}

/// The field names that limit a request's output tokens: chat's `max_completion_tokens` and its
/// older `max_tokens`, and the Responses API's (and Gemini's) `max_output_tokens`.
pub const OUTPUT_LIMIT_FIELDS: [&str; 3] = ["max_tokens", "max_completion_tokens", "max_output_tokens"];

/// The request's output token limit. Every provider adapter sends this one value upstream
/// (whatever field the provider reads), so the worst-case reservation of a hard budget is what
/// the provider honours. Fields that disagree are refused rather than guessed between.
fn output_limit(fields: &Fields) -> Result<Option<u64>, GatewayError> {
    let mut found: Option<(&'static str, u64)> = None;
    for name in OUTPUT_LIMIT_FIELDS {
        let Some(text) = fields.get(name).filter(|t| *t != "null") else { continue };
        let value = text.parse::<u64>().ok().filter(|n| *n <= limits::MAX_TOKENS_PER_REQUEST).ok_or_else(|| {
            GatewayError::invalid(
                format!("`{name}` must be an integer from 0 to {}", limits::MAX_TOKENS_PER_REQUEST),
                Some(name),
            )
        })?;
        match found {
            Some((first, v)) if v != value => {
                return Err(GatewayError::invalid(
                    format!("`{first}` ({v}) and `{name}` ({value}) disagree: give one output token limit"),
                    Some(name),
                ))
            }
            _ => found = Some((name, value)),
        }
    }
    Ok(found.map(|(_, v)| v))
}

/// A bound broken by a request field, as a 400 naming the field.
fn bound(e: limits::BoundError) -> GatewayError {
    GatewayError::field(e.field().to_owned(), e.to_string())
}

impl ProxyRequest {
    pub fn parse(body: &[u8], endpoint: Endpoint) -> Result<ProxyRequest, GatewayError> {
        ProxyRequest::parse_bytes(bytes::Bytes::copy_from_slice(body), endpoint)
    }

    /// [`ProxyRequest::parse`] of a body the request owns: kept as it is, without a copy.
    pub fn parse_bytes(body: bytes::Bytes, endpoint: Endpoint) -> Result<ProxyRequest, GatewayError> {
        let body_len = body.len();
        let fields = Fields::parse(body)
            .map_err(|e| GatewayError::invalid(format!("request body is not a valid JSON object: {e}"), None))?;
        let model = string_field(&fields, "model")?
            .ok_or_else(|| GatewayError::invalid("`model` is required", Some("model")))?;
        limits::check_name("model", &model, limits::MAX_NAME_BYTES).map_err(bound)?;
        let prompt_field = match endpoint {
            Endpoint::ChatCompletions => {
                require_kind(&fields, "messages", &['['], "an array")?;
                "messages"
            }
            Endpoint::Completions => {
                require_kind(&fields, "prompt", &['"', '['], "a string or an array")?;
                "prompt"
            }
            Endpoint::Embeddings => {
                require_kind(&fields, "input", &['"', '['], "a string or an array")?;
                "input"
            }
            Endpoint::Responses | Endpoint::Moderations => {
                require_kind(&fields, "input", &['"', '['], "a string or an array")?;
                "input"
            }
            Endpoint::Rerank => "documents",
            Endpoint::AudioSpeech => "input",
            Endpoint::ImageGenerations => "prompt",
            // The prompt of an upload stays in the form: nothing here to count or guard.
            Endpoint::AudioTranscriptions | Endpoint::AudioTranslations => "prompt",
        };
        let documents = if endpoint == Endpoint::Rerank { rerank_documents(&fields)? } else { 0 };
        let characters = if endpoint == Endpoint::AudioSpeech { speech_characters(&fields)? } else { 0 };
        let images = if endpoint == Endpoint::ImageGenerations {
            images::parse(&fields)?
        } else {
            images::ImageRequest::default()
        };
        let stream = match fields.get("stream") {
            None | Some("false") | Some("null") => false,
            Some("true") => true,
            Some(_) => return Err(GatewayError::invalid("`stream` must be a boolean", Some("stream"))),
        };
        if stream && !endpoint.generates() {
            return Err(GatewayError::invalid(format!("/{} cannot be streamed", endpoint.path()), Some("stream")));
        }
        let client_wants_usage = match fields.get("stream_options") {
            None => false,
            Some(raw) => {
                let v: serde_json::Value = serde_json::from_str(raw)
                    .map_err(|_| GatewayError::invalid("`stream_options` is not valid", Some("stream_options")))?;
                if !(v.is_object() || v.is_null()) {
                    return Err(GatewayError::invalid("`stream_options` must be an object", Some("stream_options")));
                }
                v.get("include_usage").and_then(serde_json::Value::as_bool) == Some(true)
            }
        };
        let max_tokens = output_limit(&fields)?;
        // Each of `n` (or `best_of`) choices may use `max_tokens`: the worst case multiplies.
        let mut choices = 1;
        for name in ["n", "best_of"] {
            if let Some(raw) = fields.get(name).filter(|t| *t != "null") {
                let n = raw.parse::<u64>().ok().filter(|n| (1..=128).contains(n)).ok_or_else(|| {
                    GatewayError::invalid(format!("`{name}` must be an integer from 1 to 128"), Some(name))
                })?;
                choices = choices.max(n);
            }
        }
        // An empty `user` is no customer (some clients always send the field).
        let user = string_field(&fields, "user")?.filter(|u| !u.is_empty());
        if let Some(u) = &user {
            limits::check_id("user", u).map_err(bound)?;
        }
        if let Some(text) = fields.get("metadata") {
            if !(text.starts_with('{') || text == "null") {
                return Err(GatewayError::invalid("`metadata` must be an object", Some("metadata")));
            }
            if text.len() > limits::MAX_METADATA_BYTES {
                return Err(GatewayError::invalid(
                    format!("`metadata` is larger than {} bytes", limits::MAX_METADATA_BYTES),
                    Some("metadata"),
                ));
            }
        }
        let tags = crate::tenancy::tags::body_tags(fields.get("metadata").filter(|m| *m != "null"))?;
        Ok(ProxyRequest {
            fields,
            endpoint,
            model,
            stream,
            client_wants_usage,
            user,
            tags,
            max_tokens,
            prompt_field,
            body_len,
            choices,
            documents,
            characters,
            images,
            upload: None,
        })
    }

    /// Prompt tokens counted by Tollgate's tokenizer, for providers that report none. Only
    /// called on that rare path: it re-reads the prompt. The tokenizer sees at most
    /// [`crate::metering::tokens::MAX_COUNTED_TEXT`] of it; the rest counts one token per four bytes.
    pub fn prompt_tokens_estimate(&self) -> u64 {
        let Some(raw) = self.fields.get(self.prompt_field) else { return 0 };
        match serde_json::from_str::<serde_json::Value>(raw) {
            Ok(v) => {
                let mut text = crate::metering::tokens::TextTally::default();
                crate::metering::tokens::prompt_text(&v, &mut text);
                text.tokens()
            }
            // Nested deeper than the JSON reader follows (the body was only checked for
            // syntax): its bytes still count, rather than nothing.
            Err(_) => (raw.len() as u64).div_ceil(4),
        }
    }

    /// The body's top-level fields as the client sent them.
    pub fn fields(&self) -> &Fields {
        &self.fields
    }

    /// This request without the field `name` (one only Tollgate reads, such as `cache`).
    pub fn without(&self, name: &str) -> Result<ProxyRequest, GatewayError> {
        let body =
            self.fields.without(name).map_err(|e| GatewayError::Internal(format!("cannot re-encode request: {e}")))?;
        self.reparsed(body)
    }

    /// An upload: its form read (`upload::parse`), and the fields the gateway reads validated
    /// as any request's.
    pub async fn parse_upload(
        content_type: Option<&str>,
        body: bytes::Bytes,
        endpoint: Endpoint,
    ) -> Result<ProxyRequest, GatewayError> {
        let parsed = upload::parse(content_type, body).await?;
        let mut request = ProxyRequest::parse_bytes(parsed.json, endpoint)?;
        request.upload = Some(std::sync::Arc::new(parsed.upload));
        Ok(request)
    }

    /// `body` (this request's fields, edited) parsed, keeping the upload.
    fn reparsed(&self, body: Vec<u8>) -> Result<ProxyRequest, GatewayError> {
        let mut request = ProxyRequest::parse_bytes(bytes::Bytes::from(body), self.endpoint)?;
        request.upload = self.upload.clone();
        Ok(request)
    }

    /// The content type of [`Self::upstream_body`]: JSON, or an upload's form.
    pub fn content_type(&self) -> String {
        self.upload.as_ref().map_or_else(|| "application/json".to_owned(), |u| u.content_type())
    }

    /// The most output tokens the request can be charged: `max_tokens` (else `default()`) for
    /// each of its choices; none for an endpoint that generates nothing (embeddings,
    /// moderations), whatever its body says.
    pub fn worst_output_tokens(&self, default: impl FnOnce() -> u64) -> u64 {
        if !self.endpoint.generates() {
            return 0;
        }
        self.max_tokens.unwrap_or_else(default).saturating_mul(self.choices)
    }

    /// The search units a rerank request is charged: those the provider reports, else one per
    /// 100 documents (at least one); 0 for other endpoints.
    pub fn search_units(&self, reported: Option<u64>) -> u64 {
        match self.endpoint {
            Endpoint::Rerank => reported.unwrap_or_else(|| self.documents.div_ceil(DOCUMENTS_PER_SEARCH_UNIT).max(1)),
            _ => 0,
        }
    }

    /// What the request is charged besides tokens: its search units (see [`Self::search_units`]),
    /// the characters it has spoken and the images generated (those in `answer`, else those
    /// asked for; see [`images::ImageRequest::units`]), as parts of
    /// [`Tokens`](crate::limits::pricing::Tokens), and the seconds of audio an upload's answer
    /// reports. Without an answer: the most it can be charged (an upload's seconds are not
    /// known before the answer).
    pub fn units(&self, reported_search_units: Option<u64>, answer: Option<&[u8]>) -> crate::limits::pricing::Tokens {
        let imaged = self.images.units(answer.filter(|_| self.images.n > 0).and_then(images::answered));
        let seconds = answer.filter(|_| self.upload.is_some()).and_then(upload::seconds).unwrap_or(0);
        crate::limits::pricing::Tokens {
            search_units: self.search_units(reported_search_units),
            characters: self.characters,
            images: imaged.images,
            pixels: imaged.pixels,
            seconds,
            ..Default::default()
        }
    }

    /// Whether a stream of this endpoint reports usage only when asked (`stream_options`).
    pub fn injects_usage(&self) -> bool {
        self.stream && matches!(self.endpoint, Endpoint::ChatCompletions | Endpoint::Completions)
    }

    /// The request as a JSON value (for providers whose format is translated).
    pub fn to_value(&self) -> Result<serde_json::Value, GatewayError> {
        let mut map = serde_json::Map::with_capacity(self.fields.count());
        for (k, v) in self.fields.iter() {
            // The body was only checked for syntax: a field nested deeper than the JSON reader
            // follows (128 levels) is the client's error.
            let value = serde_json::from_str(v).map_err(|e| GatewayError::field(k, format!("`{k}`: {e}")))?;
            map.insert(k.to_owned(), value);
        }
        Ok(serde_json::Value::Object(map))
    }

    /// A top-level field's raw JSON, as the client sent it.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name)
    }

    /// The prompt (`messages`, `prompt` or `input`) as a JSON value, for guardrails.
    pub fn prompt_value(&self) -> Result<Option<serde_json::Value>, GatewayError> {
        let Some(raw) = self.fields.get(self.prompt_field) else { return Ok(None) };
        let field = self.prompt_field;
        serde_json::from_str(raw).map(Some).map_err(|e| GatewayError::field(field, format!("`{field}`: {e}")))
    }

    /// The request as guardrails leave it: the prompt replaced by `prompt` when given, and
    /// `guardrails` (Tollgate's, never a provider's) taken out. Other fields keep their bytes.
    pub fn guarded(&self, prompt: Option<&serde_json::Value>) -> Result<ProxyRequest, GatewayError> {
        let encode = |e: serde_json::Error| GatewayError::Internal(format!("cannot encode request: {e}"));
        let prompt = prompt.map(serde_json::to_string).transpose().map_err(encode)?;
        let mut body = Vec::with_capacity(self.body_len + 64);
        body.push(b'{');
        for (name, raw) in self.fields.iter().filter(|(name, _)| *name != "guardrails") {
            if body.len() > 1 {
                body.push(b',');
            }
            serde_json::to_writer(&mut body, name).map_err(encode)?;
            body.push(b':');
            let value = match &prompt {
                Some(p) if name == self.prompt_field => p.as_str(),
                _ => raw,
            };
            body.extend_from_slice(value.as_bytes());
        }
        body.push(b'}');
        self.reparsed(body)
    }

    /// The body to send upstream: the client's bytes with the upstream model name and, for
    /// streams, a request for the usage chunk spliced in; nothing else is re-encoded.
    pub fn upstream_body(&self, upstream_model: &str) -> Result<Vec<u8>, GatewayError> {
        if let Some(upload) = &self.upload {
            return Ok(upload.body(upstream_model));
        }
        let encode = |e: serde_json::Error| GatewayError::Internal(format!("cannot encode request: {e}"));
        let model = serde_json::to_vec(upstream_model).map_err(encode)?;
        let stream_options;
        let mut edits: [(&str, &[u8]); 2] = [("model", &model), ("stream_options", &[])];
        let mut count = 1;
        if self.injects_usage() && !self.client_wants_usage {
            stream_options = match self.fields.get("stream_options") {
                // Other options the client set are kept (it was checked to be an object or null).
                Some(raw) => {
                    let mut opts: serde_json::Map<String, serde_json::Value> =
                        serde_json::from_str(raw).unwrap_or_default();
                    opts.insert("include_usage".to_owned(), serde_json::Value::Bool(true));
                    serde_json::to_vec(&opts).map_err(encode)?
                }
                None => br#"{"include_usage":true}"#.to_vec(),
            };
            edits[1].1 = &stream_options;
            count = 2;
        }
        self.fields.edited(&edits[..count]).map_err(encode)
    }
}

/// The parts of a response (or stream chunk) the gateway reads. Chat and completions report
/// `prompt_tokens`/`completion_tokens`; the Responses API `input_tokens`/`output_tokens`, at the
/// top level or under `response` in its stream events.
#[derive(Deserialize, Default)]
pub struct ResponseUsage {
    pub model: Option<String>,
    pub usage: Option<Usage>,
    pub response: Option<Box<ResponseUsage>>,
    /// Cohere's rerank answer: `meta.billed_units.search_units`.
    pub meta: Option<Meta>,
}

#[derive(Deserialize, Default)]
pub struct Meta {
    pub billed_units: Option<BilledUnits>,
}

#[derive(Deserialize, Default)]
pub struct BilledUnits {
    pub search_units: Option<u64>,
}

impl ResponseUsage {
    /// The usage the provider reported, if it is believable: a count above
    /// `limits::MAX_TOKENS_PER_REQUEST` is not (the request is then counted by Tollgate and
    /// marked `estimated`).
    pub fn usage(&self) -> Option<Usage> {
        self.usage.or_else(|| self.response.as_ref().and_then(|r| r.usage)).filter(Usage::believable)
    }
    /// The rerank search units the provider billed, if believable (at most
    /// `limits::MAX_TOKENS_PER_REQUEST`).
    pub fn search_units(&self) -> Option<u64> {
        let units = self.meta.as_ref()?.billed_units.as_ref()?.search_units?;
        (units <= limits::MAX_TOKENS_PER_REQUEST).then_some(units)
    }

    pub fn model(&self) -> Option<&str> {
        self.model.as_deref().or_else(|| self.response.as_ref().and_then(|r| r.model.as_deref()))
    }
}

#[derive(Deserialize, Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    #[serde(default, alias = "input_tokens")]
    pub prompt_tokens: u64,
    #[serde(default, alias = "output_tokens")]
    pub completion_tokens: u64,
    #[serde(default, alias = "input_tokens_details")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(default, alias = "output_tokens_details")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
    /// Prompt tokens written to the provider's cache (part of `prompt_tokens`), under the name
    /// LiteLLM gives Anthropic's count; the Anthropic adapter writes it.
    #[serde(default, deserialize_with = "count")]
    pub cache_creation_input_tokens: u64,
}

impl Usage {
    /// Whether every count is within `limits::MAX_TOKENS_PER_REQUEST` (a provider's answer is
    /// outside input like any other).
    pub fn believable(&self) -> bool {
        let ok = self.tokens().largest() <= limits::MAX_TOKENS_PER_REQUEST;
        if !ok {
            metrics::counter!("tollgate_upstream_usage_rejected_total").increment(1);
            tracing::warn!("a provider reported usage beyond any real request; counting it instead");
        }
        ok
    }

    /// The counts the price applies to. OpenAI counts cached, audio and image prompt tokens
    /// within `prompt_tokens`, and reasoning, audio and image output within
    /// `completion_tokens`: each is a part, priced instead of (never on top of) text.
    pub fn tokens(&self) -> crate::limits::pricing::Tokens {
        let p = self.prompt_tokens_details.unwrap_or_default();
        let c = self.completion_tokens_details.unwrap_or_default();
        crate::limits::pricing::Tokens {
            prompt: self.prompt_tokens,
            completion: self.completion_tokens,
            cached: p.cached_tokens,
            cache_write: self.cache_creation_input_tokens,
            reasoning: c.reasoning_tokens,
            audio_input: p.audio_tokens,
            audio_output: c.audio_tokens,
            image_input: p.image_tokens,
            image_output: c.image_tokens,
            // Read from the answer's `meta` (`ResponseUsage::search_units`), not from `usage`.
            search_units: 0,
            characters: 0,
            images: 0,
            pixels: 0,
            seconds: 0,
        }
    }
}

#[derive(Deserialize, Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct PromptTokensDetails {
    #[serde(default, deserialize_with = "count")]
    pub cached_tokens: u64,
    #[serde(default, deserialize_with = "count")]
    pub audio_tokens: u64,
    #[serde(default, deserialize_with = "count")]
    pub image_tokens: u64,
}

#[derive(Deserialize, Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompletionTokensDetails {
    #[serde(default, deserialize_with = "count")]
    pub reasoning_tokens: u64,
    #[serde(default, deserialize_with = "count")]
    pub audio_tokens: u64,
    #[serde(default, deserialize_with = "count")]
    pub image_tokens: u64,
}

/// A token count; `null` (some OpenAI-compatible servers send it for counts they do not keep)
/// is zero.
fn count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(Option::<u64>::deserialize(d)?.unwrap_or(0))
}

#[cfg(test)]
pub(crate) mod fuzz;

#[cfg(test)]
mod tests;
