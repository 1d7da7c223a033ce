//! Guardrails (LiteLLM's `guardrails:`): checks run on a request before its provider call
//! (`pre_call`) and on its answer after (`post_call`), streams included. Built-ins: banned words
//! and regexes ([`words`]), PII masking restored in the answer ([`pii`]); and an external
//! service in LiteLLM's generic guardrail API shape ([`external`]). A request runs the
//! guardrails that are `default_on`, those its key's or team's metadata name (`guardrails:
//! [names]`) and those its body names (`guardrails`). A block answers 400 `guardrail_blocked`
//! naming the guardrail, never the text it matched. Nothing here is built per request but the
//! request's own [`Applied`] state; the pipeline calls it through two narrow hooks.

pub mod config;
pub mod external;
pub mod pii;
mod stream;
pub mod text;
mod window;
pub mod words;

use crate::error::GatewayError;
use crate::http::wire::ProxyRequest;
use crate::tenancy::auth::Principal;
use external::{External, Fallback, RequestData, Verdict};
use pii::{Masks, Pii};
use std::collections::HashMap;
use std::sync::Arc;
pub use stream::guard_stream;
use words::Words;

/// Most guardrails one request may name in its body.
const MAX_REQUESTED: usize = 16;

/// The guardrails of the config, compiled at load.
#[derive(Debug, Default)]
pub struct Guardrails {
    list: Vec<Arc<Guardrail>>,
    by_name: HashMap<String, usize>,
}

#[derive(Debug)]
pub struct Guardrail {
    pub name: String,
    /// Its name and settings, hashed: its identity in the response cache's key.
    fingerprint: [u8; 32],
    pre_call: bool,
    post_call: bool,
    default_on: bool,
    check: Check,
}

#[derive(Debug)]
enum Check {
    Words(Words),
    Pii(Pii),
    External(External),
}

/// The guardrails one request runs, and what its pre-call hook left for the answer (the
/// masked values to restore).
#[derive(Debug, Default)]
pub struct Applied {
    guardrails: Vec<Arc<Guardrail>>,
    masks: Masks,
    request_data: RequestData,
    call_id: String,
}

impl Guardrails {
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The guardrails `request` runs, in the config's order: `default_on` ones, those named by
    /// the key's and the team's metadata, and those the body names. A body naming an unknown
    /// guardrail is refused; unknown names in metadata are skipped (the config may have dropped
    /// them).
    fn select(&self, principal: &Principal, request: &ProxyRequest) -> Result<Vec<Arc<Guardrail>>, GatewayError> {
        let mut on = vec![false; self.list.len()];
        for (i, g) in self.list.iter().enumerate() {
            on[i] = g.default_on;
        }
        let metadata = [Some(&principal.key.metadata), principal.team.as_ref().map(|t| &t.metadata)];
        for names in metadata.into_iter().flatten().filter_map(|m| m.get("guardrails")?.as_array()) {
            for i in names.iter().filter_map(|n| self.by_name.get(n.as_str()?)) {
                on[*i] = true;
            }
        }
        for name in requested(request)? {
            let i = self.by_name.get(&name).ok_or_else(|| {
                GatewayError::field("guardrails", format!("no guardrail is named `{}`", name.escape_debug()))
            })?;
            on[*i] = true;
        }
        Ok(self.list.iter().zip(on).filter(|(_, on)| *on).map(|(g, _)| g.clone()).collect())
    }
}

/// The names a request's body gives in `guardrails`: strings, or LiteLLM's `{name: {...}}`
/// objects (their settings are not read).
fn requested(request: &ProxyRequest) -> Result<Vec<String>, GatewayError> {
    let Some(raw) = request.field("guardrails").filter(|r| *r != "null") else { return Ok(Vec::new()) };
    let bad = || GatewayError::field("guardrails", "`guardrails` must be a list of guardrail names");
    let list: Vec<serde_json::Value> = serde_json::from_str(raw).map_err(|_| bad())?;
    if list.len() > MAX_REQUESTED {
        return Err(GatewayError::field("guardrails", format!("at most {MAX_REQUESTED} guardrails")));
    }
    list.into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s),
            serde_json::Value::Object(m) if m.len() == 1 => m.keys().next().cloned().ok_or_else(bad),
            _ => Err(bad()),
        })
        .collect()
}

