//! The most a batch can cost, from its input file, at the deployment's batch price: what a
//! batch holds against the hard budgets it counts against while it runs (docs/design.md
//! §2.13, "Budgets").
//!
//! Each line is bounded as a direct request's worst case is (`pipeline::worst_case_cost`,
//! docs/design.md §5.4): its body parsed as the request it is (`wire::ProxyRequest`), every byte
//! of it a prompt token, plus its output limit (`max_tokens`, `max_completion_tokens`, which
//! must agree) for each of its `n` choices — or, without one, the deployment's most output
//! tokens from its `model_info` or the catalogue (`max_output_tokens`), else
//! `budgets.reserve_output_tokens` — at the batch price's highest input and output rates. Pure:
//! no I/O, integer nano-USD, checked arithmetic; a total past what nano-USD can count is
//! [`NanoUsd::MAX`](tollgate_schemas::NanoUsd), which no budget covers.

use super::jsonl::InputFile;
use crate::error::GatewayError;
use crate::http::wire::ProxyRequest;
use crate::limits::pricing::{batch_price, worst_case_cost, Price};
use crate::providers::Endpoint;
use tollgate_schemas::NanoUsd;

/// A line whose body is not a request the endpoint takes (the provider would refuse it, but
/// its cost cannot be bounded before): the batch is refused, naming the line.
#[derive(Debug)]
pub struct BadLine {
    /// 1-based, among the file's request lines.
    pub line: usize,
    pub error: GatewayError,
}

impl From<BadLine> for GatewayError {
    fn from(bad: BadLine) -> GatewayError {
        GatewayError::invalid(
            format!("request line {} of the input file: {}", bad.line, bad.error),
            Some("input_file_id"),
        )
    }
}

/// The most `file` can cost at `price`'s batch price. `default_output` is the output tokens
/// of a line without an output limit.
pub fn max_cost(file: &InputFile, price: &Price, default_output: u64) -> Result<NanoUsd, BadLine> {
    let endpoint = match file.url.as_str() {
        "/v1/embeddings" => Endpoint::Embeddings,
        _ => Endpoint::ChatCompletions,
    };
    let price = batch_price(price);
    let mut total: i64 = 0;
    for (index, body) in file.bodies().enumerate() {
        let line = index + 1;
        let bytes = serde_json::to_vec(body)
            .map_err(|e| BadLine { line, error: GatewayError::invalid(e.to_string(), None) })?;
        let request =
            ProxyRequest::parse_bytes(bytes::Bytes::from(bytes), endpoint).map_err(|error| BadLine { line, error })?;
        let prompt = u64::try_from(request.body_len).unwrap_or(u64::MAX);
        let output = request.worst_output_tokens(|| default_output);
        // An absurd output limit overflows: the batch then costs more than any budget.
        let Ok(worst) = worst_case_cost(&price, prompt, output, request.units(None, None)) else {
            return Ok(NanoUsd(i64::MAX));
        };
        total = total.saturating_add(worst.0.max(0));
    }
    Ok(NanoUsd(total))
}

