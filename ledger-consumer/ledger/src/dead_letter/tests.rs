use super::*;
use scylla::errors::{
    BadQuery, BrokenConnectionErrorKind, ConnectionPoolError, DbError, ExecutionError, RequestAttemptError, WriteType,
};
use scylla::statement::Consistency;
use std::time::Duration;
use tollgate_schemas::money::MoneyOverflow;
use tollgate_schemas::NanoUsd;

fn golden() -> serde_json::Value {
    serde_json::from_str(include_str!("../../../../schemas/fixtures/usage_event_v1.json")).unwrap()
}

fn db(error: DbError, message: &str) -> LedgerError {
    ExecutionError::LastAttemptError(RequestAttemptError::DbError(error, message.to_owned())).into()
}

fn refused() -> Failure {
    Failure::Permanent(Reason::RefusedByDatabase)
}

#[test]
fn refusals_caused_by_values_are_permanent() {
    let cases = [
        db(DbError::Invalid, "Key length of 65540 is longer than maximum of 65535"),
        db(DbError::Invalid, "Batch too large"),
        db(DbError::SyntaxError, "line 1:0 no viable alternative at input"),
        ExecutionError::BadQuery(BadQuery::ValuesTooLongForKey(65_540, 65_535)).into(),
        ExecutionError::BadQuery(BadQuery::TooManyQueriesInBatchStatement(70_000)).into(),
    ];
    for e in cases {
        assert_eq!(classify(&e), refused(), "{e}");
    }
    let overflow = LedgerError::Overflow { partition: 0, bucket: 3, source: MoneyOverflow };
    assert_eq!(classify(&overflow), Failure::Permanent(Reason::MoneyOverflow));
    let too_big = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_TOOBIG), None);
    assert_eq!(classify(&too_big.into()), refused());
}

#[test]
fn timeouts_and_unavailability_are_transient() {
    let one = Consistency::LocalQuorum;
    let cases: Vec<LedgerError> = vec![
        ExecutionError::RequestTimeout(Duration::from_secs(2)).into(),
        ExecutionError::EmptyPlan.into(),
        ExecutionError::ConnectionPoolError(ConnectionPoolError::Initializing).into(),
        ExecutionError::LastAttemptError(RequestAttemptError::UnableToAllocStreamId).into(),
        ExecutionError::LastAttemptError(RequestAttemptError::BrokenConnectionError(
            BrokenConnectionErrorKind::ChannelError.into(),
        ))
        .into(),
        db(DbError::Unavailable { consistency: one, required: 2, alive: 1 }, "Cannot achieve consistency"),
        db(DbError::Overloaded, "overloaded"),
        db(DbError::IsBootstrapping, "bootstrapping"),
        db(DbError::ReadTimeout { consistency: one, received: 0, required: 1, data_present: false }, "timeout"),
        // A lightweight transaction whose outcome is unknown: retried (the fence settles it).
        db(DbError::WriteTimeout { consistency: one, received: 0, required: 1, write_type: WriteType::Cas }, "CAS"),
        db(
            DbError::ReadFailure { consistency: one, received: 0, required: 1, numfailures: 1, data_present: false },
            "read failure",
        ),
        db(DbError::ServerError, "java.lang.RuntimeException"),
        db(DbError::Unauthorized, "no MODIFY permission"),
        // The schema is missing: refusing events would empty the ledger, not fix it.
        db(DbError::Invalid, "unconfigured table usage_events"),
        db(DbError::Invalid, "Undefined column name body"),
        db(DbError::Invalid, "Keyspace tollgate does not exist"),
        LedgerError::Contended { partition: 0, bucket: 1 },
        LedgerError::Result("no [applied] column".into()),
        LedgerError::Query("paging failed".into()),
    ];
    for e in cases {
        assert_eq!(classify(&e), Failure::Transient, "{e}");
    }
    let busy = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY), None);
    assert_eq!(classify(&busy.into()), Failure::Transient);
}

#[test]
fn a_type_that_does_not_match_its_column_is_not_the_events_fault() {
    use scylla::cluster::metadata::{ColumnType, NativeType};
    use scylla::serialize::value::{BuiltinTypeCheckError, BuiltinTypeCheckErrorKind};
    use scylla::serialize::SerializationError;
    let mismatch = SerializationError::new(BuiltinTypeCheckError {
        rust_name: "i64",
        got: ColumnType::Native(NativeType::Text),
        kind: BuiltinTypeCheckErrorKind::MismatchedType { expected: &[ColumnType::Native(NativeType::BigInt)] },
    });
    let e: LedgerError = ExecutionError::BadQuery(BadQuery::SerializationError(mismatch.clone())).into();
    assert_eq!(classify(&e), Failure::Transient);
    // As a derived row reports it: the column that failed, wrapping the mismatch.
    let in_row = SerializationError::new(scylla::serialize::row::BuiltinSerializationError {
        rust_name: "EventRow",
        kind: scylla::serialize::row::BuiltinSerializationErrorKind::ColumnSerializationFailed {
            name: "prompt_tokens".into(),
            err: mismatch,
        },
    });
    let e: LedgerError = ExecutionError::LastAttemptError(RequestAttemptError::SerializationError(in_row)).into();
    assert_eq!(classify(&e), Failure::Transient);
    let too_long = SerializationError::new(std::io::Error::other("value too long"));
    let e: LedgerError = ExecutionError::BadQuery(BadQuery::SerializationError(too_long)).into();
    assert_eq!(classify(&e), refused());
}

