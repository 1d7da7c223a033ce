//! The spans of a model request and W3C trace context (docs/observability.md, "Traces").
//!
//! Each model request has one span, `request`, named `{gen_ai.operation.name} {model}` in
//! OpenTelemetry, with the GenAI semantic-convention attributes and Tollgate's own (cost, key
//! alias, team, customer; never the key or its hash). Its children: `auth`, `admission`,
//! `lease_grant`, one `upstream_attempt` per try (`routing::retry`) and `metering`.
//!
//! A client's `traceparent` is the request span's parent when it is valid; one that is not
//! (too long, malformed, all-zero ids, version `ff`) is ignored and a new trace starts. The
//! provider receives the `traceparent` of the attempt span that called it.
//!
//! The logs do not read these spans: a request's log fields (its id, trace id, key alias,
//! operation, model, team, customer) are a `telemetry::request::RequestFields` record, current
//! while the request is served ([`RequestTrace::within`]) and while its streamed body is polled
//! ([`in_request`]).

use crate::tenancy::auth::Principal;
use actix_web::HttpRequest;
use tollgate_schemas::telemetry::recorder::{self, Child, Root};
use tollgate_schemas::telemetry::request::{self, RequestFields, Scoped};
use tollgate_schemas::telemetry::span::{self, SpanKind, Text, Value};

mod sampling;
pub use sampling::sample_in_gateway;

/// A span that only traces need (a request's auth, admission, attempts, guardrails), a child
/// of the current request's root, recorded straight into its trace (`recorder::Child`) from now
/// until it is dropped. Empty, and free, when the request is not traced or outside a request.
pub fn child(name: &'static str) -> Child {
    Child::current(name)
}

/// A span named `name` under `parent` (a lease grant within admission); empty when `parent` is.
pub fn child_of(parent: &Child, name: &'static str) -> Child {
    if !parent.is_recording() {
        return Child::none();
    }
    recorder::with_current(|root| Child::start(root, Some(parent), name)).unwrap_or_else(Child::none)
}

/// The `metering` span of a request whose root (`RequestTrace::outcome_span`) is `root`: empty
/// when that is none (the request is not traced).
pub fn metering_child(root: Option<&Root>) -> Child {
    root.map_or_else(Child::none, |root| Child::start(root, None, "metering"))
}

/// Whether the request being served (within [`RequestTrace::within`]) is traced. False with
/// traces off, outside a request, and for a request the sampler dropped: then no child span,
/// attribute or name is built for it.
pub fn sampled() -> bool {
    recorder::is_current()
}

/// Whether spans are exported (`tollgate_schemas::telemetry::init` installed an exporter).
pub fn exporting() -> bool {
    tollgate_schemas::telemetry::exporting()
}

/// Longest `traceparent` read: version 00 is 55 bytes; later versions may append fields.
const MAX_TRACEPARENT_BYTES: usize = 256;

/// The ids of a W3C `traceparent` header, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub sampled: bool,
}

impl TraceParent {
    /// Parses `00-<32 hex>-<16 hex>-<2 hex>` (W3C Trace Context, level 1); `None` for anything
    /// else. Versions after 00 are read as 00 when their first four fields have its shape.
    pub fn parse(header: &str) -> Option<TraceParent> {
        if header.len() > MAX_TRACEPARENT_BYTES || header.len() < 55 {
            return None;
        }
        let b = header.as_bytes();
        let version = hex_byte(&b[0..2])?;
        if version == 0xff || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        // Version 00 is exactly 55 bytes; a later version may go on after a dash.
        if (version == 0 && b.len() != 55) || (b.len() > 55 && b[55] != b'-') {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut parent_id = [0u8; 8];
        for (i, out) in trace_id.iter_mut().enumerate() {
            *out = hex_byte(&b[3 + 2 * i..5 + 2 * i])?;
        }
        for (i, out) in parent_id.iter_mut().enumerate() {
            *out = hex_byte(&b[36 + 2 * i..38 + 2 * i])?;
        }
        let flags = hex_byte(&b[53..55])?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(TraceParent { trace_id, parent_id, sampled: flags & 1 == 1 })
    }
}

/// Lower-case hex only, as the specification requires.
fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    Some(digit(pair[0])? << 4 | digit(pair[1])?)
}

/// A model request's log fields, its trace id (32 hex digits) when it has one: the exported
/// trace's, or the client's when traces are not exported; and its root, the span exported for
/// it, when the sampler kept it.
pub struct RequestTrace {
    pub log: RequestFields,
    pub trace_id: Option<String>,
    pub root: Option<Root>,
}

