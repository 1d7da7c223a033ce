//! `/v1/audio/transcriptions` and `/v1/audio/translations`: OpenAI's multipart/form-data
//! upload, read within bounds (the body within `gateway.max_upload_bytes`, at most
//! [`MAX_PARTS`] parts, text fields of at most [`MAX_FIELD_BYTES`]), and rebuilt for the
//! upstream with the deployment's model name. The audio is never decoded: its duration is what
//! the provider reports (see `seconds`).

use crate::error::GatewayError;
use bytes::Bytes;
use serde::Deserialize;

/// The most parts an upload may have (OpenAI's form has about ten fields).
pub const MAX_PARTS: usize = 32;
/// The largest text field, in bytes (a `prompt` is at most a few hundred tokens).
pub const MAX_FIELD_BYTES: usize = 8 * 1024;
/// The longest field name and file name, in bytes.
const MAX_NAME_BYTES: usize = 64;
const MAX_FILENAME_BYTES: usize = 255;

/// One part of the form, as it will be sent on.
#[derive(Debug)]
struct Part {
    name: String,
    /// The file's name and content type, for the file part.
    file: Option<(String, String)>,
    data: Bytes,
}

/// An upload, checked: exactly one non-empty `file`, a `model`, other fields as text.
#[derive(Debug)]
pub struct Upload {
    parts: Vec<Part>,
    boundary: String,
}

/// What [`parse`] reads: the upload and the JSON the rest of the gateway reads (`model`,
/// `stream` when given).
pub struct Parsed {
    pub upload: Upload,
    pub json: Bytes,
}

fn invalid(message: impl Into<String>, param: Option<&'static str>) -> GatewayError {
    GatewayError::invalid(message, param)
}

/// The upload in `body`, sent with `content_type` (which must be multipart/form-data with a
/// boundary).
pub async fn parse(content_type: Option<&str>, body: Bytes) -> Result<Parsed, GatewayError> {
    let boundary = content_type
        .and_then(|c| multer::parse_boundary(c).ok())
        .ok_or_else(|| invalid("the body must be multipart/form-data with a boundary", None))?;
    let limits = multer::SizeLimit::new().per_field(MAX_FIELD_BYTES as u64).for_field("file", body.len() as u64);
    let stream = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut form = multer::Multipart::with_constraints(stream, boundary, multer::Constraints::new().size_limit(limits));
    let mut parts: Vec<Part> = Vec::new();
    let malformed = |e: multer::Error| invalid(format!("the form is not valid multipart/form-data: {e}"), None);
    while let Some(field) = form.next_field().await.map_err(malformed)? {
        if parts.len() == MAX_PARTS {
            return Err(invalid(format!("the form has more than {MAX_PARTS} parts"), None));
        }
        let name = field.name().map(str::to_owned).filter(|n| good_name(n)).ok_or_else(|| {
            invalid(format!("every part needs a name of 1 to {MAX_NAME_BYTES} letters, digits or `_.-[]`"), None)
        })?;
        if parts.iter().any(|p| p.name == name) && !name.ends_with("[]") {
            return Err(invalid(format!("the field `{name}` is given twice"), None));
        }
        let file = match field.file_name() {
            Some(f) if name == "file" => Some((
                good_filename(f)?,
                field.content_type().map_or("application/octet-stream".to_owned(), |m| m.essence_str().to_owned()),
            )),
            _ => None,
        };
        let data = field.bytes().await.map_err(malformed)?;
        if file.is_none() && std::str::from_utf8(&data).is_err() {
            return Err(invalid(format!("the field `{name}` is not UTF-8 text"), None));
        }
        parts.push(Part { name, file, data });
    }
    let text =
        |name: &str| parts.iter().find(|p| p.name == name).map(|p| String::from_utf8_lossy(&p.data).into_owned());
    match parts.iter().find(|p| p.name == "file") {
        Some(Part { file: Some(_), data, .. }) if !data.is_empty() => {}
        _ => return Err(invalid("`file` is required: a non-empty file part", Some("file"))),
    }
    let model = text("model").ok_or_else(|| invalid("`model` is required", Some("model")))?;
    let mut json = serde_json::json!({ "model": model });
    match text("stream").as_deref() {
        None | Some("false") => {}
        Some(_) => {
            json["stream"] = true.into();
        }
    }
    let json = serde_json::to_vec(&json).map_err(|e| GatewayError::Internal(format!("cannot encode upload: {e}")))?;
    // A boundary of 122 random bits, made after the upload was read: no part can hold it.
    let boundary = format!("tollgate-{}", uuid::Uuid::new_v4().simple());
    Ok(Parsed { upload: Upload { parts, boundary }, json: Bytes::from(json) })
}

/// A field name that can be written back in a header as it is.
fn good_name(name: &str) -> bool {
    (1..=MAX_NAME_BYTES).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-[]".contains(&b))
}

/// A file name that can be written back in a header: printable, without quotes or backslashes.
fn good_filename(name: &str) -> Result<String, GatewayError> {
    let ok = (1..=MAX_FILENAME_BYTES).contains(&name.len())
        && !name.chars().any(|c| c.is_control() || c == '"' || c == '\\');
    if ok {
        Ok(name.to_owned())
    } else {
        Err(invalid(
            format!("the file name must be 1 to {MAX_FILENAME_BYTES} bytes, printable, without quotes"),
            Some("file"),
        ))
    }
}

impl Upload {
    /// The content type of [`Upload::body`].
    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    /// The form to send upstream: every part as the client sent it, `model` replaced.
    pub fn body(&self, upstream_model: &str) -> Vec<u8> {
        let size: usize = self.parts.iter().map(|p| p.data.len() + 256).sum();
        let mut out = Vec::with_capacity(size + upstream_model.len());
        for part in &self.parts {
            out.extend_from_slice(format!("--{}\r\n", self.boundary).as_bytes());
            let head = match &part.file {
                Some((file, content_type)) => format!(
                    "Content-Disposition: form-data; name=\"{}\"; filename=\"{file}\"\r\nContent-Type: {content_type}\r\n\r\n",
                    part.name
                ),
                None => format!("Content-Disposition: form-data; name=\"{}\"\r\n\r\n", part.name),
            };
            out.extend_from_slice(head.as_bytes());
            let data = if part.name == "model" { upstream_model.as_bytes() } else { &part.data[..] };
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("--{}--\r\n", self.boundary).as_bytes());
        out
    }
}

/// The seconds of audio an answer reports, rounded up to whole seconds: OpenAI's `usage` of
/// type `duration` (`seconds`), else `duration` (`verbose_json`); `None` when it reports
/// neither (`text`, `srt`, `vtt` answers; `json` from servers without usage), or an absurd one.
pub fn seconds(answer: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct Answer {
        usage: Option<DurationUsage>,
        duration: Option<f64>,
    }
    #[derive(Deserialize)]
    struct DurationUsage {
        seconds: Option<f64>,
    }
    let answer: Answer = serde_json::from_slice(answer).ok()?;
    let seconds = answer.usage.and_then(|u| u.seconds).or(answer.duration)?;
    // A float from outside: only a finite, non-negative one of at most 10^9 seconds counts.
    let limit = tollgate_schemas::limits::MAX_TOKENS_PER_REQUEST as f64;
    (seconds.is_finite() && (0.0..=limit).contains(&seconds)).then(|| seconds.ceil() as u64)
}

#[cfg(test)]
mod tests;
