use super::*;
use chrono::{Duration, TimeZone, Utc};

fn key(n: i64, team: &str) -> KeyRecord {
    let mut metadata = serde_json::Map::new();
    metadata.insert("env".into(), serde_json::json!(if n % 2 == 0 { "prod" } else { "dev" }));
    metadata.insert("tier".into(), serde_json::json!(n % 3));
    metadata.insert("nested".into(), serde_json::json!({"env": "prod"}));
    KeyRecord {
        key_id: format!("{n:064x}"),
        key_name: format!("sk-...{n:04}"),
        key_alias: Some(format!("Alias-{n}")),
        team_id: Some(team.to_owned()),
        user_id: Some(format!("user-{}", n % 5)),
        created_at: Some(Utc.timestamp_opt(1_700_000_000 + n, 0).single().unwrap_or_default()),
        metadata,
        ..KeyRecord::default()
    }
}

fn index_of(n: i64) -> Arc<KeyIndex> {
    let (index, _) = KeyIndex::new();
    for i in 0..n {
        let k = key(i, if i % 4 == 0 { "team-a" } else { "team-b" });
        index.apply(&k.key_id.clone(), Some(&k));
    }
    index
}

fn ids(p: &Page) -> Vec<String> {
    p.keys.iter().map(|(_, at)| at.key_id.to_string()).collect()
}

#[test]
fn pages_follow_creation_order_and_the_cursor_continues_them() {
    let index = index_of(25);
    let all = KeyFilter::default();
    let first = index.page(&all, &Start::Offset(0), 10, false);
    assert_eq!((first.keys.len(), first.total), (10, 25));
    assert_eq!(ids(&first)[0], format!("{:064x}", 0));
    let next = first.next.clone().unwrap();
    let second = index.page(&all, &Start::After(next), 10, false);
    assert_eq!(ids(&second)[0], format!("{:064x}", 10));
    let third = index.page(&all, &Start::After(second.next.clone().unwrap()), 10, false);
    assert_eq!((third.keys.len(), third.next.is_none()), (5, true));
    let by_offset = index.page(&all, &Start::Offset(10), 10, false);
    assert_eq!(ids(&by_offset), ids(&second));
    let newest = index.page(&all, &Start::Offset(0), 3, true);
    assert_eq!(ids(&newest)[0], format!("{:064x}", 24));
    let older = index.page(&all, &Start::After(newest.next.unwrap()), 3, true);
    assert_eq!(ids(&older)[0], format!("{:064x}", 21));
}

#[test]
fn filters_pick_by_team_user_alias_metadata_and_search() {
    let index = index_of(40);
    let count = |f: KeyFilter| index.page(&f, &Start::Offset(0), 1000, false).total;
    assert_eq!(count(KeyFilter { team_id: Some("team-a".into()), ..KeyFilter::default() }), 10);
    assert_eq!(count(KeyFilter { user_id: Some("user-3".into()), ..KeyFilter::default() }), 8);
    assert_eq!(count(KeyFilter { key_alias: Some("Alias-7".into()), ..KeyFilter::default() }), 1);
    assert_eq!(count(KeyFilter { metadata: Some(("env".into(), "prod".into())), ..KeyFilter::default() }), 20);
    // Numbers are compared as JSON writes them; nested objects are not searched.
    assert_eq!(count(KeyFilter { metadata: Some(("tier".into(), "2".into())), ..KeyFilter::default() }), 13);
    assert_eq!(count(KeyFilter { metadata: Some(("nested".into(), "prod".into())), ..KeyFilter::default() }), 0);
    // Search: part of the alias in any case, the start of the token, the start of the shown name.
    assert_eq!(count(KeyFilter { search: Some("alias-3".into()), ..KeyFilter::default() }), 11);
    assert_eq!(count(KeyFilter { search: Some(format!("{:063x}", 0)), ..KeyFilter::default() }), 16);
    assert_eq!(count(KeyFilter { search: Some("sk-...003".into()), ..KeyFilter::default() }), 10);
    let both = KeyFilter {
        team_id: Some("team-a".into()),
        metadata: Some(("env".into(), "prod".into())),
        ..KeyFilter::default()
    };
    assert_eq!(count(both), 10);
    // A user's reach: its own keys or its teams' keys (8 + 10, 2 of them both), within the
    // other filters.
    let reach = |teams: &[&str]| {
        Some(KeyReach { user_id: "user-3".into(), teams: teams.iter().map(|t| (*t).to_owned()).collect() })
    };
    assert_eq!(count(KeyFilter { reach: reach(&["team-a"]), ..KeyFilter::default() }), 16);
    assert_eq!(count(KeyFilter { reach: reach(&[]), ..KeyFilter::default() }), 8);
    let outside = KeyFilter { team_id: Some("team-b".into()), reach: reach(&["team-a"]), ..KeyFilter::default() };
    assert_eq!(count(outside), 6, "team-b's keys of user-3 only");
}

