use super::*;
use proptest::prelude::*;

fn records(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("record-{i}").into_bytes()).collect()
}

/// Every record `leftovers` replays, as text.
fn replayed(mut leftovers: Leftovers) -> Vec<String> {
    let mut out = Vec::new();
    while let Some((_, p)) = leftovers.next_record() {
        out.push(String::from_utf8(p).unwrap());
    }
    out
}

fn refs(first: RecordRef, n: u64) -> Vec<RecordRef> {
    (0..n).map(|i| RecordRef { segment: first.segment, index: first.index + i }).collect()
}

#[test]
fn records_survive_a_crash_until_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, left) = Spool::open(dir.path(), 1 << 20).unwrap();
    assert!(left.is_empty());
    let first = spool.append_batch(&[b"one".to_vec(), b"two".to_vec()]).unwrap();
    spool.acks().ack(first); // "one" delivered; "two" not yet
    drop(spool); // a crash: no close, no watermark yet
    let (spool, left) = Spool::open(dir.path(), 1 << 20).unwrap();
    assert!(!left.after_clean_stop);
    // Without a persisted watermark the whole segment comes back.
    assert_eq!(replayed(left), ["one", "two"]);
    drop(spool);
}

#[test]
fn a_crash_replays_only_what_follows_the_persisted_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::open(dir.path(), 1 << 20).unwrap();
    let first = spool.append_batch(&records(10)).unwrap();
    let all = refs(first, 10);
    // Out of order: 3, 1, 0, 2, 4, 5, and 8 (a gap at 6 and 7).
    for i in [3, 1, 0, 2, 4, 5, 8] {
        spool.acks().ack(all[i]);
    }
    spool.acks().persist_watermarks().unwrap();
    drop(spool);
    let (_spool, left) = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(left.count(), 4);
    // 8 was acknowledged but lies beyond the prefix: it is sent again (consumers dedupe).
    assert_eq!(replayed(left), ["record-6", "record-7", "record-8", "record-9"]);
}

#[test]
fn a_clean_stop_leaves_nothing_once_kafka_has_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::open(dir.path(), 1 << 20).unwrap();
    let first = spool.append_batch(&records(5)).unwrap();
    for r in refs(first, 5) {
        spool.acks().ack(r);
    }
    spool.close().unwrap();
    drop(spool);
    let segments = fs::read_dir(dir.path()).unwrap().filter_map(Result::ok).filter(|e| e.file_name() != "lock").count();
    assert_eq!(segments, 0, "nothing but the lock is left");
    let (_spool, left) = Spool::open(dir.path(), 1 << 20).unwrap();
    assert!(left.is_empty() && !left.after_clean_stop);
}

#[test]
fn a_clean_stop_with_kafka_away_keeps_the_unacknowledged_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::open(dir.path(), 1 << 20).unwrap();
    let first = spool.append_batch(&records(4)).unwrap();
    let all = refs(first, 4);
    spool.acks().ack(all[0]);
    spool.acks().ack(all[1]);
    spool.close().unwrap();
    // Acknowledgements that arrive after the close still count (the segment is sealed).
    spool.acks().ack(all[2]);
    drop(spool);
    let (spool, left) = Spool::open(dir.path(), 1 << 20).unwrap();
    assert!(left.after_clean_stop);
    assert_eq!(replayed(left), ["record-2", "record-3"], "the watermark of the close: 2");
    drop(spool);
    let (_spool, left) = Spool::open(dir.path(), 1 << 20).unwrap();
    assert!(!left.after_clean_stop, "the marker is for one start only");
}

#[test]
fn replayed_segments_are_deleted_once_their_replay_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::open(dir.path(), 1 << 20).unwrap();
    spool.append_batch(&records(3)).unwrap();
    drop(spool);
    let (spool, mut left) = Spool::open(dir.path(), 1 << 20).unwrap();
    let old = spool.active_segment() - 1;
    assert!(segment_path(dir.path(), old).exists());
    assert_eq!(spool.acks().pending_before(spool.active_segment()), 3);
    while let Some((r, _)) = left.next_record() {
        spool.acks().ack(r);
    }
    assert!(!segment_path(dir.path(), old).exists());
    assert_eq!(spool.acks().pending(), 0);
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
fn a_torn_tail_or_watermark_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::open(dir.path(), 1 << 20).unwrap();
    let r = spool.append_batch(&[b"whole".to_vec()]).unwrap();
    spool.acks().ack(r);
    spool.acks().persist_watermarks().unwrap();
    drop(spool);
    let path = segment_path(dir.path(), r.segment);
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&[50, 0, 0, 0, 1, 2, 3, 4, b'p']).unwrap();
    assert_eq!(read_segment(&path).unwrap(), vec![b"whole".to_vec()]);
    // A torn watermark means "replay it all": more, never less.
    fs::write(watermark_path(dir.path(), r.segment), b"\x01\x00\x00").unwrap();
    let (_spool, left) = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(replayed(left), ["whole"]);
}

