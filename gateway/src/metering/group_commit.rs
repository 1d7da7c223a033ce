//! The spool's group commit (docs/design.md §3.4): the writer thread writes each batch to the
//! spool file at once and gathers what it wrote for up to [`GROUP_COMMIT_INTERVAL`]; the sync
//! of a gathering runs on a thread of its own (`tollgate-spool-sync`), so that answers waiting
//! for their event to be written never wait for a disk sync as well. A gathering's records go
//! back to the writer once synced, and only then to Kafka: a record is on disk before Kafka sees
//! it.

use crate::metering::sink::{release, Waiter, GROUP_COMMIT_INTERVAL, MAX_BATCH};
use crate::metering::spool::RecordRef;
use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use metrics::counter;
use std::fs::File;
use std::time::Instant;
use tollgate_schemas::UsageEvent;

/// A spooled record on its way to Kafka: the payload, its event and where it is in the spool.
pub type Record = (Vec<u8>, UsageEvent, Option<RecordRef>);

/// Records written to the spool file since the last sync was started, with the answers that
/// wait for their sync (`spool.answer_after: synced`).
#[derive(Default)]
pub struct Gathering {
    pub records: Vec<Record>,
    pub waiters: Vec<Waiter>,
    /// When the first of them was written.
    pub since: Option<Instant>,
}

impl Gathering {
    /// Whether its sync is due: the first record waited [`GROUP_COMMIT_INTERVAL`], or
    /// [`MAX_BATCH`] records wait.
    pub fn due(&self) -> bool {
        self.since.is_some_and(|t| t.elapsed() >= GROUP_COMMIT_INTERVAL) || self.records.len() >= MAX_BATCH
    }
}

/// One sync to run: a handle on the segment the records were written to.
struct Job {
    file: File,
    records: Vec<Record>,
    waiters: Vec<Waiter>,
}

/// The writer's side of the sync thread.
pub struct Syncer {
    jobs: Option<Sender<Job>>,
    done: Receiver<Vec<Record>>,
    /// Jobs handed over and not yet back.
    in_flight: usize,
}

impl Syncer {
    pub fn start() -> std::io::Result<Syncer> {
        let (jobs, job_rx) = unbounded::<Job>();
        let (done_tx, done) = unbounded();
        std::thread::Builder::new().name("tollgate-spool-sync".into()).spawn(move || {
            for mut job in job_rx {
                sync(&job.file);
                release(&mut job.waiters);
                if done_tx.send(job.records).is_err() {
                    return;
                }
            }
        })?;
        Ok(Syncer { jobs: Some(jobs), done, in_flight: 0 })
    }

    /// Hands a gathering to the sync thread (synced here when the thread is gone).
    pub fn submit(&mut self, file: File, gathering: Gathering) -> Option<Vec<Record>> {
        let Gathering { records, waiters, .. } = gathering;
        let job = Job { file, records, waiters };
        match self.jobs.as_ref().map(|j| j.send(job)) {
            Some(Ok(())) => {
                self.in_flight += 1;
                None
            }
            Some(Err(crossbeam_channel::SendError(mut job))) => {
                tracing::error!("the spool's sync thread is gone; syncing on the writer");
                self.jobs = None;
                sync(&job.file);
                release(&mut job.waiters);
                Some(job.records)
            }
            None => None,
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The gatherings synced since the last call, oldest first.
    pub fn synced(&mut self) -> Vec<Vec<Record>> {
        let back: Vec<Vec<Record>> = self.done.try_iter().collect();
        self.in_flight = self.in_flight.saturating_sub(back.len());
        back
    }

    /// Waits until every gathering handed over is synced, or `deadline`.
    pub fn finish(&mut self, deadline: Instant) -> Vec<Vec<Record>> {
        let mut back = Vec::new();
        while self.in_flight > 0 {
            match self.done.recv_deadline(deadline) {
                Ok(records) => {
                    self.in_flight -= 1;
                    back.push(records);
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        back
    }
}

/// One `fdatasync`. A failure leaves the records written to the file: only a power loss before
/// Kafka's acknowledgement can lose them; it is logged and counted.
fn sync(file: &File) {
    if let Err(e) = file.sync_data() {
        counter!("tollgate_spool_write_errors_total").increment(1);
        tracing::error!(error = %e, "cannot sync the spool; its records go to Kafka all the same");
    }
}