/// The output tokens of a line without an output limit on deployment `d`: its
/// `model_info.max_output_tokens`, else its catalogue entry's, else `reserve` (then not a bound:
/// docs/design.md §2.13 says so).
pub fn default_output(d: &crate::providers::Deployment, reserve: u64) -> u64 {
    crate::limits::pricing::deployment_max_output(d.model_info.as_ref(), &d.provider, &d.upstream_model, &d.model_name)
        .unwrap_or(reserve)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batches::jsonl;
    use serde_json::json;

    /// 1 nano-USD per input token, 10 per output token at batch prices (twice that otherwise).
    fn price() -> Price {
        Price { batch: Some(Price::from_nanos(1, 1, 10).base), ..Price::from_nanos(2, 2, 20) }
    }

    fn file(bodies: &[serde_json::Value], url: &str) -> InputFile {
        let text: Vec<String> = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| json!({"custom_id": format!("l{i}"), "method": "POST", "url": url, "body": b}).to_string())
            .collect();
        jsonl::check(text.join("\n").as_bytes(), 100).unwrap()
    }

    fn chat(extra: serde_json::Value) -> serde_json::Value {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hello"}]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    }

    fn len(body: &serde_json::Value) -> i64 {
        serde_json::to_vec(body).unwrap().len() as i64
    }

    #[test]
    fn each_line_is_its_bytes_and_its_output_limit_at_batch_prices() {
        let (a, b) = (chat(json!({"max_tokens": 7})), chat(json!({"max_completion_tokens": 100, "n": 3})));
        let f = file(&[a.clone(), b.clone()], "/v1/chat/completions");
        let want = len(&a) + 7 * 10 + len(&b) + 300 * 10;
        assert_eq!(max_cost(&f, &price(), 999).unwrap().0, want);
    }

    #[test]
    fn a_line_without_an_output_limit_takes_the_default() {
        let a = chat(json!({}));
        let f = file(std::slice::from_ref(&a), "/v1/chat/completions");
        assert_eq!(max_cost(&f, &price(), 4_096).unwrap().0, len(&a) + 4_096 * 10);
        assert_eq!(max_cost(&f, &price(), 0).unwrap().0, len(&a));
    }

    #[test]
    fn embeddings_have_no_output() {
        let a = json!({"model": "m", "input": "some text", "max_tokens": 50});
        let f = file(std::slice::from_ref(&a), "/v1/embeddings");
        assert_eq!(max_cost(&f, &price(), 4_096).unwrap().0, len(&a));
    }

    #[test]
    fn without_batch_rates_the_base_price_counts() {
        let a = chat(json!({"max_tokens": 1}));
        let f = file(std::slice::from_ref(&a), "/v1/chat/completions");
        let mut p = price();
        p.batch = None;
        assert_eq!(max_cost(&f, &p, 0).unwrap().0, 2 * len(&a) + 20);
    }

    #[test]
    fn overflow_costs_more_than_any_budget() {
        let most = tollgate_schemas::limits::MAX_TOKENS_PER_REQUEST;
        let big = chat(json!({"max_tokens": most, "n": 128}));
        // One line past what nano-USD can count (a price no catalogue has, but a config may).
        let dear = Price { batch: Some(Price::from_nanos(i64::MAX / 2, 0, i64::MAX / 2).base), ..price() };
        let f = file(&[chat(json!({"max_tokens": 1})), big.clone()], "/v1/chat/completions");
        assert_eq!(max_cost(&f, &dear, 0).unwrap(), NanoUsd(i64::MAX));
        // Lines each within bounds whose sum is not: saturated, never wrapped.
        let p = Price { batch: Some(Price::from_nanos(1, 1, 1_000_000).base), ..price() };
        let line = max_cost(&file(std::slice::from_ref(&big), "/v1/chat/completions"), &p, 0).unwrap().0;
        let n = usize::try_from(i64::MAX / line + 1).unwrap();
        assert!(n <= 100, "{n} lines needed");
        let many: Vec<_> = (0..n).map(|_| big.clone()).collect();
        assert!(max_cost(&file(&many[1..], "/v1/chat/completions"), &p, 0).unwrap().0 < i64::MAX);
        assert_eq!(max_cost(&file(&many, "/v1/chat/completions"), &p, 0).unwrap(), NanoUsd(i64::MAX));
        // A default output as large as any: the same bound.
        assert_eq!(
            max_cost(&file(&[chat(json!({}))], "/v1/chat/completions"), &dear, u64::MAX).unwrap(),
            NanoUsd(i64::MAX)
        );
    }

    #[test]
    fn hostile_lines_are_refused_by_number() {
        for bad in [
            json!({"max_tokens": -1}),
            json!({"max_tokens": "many"}),
            json!({"max_tokens": 5, "max_completion_tokens": 6}),
            json!({"n": 0}),
            json!({"n": 100000}),
            json!({"max_tokens": u64::MAX}),
            json!({"messages": "not a list"}),
        ] {
            let f = file(&[chat(json!({"max_tokens": 1})), chat(bad.clone())], "/v1/chat/completions");
            let e = max_cost(&f, &price(), 0).unwrap_err();
            assert_eq!(e.line, 2, "{bad}");
            let shown = GatewayError::from(e).to_string();
            assert!(shown.starts_with("request line 2 of the input file"), "{shown}");
        }
    }
}
