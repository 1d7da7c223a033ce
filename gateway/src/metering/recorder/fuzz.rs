//! Property tests of the usage recorder: whatever a request's outcome (token counts reported by
//! a provider or estimated by Tollgate, however large; the model name a provider gave; any
//! status and error), the one event it publishes is one the ledger accepts
//! (`limits::check_event`), so no outcome can leave a request unbilled in a dead-letter topic.

use super::*;
use crate::metering::stream::fuzz::HARNESS;
use crate::metering::stream::tests::Recorded;
use proptest::prelude::*;
use tollgate_fuzzing::{json as gen, run};
use tollgate_schemas::limits;

/// Error types the gateway records.
const ERRORS: &[&str] = &[
    "upstream_timeout",
    "upstream_unavailable",
    "upstream_error",
    "upstream_stream_error",
    "upstream_stream_incomplete",
    "upstream_event_too_large",
    "stream_idle_timeout",
    "stream_duration_exceeded",
    "client_disconnected",
    "upstream_response_too_large",
];

fn count() -> BoxedStrategy<u64> {
    prop_oneof![
        3 => 0..=limits::MAX_TOKENS_PER_REQUEST,
        1 => limits::MAX_TOKENS_PER_REQUEST..=limits::MAX_TOKENS_PER_REQUEST + 2,
        1 => any::<u64>(),
        1 => Just(u64::MAX),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(run::config(1_000))]

    #[test]
    fn every_event_the_recorder_publishes_is_accepted_by_the_ledger(
        tokens in prop::array::uniform14(count()),
        served_model in prop::option::of(gen::string(crate::http::wire::fuzz::WORDS)),
        status in any::<u16>(),
        error_type in prop::option::of(prop::sample::select(ERRORS)),
        (partial, estimated, with_deployment, dropped) in any::<(bool, bool, bool, bool)>(),
    ) {
        run::watchdog(move || {
            let sink = Arc::new(Recorded::default());
            let (recorder, lease) = HARNESS.start(sink.clone());
            if dropped {
                drop(recorder);
            } else {
                recorder.finish(Outcome {
                    status,
                    error_type,
                    tokens: crate::limits::pricing::Tokens {
                        prompt: tokens[0], completion: tokens[1], cached: tokens[2], cache_write: tokens[3],
                        reasoning: tokens[4], audio_input: tokens[5], audio_output: tokens[6],
                        image_input: tokens[7], image_output: tokens[8], search_units: tokens[9], characters: tokens[10],
                        images: tokens[11], pixels: tokens[12], seconds: tokens[13],
                    },
                    served_model,
                    partial,
                    estimated,
                    deployment: with_deployment.then_some(lease.deployment.as_ref()),
                });
            }
            let events = std::mem::take(&mut *sink.0.lock().map_err(|e| TestCaseError::fail(e.to_string()))?);
            prop_assert_eq!(events.len(), 1);
            prop_assert_eq!(limits::check_event(&events[0]), Ok(()), "the ledger would refuse {:?}", events[0]);
            Ok(())
        })?;
    }
}

/// Found by fuzzing: Tollgate's own estimates were recorded as they were, and they are bounded
/// by nothing but time (a stream's bytes ÷ 4: a stream of 4 GB over its day-long deadline
/// passes 10⁹ tokens). The ledger refuses such an event (`check_event`), so the request went
/// unbilled into the dead-letter topic. A count past the bound is charged at the bound now.
#[test]
fn estimated_token_counts_past_the_bound_are_charged_at_the_bound() {
    let sink = Arc::new(Recorded::default());
    let (recorder, lease) = HARNESS.start(sink.clone());
    let charged = recorder.finish(Outcome {
        status: 200,
        tokens: crate::limits::pricing::Tokens { prompt: 5, completion: 4_000_000_000, ..Default::default() },
        estimated: true,
        deployment: Some(lease.deployment.as_ref()),
        ..Outcome::default()
    });
    let event = sink.0.lock().unwrap().remove(0);
    assert_eq!((event.prompt_tokens, event.completion_tokens), (5, limits::MAX_TOKENS_PER_REQUEST));
    assert_eq!(limits::check_event(&event), Ok(()));
    // One nano-USD a token either way (the test config's prices).
    assert_eq!(charged, NanoUsd(5 + 1_000_000_000));
}

/// A deployment without a price (served under `billing.unpriced_models: serve`) is charged
/// nothing, and its event says why: `unpriced`.
#[test]
fn requests_to_unpriced_models_are_marked() {
    let yaml = "model_list:\n  - {model_name: llama, litellm_params: {model: hosted_vllm/llama, api_base: \"http://127.0.0.1:9/v1\"}}\n";
    let config = crate::config::Config::parse(yaml, "test.yaml").unwrap();
    let router = crate::Router::from_config(&config, "test.yaml").unwrap();
    let unpriced = router.deployments().next().unwrap();
    assert!(unpriced.price.is_none());
    let sink = Arc::new(Recorded::default());
    let (recorder, _lease) = HARNESS.start(sink.clone());
    let tokens = crate::limits::pricing::Tokens { prompt: 5, completion: 7, reasoning: 3, ..Default::default() };
    let charged =
        recorder.finish(Outcome { status: 200, tokens, deployment: Some(unpriced.as_ref()), ..Outcome::default() });
    let event = sink.0.lock().unwrap().remove(0);
    assert_eq!((charged, event.cost_nano_usd), (NanoUsd::ZERO, NanoUsd::ZERO));
    assert!(event.unpriced);
    assert_eq!((event.prompt_tokens, event.completion_tokens, event.reasoning_tokens), (5, 7, 3));
    // The priced deployment of the harness is not marked.
    let (recorder, lease) = HARNESS.start(sink.clone());
    recorder.finish(Outcome { status: 200, tokens, deployment: Some(lease.deployment.as_ref()), ..Outcome::default() });
    assert!(!sink.0.lock().unwrap().remove(0).unpriced);
}