impl RequestTrace {
    /// Starts the request's log fields and, when the sampler keeps the request
    /// (`sampling::keeps`), its root: a child of the client's `traceparent` when that is valid.
    /// A request not kept, or any with traces off, builds nothing else; its trace id is the
    /// client's, else (traces on) a new one.
    pub fn start(req: &HttpRequest, operation: &'static str, request_id: &str) -> RequestTrace {
        let client = req.headers().get("traceparent").and_then(|v| v.to_str().ok()).and_then(TraceParent::parse);
        let root = sampling::keeps(client.as_ref())
            .then(|| Root::start(operation, SpanKind::Server, client.map(|p| (p.trace_id, p.parent_id))))
            .flatten();
        let trace_id = match (&root, client) {
            (Some(root), _) => {
                // A new root: it holds no attribute yet.
                root.record(|s| {
                    s.add("request_id", Value::Str(Text::new(request_id)));
                    s.add("gen_ai.operation.name", Value::Str(Text::Static(operation)));
                });
                Some(span::hex(&root.ids().0))
            }
            (None, Some(parent)) => Some(span::hex(&parent.trace_id)),
            (None, None) => exporting().then(sampling::new_trace_id),
        };
        let log = RequestFields::new(request_id, operation, trace_id.clone());
        RequestTrace { log, trace_id, root }
    }

    /// `serve` with the request's log fields and its root (if any) the task's current ones.
    pub fn within<F: std::future::Future>(&self, serve: F) -> impl std::future::Future<Output = F::Output> {
        recorder::scope(self.root.clone(), request::scope(self.log.clone(), serve))
    }

    /// The root to record the request's outcome on (`record_outcome`, the `metering` child):
    /// none when the request is not traced.
    pub fn outcome_span(&self) -> Option<Root> {
        self.root.clone()
    }
}

/// A streamed answer's body, polled by the server after the handler has returned: with the
/// current request's log fields current at each poll and at its drop, so what it logs (its
/// metering, a cut stream) carries them. Call it while the request is served.
pub fn in_request<S>(body: S) -> Scoped<S> {
    Scoped::current(body)
}

/// `work`, to go on in the background once the request is answered (a call finishing, or a
/// stream read to its end, for a client that left): with the current request's log fields, when there is one.
pub fn carried<F: std::future::Future>(work: F) -> impl std::future::Future<Output = F::Output> {
    let log = request::current();
    async move {
        match log {
            Some(log) => request::scope(log, work).await,
            None => work.await,
        }
    }
}

/// Records the model asked for in the current request's log fields and on its root.
pub fn record_model(operation: &str, model: &str) {
    request::with_current(|log| log.set_model(model));
    recorder::with_current(|root| {
        root.record(|s| {
            // The root was started (for its trace id) before the model was known: renamed here.
            recorder::rename(s, operation, model);
            s.set("gen_ai.request.model", Value::Str(Text::new(model)));
        })
    });
}

/// Records who is asking in the current request's log fields and on its root: the key's
/// alias, team and customer.
pub fn record_principal(principal: &Principal) {
    let (alias, team, customer) =
        (principal.key.key_alias.as_deref(), principal.key.team_id.as_deref(), principal.customer_id.as_deref());
    request::with_current(|log| log.set_principal(alias, team, customer));
    let fields = [("key_alias", alias), ("tollgate.team_id", team), ("tollgate.customer_id", customer)];
    let present = fields.iter().filter_map(|(name, value)| value.map(|v| (*name, v)));
    recorder::with_current(|root| {
        root.record(|s| present.for_each(|(name, value)| s.set(name, Value::Str(Text::new(value)))))
    });
}

/// Records how the request ended on its root, from its usage event: the provider and model
/// that served it, tokens, cost, and the error class of a failure. Nothing to do when the
/// request is not traced (`root` is `RequestTrace::outcome_span`, then none).
pub fn record_outcome(root: Option<&Root>, event: &tollgate_schemas::UsageEvent) {
    let Some(root) = root else { return };
    // Integers go out as i64: OpenTelemetry has no unsigned attribute type.
    let int = |n: u64| Value::I64(i64::try_from(n).unwrap_or(i64::MAX));
    let text = |s: &str| Value::Str(Text::new(s));
    root.record(|s| {
        // Only the outcome sets these: each is added, without a search for one to replace.
        if let Some(provider) = &event.provider {
            s.add("gen_ai.provider.name", text(provider_name(provider)));
        }
        if let Some(model) = &event.served_model {
            s.add("gen_ai.response.model", text(model));
        }
        if let Some(deployment) = &event.deployment {
            s.add("tollgate.deployment", text(deployment));
        }
        s.add("gen_ai.usage.input_tokens", int(event.prompt_tokens));
        s.add("gen_ai.usage.output_tokens", int(event.completion_tokens));
        s.add("gen_ai.usage.cached_input_tokens", int(event.cached_tokens));
        s.add("tollgate.cost_nano_usd", Value::I64(event.cost_nano_usd.0));
        // The principal may have set it already.
        if let Some(customer) = &event.customer_id {
            s.set("tollgate.customer_id", text(customer));
        }
        if let Some(error) = &event.error_type {
            s.add("error.type", text(error));
            s.set_error(error);
        }
    });
}

/// Records the status the client got on the current request's root, when it is traced.
pub fn record_status(status: u16) {
    recorder::with_current(|root| {
        root.record(|s| s.set("http.response.status_code", Value::I64(i64::from(status))));
    });
}

