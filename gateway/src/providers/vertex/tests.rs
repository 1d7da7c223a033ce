use super::service_account::{read_token, TokenCache, TokenError, DEFAULT_TOKEN_URI, SCOPE};
use super::*;
use crate::config::LitellmParams;
use crate::providers::Provider as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A service account key made for the test, and its key pair.
fn key_file(extra: serde_json::Value) -> (String, PKey<openssl::pkey::Private>) {
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let pem = String::from_utf8(key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let mut file = json!({
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": "test-key-id",
        "private_key": pem,
        "client_email": "tollgate@test-project.iam.gserviceaccount.com",
        "token_uri": "http://127.0.0.1:9/token",
    });
    for (k, v) in extra.as_object().unwrap() {
        file[k] = v.clone();
    }
    (file.to_string(), key)
}

fn params(credentials: &str) -> LitellmParams {
    let yaml = "model: vertex_ai/gemini-2.5-pro";
    let mut params: LitellmParams = serde_yaml::from_str(yaml).unwrap();
    params.vertex_credentials = Some(Secret::new(credentials));
    params
}

#[test]
fn urls_name_the_publisher_and_method_of_the_model() {
    let base = "https://europe-west4-aiplatform.googleapis.com/v1/projects/p-1/locations/europe-west4";
    assert_eq!(
        url(base, "gemini-2.5-pro", false),
        format!("{base}/publishers/google/models/gemini-2.5-pro:generateContent")
    );
    assert_eq!(
        url(&format!("{base}/"), "gemini-2.5-pro", true),
        format!("{base}/publishers/google/models/gemini-2.5-pro:streamGenerateContent?alt=sse")
    );
    assert_eq!(
        url(base, "claude-3-5-sonnet@20240620", false),
        format!("{base}/publishers/anthropic/models/claude-3-5-sonnet@20240620:rawPredict")
    );
    assert_eq!(
        url(base, "claude-3-5-sonnet@20240620", true),
        format!("{base}/publishers/anthropic/models/claude-3-5-sonnet@20240620:streamRawPredict")
    );
    assert_eq!(base_url("us-central1"), "https://us-central1-aiplatform.googleapis.com");
    assert_eq!(base_url("global"), "https://aiplatform.googleapis.com");
}

#[test]
fn setup_builds_the_base_from_project_location_and_api_base() {
    let (file, _) = key_file(json!({}));
    // The project from the key, the default location and host.
    let built = setup(&params(&file)).unwrap();
    assert_eq!(
        built.api_base.as_deref(),
        Some("https://us-central1-aiplatform.googleapis.com/v1/projects/test-project/locations/us-central1")
    );
    assert!(built.service_account.is_some());

    let mut p = params(&file);
    p.vertex_project = Some("other-project".into());
    p.vertex_location = Some("europe-west4".into());
    p.api_base = Some("http://127.0.0.1:8080/vertex/".into());
    let built = setup(&p).unwrap();
    assert_eq!(
        built.api_base.as_deref(),
        Some("http://127.0.0.1:8080/vertex/v1/projects/other-project/locations/europe-west4")
    );

    // A key file on disk is read the same.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sa.json");
    std::fs::write(&path, &file).unwrap();
    assert!(setup(&params(path.to_str().unwrap())).is_ok());
}

#[test]
fn bad_settings_name_their_field_and_never_quote_the_key() {
    let (file, _) = key_file(json!({}));
    for (field, edit) in [
        (
            "vertex_project",
            Box::new(|p: &mut LitellmParams| p.vertex_project = Some("p/../x".into()))
                as Box<dyn Fn(&mut LitellmParams)>,
        ),
        ("vertex_location", Box::new(|p: &mut LitellmParams| p.vertex_location = Some("us-central1?x=".into()))),
        ("vertex_credentials", Box::new(|p: &mut LitellmParams| p.vertex_credentials = None)),
        (
            "vertex_credentials",
            Box::new(|p: &mut LitellmParams| p.vertex_credentials = Some(Secret::new("/nonexistent/sa.json"))),
        ),
    ] {
        let mut p = params(&file);
        edit(&mut p);
        assert_eq!(setup(&p).unwrap_err().field, field);
    }
    // A key that is not RSA PEM: the message does not quote it.
    let bad = json!({"client_email": "a@b", "private_key": "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n"});
    let err = setup(&params(&bad.to_string())).unwrap_err();
    assert!(!err.message.contains("c2VjcmV0"), "{}", err.message);
    // No project anywhere.
    let (file, _) = key_file(json!({"project_id": null}));
    assert_eq!(setup(&params(&file)).unwrap_err().field, "vertex_project");
    // The Debug form shows who, never the key.
    let account = ServiceAccount::from_json(key_file(json!({})).0.as_bytes()).unwrap();
    let shown = format!("{account:?}");
    assert!(shown.contains("tollgate@test-project") && !shown.contains("PRIVATE"), "{shown}");
}

#[test]
fn the_jwt_asserts_the_account_and_is_signed_rs256() {
    let (file, key) = key_file(json!({}));
    let account = ServiceAccount::from_json(file.as_bytes()).unwrap();
    let jwt = account.assertion(1_700_000_000).unwrap();
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let decode =
        |part: &str| -> serde_json::Value { serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap() };
    assert_eq!(decode(parts[0]), json!({"alg": "RS256", "typ": "JWT", "kid": "test-key-id"}));
    assert_eq!(
        decode(parts[1]),
        json!({
            "iss": "tollgate@test-project.iam.gserviceaccount.com",
            "scope": SCOPE,
            "aud": "http://127.0.0.1:9/token",
            "iat": 1_700_000_000u64,
            "exp": 1_700_003_600u64,
        })
    );
    let public = PKey::public_key_from_pem(&key.public_key_to_pem().unwrap()).unwrap();
    let mut verifier = openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &public).unwrap();
    verifier.update(format!("{}.{}", parts[0], parts[1]).as_bytes()).unwrap();
    assert!(verifier.verify(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).unwrap());
    // Without a `token_uri`, Google's.
    let (file, _) = key_file(json!({"token_uri": null}));
    let jwt = ServiceAccount::from_json(file.as_bytes()).unwrap().assertion(0).unwrap();
    let claims = decode(jwt.split('.').nth(1).unwrap());
    assert_eq!(claims["aud"], DEFAULT_TOKEN_URI);
}

