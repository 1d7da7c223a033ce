//! The local append-only spool: every usage event is written here before it is handed to Kafka,
//! so events survive a gateway crash or a Kafka outage (docs/design.md §3.4, "The spool").
//!
//! Layout: a directory of segment files `NNNNNNNNNNNNNNNNNNNN.spool`, each a sequence of records
//! `[len: u32 LE][crc32: u32 LE][payload: event JSON]`, and beside a segment its acknowledgement
//! watermark `NNNNNNNNNNNNNNNNNNNN.acked` (`[count: u64 LE][crc32: u32 LE]`): every record of the
//! segment before `count` was acknowledged by Kafka. Acknowledgements arrive out of order; the
//! watermark is the longest acknowledged prefix, persisted by the writer thread in the
//! background ([`Acks::persist_watermarks`], every [`WATERMARK_INTERVAL`]), never on the request
//! path. A segment is deleted once it is sealed and every record in it is acknowledged; a clean
//! stop seals the active segment, so it leaves nothing behind once Kafka has it all.
//!
//! At start-up the records after each leftover segment's watermark are replayed, read as a
//! stream ([`Leftovers`]), never all at once. A crash replays at most the records written after
//! the last persisted watermark: about [`WATERMARK_INTERVAL`] of traffic plus what Kafka had not
//! acknowledged yet. Without a watermark file (a spool from an older build, or a torn file) the
//! whole segment is replayed. Consumers deduplicate by `event_id`, so a record acknowledged just
//! before a crash and replayed after it is counted once.
//!
//! Durability is by group commit: the events that arrive within 5 ms (at most 1,024) are written
//! as one batch, then `fdatasync`ed once. What a power loss can cost is the batch being gathered
//! or written: the events of the last few milliseconds. A torn record at the tail (bad length or
//! checksum) ends the replay of its segment. Watermarks are renamed into place without a sync:
//! after a power loss one may be older than it was, which replays more, never less.
//!
//! This module never talks to Kafka; it never drops a record that was not acknowledged.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Records larger than this are refused (a usage event is about 1 KiB).
pub const MAX_RECORD: usize = 1024 * 1024;

/// How often the writer thread persists the acknowledgement watermarks that moved: what a
/// crash can replay beyond the records Kafka had not acknowledged.
pub const WATERMARK_INTERVAL: Duration = Duration::from_millis(200);

const HEADER: usize = 8;

/// Left by a clean stop that could not deliver everything (Kafka unreachable): the next start
/// says its replay follows a clean stop, not a crash.
const CLEAN_STOP: &str = "clean-stop";

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool directory {dir}: {source}")]
    Dir { dir: String, source: io::Error },
    #[error("spool directory {0} is in use by another gateway (it holds the lock)")]
    Locked(String),
    #[error("spool I/O: {0}")]
    Io(#[from] io::Error),
    #[error("record of {0} bytes is larger than the spool allows")]
    TooLarge(usize),
}

/// Where a record lives, for acknowledgement: its segment and its place in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRef {
    pub segment: u64,
    pub index: u64,
}

// === impl Acks ===

#[derive(Debug, Default)]
struct SegmentState {
    /// Records in the segment: appended, or found at start-up.
    records: u64,
    /// Every record before this index is acknowledged (now or in an earlier run).
    acked_below: u64,
    /// Acknowledged records at or after `acked_below`.
    acked_above: BTreeSet<u64>,
    /// The watermark last persisted.
    persisted: u64,
    /// No more records will be appended.
    sealed: bool,
}

impl SegmentState {
    fn pending(&self) -> u64 {
        self.records.saturating_sub(self.acked_below).saturating_sub(self.acked_above.len() as u64)
    }

    fn ack(&mut self, index: u64) {
        if index < self.acked_below {
            return;
        }
        if index == self.acked_below {
            self.acked_below += 1;
            while self.acked_above.remove(&self.acked_below) {
                self.acked_below += 1;
            }
        } else {
            self.acked_above.insert(index);
        }
    }

    fn done(&self) -> bool {
        self.sealed && self.pending() == 0
    }
}

/// Acknowledgement bookkeeping, shared with the Kafka delivery callback.
#[derive(Debug, Default)]
pub struct Acks {
    dir: PathBuf,
    segments: Mutex<BTreeMap<u64, SegmentState>>,
    /// Deliveries Kafka reported, spooled or not: how a stalled producer is noticed.
    delivered: AtomicU64,
}