/// OpenTelemetry's `gen_ai.provider.name` for a Tollgate provider prefix.
pub fn provider_name(prefix: &str) -> &str {
    match prefix {
        "azure" => "azure.ai.openai",
        "gemini" => "gcp.gemini",
        "vertex_ai" => "gcp.vertex_ai",
        "bedrock" => "aws.bedrock",
        "mistral" => "mistral_ai",
        "xai" => "x_ai",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_read() {
        let p = TraceParent::parse(VALID).unwrap();
        assert_eq!(hex::encode(p.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex::encode(p.parent_id), "00f067aa0ba902b7");
        assert!(p.sampled);
        assert!(!TraceParent::parse(&VALID.replace("-01", "-00")).unwrap().sampled);
        // A later version may append fields.
        assert!(TraceParent::parse(&format!("01{}-extra", &VALID[2..])).is_some());
    }

    #[test]
    fn hostile_or_malformed_traceparents_are_ignored() {
        let long = format!("01{}-{}", &VALID[2..], "a".repeat(300));
        for bad in [
            "",
            "garbage",
            &VALID[..54],
            &format!("{VALID}-"), // version 00 has no more fields
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // forbidden version
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace id
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero parent id
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // upper case
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", // not hex
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // separators
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", // junk after the flags
            &long,                // beyond the bound
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902é-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn without_an_exporter_the_client_trace_id_is_kept_and_a_bad_one_dropped() {
        let with =
            |tp: &str| actix_web::test::TestRequest::default().insert_header(("traceparent", tp)).to_http_request();
        let kept = RequestTrace::start(&with(VALID), "chat", "req-1");
        assert_eq!(kept.trace_id.as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        let dropped = RequestTrace::start(&with(&VALID.to_uppercase()), "chat", "req-2");
        assert_eq!(dropped.trace_id, None);
        let none = RequestTrace::start(&actix_web::test::TestRequest::default().to_http_request(), "chat", "req-3");
        assert_eq!(none.trace_id, None);
    }

    #[test]
    fn child_spans_are_opened_only_for_a_sampled_request() {
        // Outside a request, in a request the sampler dropped, and under an empty parent:
        // nothing (what a sampled request's children record: the recorder's tests).
        assert!(!sampled());
        assert!(!child("auth").is_recording());
        let unsampled = recorder::scope(None, async {
            assert!(!sampled());
            assert!(!child("admission").is_recording());
        });
        futures::executor::block_on(unsampled);
        assert!(!child_of(&Child::none(), "lease_grant").is_recording());
        assert!(!metering_child(None).is_recording());
    }

    /// The log fields as name and value pairs.
    fn pairs(log: &RequestFields) -> Vec<(String, String)> {
        let mut out = Vec::new();
        log.for_each(|name, value| out.push((name.to_owned(), value.to_owned())));
        out
    }

    #[test]
    fn a_request_log_fields_are_filled_while_it_is_served_and_kept_by_its_body() {
        use futures::StreamExt;
        let req = actix_web::test::TestRequest::default().insert_header(("traceparent", VALID)).to_http_request();
        let trace = RequestTrace::start(&req, "chat", "req-5");
        let key = tollgate_schemas::tenancy::KeyRecord {
            key_alias: Some("checkout".into()),
            team_id: Some("team-a".into()),
            ..Default::default()
        };
        let mut principal = Principal::of_key(key);
        principal.customer_id = Some("cust-1".into());
        // Outside the request, nothing is recorded anywhere.
        record_model("chat", "ignored");
        let body = futures::executor::block_on(trace.within(async {
            record_principal(&principal);
            record_model("chat", "gpt-4o-mini");
            // The body, polled after the handler returned, reads the fields then.
            in_request(futures::stream::poll_fn(|_| std::task::Poll::Ready(request::current().map(|log| pairs(&log)))))
        }));
        let want: Vec<(String, String)> = [
            ("request_id", "req-5"),
            ("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"),
            ("key_alias", "checkout"),
            ("gen_ai.operation.name", "chat"),
            ("gen_ai.request.model", "gpt-4o-mini"),
            ("tollgate.team_id", "team-a"),
            ("tollgate.customer_id", "cust-1"),
        ]
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
        assert_eq!(pairs(&trace.log), want);
        let polled = futures::executor::block_on(Box::pin(body).into_future()).0;
        assert_eq!(polled, Some(want.clone()));
        // Work made inside the request to run after it keeps them; made outside, it has none.
        let mut spawned = None;
        futures::executor::block_on(
            trace.within(async { spawned = Some(carried(async { request::current().map(|log| pairs(&log)) })) }),
        );
        assert_eq!(futures::executor::block_on(spawned.unwrap()), Some(want));
        assert!(futures::executor::block_on(carried(async { request::current() })).is_none());
    }

    #[test]
    fn without_an_exporter_a_request_is_not_sampled() {
        let trace = RequestTrace::start(&actix_web::test::TestRequest::default().to_http_request(), "chat", "req-4");
        assert!(trace.root.is_none());
        assert!(trace.outcome_span().is_none());
    }
}
