//! Generators and a hang detector for the property and fuzz tests of every Tollgate decoder that
//! reads outside input (request bodies, provider answers and streams, usage events, config
//! files). A dev-dependency only: nothing here is linked into a service.
//!
//! Each decoder is fed two kinds of input: raw bytes (arbitrary, or a known-good document with
//! bytes flipped, cut and spliced) and structure-aware input (documents built from the
//! protocol's own vocabulary, and known-good documents with fields removed, re-typed, nested or
//! multiplied). Every case runs under [`run::watchdog`]; [`run::config`] says how many cases a
//! property runs (`TOLLGATE_FUZZ_SCALE` or `TOLLGATE_FUZZ_CASES` for long runs, see
//! docs/security.md).

pub mod chunks;
pub mod json;
pub mod run;
pub mod sse;
pub mod yaml;