#[test]
fn filtered_pages_by_offset_and_cursor_agree_both_ways() {
    let index = index_of(40);
    let team_b = KeyFilter { team_id: Some("team-b".into()), ..KeyFilter::default() };
    for descending in [false, true] {
        let whole = index.page(&team_b, &Start::Offset(0), 100, descending);
        assert_eq!((whole.keys.len(), whole.total, whole.next.is_none()), (30, 30, true));
        let mut by_cursor = Vec::new();
        let mut start = Start::Offset(0);
        loop {
            let p = index.page(&team_b, &start, 7, descending);
            assert_eq!(p.total, 30);
            by_cursor.extend(ids(&p));
            match p.next {
                Some(at) => start = Start::After(at),
                None => break,
            }
        }
        assert_eq!(by_cursor, ids(&whole));
        let third = index.page(&team_b, &Start::Offset(14), 7, descending);
        assert_eq!(ids(&third), ids(&whole)[14..21]);
    }
}

#[test]
fn search_ignores_case_without_ascii_and_with_it() {
    let (index, _) = KeyIndex::new();
    let k = KeyRecord { key_alias: Some("Ünïcode-Svc".into()), ..key(1, "Team-Ä") };
    index.apply(&k.key_id.clone(), Some(&k));
    for s in ["ünïcode", "SVC", "team-ä", "SK-...0001"] {
        let f = KeyFilter { search: Some(s.into()), ..KeyFilter::default() };
        assert_eq!(index.page(&f, &Start::Offset(0), 10, false).total, 1, "{s}");
    }
    let f = KeyFilter { search: Some("...0001".into()), ..KeyFilter::default() };
    assert_eq!(index.page(&f, &Start::Offset(0), 10, false).total, 0, "the shown name is matched from its start");
}

#[test]
fn a_change_moves_a_key_and_a_deletion_removes_it() {
    let index = index_of(5);
    let mut k = key(2, "team-a");
    k.team_id = Some("team-z".into());
    k.created_at = k.created_at.map(|t| t + Duration::days(1));
    index.apply(&k.key_id.clone(), Some(&k));
    assert_eq!(index.len(), 5);
    let page = index.page(&KeyFilter::default(), &Start::Offset(0), 10, false);
    assert_eq!(ids(&page)[4], k.key_id);
    let team_z = KeyFilter { team_id: Some("team-z".into()), ..KeyFilter::default() };
    assert_eq!(index.page(&team_z, &Start::Offset(0), 10, false).total, 1);
    index.apply(&k.key_id, None);
    assert_eq!((index.len(), index.page(&team_z, &Start::Offset(0), 10, false).total), (4, 0));
}

#[test]
fn a_rehashed_key_is_found_where_it_is_stored() {
    let (index, _) = KeyIndex::new();
    let k = KeyRecord { stored_id: Some("ab".repeat(32)), ..key(1, "t") };
    index.apply(&"ab".repeat(32), Some(&k));
    let page = index.page(&KeyFilter::default(), &Start::Offset(0), 10, false);
    assert_eq!(page.keys[0].0, "ab".repeat(32));
    assert_eq!(&*page.keys[0].1.key_id, k.key_id.as_str());
}

