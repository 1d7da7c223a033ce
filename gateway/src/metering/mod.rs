//! Every request's one usage event: the recorder that makes it (`recorder`) with the upstream
//! attempts it lists (`attempts`), the metered stream
//! that counts a streamed answer as it passes (`stream`) with the tokenizer for answers without
//! usage (`tokens`), and where events go: the usage-sink contract and the bookkeeping every sink
//! shares (`sink`), the Kafka sink (`kafka`), the spool in front of Kafka (`spool`) with its
//! group commit (`group_commit`), and the embedded sink (`embedded`). docs/design.md §2.8, §3.

pub mod attempts;
pub mod embedded;
pub mod group_commit;
pub mod kafka;
pub mod recorder;
pub mod sink;
pub mod spool;
pub mod stream;
pub mod tokens;
