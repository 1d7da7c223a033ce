//! The exporter against a one-connection HTTP server on loopback: what it sends, and how it
//! takes the answer.

use super::*;
use crate::telemetry::span::RecordedSpan;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::thread::JoinHandle;
use std::time::Instant;

/// The head and body of the one request a server read.
struct Seen {
    head: String,
    body: Vec<u8>,
}

/// A server that reads one request, writes `answer`, then keeps the connection open for
/// `hold`; returns its URL and what it read.
fn serve(answer: Vec<u8>, hold: Duration) -> (String, JoinHandle<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        while !head.ends_with("\r\n\r\n") {
            reader.read_line(&mut head).unwrap();
        }
        let length = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap();
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let mut stream = reader.into_inner();
        let _ = stream.write_all(&answer);
        std::thread::sleep(hold);
        Seen { head, body }
    });
    (url, server)
}

fn target(url: &str) -> OtlpTarget {
    OtlpTarget { url: url.to_owned(), headers: [("Authorization".to_owned(), "Basic from-target".to_owned())].into() }
}

fn exporter(url: &str, timeout: Duration) -> HttpExporter {
    let extra = parse_list("authorization=Basic from-env,x-tenant=acme,bad header=x");
    let preamble = Preamble::new(&[("service.name".to_owned(), "tollgate-test".to_owned())], "tollgate");
    HttpExporter::new(&target(url), &extra, preamble, timeout).unwrap()
}

#[test]
fn a_batch_is_posted_as_otlp_protobuf_with_the_headers_of_the_target_and_the_environment() {
    let (url, server) = serve(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec(), Duration::ZERO);
    let spans = [RecordedSpan::start("request", 0), RecordedSpan::start("auth", 0)];
    exporter(&url, Duration::from_secs(5)).export(&[EncodedTrace::new(&spans)]).unwrap();
    let seen = server.join().unwrap();
    let head = seen.head.to_ascii_lowercase();
    assert!(head.starts_with("post /v1/traces http/1.1\r\n"), "{head}");
    assert!(head.contains("content-type: application/x-protobuf\r\n"), "{head}");
    // The environment's header wins over the target's of the same name; an invalid one is left out.
    assert!(head.contains("authorization: basic from-env\r\n") && !head.contains("from-target"), "{head}");
    assert!(head.contains("x-tenant: acme\r\n") && !head.contains("bad header"), "{head}");
    let request = ExportTraceServiceRequest::decode(seen.body.as_slice()).unwrap();
    let names: Vec<&str> = request.resource_spans[0].scope_spans[0].spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["request", "auth"]);
}

#[test]
fn a_refusal_is_an_error_naming_the_status() {
    let (url, server) = serve(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 5\r\n\r\nnope!".to_vec(), Duration::ZERO);
    let err = exporter(&url, Duration::from_secs(5))
        .export(&[EncodedTrace::new(&[RecordedSpan::start("request", 0)])])
        .unwrap_err();
    server.join().unwrap();
    let message = err.to_string();
    assert!(message.contains("401") && message.contains(&url), "{message}");
    assert!(!message.contains("from-env"), "no header value in errors: {message}");
}

#[test]
fn a_huge_answer_is_read_only_up_to_the_bound() {
    // It announces 100 MB, sends a little over the bound, then stalls: reading it all would
    // wait for the timeout and fail.
    let mut answer = b"HTTP/1.1 200 OK\r\ncontent-length: 100000000\r\n\r\n".to_vec();
    answer.extend(std::iter::repeat_n(b'x', MAX_ANSWER as usize + 4096));
    let (url, server) = serve(answer, Duration::from_secs(4));
    let started = Instant::now();
    exporter(&url, Duration::from_secs(3)).export(&[EncodedTrace::new(&[RecordedSpan::start("request", 0)])]).unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    server.join().unwrap();
}

#[test]
fn header_lists_are_read_as_opentelemetry_writes_them() {
    let list = "Authorization=Basic%20cGs6c2s=, x-tenant = acme ,=nokey,novalue=,bare, x-pct=100%";
    assert_eq!(
        parse_list(list),
        [("Authorization", "Basic cGs6c2s="), ("x-tenant", "acme"), ("x-pct", "100%")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
    );
    // Not UTF-8 once decoded: kept as written.
    assert_eq!(parse_list("k=%ff%fe"), [("k".to_owned(), "%ff%fe".to_owned())]);
    assert!(parse_list("").is_empty());
}
