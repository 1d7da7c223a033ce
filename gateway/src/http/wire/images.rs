//! `/v1/images/generations`: the fields of a request the gateway reads and bounds (`prompt`,
//! `n`, `size`, `quality`, `style`, `response_format`), and what it meters: the images
//! generated and their pixels. The rest of the body passes through untouched.

use super::{string_field, Fields};
use crate::error::GatewayError;
use crate::limits::pricing::Tokens;
use serde::Deserialize;

/// The longest prompt accepted, in characters (OpenAI's limit for gpt-image-1).
pub const MAX_PROMPT_CHARACTERS: usize = 32_000;
/// The most images one request may ask for (OpenAI's limit).
pub const MAX_IMAGES: u64 = 10;
/// The sides an explicit `size` may have, in pixels.
pub const MIN_SIDE: u64 = 64;
pub const MAX_SIDE: u64 = 4_096;
/// The size metered when the request gives none or `auto`: 1024×1024, the default of OpenAI's
/// image models.
pub const DEFAULT_PIXELS: u64 = 1_024 * 1_024;
/// The longest `quality`, `style` or `response_format` accepted, in bytes.
const MAX_OPTION_BYTES: usize = 32;

/// What an image request asks for: `n` images of `pixels_each` pixels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImageRequest {
    pub n: u64,
    pub pixels_each: u64,
}

impl ImageRequest {
    /// The images charged: those the answer holds (`data`), never more than were asked for,
    /// else (no answer, or one not in OpenAI's shape) the `n` asked for; their pixels at the
    /// size asked for.
    pub fn units(&self, answered: Option<u64>) -> Tokens {
        let images = answered.map_or(self.n, |a| a.min(self.n));
        Tokens { images, pixels: images.saturating_mul(self.pixels_each), ..Tokens::default() }
    }
}

/// The image request in `fields`, validated.
pub fn parse(fields: &Fields) -> Result<ImageRequest, GatewayError> {
    let prompt = string_field(fields, "prompt")?.unwrap_or_default();
    let characters = prompt.chars().count();
    if characters == 0 || characters > MAX_PROMPT_CHARACTERS {
        return Err(GatewayError::invalid(
            format!("`prompt` must be a string of 1 to {MAX_PROMPT_CHARACTERS} characters"),
            Some("prompt"),
        ));
    }
    let n = match fields.get("n").filter(|t| *t != "null") {
        None => 1,
        Some(raw) => raw.parse::<u64>().ok().filter(|n| (1..=MAX_IMAGES).contains(n)).ok_or_else(|| {
            GatewayError::invalid(format!("`n` must be an integer from 1 to {MAX_IMAGES}"), Some("n"))
        })?,
    };
    for name in ["quality", "style", "response_format"] {
        if string_field(fields, name)?.is_some_and(|v| v.is_empty() || v.len() > MAX_OPTION_BYTES) {
            return Err(GatewayError::invalid(
                format!("`{name}` must be a string of 1 to {MAX_OPTION_BYTES} bytes"),
                Some(name),
            ));
        }
    }
    let pixels_each = match string_field(fields, "size")?.as_deref() {
        None | Some("auto") => DEFAULT_PIXELS,
        Some(size) => pixels(size).ok_or_else(|| {
            GatewayError::invalid(
                format!("`size` must be `auto` or WIDTHxHEIGHT, each side {MIN_SIDE} to {MAX_SIDE} pixels"),
                Some("size"),
            )
        })?,
    };
    Ok(ImageRequest { n, pixels_each })
}

/// The pixels of a `WIDTHxHEIGHT` size with both sides within bounds.
fn pixels(size: &str) -> Option<u64> {
    let (w, h) = size.split_once('x')?;
    let side = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| s.parse::<u64>().ok())
            .flatten()
            .filter(|n| (MIN_SIDE..=MAX_SIDE).contains(n))
    };
    Some(side(w)? * side(h)?)
}

/// The images an answer in OpenAI's shape holds (the length of `data`); `None` when it is not
/// that shape. Images (base64 or URLs) are skipped, not kept.
pub fn answered(body: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct Answer {
        data: Vec<serde::de::IgnoredAny>,
    }
    let answer: Answer = serde_json::from_slice(body).ok()?;
    u64::try_from(answer.data.len()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parsed(body: serde_json::Value) -> Result<ImageRequest, GatewayError> {
        parse(&Fields::parse(bytes::Bytes::from(body.to_string())).unwrap())
    }

    #[test]
    fn sizes_and_counts_are_read_and_bounded() {
        let ok = |body| parsed(body).unwrap();
        assert_eq!(ok(json!({"prompt": "a cat"})), ImageRequest { n: 1, pixels_each: DEFAULT_PIXELS });
        assert_eq!(ok(json!({"prompt": "a cat", "size": "auto", "n": 3})).n, 3);
        let wide = ok(json!({"prompt": "a cat", "size": "1792x1024", "n": 10, "quality": "hd", "style": "vivid"}));
        assert_eq!(wide, ImageRequest { n: 10, pixels_each: 1_792 * 1_024 });
        assert_eq!(ok(json!({"prompt": "é".repeat(MAX_PROMPT_CHARACTERS)})).n, 1);
        assert_eq!(ok(json!({"prompt": "p", "size": "4096x4096"})).pixels_each, 4_096 * 4_096);
    }

    #[test]
    fn bad_requests_name_their_field() {
        let cases = [
            (json!({}), "prompt"),
            (json!({"prompt": ""}), "prompt"),
            (json!({"prompt": ["a"]}), "prompt"),
            (json!({"prompt": "x".repeat(MAX_PROMPT_CHARACTERS + 1)}), "prompt"),
            (json!({"prompt": "p", "n": 0}), "n"),
            (json!({"prompt": "p", "n": 11}), "n"),
            (json!({"prompt": "p", "n": 1.5}), "n"),
            (json!({"prompt": "p", "n": "2"}), "n"),
            (json!({"prompt": "p", "size": "1024"}), "size"),
            (json!({"prompt": "p", "size": "1024x"}), "size"),
            (json!({"prompt": "p", "size": "4097x1024"}), "size"),
            (json!({"prompt": "p", "size": "32x32"}), "size"),
            (json!({"prompt": "p", "size": "+1024x1024"}), "size"),
            (json!({"prompt": "p", "size": "99999999999999999999x1"}), "size"),
            (json!({"prompt": "p", "size": 1024}), "size"),
            (json!({"prompt": "p", "quality": "q".repeat(33)}), "quality"),
            (json!({"prompt": "p", "style": ""}), "style"),
            (json!({"prompt": "p", "response_format": 1}), "response_format"),
        ];
        for (body, field) in cases {
            match parsed(body.clone()) {
                Err(GatewayError::InvalidRequest { param, .. }) => assert_eq!(param, Some(field), "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn images_charged_are_those_answered_at_most_those_asked() {
        let request = ImageRequest { n: 2, pixels_each: 100 };
        assert_eq!((request.units(None).images, request.units(None).pixels), (2, 200));
        assert_eq!(request.units(Some(1)).pixels, 100);
        assert_eq!(request.units(Some(9)).images, 2, "never more than asked for");
        assert_eq!(answered(br#"{"created": 1, "data": [{"url": "u"}, {"b64_json": "AAAA"}]}"#), Some(2));
        assert_eq!(answered(br#"{"data": {"url": "u"}}"#), None);
        assert_eq!(answered(b"not json"), None);
    }
}
