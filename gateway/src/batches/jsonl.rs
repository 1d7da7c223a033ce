//! A batch input file (OpenAI's JSONL: one request a line), checked before it goes to a
//! provider: every line a JSON object with exactly `custom_id` (unique), `method` `POST`, `url`
//! and `body`, the same `url` and the same `body.model` on every line, within the configured
//! bounds on lines and bytes. [`InputFile::rewritten`] then writes the file again with the
//! provider's name for the model. Pure: no I/O, so hostile files are tested here.

use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::HashSet;

/// The longest line of an input file: one request body, as `gateway.max_body_bytes` bounds a
/// direct one.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;
/// The longest `custom_id`: it becomes part of the usage event's `request_id` (at most 128
/// visible ASCII bytes) after the batch id.
pub const MAX_CUSTOM_ID_BYTES: usize = 64;

/// The endpoints a batch may call, as its lines' `url` and the batch's `endpoint` name them.
pub const ENDPOINTS: &[&str] = &["/v1/chat/completions", "/v1/embeddings"];

/// Why an input file is refused; each names the line (1-based) where it can.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JsonlError {
    #[error("the file is empty: a batch needs at least one request line")]
    Empty,
    #[error("the file has more than {0} request lines")]
    TooManyLines(usize),
    #[error("line {0} is longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong(usize),
    #[error("line {0} is not a JSON object with `custom_id`, `method`, `url` and `body`: {1}")]
    NotARequest(usize, String),
    #[error("line {0}: `custom_id` must be 1 to {MAX_CUSTOM_ID_BYTES} visible ASCII characters")]
    BadCustomId(usize),
    #[error("line {0}: `custom_id` `{1}` is used twice")]
    DuplicateCustomId(usize, String),
    #[error("line {0}: `method` must be POST")]
    BadMethod(usize),
    #[error("line {0}: `url` must be one of {ENDPOINTS:?}")]
    BadUrl(usize),
    #[error("line {0}: every line must call the same `url`")]
    MixedUrls(usize),
    #[error("line {0}: `body.model` must be a model name")]
    NoModel(usize),
    #[error("line {0}: every line must name the same `body.model`")]
    MixedModels(usize),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    custom_id: String,
    method: String,
    url: String,
    body: Map<String, Value>,
}

/// A checked input file.
#[derive(Debug)]
pub struct InputFile {
    /// The endpoint every line calls (one of [`ENDPOINTS`]).
    pub url: String,
    /// The model every line names, as the client named it.
    pub model: String,
    lines: Vec<(String, Map<String, Value>)>,
}

impl InputFile {
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Each line's request body, in file order.
    pub fn bodies(&self) -> impl Iterator<Item = &Map<String, Value>> {
        self.lines.iter().map(|(_, body)| body)
    }

    /// The file again, each line's `body.model` now `upstream_model` (the provider's name).
    pub fn rewritten(&self, upstream_model: &str) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = Vec::new();
        for (custom_id, body) in &self.lines {
            let mut body = body.clone();
            body.insert("model".to_owned(), Value::String(upstream_model.to_owned()));
            let line = serde_json::json!({"custom_id": custom_id, "method": "POST", "url": self.url, "body": body});
            serde_json::to_writer(&mut out, &line)?;
            out.push(b'\n');
        }
        Ok(out)
    }
}