#[test]
fn token_answers_are_bounded_and_checked() {
    let (token, lifetime) =
        read_token(br#"{"access_token":"ya29.x","expires_in":3599,"token_type":"Bearer"}"#).unwrap();
    assert_eq!((token.expose(), lifetime), ("ya29.x", Duration::from_secs(3599)));
    // A lifetime beyond a day is taken as a day.
    let (_, lifetime) = read_token(br#"{"access_token":"t","expires_in":99999999999}"#).unwrap();
    assert_eq!(lifetime, Duration::from_secs(86_400));
    let long = format!(r#"{{"access_token":"{}","expires_in":60}}"#, "a".repeat(4097));
    for bad in [
        &br#"{"expires_in":60}"#[..],
        br#"{"access_token":"t","expires_in":0}"#,
        br#"{"access_token":"a b","expires_in":60}"#,
        br#"{"access_token":"t\r\nx: y","expires_in":60}"#,
        long.as_bytes(),
        b"<html>",
    ] {
        assert!(matches!(read_token(bad), Err(TokenError::Malformed)), "{}", String::from_utf8_lossy(bad));
    }
}

type Exchange<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(Secret, Duration), TokenError>> + 'a>>;

/// An exchange that counts its calls and gives a token of `lifetime`.
fn counting<'a>(calls: &'a AtomicUsize, lifetime: Duration) -> impl FnOnce() -> Exchange<'a> {
    move || {
        Box::pin(async move {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok((Secret::new(format!("token-{n}")), lifetime))
        })
    }
}

#[tokio::test(start_paused = true)]
async fn the_token_is_kept_until_shortly_before_it_expires() {
    let cache = TokenCache::default();
    let calls = AtomicUsize::new(0);
    let hour = Duration::from_secs(3600);
    assert_eq!(cache.get(counting(&calls, hour)).await.unwrap().expose(), "token-0");
    tokio::time::advance(Duration::from_secs(3600 - 301)).await;
    assert_eq!(cache.get(counting(&calls, hour)).await.unwrap().expose(), "token-0");
    // Within five minutes of its expiry, a new one.
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(cache.get(counting(&calls, hour)).await.unwrap().expose(), "token-1");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // A short-lived token is refreshed at half its lifetime.
    let cache = TokenCache::default();
    cache.get(counting(&calls, Duration::from_secs(60))).await.unwrap();
    tokio::time::advance(Duration::from_secs(29)).await;
    assert_eq!(cache.get(counting(&calls, hour)).await.unwrap().expose(), "token-2");
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(cache.get(counting(&calls, hour)).await.unwrap().expose(), "token-3");
}

#[tokio::test(start_paused = true)]
async fn concurrent_callers_share_one_exchange_and_failures_are_not_kept() {
    let cache = TokenCache::default();
    let calls = AtomicUsize::new(0);
    let gets = (0..16).map(|_| cache.get(counting(&calls, Duration::from_secs(3600))));
    let tokens = futures::future::join_all(gets).await;
    assert!(tokens.iter().all(|t| t.as_ref().unwrap().expose() == "token-0"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // A failed exchange: those who waited for it fail with it, without trying; the next
    // caller tries again.
    let cache = TokenCache::default();
    let failing = || async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Err::<(Secret, Duration), _>(TokenError::Refused(401))
    };
    let (first, second) = tokio::join!(cache.get(failing), cache.get(counting(&calls, Duration::from_secs(3600))));
    assert!(matches!(first, Err(TokenError::Refused(401))), "{first:?}");
    assert!(matches!(second, Err(TokenError::JustFailed)), "{second:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(cache.get(counting(&calls, Duration::from_secs(3600))).await.is_ok());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn claude_bodies_carry_the_vertex_version_and_no_model() {
    let chat = json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}], "stream": true});
    let body = anthropic::chat_request_to_messages(&chat, "claude-3-5-sonnet@20240620").unwrap();
    let body = claude_body(body, Some(100));
    assert_eq!(body.get("model"), None);
    assert_eq!(body["anthropic_version"], ANTHROPIC_VERSION);
    assert_eq!(body["max_tokens"], 100);
    assert_eq!(body["stream"], true);
    assert_eq!(body["messages"][0]["role"], "user");
}

