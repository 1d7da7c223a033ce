//! `GET /spend/logs?tag=`: the request log entries whose event carries a tag. The ledger's
//! index rows do not hold tags (the event bodies do), so this reads pages of the other filters
//! and keeps the tagged events, within fixed bounds.

use tollgate_schemas::logs::{LogPage, LogQuery, MAX_EXAMINED};
use tollgate_schemas::store::{SpendSource, StoreError};

/// Ledger pages a tagged listing reads at most per call.
const MAX_TAG_ROUNDS: usize = 16;

/// A page of the entries of `query` whose event carries `tag`. The ledger's rows do not hold
/// the tags (the event bodies do), so pages of the other filters are read and their events
/// kept when tagged: each read asks for no more entries than the page still lacks, so the
/// cursor of the last read is exactly where the tagged page ends. Bounded by
/// [`MAX_TAG_ROUNDS`] reads and `logs::MAX_EXAMINED` rows looked at in all: past either, the
/// page comes back short (even empty) with a cursor to go on from.
pub(crate) async fn tagged_page(
    source: &dyn SpendSource,
    mut query: LogQuery,
    tag: &str,
) -> Result<LogPage, StoreError> {
    let page_size = query.limit;
    let mut page = LogPage { events: Vec::new(), next: None, examined: 0, missing: 0 };
    for _ in 0..MAX_TAG_ROUNDS {
        query.limit = page_size - page.events.len();
        let read = source.logs(query.clone()).await?;
        page.examined += read.examined;
        page.missing += read.missing;
        page.events.extend(read.events.into_iter().filter(|e| e.tags.iter().any(|t| t == tag)));
        page.next = read.next;
        let Some(next) = &page.next else { break };
        if page.events.len() >= page_size || page.examined >= MAX_EXAMINED {
            break;
        }
        query.after = Some(next.clone());
        query.skip = 0;
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;
    use futures::future::BoxFuture;
    use tollgate_schemas::logs::{LogCursor, LogFilter};
    use tollgate_schemas::store::{DailyQuery, DailyTotals, SpendTotal};
    use tollgate_schemas::UsageEvent;
    use uuid::Uuid;

    /// A ledger of events in a fixed order, paged by index (the cursor's event id holds it).
    struct Ledger(Vec<UsageEvent>);

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 1, 1).unwrap_or_default()
    }

    impl SpendSource for Ledger {
        fn total(&self, _: &str, _: &str) -> BoxFuture<'_, Result<SpendTotal, StoreError>> {
            Box::pin(async { Ok(SpendTotal::default()) })
        }
        fn daily(&self, _: DailyQuery) -> BoxFuture<'_, Result<DailyTotals, StoreError>> {
            Box::pin(async { Ok(Vec::new()) })
        }
        fn logs(&self, q: LogQuery) -> BoxFuture<'_, Result<LogPage, StoreError>> {
            let from = match q.after {
                Some(LogCursor::Newest { event_id, .. }) => event_id.as_u128() as usize + 1,
                _ => 0,
            } + q.skip;
            let events: Vec<UsageEvent> = self.0.iter().skip(from).take(q.limit).cloned().collect();
            let end = from + events.len();
            let next = (end < self.0.len()).then(|| LogCursor::Newest {
                day: day(),
                slice: 0,
                event_id: Uuid::from_u128(end as u128 - 1),
            });
            let examined = events.len();
            Box::pin(async move { Ok(LogPage { events, next, examined, missing: 0 }) })
        }
    }

    fn ledger(n: usize, tagged_every: usize) -> Ledger {
        Ledger(
            (0..n)
                .map(|i| UsageEvent {
                    request_id: format!("r{i}"),
                    tags: if i % tagged_every == 0 { vec!["other".into(), "t".into()] } else { vec!["other".into()] },
                    ..UsageEvent::default()
                })
                .collect(),
        )
    }

    fn query(limit: usize) -> LogQuery {
        LogQuery { filter: LogFilter::default(), from: day(), to: day(), after: None, skip: 0, limit }
    }

    #[tokio::test]
    async fn following_the_cursor_yields_every_tagged_entry_once_and_no_other() {
        let source = ledger(100, 3);
        for size in [1, 4, 10, 50] {
            let mut q = query(size);
            let mut seen = Vec::new();
            loop {
                let page = tagged_page(&source, q.clone(), "t").await.unwrap();
                assert!(page.events.len() <= size);
                seen.extend(page.events.iter().map(|e| e.request_id.clone()));
                match page.next {
                    Some(next) => q.after = Some(next),
                    None => break,
                }
            }
            let want: Vec<String> = (0..100).step_by(3).map(|i| format!("r{i}")).collect();
            assert_eq!(seen, want, "page size {size}");
        }
        let none = tagged_page(&source, query(10), "absent").await.unwrap();
        assert!(none.events.is_empty() && none.next.is_none());
    }

    #[tokio::test]
    async fn a_rare_tag_gives_a_short_page_with_a_cursor_after_the_bounded_reads() {
        let source = ledger(10_000, 5_000);
        let page = tagged_page(&source, query(2), "t").await.unwrap();
        // The first entry is tagged; then 16 reads of at most one entry each.
        assert_eq!(page.events.len(), 1);
        assert!(page.examined <= MAX_TAG_ROUNDS * 2, "{}", page.examined);
        assert!(page.next.is_some());
    }
}