impl Acks {
    /// Counts one delivery report of success.
    pub fn delivered(&self) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }

    /// Deliveries reported so far.
    pub fn delivered_count(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, SegmentState>> {
        // The state is a set of counters: a panic elsewhere cannot leave it half-changed.
        self.segments.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `n` more records in `segment`; returns the index of the first.
    fn appended(&self, segment: u64, n: u64) -> u64 {
        let mut s = self.lock();
        let state = s.entry(segment).or_default();
        let first = state.records;
        state.records += n;
        first
    }

    /// Marks one record acknowledged; deletes its segment when that was the last one of a sealed
    /// segment.
    pub fn ack(&self, r: RecordRef) {
        let delete = {
            let mut s = self.lock();
            let done = s.get_mut(&r.segment).is_some_and(|state| {
                state.ack(r.index);
                state.done()
            });
            if done {
                s.remove(&r.segment);
            }
            done
        };
        if delete {
            remove_segment(&self.dir, r.segment);
        }
    }

    /// No more records go to `segment`: it is deleted once they are all acknowledged.
    fn seal(&self, segment: u64) {
        let delete = {
            let mut s = self.lock();
            let state = s.entry(segment).or_default();
            state.sealed = true;
            let done = state.done();
            if done {
                s.remove(&segment);
            }
            done
        };
        if delete {
            remove_segment(&self.dir, segment);
        }
    }

    /// Records written and not yet acknowledged, over all segments.
    pub fn pending(&self) -> u64 {
        self.lock().values().map(SegmentState::pending).sum()
    }

    /// Records not yet acknowledged in the segments before `segment` (a replay in flight).
    pub fn pending_before(&self, segment: u64) -> u64 {
        self.lock().range(..segment).map(|(_, st)| st.pending()).sum()
    }

    /// Writes the watermark of every segment whose acknowledged prefix grew since it was last
    /// written. Called by the writer thread, never on the request path.
    pub fn persist_watermarks(&self) -> io::Result<()> {
        let moved: Vec<(u64, u64)> = self
            .lock()
            .iter()
            .filter(|(_, st)| st.acked_below > st.persisted)
            .map(|(id, st)| (*id, st.acked_below))
            .collect();
        for (id, count) in moved {
            write_watermark(&self.dir, id, count)?;
            if let Some(st) = self.lock().get_mut(&id) {
                st.persisted = st.persisted.max(count);
            }
        }
        Ok(())
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.spool"))
}

fn watermark_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.acked"))
}

fn remove_segment(dir: &Path, id: u64) {
    for path in [segment_path(dir, id), watermark_path(dir, id)] {
        if let Err(e) = fs::remove_file(&path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(segment = id, error = %e, "cannot delete an acknowledged spool segment");
            }
        }
    }
}

/// Writes `count` as the watermark of segment `id`: to a temporary file, then renamed over the
/// old one, so a reader sees the old watermark or the new one, never half of one.
fn write_watermark(dir: &Path, id: u64, count: u64) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut bytes = [0u8; 12];
    bytes[..8].copy_from_slice(&count.to_le_bytes());
    let crc = crc32fast::hash(&bytes[..8]);
    bytes[8..].copy_from_slice(&crc.to_le_bytes());
    let tmp = dir.join(format!("{id:020}.acked.tmp"));
    OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(&tmp)?.write_all(&bytes)?;
    fs::rename(tmp, watermark_path(dir, id))
}

/// The persisted watermark of segment `id`; 0 (replay all of it) when there is none or it is
/// torn.
fn read_watermark(dir: &Path, id: u64) -> u64 {
    let Ok(bytes) = fs::read(watermark_path(dir, id)) else { return 0 };
    let Ok(bytes) = <[u8; 12]>::try_from(bytes.as_slice()) else { return 0 };
    let count = u64::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7]]);
    let crc = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if crc32fast::hash(&bytes[..8]) == crc {
        count
    } else {
        0
    }
}

/// Creates `dir` readable by its owner only (0700), or checks an existing one: a directory
/// others may write to is refused (anyone could plant or remove usage records or a database).
pub fn private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !dir.exists() {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let mode = fs::metadata(dir)?.permissions().mode();
    if mode & 0o002 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} is writable by every user (mode {:o}); make it 0700", dir.display(), mode & 0o777),
        ));
    }
    Ok(())
}

