//! Reads a provider's streamed body on a task of its own into a small bounded queue, from which
//! the metered stream takes every read that is ready at once.
//!
//! Why: hyper hands a body over one read at a time (the next is decoded once the last was
//! taken), and each read wakes whoever polls the body. When that is the response itself, every
//! read of the provider costs a poll of the client's whole HTTP/1 connection dispatcher (about
//! 10,700 instructions in actix, beside the stream's own work). Here the provider's connection
//! and the drain pass the reads along between themselves; the response is woken for the first
//! read at once (time to first token), then only once the reads that were ready are all queued:
//! a drain that queued reads and finds the body not ready lets the runtime run once (a deferred
//! wake-up, never a timer) and wakes the response when that turn brought nothing new, or when
//! the queue is full. actix's workers run on a current-thread runtime that runs ready tasks in
//! the order they were woken: without that turn, the response would run between any two reads.
//!
//! What it must never do: hold more than [`QUEUE_CHUNKS`] reads or, once [`QUEUE_BYTES`] are
//! waiting, read on (a slow client stops the reading and, through TCP, the provider); or read on
//! once the response is gone (the provider's body is dropped, its connection released, as soon
//! as the reader is dropped; a stream read to its end for billing keeps its reader, see
//! `MeteredStream`'s `Drop`).

use crate::providers::{ByteStream, StreamError};
use bytes::Bytes;
use futures::Stream;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

/// Most reads queued.
pub(crate) const QUEUE_CHUNKS: usize = 16;
/// Bytes queued past which the provider's body is not read on (one read more than this may be
/// queued: a read is never split).
pub(crate) const QUEUE_BYTES: usize = 64 * 1024;

/// Starts reading `upstream` on `tracker` (shutdown waits for it); returns the stream of its
/// reads, in order, ending as `upstream` ends or at its first error.
pub(crate) fn spawn(upstream: ByteStream, tracker: &tokio_util::task::TaskTracker) -> ByteStream {
    let (drain, reads) = pair(upstream);
    tracker.spawn(drain);
    Box::pin(reads)
}

fn pair(upstream: ByteStream) -> (Drain, Reads) {
    let shared = Arc::new(Mutex::new(Queue::default()));
    (Drain { upstream, queue: shared.clone(), first: true, owed: false, turned: false }, Reads { queue: shared })
}

#[derive(Default)]
struct Queue {
    reads: VecDeque<Result<Bytes, StreamError>>,
    bytes: usize,
    /// The provider's body ended or failed (its error, if any, is the last queued).
    ended: bool,
    /// The reader was dropped: the drain stops.
    gone: bool,
    /// The response waiting for a read.
    reader: Option<Waker>,
    /// The drain, waiting for room or for the provider (woken when the reader goes).
    drain: Option<Waker>,
}

impl Queue {
    fn full(&self) -> bool {
        self.reads.len() >= QUEUE_CHUNKS || self.bytes >= QUEUE_BYTES
    }

    fn wait_drain(&mut self, waker: &Waker) {
        if !self.drain.as_ref().is_some_and(|w| w.will_wake(waker)) {
            self.drain = Some(waker.clone());
        }
    }
}

fn lock(queue: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    // Nothing panics while the lock is held; a poisoned queue is still consistent.
    queue.lock().unwrap_or_else(PoisonError::into_inner)
}

// === impl Drain ===

/// The task reading the provider's body into the queue.
struct Drain {
    upstream: ByteStream,
    queue: Arc<Mutex<Queue>>,
    /// No read was queued yet: the first wakes the reader at once (time to first token).
    first: bool,
    /// Reads were queued since the reader was last woken.
    owed: bool,
    /// The drain let the runtime run once since it last queued a read: when nothing came
    /// meanwhile, what is queued is all that was ready, and the reader is woken.
    turned: bool,
}

impl Drain {
    fn wake_reader(&mut self) {
        self.owed = false;
        self.turned = false;
        let reader = lock(&self.queue).reader.take();
        if let Some(reader) = reader {
            reader.wake();
        }
    }
}

