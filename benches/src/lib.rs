//! Tollgate's benchmark kit. `mock_provider` is the OpenAI-compatible upstream that both the
//! end-to-end tests and the benchmarks run, so what is measured is what is tested.

pub mod cassandra;
pub mod console_calls;
pub mod console_data;
pub mod keepalive;
pub mod mock_anthropic;
pub mod mock_batches;
pub mod mock_bedrock;
pub mod mock_gemini;
pub mod mock_media;
pub mod mock_provider;
pub mod mock_vertex;
pub mod synthetic;