/// Pre-call hook: selects the request's guardrails and runs those of `pre_call` on its prompt.
/// Returns the request to send when it changed (PII masked, an external guardrail's rewrite,
/// or the `guardrails` field, which is Tollgate's, taken out), and the state the answer needs.
pub async fn before_call(
    set: &Guardrails,
    client: &reqwest::Client,
    principal: &Principal,
    request: &ProxyRequest,
    request_id: &str,
) -> Result<(Option<ProxyRequest>, Arc<Applied>), GatewayError> {
    if set.is_empty() {
        return Ok((None, Arc::default()));
    }
    let mut applied = Applied {
        guardrails: set.select(principal, request)?,
        masks: Masks::default(),
        request_data: request_data(principal, request),
        call_id: request_id.to_owned(),
    };
    let named = request.field("guardrails").is_some();
    if !applied.guardrails.iter().any(|g| g.pre_call) {
        let rebuilt = if named { Some(request.guarded(None)?) } else { None };
        return Ok((rebuilt, Arc::new(applied)));
    }
    let mut prompt = request.prompt_value()?;
    let mut changed = false;
    for g in applied.guardrails.iter().filter(|g| g.pre_call) {
        if let Some(prompt) = prompt.as_mut() {
            let masks = Some(&mut applied.masks);
            changed |= g.run(prompt, Side::Prompt, masks, client, &applied.request_data, request_id).await?;
        }
    }
    let rebuilt = match (changed, named) {
        (false, false) => None,
        (true, _) => Some(request.guarded(prompt.as_ref())?),
        (false, true) => Some(request.guarded(None)?),
    };
    Ok((rebuilt, Arc::new(applied)))
}

/// Which side of the call a guardrail looks at.
#[derive(Clone, Copy)]
enum Side {
    Prompt,
    Answer,
}

impl Side {
    fn texts(self, value: &mut serde_json::Value, f: &mut dyn FnMut(&mut String)) {
        match self {
            Side::Prompt => text::prompt_texts(value, f),
            Side::Answer => text::answer_texts(value, f),
        }
    }

    fn hook(self) -> &'static str {
        match self {
            Side::Prompt => "pre_call",
            Side::Answer => "post_call",
        }
    }

    /// The generic guardrail API's `input_type`.
    fn input_type(self) -> &'static str {
        match self {
            Side::Prompt => "request",
            Side::Answer => "response",
        }
    }
}

impl Guardrail {
    /// Runs one guardrail on the texts of a prompt or an answer; whether it rewrote them.
    /// `masks` takes the values masked in a prompt (none on an answer).
    async fn run(
        &self,
        value: &mut serde_json::Value,
        side: Side,
        masks: Option<&mut Masks>,
        client: &reqwest::Client,
        who: &RequestData,
        call_id: &str,
    ) -> Result<bool, GatewayError> {
        match (&self.check, masks) {
            (Check::Words(w), _) => {
                let mut hit = false;
                side.texts(value, &mut |s| hit |= w.matches(s));
                if hit {
                    return Err(self.blocked(side.hook()));
                }
                Ok(false)
            }
            (Check::Pii(p), Some(masks)) => {
                let mut changed = false;
                side.texts(value, &mut |s| {
                    if let Some(masked) = p.mask(s, masks) {
                        *s = masked;
                        changed = true;
                    }
                });
                Ok(changed)
            }
            // Masking acts on prompts; answers are restored before the post-call guardrails.
            (Check::Pii(_), None) => Ok(false),
            (Check::External(e), _) => {
                let mut texts = Vec::new();
                side.texts(value, &mut |s| texts.push(s.clone()));
                match self.ask(e, client, &texts, who, side.input_type(), call_id).await? {
                    Verdict::Pass => Ok(false),
                    Verdict::Block => Err(self.blocked(side.hook())),
                    Verdict::Rewrite(new) => {
                        let mut new = new.into_iter();
                        side.texts(value, &mut |s| {
                            if let Some(t) = new.next() {
                                *s = t;
                            }
                        });
                        Ok(true)
                    }
                }
            }
        }
    }

    /// Asks an external guardrail; a failed call blocks or passes as configured.
    async fn ask(
        &self,
        e: &External,
        client: &reqwest::Client,
        texts: &[String],
        who: &RequestData,
        input_type: &'static str,
        call_id: &str,
    ) -> Result<Verdict, GatewayError> {
        match e.check(client, texts, who, input_type, call_id).await {
            Ok(v) => Ok(v),
            Err(err) => {
                let fallback = match e.fallback {
                    Fallback::FailOpen => "fail_open",
                    Fallback::FailClosed => "fail_closed",
                };
                tracing::warn!(guardrail = %self.name, error = %err, fallback, "external guardrail gave no verdict");
                metrics::counter!("tollgate_guardrail_errors_total", "guardrail" => self.name.clone(), "fallback" => fallback)
                    .increment(1);
                match e.fallback {
                    Fallback::FailOpen => Ok(Verdict::Pass),
                    Fallback::FailClosed => Err(GatewayError::GuardrailUnavailable { guardrail: self.name.clone() }),
                }
            }
        }
    }