impl Future for Drain {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            {
                let mut q = lock(&this.queue);
                if q.gone {
                    return Poll::Ready(());
                }
                if q.full() {
                    q.wait_drain(cx.waker());
                    drop(q);
                    if this.owed {
                        this.wake_reader();
                    }
                    return Poll::Pending;
                }
            }
            let read = match this.upstream.as_mut().poll_next(cx) {
                Poll::Ready(read) => read,
                Poll::Pending => {
                    let mut q = lock(&this.queue);
                    if q.gone {
                        return Poll::Ready(());
                    }
                    q.wait_drain(cx.waker());
                    drop(q);
                    if this.owed {
                        if this.turned {
                            this.wake_reader();
                        } else {
                            // The provider's connection may hold more reads already: let it (and
                            // whatever else is ready) run before the reader is told. A deferred
                            // wake-up: this task runs again once the runtime has nothing else
                            // ready, never after a timer.
                            this.turned = true;
                            let _ = std::pin::pin!(tokio::task::yield_now()).poll(cx);
                        }
                    }
                    return Poll::Pending;
                }
            };
            let mut q = lock(&this.queue);
            let last = match read {
                Some(Ok(chunk)) => {
                    q.bytes += chunk.len();
                    q.reads.push_back(Ok(chunk));
                    false
                }
                Some(Err(e)) => {
                    q.reads.push_back(Err(e));
                    true
                }
                None => true,
            };
            q.ended |= last;
            drop(q);
            if last || this.first {
                this.first = false;
                this.wake_reader();
            } else {
                this.owed = true;
                this.turned = false;
            }
            if last {
                return Poll::Ready(());
            }
        }
    }
}

// === impl Reads ===

/// The response's end of the queue.
struct Reads {
    queue: Arc<Mutex<Queue>>,
}

