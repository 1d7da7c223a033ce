//! Metric handles kept by name and label values, so recording a series seen before is one hash
//! lookup. Through the `metrics` macros every recording builds a `metrics::Key` (a vector of
//! labels), hashes it and compares it in the recorder's registry (whose comparison sorts both
//! label lists): about 3,000 instructions a series, 15,000 a request on the hot path
//! (`benches/results/metrics-handles-2026-12-07.md`).
//!
//! A handle stays valid for the process: the Prometheus recorder never evicts a series (no idle
//! timeout is configured). A table is bounded: past [`MAX_SERIES`] series it stops keeping new
//! ones, and those are then looked up in the recorder each time, as without it.

use metrics::{Counter, Histogram, Label};
use rustc_hash::FxHasher;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::RwLock;

/// Series kept per table. Label values are capped (`labels::CappedLabel`), so a real gateway
/// stays far below it; it bounds memory whatever the labels do.
pub const MAX_SERIES: usize = 8192;

/// Label names and values of one series, in the order they are recorded.
pub type Labels<'a> = [(&'static str, &'a str)];

struct Series<H> {
    name: &'static str,
    labels: Box<[(&'static str, Box<str>)]>,
    handle: H,
}

impl<H> Series<H> {
    fn is(&self, name: &'static str, labels: &Labels<'_>) -> bool {
        self.name == name
            && self.labels.len() == labels.len()
            && self.labels.iter().zip(labels).all(|((k, v), (lk, lv))| k == lk && **v == **lv)
    }
}

/// The handles of one kind (counters or histograms), by the hash of name and labels; a hash
/// shared by two series keeps both.
struct Table<H> {
    by_hash: RwLock<HashMap<u64, Vec<Series<H>>, BuildHasherDefault<NoHash>>>,
    /// Series kept: once at [`MAX_SERIES`], a miss takes no write lock.
    kept: AtomicUsize,
}

impl<H: Clone> Table<H> {
    fn new() -> Table<H> {
        Table { by_hash: RwLock::new(HashMap::default()), kept: AtomicUsize::new(0) }
    }

    fn get(&self, name: &'static str, labels: &Labels<'_>, register: impl FnOnce(Vec<Label>) -> H) -> H {
        let hash = hash_of(name, labels);
        if let Ok(table) = self.by_hash.read() {
            if let Some(series) = table.get(&hash).and_then(|all| all.iter().find(|s| s.is(name, labels))) {
                return series.handle.clone();
            }
        }
        let handle = register(labels.iter().map(|(k, v)| Label::new(*k, v.to_string())).collect());
        if self.kept.load(Ordering::Relaxed) >= MAX_SERIES {
            return handle;
        }
        if let Ok(mut table) = self.by_hash.write() {
            let all = table.entry(hash).or_default();
            if self.kept.load(Ordering::Relaxed) < MAX_SERIES && !all.iter().any(|s| s.is(name, labels)) {
                let labels = labels.iter().map(|(k, v)| (*k, Box::from(*v))).collect();
                all.push(Series { name, labels, handle: handle.clone() });
                self.kept.fetch_add(1, Ordering::Relaxed);
            }
        }
        handle
    }

    fn len(&self) -> usize {
        self.kept.load(Ordering::Relaxed)
    }
}

fn hash_of(name: &'static str, labels: &Labels<'_>) -> u64 {
    let mut h = FxHasher::default();
    name.hash(&mut h);
    for (k, v) in labels {
        k.hash(&mut h);
        v.hash(&mut h);
    }
    h.finish()
}

/// The keys are hashes already.
#[derive(Default)]
struct NoHash(u64);

impl Hasher for NoHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Counters and histograms of the current recorder, by name and labels.
pub struct Handles {
    counters: Table<Counter>,
    histograms: Table<Histogram>,
}

impl Default for Handles {
    fn default() -> Handles {
        Handles { counters: Table::new(), histograms: Table::new() }
    }
}

impl Handles {
    pub fn counter(&self, name: &'static str, labels: &Labels<'_>) -> Counter {
        self.counters.get(name, labels, |labels| metrics::counter!(name, labels))
    }

    pub fn histogram(&self, name: &'static str, labels: &Labels<'_>) -> Histogram {
        self.histograms.get(name, labels, |labels| metrics::histogram!(name, labels))
    }

    /// Series kept, counters and histograms together.
    pub fn kept(&self) -> usize {
        self.counters.len() + self.histograms.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(record: impl FnOnce()) -> String {
        let recorder = super::super::buckets::configured().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, record);
        handle.render()
    }

    /// A kept handle records into the same series as the macros would; label order and values
    /// tell series apart.
    #[test]
    fn kept_handles_record_into_their_own_series() {
        let out = rendered(|| {
            let handles = Handles::default();
            for _ in 0..3 {
                handles.counter("t_total", &[("a", "1"), ("b", "x")]).increment(2);
            }
            handles.counter("t_total", &[("a", "1"), ("b", "y")]).increment(1);
            handles.counter("t_total", &[("a", "2"), ("b", "x")]).increment(5);
            metrics::counter!("t_total", "a" => "1", "b" => "x").increment(1);
            handles.histogram("h_seconds", &[("a", "1")]).record(0.5);
            assert_eq!(handles.kept(), 4);
        });
        assert!(out.contains(r#"t_total{a="1",b="x"} 7"#), "{out}");
        assert!(out.contains(r#"t_total{a="1",b="y"} 1"#), "{out}");
        assert!(out.contains(r#"t_total{a="2",b="x"} 5"#), "{out}");
        assert!(out.contains(r#"h_seconds_count{a="1"} 1"#), "{out}");
    }

    /// Past the bound new series are still recorded, just not kept.
    #[test]
    fn series_past_the_bound_are_recorded_but_not_kept() {
        let out = rendered(|| {
            let handles = Handles::default();
            for i in 0..MAX_SERIES + 10 {
                handles.counter("many_total", &[("i", &i.to_string())]).increment(1);
            }
            handles.counter("many_total", &[("i", &(MAX_SERIES + 5).to_string())]).increment(1);
            assert_eq!(handles.kept(), MAX_SERIES);
        });
        assert!(out.contains(&format!(r#"many_total{{i="{}"}} 2"#, MAX_SERIES + 5)), "{out}");
        assert!(out.contains(r#"many_total{i="0"} 1"#), "{out}");
    }

    /// Two series whose hashes collide are both kept and told apart.
    #[test]
    fn colliding_hashes_keep_both_series() {
        let table: Table<u32> = Table::new();
        let mut next = 0;
        let mut register = |_: Vec<Label>| {
            next += 1;
            next
        };
        let a = table.get("n", &[("k", "a")], &mut register);
        // Force a collision: the same bucket, another series.
        if let Ok(mut t) = table.by_hash.write() {
            let moved = t.remove(&hash_of("n", &[("k", "a")])).unwrap_or_default();
            t.insert(hash_of("n", &[("k", "b")]), moved);
        }
        let b = table.get("n", &[("k", "b")], &mut register);
        assert_ne!(a, b);
        assert_eq!(table.get("n", &[("k", "b")], &mut register), b);
        assert_eq!(table.len(), 2);
    }
}
