//! Label values of bounded cardinality: a label keeps the first `cap` distinct values it sees;
//! any later value is reported as `other`. Kept values are shared strings, so recording a
//! known value allocates nothing.

use metrics::SharedString;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The value that stands for every value beyond a label's cap.
pub const OTHER: &str = "other";

pub struct CappedLabel {
    cap: usize,
    seen: RwLock<HashMap<Box<str>, SharedString>>,
}

impl CappedLabel {
    pub fn new(cap: usize) -> CappedLabel {
        CappedLabel { cap, seen: RwLock::new(HashMap::new()) }
    }

    /// `value` as a label value: itself while fewer than `cap` values are kept, else `other`.
    pub fn get(&self, value: &str) -> SharedString {
        if let Ok(seen) = self.seen.read() {
            if let Some(kept) = seen.get(value) {
                return kept.clone();
            }
            if seen.len() >= self.cap {
                return SharedString::const_str(OTHER);
            }
        }
        let Ok(mut seen) = self.seen.write() else { return SharedString::const_str(OTHER) };
        if let Some(kept) = seen.get(value) {
            return kept.clone();
        }
        if seen.len() >= self.cap {
            return SharedString::const_str(OTHER);
        }
        let kept = SharedString::from(Arc::<str>::from(value));
        seen.insert(value.into(), kept.clone());
        kept
    }

    /// Like [`CappedLabel::get`], with `""` (no label, to Prometheus) for no value.
    pub fn get_opt(&self, value: Option<&str>) -> SharedString {
        value.map_or(SharedString::const_str(""), |v| self.get(v))
    }
}

/// An opt-in label: `""` (absent, to Prometheus) when the label is off or has no value.
pub fn opt_in(label: Option<&CappedLabel>, value: Option<&str>) -> SharedString {
    label.map_or(SharedString::const_str(""), |l| l.get_opt(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_beyond_the_cap_fold_into_other() {
        let label = CappedLabel::new(2);
        assert_eq!(&*label.get("a"), "a");
        assert_eq!(&*label.get("b"), "b");
        assert_eq!(&*label.get("c"), OTHER);
        assert_eq!(&*label.get("a"), "a", "a kept value stays itself");
        for i in 0..1_000 {
            assert_eq!(&*label.get(&format!("t{i}")), OTHER);
        }
        assert_eq!(label.seen.read().map(|s| s.len()).unwrap_or(0), 2);
    }

    #[test]
    fn an_opt_in_label_that_is_off_is_empty() {
        assert_eq!(&*opt_in(None, Some("alias")), "");
        let on = CappedLabel::new(1);
        assert_eq!(&*opt_in(Some(&on), Some("alias")), "alias");
        assert_eq!(&*opt_in(Some(&on), None), "");
    }
}