#[test]
fn a_key_moved_to_its_lookup_hash_stays_listed_once_whatever_order_the_notices_come_in() {
    let legacy = key(1, "t");
    let lookup_id = "cd".repeat(32);
    let moved = KeyRecord { stored_id: Some(lookup_id.clone()), ..legacy.clone() };
    for new_first in [true, false] {
        let (index, _) = KeyIndex::new();
        index.apply(&legacy.key_id, Some(&legacy));
        if new_first {
            index.apply(&lookup_id, Some(&moved));
            index.apply(&legacy.key_id, None);
        } else {
            index.apply(&legacy.key_id, None);
            index.apply(&lookup_id, Some(&moved));
        }
        let page = index.page(&KeyFilter::default(), &Start::Offset(0), 10, false);
        assert_eq!(page.keys.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), [lookup_id.as_str()]);
        assert_eq!(index.len(), 1);
        index.apply(&lookup_id, None);
        assert_eq!(index.len(), 0);
    }
}

#[test]
fn matching_is_bounded_and_says_how_many_match_beyond() {
    let index = index_of(30);
    let team_a = KeyFilter { team_id: Some("team-a".into()), ..KeyFilter::default() };
    assert_eq!(index.matching(&team_a, 8).map(|v| v.len()), Ok(8));
    assert_eq!(index.matching(&KeyFilter::default(), 10), Err(30));
}

#[test]
fn matching_carries_each_keys_budget_and_window_as_last_stored() {
    let index = index_of(4);
    let mut k = key(1, "team-b");
    k.limits.max_budget = Some(NanoUsd(7_000_000_001));
    k.limits.budget_duration = Some(BudgetDuration::Months(1));
    index.apply(&k.key_id.clone(), Some(&k));
    let team_b = KeyFilter { team_id: Some("team-b".into()), ..KeyFilter::default() };
    let found = index.matching(&team_b, 10).unwrap();
    assert_eq!(
        found.iter().map(|b| b.stored.clone()).collect::<Vec<_>>(),
        [key(1, "").key_id, key(2, "").key_id, key(3, "").key_id]
    );
    assert_eq!(
        (found[0].max_budget, found[0].budget_duration),
        (Some(NanoUsd(7_000_000_001)), Some(BudgetDuration::Months(1)))
    );
    assert_eq!(found[0].at.key_id.as_ref(), k.key_id);
    assert_eq!((found[1].max_budget, found[1].budget_duration), (None, None));
    // A budget taken off is taken off the index too.
    k.limits = tollgate_schemas::tenancy::Limits::default();
    index.apply(&k.key_id.clone(), Some(&k));
    assert_eq!(index.matching(&team_b, 10).unwrap()[0].max_budget, None);
}

#[test]
fn cursors_read_back_and_hostile_ones_are_not_positions() {
    let at = Position { created_us: -5, key_id: Arc::from("abc123") };
    assert_eq!(Position::parse(&at.cursor()), Some(at));
    for bad in ["", ".", "12", "x.abc", "1.", "1.abc/../x", "1.a b", &format!("1.{}", "a".repeat(129))] {
        assert_eq!(Position::parse(bad), None, "{bad}");
    }
}

#[test]
fn an_overflow_of_changes_is_noticed() {
    let (index, _changes) = KeyIndex::new();
    for i in 0..=crate::tenancy::mirror::PENDING_CHANGES {
        index.changed(&i.to_string());
    }
    assert!(index.feed.overflowed.load(std::sync::atomic::Ordering::Acquire));
}

/// Every key `filter` picks, paged through by cursor `size` at a time; each page must count
/// `total` keys in all.
fn by_cursor(index: &KeyIndex, filter: &KeyFilter, size: usize, descending: bool, total: usize) -> Vec<String> {
    let mut found = Vec::new();
    let mut start = Start::Offset(0);
    loop {
        let p = index.page(filter, &start, size, descending);
        assert_eq!(p.total, total, "{filter:?}");
        found.extend(ids(&p));
        match p.next {
            Some(at) => start = Start::After(at),
            None => return found,
        }
    }
}

