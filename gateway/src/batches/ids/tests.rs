use super::*;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn codec() -> IdCodec {
    IdCodec::new(SECRET)
}

fn sample(c: &IdCodec, kind: Kind, provider_id: &str) -> Wrapped {
    Wrapped {
        kind,
        endpoint: Endpoint::ChatCompletions,
        deployment: c.deployment_tag("openai", "https://api.openai.com/v1", Some("sk-provider")),
        owner: c.owner_tag("key-hash-of-the-owner"),
        model: c.model_tag("gpt-4o-mini"),
        provider_id: provider_id.to_owned(),
    }
}

#[test]
fn an_id_opens_to_what_was_sealed() {
    let c = codec();
    for (kind, provider) in [(Kind::File, "file-abc123"), (Kind::Batch, "batch_6f2b"), (Kind::File, &"x".repeat(63))] {
        let w = sample(&c, kind, provider);
        let id = c.seal(&w).unwrap();
        assert!(id.len() <= MAX_ID_CHARS, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "URL-safe: {id}");
        assert_eq!(c.open(kind, &id), Some(w));
    }
    // Every endpoint round-trips; the same input seals to the same id (ids can be derived again).
    for endpoint in [Endpoint::None, Endpoint::ChatCompletions, Endpoint::Embeddings] {
        let w = Wrapped { endpoint, ..sample(&c, Kind::File, "file-1") };
        assert_eq!(c.open(Kind::File, &c.seal(&w).unwrap()).map(|o| o.endpoint), Some(endpoint));
        assert_eq!(c.seal(&w), c.seal(&w));
        assert_eq!(Endpoint::of(endpoint.url()), endpoint);
    }
}

#[test]
fn changing_any_byte_of_an_id_is_refused() {
    let c = codec();
    let id = c.seal(&sample(&c, Kind::Batch, "batch_abc")).unwrap();
    let bytes = id.as_bytes();
    for i in 0..bytes.len() {
        for replacement in [b'A', b'z', b'0', b'-', b'_'] {
            if bytes[i] == replacement {
                continue;
            }
            let mut changed = bytes.to_vec();
            changed[i] = replacement;
            let changed = String::from_utf8(changed).unwrap();
            assert_eq!(c.open(Kind::Batch, &changed), None, "byte {i} set to {}", replacement as char);
        }
    }
}

#[test]
fn truncated_extended_and_oversized_ids_are_refused() {
    let c = codec();
    let id = c.seal(&sample(&c, Kind::File, "file-abc")).unwrap();
    for len in 0..id.len() {
        assert_eq!(c.open(Kind::File, &id[..len]), None, "truncated to {len}");
    }
    for extra in ["A", "AA", "AAAA", "-"] {
        assert_eq!(c.open(Kind::File, &format!("{id}{extra}")), None, "{extra}");
    }
    assert_eq!(c.open(Kind::File, &format!("{FILE_PREFIX}{}", "A".repeat(MAX_ID_CHARS))), None);
    assert_eq!(c.open(Kind::File, &"a".repeat(100_000)), None);
    assert_eq!(c.open(Kind::File, "file-abc"), None, "a provider's own id is not one of ours");
}

#[test]
fn an_id_is_bound_to_its_kind_and_its_secret() {
    let c = codec();
    let file = c.seal(&sample(&c, Kind::File, "file-abc")).unwrap();
    let batch = c.seal(&sample(&c, Kind::Batch, "file-abc")).unwrap();
    assert_eq!(c.open(Kind::Batch, &file), None);
    assert_eq!(c.open(Kind::File, &batch), None);
    // The body of a file id under the batch prefix: the kind byte inside is still a file's.
    let swapped = format!("{BATCH_PREFIX}{}", &file[FILE_PREFIX.len()..]);
    assert_eq!(c.open(Kind::Batch, &swapped), None);
    let other = IdCodec::new(b"another secret of thirty-two bytes!!");
    assert_eq!(other.open(Kind::File, &file), None);
}

#[test]
fn provider_ids_out_of_bounds_are_not_sealed() {
    let c = codec();
    for bad in ["", "../x", "a/b", &"x".repeat(64)] {
        assert_eq!(c.seal(&sample(&c, Kind::File, bad)), None, "{bad}");
    }
}

#[test]
fn tags_separate_their_inputs() {
    let c = codec();
    assert_ne!(c.owner_tag("a"), c.owner_tag("b"));
    assert_ne!(c.model_tag("m"), c.model_tag("n"));
    let d = |base: &str, key: Option<&str>| c.deployment_tag("openai", base, key);
    assert_ne!(d("https://a", Some("k1")), d("https://a", Some("k2")), "another account");
    assert_ne!(d("https://a", None), d("https://b", None));
    assert_ne!(c.deployment_tag("openai", "ab", Some("c")), c.deployment_tag("openai", "a", Some("bc")));
    assert_ne!(IdCodec::new(b"x".repeat(32).as_slice()).owner_tag("a"), c.owner_tag("a"));
}
