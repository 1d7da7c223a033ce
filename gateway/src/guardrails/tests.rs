use super::config::{build, GuardrailConfig};
use super::*;
use crate::config::ConfigError;

fn set(yaml: &str) -> Result<Guardrails, ConfigError> {
    let list: Vec<GuardrailConfig> =
        serde_yaml::from_str(yaml).map_err(|e| ConfigError::Parse { path: "test".into(), source: e })?;
    build(&list, &HashMap::new(), "test")
}

#[test]
fn litellm_shape_is_read_and_unknown_or_misplaced_keys_are_named() {
    let ok = set(r#"
- guardrail_name: words
  litellm_params: {guardrail: banned_words, mode: [pre_call, post_call], banned_words: [secret], default_on: true}
- guardrail_name: pii
  litellm_params: {guardrail: pii_masking, mode: pre_call, pii_entities: [EMAIL_ADDRESS]}
"#);
    assert!(ok.is_err(), "EMAIL_ADDRESS is not an entity name of Tollgate's");
    let ok = set(r#"
- guardrail_name: words
  litellm_params: {guardrail: banned_words, mode: [pre_call, post_call], banned_words: [secret], default_on: true}
- guardrail_name: pii
  litellm_params: {guardrail: pii_masking, mode: during_call, pii_entities: [EMAIL, CREDIT_CARD]}
"#)
    .unwrap();
    assert_eq!(ok.list.len(), 2);
    assert!(ok.list[0].pre_call && ok.list[0].post_call && ok.list[0].default_on);
    assert!(ok.list[1].pre_call && !ok.list[1].post_call);

    let unknown = set("- guardrail_name: w\n  litellm_params: {guardrail: banned_words, mode: pre_call, banned_words: [x], colour: red}\n");
    assert!(unknown.unwrap_err().to_string().contains("colour"));
    let misplaced =
        set("- guardrail_name: w\n  litellm_params: {guardrail: pii_masking, mode: pre_call, banned_words: [x]}\n");
    let message = misplaced.unwrap_err().to_string();
    assert!(message.contains("guardrails[0].litellm_params.banned_words"), "{message}");
    let twice = set(r#"
- {guardrail_name: w, litellm_params: {guardrail: pii_masking, mode: pre_call}}
- {guardrail_name: w, litellm_params: {guardrail: pii_masking, mode: pre_call}}
"#);
    assert!(twice.unwrap_err().to_string().contains("guardrails[1].guardrail_name"));
    let no_base = set("- {guardrail_name: g, litellm_params: {guardrail: generic_guardrail_api, mode: pre_call}}\n");
    assert!(no_base.unwrap_err().to_string().contains("guardrails[0].litellm_params.api_base"));
    let bad_mode = set("- {guardrail_name: g, litellm_params: {guardrail: pii_masking, mode: logging_only}}\n");
    assert!(bad_mode.is_err());
}

/// A guardrail Tollgate cannot run is refused by name, never skipped: the file meant it to
/// protect something.
#[test]
fn a_guardrail_of_another_kind_is_refused_by_name() {
    let text = "model_list:\n  - model_name: m\n    litellm_params: {model: openai/m, api_key: k}\nguardrails:\n  - guardrail_name: p\n    litellm_params: {guardrail: presidio, mode: pre_call}\n";
    let err = crate::config::Config::parse(text, "test.yaml").unwrap_err().to_string();
    assert!(err.contains("presidio") && err.contains("pii_masking"), "{err}");
}