impl Stream for Reads {
    type Item = Result<Bytes, StreamError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut q = lock(&self.queue);
        let was_full = q.full();
        if let Some(read) = q.reads.pop_front() {
            if let Ok(chunk) = &read {
                q.bytes -= chunk.len();
            }
            let drain = if was_full && !q.full() { q.drain.clone() } else { None };
            drop(q);
            if let Some(drain) = drain {
                drain.wake();
            }
            return Poll::Ready(Some(read));
        }
        if q.ended {
            return Poll::Ready(None);
        }
        if !q.reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            q.reader = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for Reads {
    /// The response is gone: the drain stops, dropping the provider's body.
    fn drop(&mut self) {
        let mut q = lock(&self.queue);
        q.gone = true;
        let reads = std::mem::take(&mut q.reads);
        let drain = q.drain.take();
        drop(q);
        drop(reads);
        if let Some(drain) = drain {
            drain.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// An endless provider that counts the reads taken from it and notes when it is dropped.
    struct Endless {
        size: usize,
        taken: Arc<AtomicUsize>,
        dropped: Arc<AtomicBool>,
    }

    impl Stream for Endless {
        type Item = Result<Bytes, StreamError>;
        fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.taken.fetch_add(1, Ordering::SeqCst);
            Poll::Ready(Some(Ok(Bytes::from(vec![b'x'; self.size]))))
        }
    }

    impl Drop for Endless {
        fn drop(&mut self) {
            self.dropped.store(true, Ordering::SeqCst);
        }
    }

    fn endless(size: usize) -> (ByteStream, Arc<AtomicUsize>, Arc<AtomicBool>) {
        let (taken, dropped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        (Box::pin(Endless { size, taken: taken.clone(), dropped: dropped.clone() }), taken, dropped)
    }

    /// Lets the drain task run until it waits.
    async fn settle() {
        for _ in 0..64 {
            tokio::task::yield_now().await;
        }
    }

    /// A client that reads nothing stops the reading at the queue's bound, in reads and in
    /// bytes; each read taken lets one more in.
    #[tokio::test]
    async fn a_reader_that_does_not_read_stops_the_reading_at_the_bound() {
        let tracker = tokio_util::task::TaskTracker::new();
        let (upstream, taken, _) = endless(10);
        let mut reads = spawn(upstream, &tracker);
        settle().await;
        assert_eq!(taken.load(Ordering::SeqCst), QUEUE_CHUNKS);
        settle().await;
        assert_eq!(taken.load(Ordering::SeqCst), QUEUE_CHUNKS, "nothing read past the bound");
        assert_eq!(reads.next().await.unwrap().unwrap().len(), 10);
        settle().await;
        assert_eq!(taken.load(Ordering::SeqCst), QUEUE_CHUNKS + 1, "one read taken, one read in");

        let (upstream, taken, _) = endless(QUEUE_BYTES / 4);
        let _reads = spawn(upstream, &tracker);
        settle().await;
        assert_eq!(taken.load(Ordering::SeqCst), 4, "bytes bound: 4 reads of a quarter");
    }

    /// A read larger than the bytes bound still passes, alone.
    #[tokio::test]
    async fn a_read_larger_than_the_bound_passes_alone() {
        let tracker = tokio_util::task::TaskTracker::new();
        let (upstream, taken, _) = endless(QUEUE_BYTES * 2);
        let mut reads = spawn(upstream, &tracker);
        settle().await;
        assert_eq!(taken.load(Ordering::SeqCst), 1);
        assert_eq!(reads.next().await.unwrap().unwrap().len(), QUEUE_BYTES * 2);
    }

    /// Dropping the reader stops the drain and drops the provider's body, whether the drain
    /// waits for room or for the provider.
    #[tokio::test]
    async fn the_provider_is_released_when_the_reader_goes() {
        let tracker = tokio_util::task::TaskTracker::new();
        let (upstream, _, dropped) = endless(10);
        let reads = spawn(upstream, &tracker);
        settle().await;
        assert!(!dropped.load(Ordering::SeqCst));
        drop(reads);
        settle().await;
        assert!(dropped.load(Ordering::SeqCst), "waiting for room");

        let dropped = Arc::new(AtomicBool::new(false));
        let guard = Endless { size: 0, taken: Arc::default(), dropped: dropped.clone() };
        let silent: ByteStream = Box::pin(futures::stream::pending().chain(futures::stream::iter([guard]).flatten()));
        let reads = spawn(silent, &tracker);
        settle().await;
        drop(reads);
        settle().await;
        assert!(dropped.load(Ordering::SeqCst), "waiting for the provider");
        tracker.close();
        tracker.wait().await;
    }

    /// Reads pass in order, then the end; an error ends the stream after the reads before it.
    #[tokio::test]
    async fn reads_pass_in_order_up_to_the_end_or_the_first_error() {
        let tracker = tokio_util::task::TaskTracker::new();
        let items: Vec<Result<Bytes, StreamError>> = (0..40).map(|i| Ok(Bytes::from(format!("{i};")))).collect();
        let reads = spawn(Box::pin(futures::stream::iter(items)), &tracker);
        let got: Vec<Bytes> = reads.map(Result::unwrap).collect().await;
        assert_eq!(got.concat(), (0..40).map(|i| format!("{i};")).collect::<String>().as_bytes());

        let too_large = crate::sse::EventTooLarge { limit: 1 };
        let items = vec![Ok(Bytes::from_static(b"a")), Err(StreamError::EventTooLarge(too_large)), Ok(Bytes::new())];
        let mut reads = spawn(Box::pin(futures::stream::iter(items)), &tracker);
        assert!(reads.next().await.unwrap().is_ok());
        assert!(matches!(reads.next().await, Some(Err(StreamError::EventTooLarge(_)))));
        assert!(reads.next().await.is_none());
    }

    /// Reads a provider hands over one at a time (as hyper does: a one-slot channel, the next
    /// read decoded once the last was taken) but that are all ready wake the reader twice:
    /// for the first read, at once, then for all the others together, not once each.
    #[tokio::test]
    async fn reads_ready_together_wake_the_reader_once_after_the_first() {
        let tracker = tokio_util::task::TaskTracker::new();
        let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, StreamError>>(0);
        tracker.spawn(async move {
            use futures::SinkExt;
            for i in 0..12 {
                if tx.send(Ok(Bytes::from(format!("{i};")))).await.is_err() {
                    return;
                }
            }
        });
        let mut reads = spawn(Box::pin(rx), &tracker);
        // The reader is a task of the runtime, as the client's connection is.
        let reader = tokio::spawn(async move {
            let (mut polls, mut got) = (0, Vec::new());
            std::future::poll_fn(|cx| {
                polls += 1;
                loop {
                    match reads.as_mut().poll_next(cx) {
                        Poll::Ready(Some(read)) => got.push(read.unwrap()),
                        Poll::Ready(None) => return Poll::Ready(()),
                        Poll::Pending => return Poll::Pending,
                    }
                }
            })
            .await;
            (polls, got)
        });
        let (polls, got) = reader.await.unwrap();
        assert_eq!(got.concat(), (0..12).map(|i| format!("{i};")).collect::<String>().as_bytes());
        assert!(polls <= 3, "the reader was polled {polls} times for 12 reads");
    }
}