/// Every key matching `filter`, found by testing every key (what the sets a walk uses must agree
/// with), oldest first.
fn every_match(index: &KeyIndex, filter: &KeyFilter) -> Vec<String> {
    let keys = index.keys.read().unwrap();
    let search = filter.search.as_deref().map(|s| Search::new(&keys, s));
    keys.ordered
        .iter()
        .filter(|(at, e)| filter.matches(at, e, search.as_ref()))
        .map(|(at, _)| at.key_id.to_string())
        .collect()
}

#[test]
fn the_sets_a_filter_walks_follow_changes_moves_and_deletions() {
    let index = index_of(60);
    // Changes: keys move team, user and metadata; some are deleted; one is moved to another
    // stored id (rehashed) under the same place.
    for n in (0..60).step_by(7) {
        let mut k = key(n, "team-c");
        k.user_id = Some("user-9".into());
        k.metadata.insert("env".into(), serde_json::json!("staging"));
        index.apply(&k.key_id.clone(), Some(&k));
    }
    for n in (3..60).step_by(11) {
        index.apply(&key(n, "").key_id, None);
    }
    let moved = KeyRecord { stored_id: Some("ef".repeat(32)), ..key(5, "team-b") };
    index.apply(&"ef".repeat(32), Some(&moved));
    index.apply(&key(5, "").key_id, None);
    let reach = |user: &str, teams: &[&str]| {
        Some(KeyReach { user_id: user.into(), teams: teams.iter().map(|t| (*t).to_owned()).collect() })
    };
    let filters = [
        KeyFilter { team_id: Some("team-a".into()), ..KeyFilter::default() },
        KeyFilter { team_id: Some("team-c".into()), ..KeyFilter::default() },
        KeyFilter { team_id: Some("team-none".into()), ..KeyFilter::default() },
        KeyFilter { user_id: Some("user-9".into()), ..KeyFilter::default() },
        KeyFilter { user_id: Some("user-2".into()), blocked: Some(false), ..KeyFilter::default() },
        KeyFilter { metadata: Some(("env".into(), "staging".into())), ..KeyFilter::default() },
        KeyFilter {
            metadata: Some(("env".into(), "prod".into())),
            team_id: Some("team-b".into()),
            ..KeyFilter::default()
        },
        KeyFilter { reach: reach("user-9", &["team-a"]), ..KeyFilter::default() },
        KeyFilter {
            reach: reach("user-1", &["team-c", "team-a"]),
            search: Some("alias-1".into()),
            ..KeyFilter::default()
        },
        KeyFilter { search: Some("ALIAS-5".into()), ..KeyFilter::default() },
        KeyFilter { search: Some("team-c".into()), ..KeyFilter::default() },
    ];
    for filter in &filters {
        let expected = every_match(&index, filter);
        for descending in [false, true] {
            let whole = index.page(filter, &Start::Offset(0), 1000, descending);
            let mut want = expected.clone();
            if descending {
                want.reverse();
            }
            assert_eq!(ids(&whole), want, "{filter:?} descending {descending}");
            assert_eq!(whole.total, want.len(), "{filter:?}");
            // Paged by cursor, the same keys; by offset, the same slice.
            let by_cursor = by_cursor(&index, filter, 4, descending, want.len());
            assert_eq!(by_cursor, want, "{filter:?} by cursor, descending {descending}");
            let skipped = index.page(filter, &Start::Offset(3), 2, descending);
            assert_eq!(ids(&skipped), want.iter().skip(3).take(2).cloned().collect::<Vec<_>>());
        }
        let matched = index.matching(filter, 1000).unwrap();
        assert_eq!(matched.iter().map(|b| b.at.key_id.to_string()).collect::<Vec<_>>(), expected);
    }
    // The moved key is listed once, where it is stored now, under its team.
    let team_b = KeyFilter { team_id: Some("team-b".into()), ..KeyFilter::default() };
    let stored: Vec<String> =
        index.page(&team_b, &Start::Offset(0), 1000, false).keys.into_iter().map(|(s, _)| s).collect();
    assert_eq!(stored.iter().filter(|s| **s == "ef".repeat(32)).count(), 1);
    assert!(!stored.contains(&key(5, "").key_id));
    // Sets emptied by changes are dropped, not left behind.
    let keys = index.keys.read().unwrap();
    assert!(matches!(keys.by_user.get(&Arc::from("user-0")), Walk::Set(_)));
    drop(keys);
    for n in 0..60 {
        index.apply(&key(n, "").key_id, None);
    }
    index.apply(&"ef".repeat(32), None);
    let keys = index.keys.read().unwrap();
    assert_eq!((keys.ordered.len(), keys.by_team.len(), keys.by_user.len(), keys.by_metadata.len()), (0, 0, 0, 0));
}

