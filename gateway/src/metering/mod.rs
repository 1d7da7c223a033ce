//! Every request's one usage event: the recorder that makes it (`recorder`), the metered stream
//! that counts a streamed answer as it passes (`stream`) with the tokenizer for answers without
//! usage (`tokens`), and where events go: the usage-sink contract with its Kafka sink and the
//! bookkeeping both sinks share (`sink`), the spool in front of Kafka (`spool`), and the
//! embedded sink (`embedded`). docs/design.md §2.8, §3.

pub mod embedded;
pub mod recorder;
pub mod sink;
pub mod spool;
pub mod stream;
pub mod tokens;