/// Creates `path` (if absent) readable and writable by its owner only (0600), or checks an
/// existing one: a file others may write to is refused.
pub fn private_file(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if !path.exists() {
        OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(path)?;
    }
    let mode = fs::metadata(path)?.permissions().mode();
    if mode & 0o002 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} is writable by every user (mode {:o}); make it 0600", path.display(), mode & 0o777),
        ));
    }
    Ok(())
}

// === impl Leftovers ===

/// What an earlier run left in the spool: the records after each leftover segment's watermark,
/// read one at a time.
pub struct Leftovers {
    dir: PathBuf,
    /// `(segment, first record to replay, records in it)`, oldest first.
    segments: Vec<(u64, u64, u64)>,
    /// The earlier run stopped cleanly (with events Kafka had not acknowledged).
    pub after_clean_stop: bool,
    /// Bytes of the leftover segments on disk.
    pub bytes: u64,
    current: Option<(u64, u64, BufReader<File>)>,
    next_segment: usize,
    acks: Arc<Acks>,
}

impl Leftovers {
    /// Records to replay.
    pub fn count(&self) -> u64 {
        self.segments.iter().map(|(_, skip, records)| records - skip).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }

    /// The next record to replay, or `None` when all are read. An unreadable segment is logged
    /// and its records are left on disk (they are replayed at the next start).
    pub fn next_record(&mut self) -> Option<(RecordRef, Vec<u8>)> {
        loop {
            if let Some((segment, index, reader)) = &mut self.current {
                match read_record(reader) {
                    Ok(Some(payload)) => {
                        let r = RecordRef { segment: *segment, index: *index };
                        *index += 1;
                        return Some((r, payload));
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(segment = *segment, error = %e, "cannot read a spool segment"),
                }
                let (segment, index) = (*segment, *index);
                self.current = None;
                self.unreadable(segment, index);
            }
            let &(segment, skip, _) = self.segments.get(self.next_segment)?;
            self.next_segment += 1;
            match open_at(&segment_path(&self.dir, segment), skip) {
                Ok(reader) => self.current = Some((segment, skip, reader)),
                Err(e) => {
                    tracing::warn!(segment, error = %e, "cannot open a spool segment");
                    self.unreadable(segment, skip);
                }
            }
        }
    }
}

impl Leftovers {
    /// Segment `segment` could be read only up to record `read` (a corrupt record or an I/O
    /// error). The records after it cannot be replayed: they are counted and given up, so the
    /// replay ends, and the segment's bytes are kept as `<segment>.unreadable` for inspection.
    fn unreadable(&mut self, segment: u64, read: u64) {
        let Some(&(_, _, records)) = self.segments.iter().find(|(id, _, _)| *id == segment) else { return };
        if read >= records {
            return;
        }
        let lost = records - read;
        metrics::counter!("tollgate_spool_unreadable_records_total").increment(lost);
        let kept = self.dir.join(format!("{segment:020}.unreadable"));
        if let Err(e) = fs::hard_link(segment_path(&self.dir, segment), &kept) {
            tracing::warn!(segment, error = %e, "cannot keep a copy of an unreadable spool segment");
        }
        tracing::error!(segment, records = lost, "spooled usage events cannot be read back; they are not replayed");
        for index in read..records {
            self.acks.ack(RecordRef { segment, index });
        }
    }
}

/// A reader of the segment at `path`, positioned after its first `skip` records.
fn open_at(path: &Path, skip: u64) -> io::Result<BufReader<File>> {
    let mut reader = BufReader::with_capacity(64 * 1024, File::open(path)?);
    for _ in 0..skip {
        let mut header = [0u8; HEADER];
        reader.read_exact(&mut header)?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        reader.seek_relative(i64::from(len))?;
    }
    Ok(reader)
}

/// The next intact record, `None` at the end or at a torn or corrupt record.
fn read_record(reader: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; HEADER];
    match reader.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_RECORD {
        tracing::warn!("torn spool record; ignoring the rest of the segment");
        return Ok(None);
    }
    let mut payload = vec![0u8; len];
    match reader.read_exact(&mut payload) {
        Ok(()) if crc32fast::hash(&payload) == crc => Ok(Some(payload)),
        Ok(()) => {
            tracing::warn!("torn spool record; ignoring the rest of the segment");
            Ok(None)
        }
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// Intact records in the segment at `path`, counted from their headers (payloads are checked
/// when they are replayed), and the segment's size.
fn count_records(path: &Path) -> io::Result<(u64, u64)> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let mut at = 0u64;
    let mut records = 0;
    loop {
        let mut header = [0u8; HEADER];
        if reader.read_exact(&mut header).is_err() {
            break;
        }
        let len = u64::from(u32::from_le_bytes([header[0], header[1], header[2], header[3]]));
        if len > MAX_RECORD as u64 || at + HEADER as u64 + len > size {
            break;
        }
        reader.seek_relative(i64::try_from(len).unwrap_or(i64::MAX))?;
        at += HEADER as u64 + len;
        records += 1;
    }
    Ok((records, size))
}

// === impl Spool ===

/// The writer side of the spool (one per gateway process).
pub struct Spool {
    dir: PathBuf,
    _lock: File,
    acks: Arc<Acks>,
    segment_id: u64,
    writer: BufWriter<File>,
    segment_bytes: u64,
    max_segment_bytes: u64,
}

impl Spool {
    /// Opens (creating, owner-only) the spool directory, takes its lock, and returns the spool
    /// together with what an earlier run left: the records after each segment's watermark, to
    /// be read one at a time.
    pub fn open(dir: &Path, max_segment_bytes: u64) -> Result<(Spool, Leftovers), SpoolError> {
        let dir_err = |source| SpoolError::Dir { dir: dir.display().to_string(), source };
        private_dir(dir).map_err(dir_err)?;
        private_file(&dir.join("lock")).map_err(dir_err)?;
        let lock =
            OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("lock")).map_err(dir_err)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(SpoolError::Locked(dir.display().to_string())),
            Err(fs::TryLockError::Error(e)) => return Err(dir_err(e)),
        }
        let acks = Arc::new(Acks { dir: dir.to_path_buf(), ..Acks::default() });
        let mut ids: Vec<u64> = fs::read_dir(dir)
            .map_err(dir_err)?
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".spool")?.parse().ok())
            .collect();
        ids.sort_unstable();
        let after_clean_stop = dir.join(CLEAN_STOP).exists();
        let _ = fs::remove_file(dir.join(CLEAN_STOP));
        let mut segments = Vec::new();
        let mut bytes = 0;
        for &id in &ids {
            let (records, size) = count_records(&segment_path(dir, id))?;
            let skip = read_watermark(dir, id).min(records);
            {
                let mut s = acks.lock();
                let state = s.entry(id).or_default();
                state.records = records;
                state.acked_below = skip;
                state.persisted = skip;
            }
            // Deleted at once when nothing is left to replay, else once its replay is acked.
            acks.seal(id);
            if records > skip {
                segments.push((id, skip, records));
                bytes += size;
            }
        }
        let segment_id = ids.last().map_or(1, |last| last + 1);
        let writer = BufWriter::with_capacity(256 * 1024, new_segment(dir, segment_id)?);
        let spool = Spool {
            dir: dir.to_path_buf(),
            _lock: lock,
            acks,
            segment_id,
            writer,
            segment_bytes: 0,
            max_segment_bytes,
        };
        let leftovers = Leftovers {
            dir: dir.to_path_buf(),
            segments,
            after_clean_stop,
            bytes,
            current: None,
            next_segment: 0,
            acks: spool.acks.clone(),
        };
        Ok((spool, leftovers))
    }

    pub fn acks(&self) -> Arc<Acks> {
        self.acks.clone()
    }

    /// The segment new records go to: every segment before it is from an earlier run.
    pub fn active_segment(&self) -> u64 {
        self.segment_id
    }

    /// Appends a batch to the active segment: written to the file, which a crash of the process
    /// cannot lose; [`Spool::sync`] makes it survive a power loss. Returns where the first record
    /// went; the others follow it in order.
    pub fn append_batch(&mut self, payloads: &[Vec<u8>]) -> Result<RecordRef, SpoolError> {
        if self.segment_bytes >= self.max_segment_bytes {
            self.rotate()?;
        }
        for p in payloads {
            if p.len() > MAX_RECORD {
                return Err(SpoolError::TooLarge(p.len()));
            }
        }
        let start = self.segment_bytes;
        if let Err(e) = self.write_records(payloads) {
            self.undo_to(start);
            return Err(e);
        }
        let first = self.acks.appended(self.segment_id, payloads.len() as u64);
        Ok(RecordRef { segment: self.segment_id, index: first })
    }

    fn write_records(&mut self, payloads: &[Vec<u8>]) -> Result<(), SpoolError> {
        for p in payloads {
            let len = u32::try_from(p.len()).map_err(|_| SpoolError::TooLarge(p.len()))?;
            self.writer.write_all(&len.to_le_bytes())?;
            self.writer.write_all(&crc32fast::hash(p).to_le_bytes())?;
            self.writer.write_all(p)?;
            self.segment_bytes += (HEADER + p.len()) as u64;
        }
        self.writer.flush()?;
        Ok(())
    }

    /// Syncs what was appended to disk (the group commit's one `fdatasync`). A segment is synced
    /// when it is sealed, so only the active one has anything to sync.
    pub fn sync(&mut self) -> io::Result<()> {
        self.writer.flush()?;
        self.writer.get_ref().sync_data()
    }

    /// A handle on the active segment, to sync what was appended from another thread.
    pub fn sync_handle(&mut self) -> io::Result<File> {
        self.writer.flush()?;
        self.writer.get_ref().try_clone()
    }

    /// After a failed write (a full disk): drops what the batch put in the buffer and cuts the
    /// segment back to `start`, so that no part of the batch stays on disk. A torn record in the
    /// middle of a segment would end its replay there, and a whole one would shift the record
    /// numbers acknowledgements refer to. When the segment cannot be cut back, the next batch
    /// goes to a new segment instead: the torn end is then the old segment's last thing.
    fn undo_to(&mut self, start: u64) {
        let cut = self.writer.get_ref().try_clone().and_then(|file| {
            file.set_len(start)?;
            (&file).seek(SeekFrom::Start(start))?;
            Ok(file)
        });
        let replacement = match cut {
            Ok(file) => {
                self.segment_bytes = start;
                file
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot cut the spool segment back; starting a new one");
                match new_segment(&self.dir, self.segment_id + 1) {
                    Ok(file) => {
                        self.acks.seal(self.segment_id);
                        self.segment_id += 1;
                        self.segment_bytes = 0;
                        file
                    }
                    Err(e) => {
                        // Neither: the failed bytes stay buffered and go out with the next
                        // batch, whose records replay stops before (they are sent to Kafka
                        // all the same; only a crash before it acknowledges them loses them).
                        tracing::error!(error = %e, "cannot start a new spool segment");
                        return;
                    }
                }
            }
        };
        let failed = std::mem::replace(&mut self.writer, BufWriter::with_capacity(256 * 1024, replacement));
        // Not flushed: its buffer holds the failed batch.
        let _ = failed.into_parts();
    }

    fn rotate(&mut self) -> Result<(), SpoolError> {
        // What the old segment holds unsynced is synced before the next is written.
        self.sync()?;
        let old = self.segment_id;
        self.segment_id += 1;
        self.writer = BufWriter::with_capacity(256 * 1024, new_segment(&self.dir, self.segment_id)?);
        self.segment_bytes = 0;
        self.acks.seal(old);
        Ok(())
    }

    /// A clean stop: seals the active segment, so that once Kafka has acknowledged all of it it
    /// is deleted and the next start replays nothing. When records are still unacknowledged,
    /// their watermarks are persisted and the next start is told it follows a clean stop.
    pub fn close(&mut self) -> io::Result<()> {
        self.sync()?;
        self.acks.seal(self.segment_id);
        self.acks.persist_watermarks()?;
        if self.acks.pending() > 0 {
            File::create(self.dir.join(CLEAN_STOP))?;
        }
        Ok(())
    }

    /// Bytes of the segments on disk.
    pub fn bytes_on_disk(&self) -> u64 {
        fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".spool"))
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }
}

fn new_segment(dir: &Path, id: u64) -> Result<File, SpoolError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = OpenOptions::new().create(true).append(true).mode(0o600).open(segment_path(dir, id))?;
    // Make the new file's directory entry durable too.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(file)
}

/// Every intact record of a segment; stops at the first torn or corrupt record (tools and
/// tests: replay reads segments as a stream).
pub fn read_segment(path: &Path) -> Result<Vec<Vec<u8>>, SpoolError> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut records = Vec::new();
    while let Some(r) = read_record(&mut reader)? {
        records.push(r);
    }
    Ok(records)
}

#[cfg(test)]
mod tests;
