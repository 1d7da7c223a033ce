//! The local append-only spool: every usage event is written here before it is handed to Kafka,
//! so events survive a gateway crash or a Kafka outage (DESIGN §2).
//!
//! Layout: a directory of segment files `NNNNNNNNNNNNNNNNNNNN.spool`, each a sequence of records
//! `[len: u32 LE][crc32: u32 LE][payload: event JSON]`. A segment is deleted once every record in
//! it has been acknowledged by Kafka and the segment is sealed. On start-up every remaining
//! record is replayed; consumers deduplicate by `event_id`, so a record acknowledged just before
//! a crash and replayed after it is counted once.
//!
//! Durability is by group commit: the events that arrive within 5 ms (at most 1,024) are written
//! as one batch, then `fdatasync`ed once. What a power loss can cost is the batch being gathered
//! or written: the events of the last few milliseconds. A torn record at the tail (bad length or checksum) ends the
//! replay of its segment.
//!
//! This module never talks to Kafka; it never drops a record that was not acknowledged.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Records larger than this are refused (a usage event is about 1 KiB).
pub const MAX_RECORD: usize = 1024 * 1024;

const HEADER: usize = 8;

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

/// Where a record lives, for acknowledgement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRef {
    pub segment: u64,
}

#[derive(Debug, Default)]
struct SegmentState {
    /// Records written but not yet acknowledged.
    pending: u64,
    /// No more records will be appended.
    sealed: bool,
}

/// Acknowledgement bookkeeping, shared with the Kafka delivery callback.
#[derive(Debug, Default)]
pub struct Acks {
    dir: PathBuf,
    segments: Mutex<BTreeMap<u64, SegmentState>>,
    /// Deliveries Kafka reported, spooled or not: how a stalled producer is noticed.
    delivered: std::sync::atomic::AtomicU64,
}