    fn blocked(&self, hook: &'static str) -> GatewayError {
        blocked_metric(&self.name, hook);
        GatewayError::GuardrailBlocked { guardrail: self.name.clone() }
    }
}

/// Counts a block by guardrail (names come from the config: bounded) and hook.
fn blocked_metric(name: &str, hook: &'static str) {
    metrics::counter!("tollgate_guardrail_blocks_total", "guardrail" => name.to_owned(), "hook" => hook).increment(1);
}

fn request_data(principal: &Principal, request: &ProxyRequest) -> RequestData {
    RequestData {
        user_api_key_hash: principal.key.key_id.clone(),
        user_api_key_alias: principal.key.key_alias.clone(),
        user_api_key_user_id: principal.key.user_id.clone(),
        user_api_key_team_id: principal.key.team_id.clone(),
        user_api_key_org_id: principal.organization_id.clone(),
        user_api_key_end_user_id: request.user.clone(),
    }
}

/// Ends a request its pre-call hook refused. A block (or a guardrail failing closed) is
/// metered as a refusal: an event with no cost whose `error_type` is the error's code; a
/// malformed `guardrails` field is a bad request, with no event.
pub fn refuse(recorder: crate::metering::recorder::UsageRecorder, err: GatewayError) -> GatewayError {
    match &err {
        GatewayError::GuardrailBlocked { .. } | GatewayError::GuardrailUnavailable { .. } => {
            recorder.finish(crate::metering::recorder::Outcome {
                status: actix_web::ResponseError::status_code(&err).as_u16(),
                error_type: Some(err.kind_and_code().1),
                ..Default::default()
            });
        }
        _ => recorder.abandon(),
    }
    crate::observability::usage::refused(&err);
    err
}

impl Applied {
    /// Whether any guardrail runs on this request (which ones depends on the key, the team and
    /// the body: the response cache's key holds them, see [`Applied::cache_identity`]).
    pub fn runs_any(&self) -> bool {
        !self.guardrails.is_empty()
    }

    /// What the response cache's key holds of the guardrails run: each one's name and settings,
    /// hashed, in the config's order (none when no guardrail runs).
    pub fn cache_identity(&self) -> impl Iterator<Item = &[u8; 32]> {
        self.guardrails.iter().map(|g| &g.fingerprint)
    }

    /// Whether the answer must be looked at: values to restore, or a post-call guardrail.
    pub fn touches_answer(&self) -> bool {
        !self.masks.is_empty() || self.guardrails.iter().any(|g| g.post_call)
    }

    /// Post-call hook on a whole answer: masked values restored, then each `post_call`
    /// guardrail run on the text the client would see. An answer that is not JSON is checked
    /// as it is.
    pub async fn after_call(&self, client: &reqwest::Client, body: bytes::Bytes) -> Result<bytes::Bytes, GatewayError> {
        if !self.touches_answer() {
            return Ok(body);
        }
        let Ok(mut answer) = serde_json::from_slice::<serde_json::Value>(&body) else {
            let text = String::from_utf8_lossy(&body);
            for g in self.guardrails.iter().filter(|g| g.post_call) {
                if let Check::Words(w) = &g.check {
                    if w.matches(&text) {
                        return Err(g.blocked("post_call"));
                    }
                }
            }
            return Ok(body);
        };
        let mut changed = false;
        if !self.masks.is_empty() {
            text::answer_texts(&mut answer, &mut |s| {
                if let Some(restored) = self.masks.restore(s) {
                    *s = restored;
                    changed = true;
                }
            });
        }
        for g in self.guardrails.iter().filter(|g| g.post_call) {
            changed |= g.run(&mut answer, Side::Answer, None, client, &self.request_data, &self.call_id).await?;
        }
        if !changed {
            return Ok(body);
        }
        serde_json::to_vec(&answer)
            .map(bytes::Bytes::from)
            .map_err(|e| GatewayError::Internal(format!("cannot encode answer: {e}")))
    }
}

#[cfg(test)]
mod stream_tests;
#[cfg(test)]
mod tests;
