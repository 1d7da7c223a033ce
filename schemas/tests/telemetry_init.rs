//! The process set-up of both binaries, `telemetry::init`, as a binary calls it: once, in a
//! process of its own (this file's). A `tracing` span of a Tollgate crate opened at `info`, as
//! the ledger consumer opens each batch's, is exported over OTLP with the fields recorded on it;
//! one below `info` is not, and nothing below `info` is built.
#![cfg(feature = "telemetry")]

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;
use tollgate_schemas::telemetry::{self, OtlpTarget, SamplerChoice, TraceSettings};

/// Reads one HTTP/1.1 request's body (headers skipped, `content-length` honoured); `None` at
/// the end of the connection.
fn read_body(reader: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut length = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(body)
}

/// An OTLP/HTTP receiver on loopback: answers 200 to every request and passes each body on.
fn receiver() -> std::io::Result<(String, mpsc::Receiver<Vec<u8>>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/v1/traces", listener.local_addr()?);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut reader = BufReader::new(stream);
            while let Some(body) = read_body(&mut reader) {
                let _ = tx.send(body);
                let answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                if reader.get_mut().write_all(answer).is_err() {
                    break;
                }
            }
        }
    });
    Ok((url, rx))
}

/// Runs [`exported_spans`] in a process of its own with the log level `info`, as a binary
/// started without `TOLLGATE_LOG` or `RUST_LOG` runs.
#[test]
fn info_spans_of_tollgate_crates_are_exported_at_the_info_log_level() {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args(["--exact", "exported_spans", "--ignored", "--nocapture", "--test-threads=1"])
        .env("TOLLGATE_LOG", "info")
        .env("TOLLGATE_LOG_FORMAT", "text")
        .env_remove("RUST_LOG")
        .env("OTEL_BSP_SCHEDULE_DELAY", "20")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("1 passed"), "{text}{}", String::from_utf8_lossy(&out.stderr));
}

/// `telemetry::init` with traces to a receiver of its own, then a span as the ledger consumer
/// opens a batch's, with a field recorded late, and one below `info`. Only in a process of its
/// own (the test above starts it): `init` installs the process's one subscriber.
#[test]
#[ignore = "run by info_spans_of_tollgate_crates_are_exported_at_the_info_log_level"]
fn exported_spans() {
    let (url, bodies) = receiver().unwrap();
    let settings = TraceSettings {
        service_name: "telemetry-init-test".to_owned(),
        sampler: SamplerChoice::DEFAULT,
        targets: vec![OtlpTarget { url, headers: Default::default() }],
    };
    let telemetry = telemetry::init(Some(&settings)).unwrap();
    assert!(telemetry.tracing());
    // With traces on, nothing below `info` is built: the recorder wants nothing below it.
    assert_eq!(tracing::level_filters::LevelFilter::current(), tracing::level_filters::LevelFilter::INFO);

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        use tracing::Instrument;
        let batch = tracing::info_span!(
            target: "tollgate_ledger_consumer::consumer",
            "ledger.batch",
            otel.name = "process usage",
            tollgate.events_folded = tracing::field::Empty,
        );
        async {
            tracing::Span::current().record("tollgate.events_folded", 3i64);
        }
        .instrument(batch)
        .await;
        let _quiet = tracing::debug_span!(target: "tollgate_ledger_consumer::consumer", "quiet").entered();
    });
    telemetry.shutdown();

    let mut spans = Vec::new();
    while let Ok(body) = bodies.recv_timeout(Duration::from_secs(5)) {
        let request = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        spans.extend(request.resource_spans.into_iter().flat_map(|r| r.scope_spans).flat_map(|s| s.spans));
    }
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["process usage"]);
    let folded = spans[0].attributes.iter().find(|a| a.key == "tollgate.events_folded");
    assert!(format!("{folded:?}").contains("IntValue(3)"), "{folded:?}");
}