/// Whether `id` can be part of a `request_id`: 1 to [`MAX_CUSTOM_ID_BYTES`] visible ASCII.
pub fn good_custom_id(id: &str) -> bool {
    (1..=MAX_CUSTOM_ID_BYTES).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// Checks `data` as a batch input file of at most `max_lines` request lines. Blank lines
/// (a trailing newline, `\r\n` endings) are skipped.
pub fn check(data: &[u8], max_lines: usize) -> Result<InputFile, JsonlError> {
    let mut lines = Vec::new();
    let mut seen = HashSet::new();
    let (mut url, mut model): (Option<String>, Option<String>) = (None, None);
    for (index, raw) in data.split(|&b| b == b'\n').enumerate() {
        let n = index + 1;
        if raw.len() > MAX_LINE_BYTES {
            return Err(JsonlError::LineTooLong(n));
        }
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if lines.len() == max_lines {
            return Err(JsonlError::TooManyLines(max_lines));
        }
        let line: Line = serde_json::from_slice(raw).map_err(|e| JsonlError::NotARequest(n, e.to_string()))?;
        if !good_custom_id(&line.custom_id) {
            return Err(JsonlError::BadCustomId(n));
        }
        if !seen.insert(line.custom_id.clone()) {
            return Err(JsonlError::DuplicateCustomId(n, line.custom_id));
        }
        if line.method != "POST" {
            return Err(JsonlError::BadMethod(n));
        }
        if !ENDPOINTS.contains(&line.url.as_str()) {
            return Err(JsonlError::BadUrl(n));
        }
        if url.get_or_insert_with(|| line.url.clone()) != &line.url {
            return Err(JsonlError::MixedUrls(n));
        }
        let named = match line.body.get("model") {
            Some(Value::String(m)) if !m.is_empty() => m.clone(),
            _ => return Err(JsonlError::NoModel(n)),
        };
        if model.get_or_insert_with(|| named.clone()) != &named {
            return Err(JsonlError::MixedModels(n));
        }
        lines.push((line.custom_id, line.body));
    }
    match (url, model) {
        (Some(url), Some(model)) => Ok(InputFile { url, model, lines }),
        _ => Err(JsonlError::Empty),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, model: &str) -> String {
        format!(
            r#"{{"custom_id":"{id}","method":"POST","url":"/v1/chat/completions","body":{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}}}"#
        )
    }

    #[test]
    fn a_good_file_is_read_and_rewritten_for_the_provider() {
        let data = format!("{}\r\n{}\n\n", line("a", "gpt-x"), line("b", "gpt-x"));
        let file = check(data.as_bytes(), 10).unwrap();
        assert_eq!((file.len(), file.url.as_str(), file.model.as_str()), (2, "/v1/chat/completions", "gpt-x"));
        let out = String::from_utf8(file.rewritten("upstream-x").unwrap()).unwrap();
        let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["custom_id"], "b");
        assert_eq!(lines[1]["body"]["model"], "upstream-x");
        assert_eq!(lines[0]["body"]["messages"][0]["content"], "hi");
    }

    #[test]
    fn hostile_files_are_refused_naming_the_line() {
        let ok = line("a", "m");
        let cases: Vec<(String, JsonlError)> = vec![
            (String::new(), JsonlError::Empty),
            ("\n \n".into(), JsonlError::Empty),
            ("not json".into(), JsonlError::NotARequest(1, String::new())),
            ("[1,2]".into(), JsonlError::NotARequest(1, String::new())),
            (
                format!("{ok}\n{}", ok.replace(r#""body""#, r#""extra":1,"body""#)),
                JsonlError::NotARequest(2, String::new()),
            ),
            (format!("{ok}\n{ok}"), JsonlError::DuplicateCustomId(2, "a".into())),
            (line("", "m"), JsonlError::BadCustomId(1)),
            (line("has space", "m"), JsonlError::BadCustomId(1)),
            (line(&"x".repeat(65), "m"), JsonlError::BadCustomId(1)),
            (ok.replace("POST", "GET"), JsonlError::BadMethod(1)),
            (ok.replace("/v1/chat/completions", "/v1/admin"), JsonlError::BadUrl(1)),
            (format!("{ok}\n{}", line("b", "m").replace("chat/completions", "embeddings")), JsonlError::MixedUrls(2)),
            (line("a", ""), JsonlError::NoModel(1)),
            (ok.replace(r#""model":"m""#, r#""model":7"#), JsonlError::NoModel(1)),
            (format!("{ok}\n{}", line("b", "other")), JsonlError::MixedModels(2)),
        ];
        for (data, want) in cases {
            let got = check(data.as_bytes(), 10).unwrap_err();
            match (&got, &want) {
                (JsonlError::NotARequest(a, _), JsonlError::NotARequest(b, _)) => assert_eq!(a, b, "{data}"),
                _ => assert_eq!(got, want, "{data}"),
            }
        }
    }

    #[test]
    fn the_bounds_on_lines_and_line_length_hold() {
        let three = format!("{}\n{}\n{}\n", line("a", "m"), line("b", "m"), line("c", "m"));
        assert_eq!(check(three.as_bytes(), 3).unwrap().len(), 3);
        assert_eq!(check(three.as_bytes(), 2).unwrap_err(), JsonlError::TooManyLines(2));
        let long = line("a", &"m".repeat(MAX_LINE_BYTES));
        assert_eq!(check(long.as_bytes(), 3).unwrap_err(), JsonlError::LineTooLong(1));
        // A long run of blank lines is not a request and costs no more than reading it.
        let blanks = format!("{}{}", "\n".repeat(100_000), line("a", "m"));
        assert_eq!(check(blanks.as_bytes(), 1).unwrap().len(), 1);
    }
}
