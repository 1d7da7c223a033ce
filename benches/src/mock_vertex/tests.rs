use super::*;
use actix_web::test as actix_test;
use actix_web::App;
use tollgate_gateway::providers::vertex::ServiceAccount;

fn account(key_file: &str) -> ServiceAccount {
    ServiceAccount::from_json(key_file.as_bytes()).unwrap()
}

/// Another account's key: the same email, a key the mock does not know.
fn impostor() -> ServiceAccount {
    let key = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
    let mut file: Value = serde_json::from_str(&test_key(TOKEN_URI)).unwrap();
    file["private_key"] = json!(String::from_utf8(key.private_key_to_pem_pkcs8().unwrap()).unwrap());
    account(&file.to_string())
}

const TOKEN_URI: &str = "http://127.0.0.1:8080/vertex/token";

fn form(assertion: &str) -> String {
    format!("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}")
}

async fn call(req: actix_test::TestRequest) -> (StatusCode, Value) {
    let app = actix_test::init_service(App::new().configure(configure)).await;
    let resp = actix_test::call_service(&app, req.to_request()).await;
    let status = resp.status();
    let body = actix_test::read_body(resp).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn token_for(assertion: &str) -> (StatusCode, Value) {
    call(actix_test::TestRequest::post().uri("/vertex/token").set_payload(form(assertion))).await
}

#[actix_web::test]
async fn the_token_endpoint_checks_the_signed_assertion() {
    let good = account(&test_key(TOKEN_URI)).assertion(now()).unwrap();
    let (status, body) = token_for(&good).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["access_token"].as_str().unwrap().starts_with("ya29.mock-"));
    assert_eq!(body["expires_in"], 3599);

    let forged = impostor().assertion(now()).unwrap();
    let expired = account(&test_key(TOKEN_URI)).assertion(now() - 7200).unwrap();
    let mut tampered = good.clone();
    tampered.insert(good.find('.').unwrap() + 2, 'x');
    for (bad, why) in [(forged, "signature"), (expired, "expired"), (tampered, "")] {
        let (status, body) = token_for(&bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"], "invalid_grant");
        assert!(body["error_description"].as_str().unwrap().contains(why), "{body}");
    }
}

#[actix_web::test]
async fn model_routes_need_an_issued_token_and_answer_in_their_publishers_shape() {
    let app = actix_test::init_service(App::new().configure(configure)).await;
    let assertion = account(&test_key(TOKEN_URI)).assertion(now()).unwrap();
    let req = actix_test::TestRequest::post().uri("/vertex/token").set_payload(form(&assertion));
    let issued: Value = actix_test::call_and_read_body_json(&app, req.to_request()).await;
    let token = issued["access_token"].as_str().unwrap().to_owned();
    let base = "/vertex/v1/projects/p/locations/us-central1/publishers";
    let gemini = json!({"contents": [{"role": "user", "parts": [{"text": "12345678"}]}],
                        "generationConfig": {"maxOutputTokens": 3}});
    let claude = json!({"anthropic_version": ANTHROPIC_VERSION, "max_tokens": 3,
                        "messages": [{"role": "user", "content": "hi"}]});
    let post = |path: &str, bearer: Option<&str>, body: &Value| {
        let mut req = actix_test::TestRequest::post().uri(&format!("{base}/{path}")).set_json(body);
        if let Some(bearer) = bearer {
            req = req.insert_header(("authorization", format!("Bearer {bearer}")));
        }
        req.to_request()
    };
    for bearer in [None, Some("ya29.not-issued")] {
        let resp =
            actix_test::call_service(&app, post("google/models/gemini-2.5-pro:generateContent", bearer, &gemini)).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    let answer: Value = actix_test::call_and_read_body_json(
        &app,
        post("google/models/gemini-2.5-pro:generateContent", Some(&token), &gemini),
    )
    .await;
    assert_eq!(answer["usageMetadata"]["candidatesTokenCount"], 3, "{answer}");
    let answer: Value = actix_test::call_and_read_body_json(
        &app,
        post("anthropic/models/claude-3-5-sonnet@20240620:rawPredict", Some(&token), &claude),
    )
    .await;
    assert_eq!(answer["model"], "claude-3-5-sonnet@20240620", "{answer}");
    assert_eq!(answer["usage"]["output_tokens"], 3);
    // A Claude body in Anthropic's own API's shape is refused.
    let mut direct = claude.clone();
    direct["model"] = json!("claude-3-5-sonnet@20240620");
    let resp = actix_test::call_service(
        &app,
        post("anthropic/models/claude-3-5-sonnet@20240620:rawPredict", Some(&token), &direct),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let tokens: Value =
        actix_test::call_and_read_body_json(&app, actix_test::TestRequest::get().uri("/vertex/tokens").to_request())
            .await;
    assert!(tokens["issued"].as_u64().unwrap() >= 1);
}
