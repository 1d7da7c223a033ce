//! The published JSON Schema (`schemas/usage_event.v1.schema.json`) against the Rust type: every
//! record the type writes validates, and a value of the wrong type in any field does not.

use super::*;
use serde_json::Value;

fn validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(include_str!("../../usage_event.v1.schema.json")).unwrap();
    jsonschema::options().with_draft(jsonschema::Draft::Draft202012).build(&schema).unwrap()
}

fn golden() -> Value {
    serde_json::from_str(include_str!("../../fixtures/usage_event_v1.json")).unwrap()
}

/// A value of another JSON type than `v` (every nullable field of the event is a string).
fn wrong_type(v: &Value) -> Value {
    match v {
        Value::String(_) | Value::Null => Value::from(7),
        _ => Value::from("seven"),
    }
}

#[test]
fn every_record_the_type_writes_validates() {
    let v = validator();
    for text in [
        include_str!("../../fixtures/usage_event_v1.json"),
        include_str!("../../fixtures/usage_event_v1_minimal.json"),
        include_str!("../../fixtures/usage_event_v1_adjustment.json"),
        include_str!("../../fixtures/usage_event_v1_cache_hit.json"),
        include_str!("../../fixtures/usage_event_v1_retried.json"),
    ] {
        let event = UsageEvent::decode(text.as_bytes()).unwrap();
        let written: Value = serde_json::from_slice(&event.encode().unwrap()).unwrap();
        let errors: Vec<String> = v.iter_errors(&written).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}");
    }
    // The fully populated fixture sets every field the type has.
    let golden = golden();
    let fields = golden.as_object().unwrap();
    let written: Value =
        serde_json::from_slice(&UsageEvent::decode(golden.to_string().as_bytes()).unwrap().encode().unwrap()).unwrap();
    assert_eq!(written.as_object().unwrap().len(), fields.len());
}

#[test]
fn a_wrong_type_in_any_field_is_refused() {
    let v = validator();
    let golden = golden();
    for (field, value) in golden.as_object().unwrap() {
        let mut bad = golden.clone();
        bad[field] = wrong_type(value);
        assert!(!v.is_valid(&bad), "{field} = {} passed", bad[field]);
    }
    for field in ["token_type", "tokens", "cost_nano_usd"] {
        let mut bad = golden.clone();
        bad["cost_by_token_type"][0][field] = wrong_type(&bad["cost_by_token_type"][0][field]);
        assert!(!v.is_valid(&bad), "cost_by_token_type[0].{field} passed");
    }
    for field in ["model_group", "deployment", "provider", "kind", "outcome", "status", "latency_ms"] {
        let mut bad = golden.clone();
        bad["attempts"][0][field] = wrong_type(&bad["attempts"][0][field]);
        assert!(!v.is_valid(&bad), "attempts[0].{field} passed");
    }
    let mut secret = golden.clone();
    secret["attempts"][0]["api_base"] = Value::from("https://example.com");
    assert!(!v.is_valid(&secret), "an attempt carries no other field");
    let mut negative = golden.clone();
    negative["cost_by_token_type"][0]["cost_nano_usd"] = Value::from(-1);
    assert!(!v.is_valid(&negative));
    let mut negative_cost = golden.clone();
    negative_cost["cost_nano_usd"] = Value::from(-1);
    negative_cost["cost_by_token_type"] = Value::Array(vec![]);
    assert!(!v.is_valid(&negative_cost), "a negative cost outside an adjustment");
    let adjustment: Value =
        serde_json::from_str(include_str!("../../fixtures/usage_event_v1_adjustment.json")).unwrap();
    assert!(v.is_valid(&adjustment), "an adjustment's difference may be negative");
    let mut bad_run = adjustment;
    bad_run["adjustment"]["rerate_run"] = Value::from("not-hex");
    assert!(!v.is_valid(&bad_run));
    let mut fractional = golden;
    fractional["cost_nano_usd"] = Value::from(0.5);
    assert!(!v.is_valid(&fractional), "money is an integer");
}