impl Acks {
    /// Counts one delivery report of success.
    pub fn delivered(&self) {
        self.delivered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Deliveries reported so far.
    pub fn delivered_count(&self) -> u64 {
        self.delivered.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn add_pending(&self, segment: u64, n: u64) {
        if let Ok(mut s) = self.segments.lock() {
            s.entry(segment).or_default().pending += n;
        }
    }

    /// Marks one record of `segment` acknowledged; deletes the segment when it is sealed and
    /// nothing in it is pending.
    pub fn ack(&self, r: RecordRef) {
        let delete = match self.segments.lock() {
            Ok(mut s) => {
                let done = match s.get_mut(&r.segment) {
                    Some(state) => {
                        state.pending = state.pending.saturating_sub(1);
                        state.pending == 0 && state.sealed
                    }
                    None => false,
                };
                if done {
                    s.remove(&r.segment);
                }
                done
            }
            Err(_) => false,
        };
        if delete {
            remove_segment(&self.dir, r.segment);
        }
    }

    fn seal(&self, segment: u64) {
        let delete = match self.segments.lock() {
            Ok(mut s) => {
                let state = s.entry(segment).or_default();
                state.sealed = true;
                if state.pending == 0 {
                    s.remove(&segment);
                    true
                } else {
                    false
                }
            }
            Err(_) => false,
        };
        if delete {
            remove_segment(&self.dir, segment);
        }
    }

    /// Records written and not yet acknowledged, over all segments.
    pub fn pending(&self) -> u64 {
        self.segments.lock().map(|s| s.values().map(|st| st.pending).sum()).unwrap_or(0)
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.spool"))
}

fn remove_segment(dir: &Path, id: u64) {
    if let Err(e) = fs::remove_file(segment_path(dir, id)) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(segment = id, error = %e, "cannot delete an acknowledged spool segment");
        }
    }
}

/// A record left by an earlier run, to be sent again.
pub type Leftover = (RecordRef, Vec<u8>);

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

impl Spool {
    /// Opens (creating, owner-only) the spool directory, takes its lock, and returns the spool
    /// together with every record left by an earlier run, oldest first, each with its segment
    /// for acks.
    pub fn open(dir: &Path, max_segment_bytes: u64) -> Result<(Spool, Vec<Leftover>), SpoolError> {
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
        let mut leftovers = Vec::new();
        for &id in &ids {
            let records = read_segment(&segment_path(dir, id))?;
            acks.add_pending(id, records.len() as u64);
            leftovers.extend(records.into_iter().map(|r| (RecordRef { segment: id }, r)));
            acks.seal(id); // deleted at once when empty, else when its replayed records are acked
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
        Ok((spool, leftovers))
    }

    pub fn acks(&self) -> Arc<Acks> {
        self.acks.clone()
    }

    /// Appends a batch and syncs it to disk once (group commit). Returns where it went.
    pub fn append_batch(&mut self, payloads: &[Vec<u8>]) -> Result<RecordRef, SpoolError> {
        if self.segment_bytes >= self.max_segment_bytes {
            self.rotate()?;
        }
        for p in payloads {
            if p.len() > MAX_RECORD {
                return Err(SpoolError::TooLarge(p.len()));
            }
        }
        for p in payloads {
            let len = u32::try_from(p.len()).map_err(|_| SpoolError::TooLarge(p.len()))?;
            self.writer.write_all(&len.to_le_bytes())?;
            self.writer.write_all(&crc32fast::hash(p).to_le_bytes())?;
            self.writer.write_all(p)?;
            self.segment_bytes += (HEADER + p.len()) as u64;
        }
        self.writer.flush()?;
        self.writer.get_ref().sync_data()?;
        self.acks.add_pending(self.segment_id, payloads.len() as u64);
        Ok(RecordRef { segment: self.segment_id })
    }

    fn rotate(&mut self) -> Result<(), SpoolError> {
        self.writer.flush()?;
        let old = self.segment_id;
        self.segment_id += 1;
        self.writer = BufWriter::with_capacity(256 * 1024, new_segment(&self.dir, self.segment_id)?);
        self.segment_bytes = 0;
        self.acks.seal(old);
        Ok(())
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

/// Every intact record of a segment; stops at the first torn or corrupt record.
pub fn read_segment(path: &Path) -> Result<Vec<Vec<u8>>, SpoolError> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let mut records = Vec::new();
    let mut at = 0usize;
    while at + HEADER <= bytes.len() {
        let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        let crc = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]);
        let start = at + HEADER;
        let Some(payload) = bytes.get(start..start + len) else { break };
        if len > MAX_RECORD || crc32fast::hash(payload) != crc {
            tracing::warn!(path = %path.display(), offset = at, "torn spool record; ignoring the rest of the segment");
            break;
        }
        records.push(payload.to_vec());
        at = start + len;
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_restart_until_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, left) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert!(left.is_empty());
        let r = spool.append_batch(&[b"one".to_vec(), b"two".to_vec()]).unwrap();
        spool.acks().ack(r); // "one" delivered; "two" not yet
        drop(spool);
        let (spool, left) = Spool::open(dir.path(), 1 << 20).unwrap();
        // Both come back: a segment is deleted only when sealed and fully acknowledged.
        assert_eq!(left.iter().map(|(_, p)| p.as_slice()).collect::<Vec<_>>(), vec![&b"one"[..], &b"two"[..]]);
        for (r, _) in &left {
            spool.acks().ack(*r);
        }
        assert_eq!(spool.acks().pending(), 0);
        drop(spool);
        let (_spool, left) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert!(left.is_empty(), "acknowledged records must not be replayed again");
    }

    #[test]
    fn rotated_segments_are_deleted_once_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path(), 10).unwrap();
        let a = spool.append_batch(&[b"0123456789".to_vec()]).unwrap();
        let b = spool.append_batch(&[b"x".to_vec()]).unwrap();
        assert_ne!(a.segment, b.segment);
        assert!(segment_path(dir.path(), a.segment).exists());
        spool.acks().ack(a);
        assert!(!segment_path(dir.path(), a.segment).exists());
    }

    #[test]
    fn a_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path(), 1 << 20).unwrap();
        let r = spool.append_batch(&[b"whole".to_vec()]).unwrap();
        drop(spool);
        let path = segment_path(dir.path(), r.segment);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[50, 0, 0, 0, 1, 2, 3, 4, b'p']).unwrap();
        assert_eq!(read_segment(&path).unwrap(), vec![b"whole".to_vec()]);
    }

    #[test]
    fn the_spool_is_private_and_refuses_a_world_writable_directory() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("spool");
        let (mut spool, _) = Spool::open(&dir, 1 << 20).unwrap();
        let r = spool.append_batch(&[b"x".to_vec()]).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&segment_path(&dir, r.segment)), 0o600);
        drop(spool);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        match Spool::open(&dir, 1 << 20) {
            Err(SpoolError::Dir { source, .. }) => assert_eq!(source.kind(), io::ErrorKind::PermissionDenied),
            other => panic!("opened a world-writable spool: {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn a_spool_directory_has_one_owner() {
        let dir = tempfile::tempdir().unwrap();
        let (_spool, _) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert!(matches!(Spool::open(dir.path(), 1 << 20), Err(SpoolError::Locked(_))));
    }
}