/// What a search finds, by its definition: part of the alias or team in any case, or the
/// start of the token or of the shown name.
fn found_by_definition(k: &KeyRecord, search: &str) -> bool {
    let s = search.to_lowercase();
    let within = |v: &Option<String>| v.as_ref().is_some_and(|v| v.to_lowercase().contains(&s));
    within(&k.key_alias)
        || within(&k.team_id)
        || k.key_id.starts_with(&s)
        || k.key_name.get(..s.len()).is_some_and(|head| head.to_lowercase() == s)
}

#[test]
fn a_search_finds_what_its_definition_says_and_nothing_else() {
    let (index, _) = KeyIndex::new();
    let mut records = Vec::new();
    // Aliases held in the entry and one longer than that.
    let aliases = [
        Some("Billing-Svc"),
        Some("ünï-Cödé"),
        None,
        Some("x"),
        Some("sk-...ab"),
        Some("A-Very-Long-Service-Alias-Ünïcode"),
    ];
    let teams = [Some("Team-Ä"), Some("ops"), None, Some("ABCDEF")];
    let names = ["sk-...ab12", "SK-...CD34", "s", "sk-"];
    for n in 0..80_usize {
        let mut k = key(n as i64, "");
        k.key_id = match n % 4 {
            0 => format!("{:x}", n * 7919),       // short tokens
            1 => format!("{:064x}", n * 104_729), // whole ones
            2 => format!("abc{n}"),
            _ => format!("ABC{n:x}"),
        };
        k.key_alias = aliases[n % aliases.len()].map(str::to_owned);
        k.team_id = teams[n % teams.len()].map(str::to_owned);
        k.key_name = names[n % names.len()].to_owned();
        index.apply(&k.key_id.clone(), Some(&k));
        records.push(k);
    }
    let searches = [
        "a",
        "ab",
        "abc",
        "ABC1",
        "abc12345678",
        "sk-...",
        "SK-...AB1",
        "sk-...ab12x",
        "svc",
        "ünï",
        "CÖDÉ",
        "team-ä",
        "ops",
        "def",
        "0",
        "00000000000",
        "x",
        "-",
        "s",
        "zzz",
        "é",
    ];
    for search in searches {
        let mut want: Vec<(Position, String)> = records
            .iter()
            .filter(|k| found_by_definition(k, search))
            .map(|k| {
                let at = Position {
                    created_us: k.created_at.map_or(i64::MIN, |t| t.timestamp_micros()),
                    key_id: Arc::from(k.key_id.as_str()),
                };
                (at, k.key_id.clone())
            })
            .collect();
        want.sort();
        let f = KeyFilter { search: Some(search.into()), ..KeyFilter::default() };
        let got = index.page(&f, &Start::Offset(0), 1000, false);
        assert_eq!(ids(&got), want.into_iter().map(|(_, id)| id).collect::<Vec<_>>(), "{search:?}");
    }
}