#[test]
fn a_corrupt_record_ends_the_replay_of_its_segment_and_is_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::open(dir.path(), 1 << 20).unwrap();
    let first = spool.append_batch(&records(5)).unwrap();
    drop(spool);
    // Flip one byte of the third record's payload ("record-2"): its checksum no longer matches.
    let path = segment_path(dir.path(), first.segment);
    let mut bytes = fs::read(&path).unwrap();
    let at = bytes.windows(8).position(|w| w == b"record-2").unwrap();
    bytes[at] ^= 0xff;
    fs::write(&path, bytes).unwrap();
    let (spool, mut left) = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(left.count(), 5);
    let mut read = Vec::new();
    while let Some((r, p)) = left.next_record() {
        read.push(String::from_utf8(p).unwrap());
        spool.acks().ack(r);
    }
    assert_eq!(read, ["record-0", "record-1"]);
    // The three records after the corrupt one are given up: nothing waits for them forever,
    // the segment is gone from the spool, and its bytes are kept for inspection.
    assert_eq!(spool.acks().pending(), 0);
    assert!(!path.exists());
    assert!(dir.path().join(format!("{:020}.unreadable", first.segment)).exists());
}

#[test]
fn a_spool_directory_has_one_owner() {
    let dir = tempfile::tempdir().unwrap();
    let (_spool, _) = Spool::open(dir.path(), 1 << 20).unwrap();
    assert!(matches!(Spool::open(dir.path(), 1 << 20), Err(SpoolError::Locked(_))));
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the order of acknowledgements and wherever the crash falls: every record not
    /// acknowledged is replayed, and nothing before the persisted watermark is.
    #[test]
    fn a_crash_never_loses_an_unacknowledged_record(
        n in 1usize..60,
        order in prop::collection::vec(any::<prop::sample::Index>(), 0..80),
        persist_after in 0usize..80,
        crash_after in 0usize..80,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path(), 1 << 20).unwrap();
        let all = refs(spool.append_batch(&records(n)).unwrap(), n as u64);
        let mut acked = std::collections::BTreeSet::new();
        let mut watermark = 0;
        for (step, pick) in order.iter().enumerate().take(crash_after) {
            let i = pick.index(n);
            spool.acks().ack(all[i]);
            acked.insert(i);
            if step == persist_after {
                spool.acks().persist_watermarks().unwrap();
                watermark = (0..n).take_while(|j| acked.contains(j)).count();
            }
        }
        drop(spool);
        let (_spool, left) = Spool::open(dir.path(), 1 << 20).unwrap();
        let back: std::collections::BTreeSet<usize> =
            replayed(left).iter().map(|r| r["record-".len()..].parse().unwrap()).collect();
        for i in 0..n {
            if !acked.contains(&i) {
                prop_assert!(back.contains(&i), "unacknowledged record {i} lost");
            }
        }
        prop_assert!(back.iter().all(|i| *i >= watermark), "replayed before the watermark {watermark}");
    }
}

/// A batch whose write fails half way (a full disk) leaves nothing of itself in the segment:
/// the records written after it replay, and acknowledgements still name the right records.
#[test]
fn a_failed_batch_leaves_no_torn_record_in_the_middle_of_a_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::open(dir.path(), 1 << 20).unwrap();
    let first = spool.append_batch(&records(2)).unwrap();
    // What a write that ran out of space mid-record leaves: a header and part of a payload,
    // some on disk and some still in the buffer.
    let start = spool.segment_bytes;
    spool.writer.write_all(&100u32.to_le_bytes()).unwrap();
    spool.writer.write_all(&[0u8; 4]).unwrap();
    spool.writer.flush().unwrap();
    spool.writer.write_all(b"half a rec").unwrap();
    spool.segment_bytes += 18;
    spool.undo_to(start);
    let later = spool.append_batch(&[b"after".to_vec(), b"the failure".to_vec()]).unwrap();
    assert_eq!((later.segment, later.index), (first.segment, 2));
    // "record-0" is acknowledged; a crash follows.
    spool.acks().ack(first);
    spool.acks().persist_watermarks().unwrap();
    drop(spool);
    let (_spool, left) = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(replayed(left), ["record-1", "after", "the failure"]);
}