#[test]
fn errors_are_read_in_the_shape_they_come_in() {
    let google =
        Bytes::from_static(br#"{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}"#);
    let out: Value = serde_json::from_slice(&Vertex.error_body(google)).unwrap();
    assert_eq!(out["error"]["type"], "rate_limit_error");
    let claude = Bytes::from_static(br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#);
    let out: Value = serde_json::from_slice(&Vertex.error_body(claude)).unwrap();
    assert_eq!(out["error"]["message"], "Overloaded");
}

/// A token endpoint that answers every connection with `response`; its URL.
async fn token_endpoint(response: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = vec![0u8; 16 * 1024];
            let _ = socket.read(&mut buf).await;
            let _ = socket.write_all(response.as_bytes()).await;
        }
    });
    format!("http://{addr}/token")
}

#[tokio::test]
async fn token_endpoint_failures_are_clean_errors() {
    let client = crate::providers::upstream_client().unwrap();
    let huge = "x".repeat(service_account::MAX_TOKEN_ANSWER_BYTES + 1);
    let cases = [
        (format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{huge}", huge.len()), "larger than"),
        (
            "HTTP/1.1 401 Unauthorized\r\nContent-Length: 30\r\nConnection: close\r\n\r\n{\"error\":\"invalid_grant\",\"a\":1}"
                .to_owned(),
            "answered 401",
        ),
        ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}".to_owned(), "no usable access token"),
    ];
    for (response, expected) in cases {
        let (file, _) = key_file(json!({"token_uri": token_endpoint(response).await}));
        let account = ServiceAccount::from_json(file.as_bytes()).unwrap();
        let err = account.token(&client).await.unwrap_err().to_string();
        assert!(err.contains(expected), "{err}");
        assert!(!err.contains("PRIVATE") && !err.contains("eyJ"), "{err}");
    }
}
