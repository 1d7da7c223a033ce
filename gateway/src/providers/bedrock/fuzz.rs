//! Fuzz tests of what Bedrock sends back: any bytes as an event-stream, and any message
//! payloads, decode or fail cleanly, never panic, and stay within their bounds.

use super::eventstream::{encode, Decoder, MAX_MESSAGE_BYTES};
use super::stream::ConverseToChatStream;
use super::tests::answer_events;
use proptest::prelude::*;
use tollgate_fuzzing::run;

/// Known-good streams, mutated: bytes flipped, cut, spliced, or an event's payload replaced.
fn streams() -> BoxedStrategy<Vec<u8>> {
    let good = answer_events().concat();
    let len = good.len();
    prop_oneof![
        prop::collection::vec((0..len, any::<u8>()), 0..8).prop_map(move |flips| {
            let mut bytes = answer_events().concat();
            for (at, value) in flips {
                bytes[at] = value;
            }
            bytes
        }),
        (0..len).prop_map(|cut| answer_events().concat()[..cut].to_vec()),
        prop::collection::vec(any::<u8>(), 0..256),
        (any::<String>(), "[a-zA-Z]{0,20}", prop::sample::select(vec!["event", "exception", "error"])).prop_map(
            |(payload, kind, message)| {
                let mut bytes = answer_events()[0].clone();
                bytes.extend(encode(&[(":message-type", message), (":event-type", &kind)], payload.as_bytes()));
                bytes
            }
        ),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(run::config(1_000))]

    /// Any bytes, in any reads: messages or a clean error, and the output of each message is
    /// bounded by its size.
    #[test]
    fn hostile_event_streams_decode_or_fail_cleanly(bytes in streams(), read in 1usize..64) {
        run::watchdog(move || {
            let mut decoder = Decoder::default();
            let mut translator = ConverseToChatStream::new("m");
            for chunk in bytes.chunks(read) {
                decoder.extend(chunk);
                loop {
                    match decoder.next_message() {
                        Ok(Some(message)) => {
                            prop_assert!(message.payload.len() <= MAX_MESSAGE_BYTES);
                            let out: usize = translator.message(&message).iter().map(|b| b.len()).sum();
                            prop_assert!(out <= 4 * message.payload.len() + 1024, "{} bytes out", out);
                        }
                        Ok(None) => break,
                        Err(_) => return Ok(()),
                    }
                }
            }
            translator.end();
            Ok(())
        })?;
    }
}
