//! CloudEvents Kafka protocol binding, binary mode: the record value is the event JSON and the
//! attributes travel as `ce_*` headers, so metering tools can ingest records as they are.

pub const SPEC_VERSION: &str = "1.0";
pub const USAGE_TYPE: &str = "dev.tollgate.usage.v1";
pub const CONTENT_TYPE: &str = "application/json";

pub const H_SPECVERSION: &str = "ce_specversion";
pub const H_ID: &str = "ce_id";
pub const H_SOURCE: &str = "ce_source";
pub const H_TYPE: &str = "ce_type";
pub const H_TIME: &str = "ce_time";
pub const H_CONTENT_TYPE: &str = "content-type";

/// The `ce_source` of a gateway: a URI reference naming it.
pub fn source_for_gateway(gateway_id: &str) -> String {
    format!("/tollgate/gateway/{gateway_id}")
}