#[test]
fn a_search_after_many_changes_finds_what_its_definition_says_both_ways_and_paged() {
    let (index, _) = KeyIndex::new();
    // What is stored now, by stored id: the definition is tested against it.
    let mut stored: BTreeMap<String, KeyRecord> = BTreeMap::new();
    let aliases = [None, Some("Billing-Svc"), Some("svc-ÄB"), Some("ab"), Some(""), Some("Ops-Ünï-Long-Alias-Name")];
    let names = ["sk-...ab12", "Sk-...Äb", "svc"];
    // A fixed sequence of changes, from a small generator of our own.
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = |bound: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % bound
    };
    let mut pushed = 0_usize;
    let searches = [
        "svc",
        "AB",
        "ä",
        "00000000000000000000000000000000000000000000000000000000000001",
        "sk-...",
        "sk-...ab1",
        "team-1",
        "-",
        "zzz",
    ];
    for round in 0..8 {
        for _ in 0..400 {
            let n = next(150);
            let id = format!("{n:064x}");
            let moved_id = format!("{:064x}", n + 1_000_000);
            let current = stored.iter().find(|(_, k)| k.key_id == id).map(|(s, _)| s.clone());
            match next(10) {
                // Removed.
                0 | 1 => {
                    if let Some(s) = current {
                        stored.remove(&s);
                        index.apply(&s, None);
                    }
                }
                // Moved to another stored id, under the same place.
                2 => {
                    if let Some(s) = current.filter(|s| *s == id) {
                        let Some(mut k) = stored.remove(&s) else { continue };
                        k.stored_id = Some(moved_id.clone());
                        index.apply(&moved_id, Some(&k));
                        index.apply(&s, None);
                        stored.insert(moved_id, k);
                        pushed += 1;
                    }
                }
                // Put or changed: alias, name, team, blocked and sometimes its place.
                _ => {
                    let mut k = key(n as i64, &format!("team-{}", next(4)));
                    k.key_id = id.clone();
                    k.key_alias = aliases[next(aliases.len() as u64) as usize].map(str::to_owned);
                    k.key_name = names[next(names.len() as u64) as usize].to_owned();
                    k.blocked = next(3) == 0;
                    if next(5) == 0 {
                        k.created_at = Some(Utc.timestamp_opt(1_600_000_000 + next(1000) as i64, 0).unwrap());
                    }
                    let s = current.unwrap_or(id);
                    if s != k.key_id {
                        k.stored_id = Some(s.clone());
                    }
                    index.apply(&s, Some(&k));
                    stored.insert(s, k);
                    pushed += 1;
                }
            }
        }
        let place = |k: &KeyRecord| Position {
            created_us: k.created_at.map_or(i64::MIN, |t| t.timestamp_micros()),
            key_id: Arc::from(k.key_id.as_str()),
        };
        for search in searches {
            let filters = [
                KeyFilter { search: Some(search.into()), ..KeyFilter::default() },
                KeyFilter { search: Some(search.into()), blocked: Some(false), ..KeyFilter::default() },
                KeyFilter { search: Some(search.into()), team_id: Some("team-2".into()), ..KeyFilter::default() },
            ];
            for filter in &filters {
                let mut want: Vec<Position> = stored
                    .values()
                    .filter(|k| found_by_definition(k, search))
                    .filter(|k| filter.blocked.is_none_or(|b| b == k.blocked))
                    .filter(|k| filter.team_id.is_none() || k.team_id == filter.team_id)
                    .map(place)
                    .collect();
                want.sort();
                let mut want: Vec<String> = want.into_iter().map(|at| at.key_id.to_string()).collect();
                for descending in [false, true] {
                    if descending {
                        want.reverse();
                    }
                    let whole = index.page(filter, &Start::Offset(0), 1000, descending);
                    assert_eq!(ids(&whole), want, "round {round}, {filter:?}, descending {descending}");
                    assert_eq!(whole.total, want.len());
                    let by_cursor = by_cursor(&index, filter, 7, descending, want.len());
                    assert_eq!(by_cursor, want, "round {round}, {filter:?} by cursor, descending {descending}");
                    let skipped = index.page(filter, &Start::Offset(5), 3, descending);
                    assert_eq!(ids(&skipped), want.iter().skip(5).take(3).cloned().collect::<Vec<_>>());
                }
                want.reverse();
                let matched = index.matching(filter, 1000).unwrap();
                assert_eq!(matched.iter().map(|b| b.at.key_id.to_string()).collect::<Vec<_>>(), want);
            }
        }
        // The column was rebuilt on the way: it holds far fewer slots than were ever put.
        let keys = index.keys.read().unwrap();
        assert_eq!(keys.ordered.len(), stored.len());
        assert!(keys.column.len() < pushed, "{} slots for {pushed} puts", keys.column.len());
        assert!(keys.column.len() <= keys.ordered.len() * 4 / 3 + 1);
    }
}
