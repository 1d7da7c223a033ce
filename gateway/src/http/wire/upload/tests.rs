//! The upload's bounds, each tested at and past its limit, and the form rebuilt for the
//! upstream.

use super::*;

const CT: &str = "multipart/form-data; boundary=XyZ";

/// A form of `(name, file name, data)` parts with the boundary `XyZ`.
fn form(parts: &[(&str, Option<&str>, &[u8])]) -> Bytes {
    let mut out = Vec::new();
    for (name, file, data) in parts {
        out.extend_from_slice(b"--XyZ\r\n");
        let disposition = match file {
            Some(f) => format!(
                "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: audio/wav\r\n\r\n"
            ),
            None => format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n"),
        };
        out.extend_from_slice(disposition.as_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"--XyZ--\r\n");
    Bytes::from(out)
}

async fn refused(content_type: Option<&str>, body: Bytes) -> GatewayError {
    let text = String::from_utf8_lossy(&body).into_owned();
    match parse(content_type, body).await {
        Ok(_) => panic!("accepted: {text:?}"),
        Err(e) => e,
    }
}

fn param(e: &GatewayError) -> Option<&'static str> {
    match e {
        GatewayError::InvalidRequest { param, .. } => *param,
        other => panic!("not a 400: {other:?}"),
    }
}

#[tokio::test]
async fn a_form_is_read_and_rebuilt_with_the_upstream_model() {
    let audio = [0u8, 1, 2, 255, b'\r', b'\n', b'-', b'-'];
    let body = form(&[
        ("model", None, b"whisper-1"),
        ("file", Some("speech.wav"), &audio),
        ("response_format", None, b"verbose_json"),
        ("timestamp_granularities[]", None, b"word"),
        ("timestamp_granularities[]", None, b"segment"),
    ]);
    let parsed = parse(Some(CT), body).await.unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&parsed.json).unwrap(),
        serde_json::json!({"model": "whisper-1"})
    );
    let upload = parsed.upload;
    let boundary = upload.content_type().strip_prefix("multipart/form-data; boundary=").unwrap().to_owned();
    // The rebuilt form reads back as the same parts, the model renamed.
    let rebuilt = upload.body("upstream-whisper");
    let again = parse(Some(&upload.content_type()), Bytes::from(rebuilt)).await.unwrap();
    let names: Vec<_> = again.upload.parts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["model", "file", "response_format", "timestamp_granularities[]", "timestamp_granularities[]"]);
    assert_eq!(&again.upload.parts[0].data[..], b"upstream-whisper");
    assert_eq!(&again.upload.parts[1].data[..], &audio);
    assert_eq!(again.upload.parts[1].file, Some(("speech.wav".to_owned(), "audio/wav".to_owned())));
    assert!(boundary.len() > 20 && boundary != again.upload.boundary, "a fresh boundary each time");
}

#[tokio::test]
async fn hostile_forms_are_refused_with_a_400() {
    let file: (&str, Option<&str>, &[u8]) = ("file", Some("a.wav"), b"RIFF");
    let model: (&str, Option<&str>, &[u8]) = ("model", None, b"whisper-1");
    assert_eq!(param(&refused(Some(CT), form(&[model])).await), Some("file"), "no file");
    assert_eq!(param(&refused(Some(CT), form(&[model, ("file", Some("a.wav"), b"")])).await), Some("file"), "empty");
    assert_eq!(param(&refused(Some(CT), form(&[model, ("file", None, b"RIFF")])).await), Some("file"), "not a file");
    assert_eq!(param(&refused(Some(CT), form(&[file])).await), Some("model"));
    // A file name is written back in a header: nothing that could end or escape it.
    for bad in ["a\"b.wav", "a\\b.wav", "a\r\nX-Evil: 1", ""] {
        assert_eq!(param(&good_filename(bad).unwrap_err()), Some("file"), "{bad:?}");
    }
    assert_eq!(good_filename("réunion 2024.mp3").unwrap(), "réunion 2024.mp3");
    let long_name = "n".repeat(256);
    assert_eq!(param(&refused(Some(CT), form(&[model, ("file", Some(&long_name), b"x")])).await), Some("file"));
    // Text fields: at most MAX_FIELD_BYTES, UTF-8, named plainly, once.
    let at_limit = vec![b'p'; MAX_FIELD_BYTES];
    assert!(parse(Some(CT), form(&[model, file, ("prompt", None, &at_limit)])).await.is_ok());
    let over = vec![b'p'; MAX_FIELD_BYTES + 1];
    for body in [
        form(&[model, file, ("prompt", None, &over)]),
        form(&[model, file, ("prompt", None, &[0xff, 0xfe])]),
        form(&[model, file, ("bad name", None, b"x")]),
        form(&[model, file, ("", None, b"x")]),
        form(&[model, file, model]),
        Bytes::from_static(b"--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper"),
        Bytes::from_static(b"not a form at all"),
    ] {
        assert_eq!(param(&refused(Some(CT), body).await), None);
    }
    // Parts: at most MAX_PARTS.
    let many: Vec<_> = (0..MAX_PARTS - 2).map(|_| ("include[]", None, &b"logprobs"[..])).collect();
    let mut parts = vec![model, file];
    parts.extend(many.iter().copied());
    assert!(parse(Some(CT), form(&parts)).await.is_ok());
    parts.push(("include[]", None, b"logprobs"));
    assert!(refused(Some(CT), form(&parts)).await.to_string().contains("parts"));
    // Not a form.
    for content_type in [None, Some("application/json"), Some("multipart/form-data")] {
        let e = refused(content_type, form(&[model, file])).await;
        assert!(e.to_string().contains("multipart/form-data"), "{e}");
    }
}

#[test]
fn seconds_are_those_reported_rounded_up() {
    assert_eq!(seconds(br#"{"text": "hi", "usage": {"type": "duration", "seconds": 3}}"#), Some(3));
    assert_eq!(seconds(br#"{"task": "transcribe", "duration": 8.47, "text": "hi"}"#), Some(9));
    assert_eq!(seconds(br#"{"text": "hi", "usage": {"type": "tokens", "input_tokens": 5}}"#), None);
    assert_eq!(seconds(br#"{"text": "hi"}"#), None);
    assert_eq!(seconds(b"plain text answer"), None);
    assert_eq!(seconds(br#"{"duration": -1}"#), None);
    assert_eq!(seconds(br#"{"duration": 1e300}"#), None);
}