#[test]
fn every_kind_of_bad_record_is_refused_with_its_reason() {
    let with = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut v = golden();
        change(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    let cases: Vec<(Option<Vec<u8>>, Reason)> = vec![
        (None, Reason::NoValue),
        (Some(b"{not json".to_vec()), Reason::NotJson),
        (Some(Vec::new()), Reason::NotJson),
        (Some(br#"{"hello": "world"}"#.to_vec()), Reason::NotAnEvent),
        (Some(b"[1, 2, 3]".to_vec()), Reason::NotAnEvent),
        (Some(with(&|v| v["cost_nano_usd"] = serde_json::json!("12"))), Reason::NotAnEvent),
        (Some(with(&|v| v["version"] = 99.into())), Reason::UnsupportedVersion),
        (Some(with(&|v| v["customer_id"] = "c".repeat(65_500).into())), Reason::SchemaViolation),
        (Some(with(&|v| v["key_id"] = "k".repeat(70_000).into())), Reason::SchemaViolation),
        (Some(with(&|v| v["cost_nano_usd"] = (-5).into())), Reason::SchemaViolation),
        (Some(with(&|v| v["cost_nano_usd"] = 1_000_000_000_000_001i64.into())), Reason::SchemaViolation),
        // A breakdown by token type must sum to the cost exactly, each type at most once.
        (Some(with(&|v| v["cost_nano_usd"] = 345_001.into())), Reason::SchemaViolation),
        (Some(with(&|v| v["cost_by_token_type"][0]["cost_nano_usd"] = 15_001.into())), Reason::SchemaViolation),
        (Some(with(&|v| v["cost_by_token_type"][1]["token_type"] = "cached_input".into())), Reason::SchemaViolation),
        (Some(with(&|v| v["cost_by_token_type"][0]["cost_nano_usd"] = "15000".into())), Reason::NotAnEvent),
        (
            Some(with(&|v| {
                for i in 0..40 {
                    v["budget_windows"][format!("key/k{i}")] = serde_json::json!(["1d"]);
                }
            })),
            Reason::SchemaViolation,
        ),
    ];
    for (value, reason) in cases {
        let refusal = check_record(value.as_deref()).expect_err(reason.code());
        assert_eq!(refusal.reason, reason, "{}", refusal.message);
        assert!(refusal.message.chars().count() <= MAX_MESSAGE_CHARS + 3, "{}", refusal.message);
        assert!(!refusal.message.contains("cccccccccc"), "the message never repeats the value");
    }
    let event = check_record(Some(include_bytes!("../../../../schemas/fixtures/usage_event_v1.json"))).unwrap();
    assert_eq!(event.cost_nano_usd, NanoUsd(345_000));
    // Without a breakdown (an older event) any cost within bounds passes: billed unsplit.
    let older = with(&|v| {
        v.as_object_mut().unwrap().remove("cost_by_token_type");
        v["cost_nano_usd"] = 345_001.into();
    });
    assert_eq!(check_record(Some(&older)).unwrap().cost_nano_usd, NanoUsd(345_001));
}

#[test]
fn a_message_quoting_a_huge_value_is_cut_short() {
    let mut v = golden();
    v["version"] = serde_json::json!("v".repeat(50_000));
    let refusal = check_record(Some(&serde_json::to_vec(&v).unwrap())).unwrap_err();
    assert_eq!(refusal.reason, Reason::NotAnEvent);
    assert!(refusal.message.len() < 1_000, "{} bytes", refusal.message.len());
}

#[test]
fn a_dead_letter_keeps_the_event_id_and_a_bounded_body() {
    let mut v = golden();
    v["customer_id"] = "c".repeat(65_500).into();
    let value = serde_json::to_vec(&v).unwrap();
    let refusal = check_record(Some(&value)).unwrap_err();
    let letter = DeadLetter::new(2, 41, refusal, Some(&value));
    assert_eq!(letter.event_id.map(|id| id.to_string()).as_deref(), Some("019ab0c4-5e3a-7cc2-9d1e-4f6a2b3c4d5e"));
    let (prefix, len) = letter.body_prefix();
    assert_eq!((prefix.len(), len), (MAX_BODY_BYTES, value.len()));
    let none = DeadLetter::new(2, 42, Refusal::new(Reason::NoValue, "no value"), None);
    assert_eq!((none.event_id, none.body_prefix()), (None, (&[][..], 0)));
}

#[test]
fn reason_codes_are_a_fixed_set_that_round_trips() {
    for r in Reason::ALL {
        assert_eq!(Reason::from_code(r.code()), Some(r));
        assert!(r.code().bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
    }
    assert_eq!(Reason::from_code("whatever"), None);
}
