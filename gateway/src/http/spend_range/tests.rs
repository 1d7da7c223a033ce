use super::*;
use crate::http::spend::daily_groups;
use chrono::NaiveDate;
use tollgate_schemas::store::sum_days;
use tollgate_schemas::NanoUsd;

fn q(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn field_of(e: GatewayError) -> String {
    match e {
        GatewayError::InvalidField { field, .. } => field.to_string(),
        e => panic!("not a field error: {e:?}"),
    }
}

#[test]
fn limit_and_offset_are_bounded_and_named_when_wrong() {
    assert_eq!(Page::of(&q(&[]), None).unwrap(), None, "the whole list without them");
    assert_eq!(Page::of(&q(&[]), Some(100)).unwrap(), Some(Page { offset: 0, limit: 100 }));
    assert_eq!(Page::of(&q(&[("limit", "1000")]), None).unwrap(), Some(Page { offset: 0, limit: 1000 }));
    assert_eq!(Page::of(&q(&[("limit", "1")]), Some(100)).unwrap(), Some(Page { offset: 0, limit: 1 }));
    assert_eq!(Page::of(&q(&[("offset", "5")]), None).unwrap(), Some(Page { offset: 5, limit: MAX_LIMIT }));
    assert_eq!(
        Page::of(&q(&[("offset", "1000000")]), None).unwrap(),
        Some(Page { offset: MAX_OFFSET, limit: MAX_LIMIT })
    );
    for (name, bad) in [
        ("limit", "0"),
        ("limit", "1001"),
        ("limit", "-1"),
        ("limit", "ten"),
        ("limit", ""),
        ("offset", "-1"),
        ("offset", "1000001"),
        ("offset", "1e3"),
        ("offset", "18446744073709551616"),
    ] {
        assert_eq!(field_of(Page::of(&q(&[(name, bad)]), Some(100)).unwrap_err()), name, "{name}={bad}");
    }
}

#[test]
fn sum_is_day_or_range_and_paging_needs_range() {
    assert!(!sums_range(&q(&[])).unwrap());
    assert!(!sums_range(&q(&[("sum", "day")])).unwrap());
    assert!(sums_range(&q(&[("sum", "range"), ("limit", "5"), ("offset", "5")])).unwrap());
    assert_eq!(field_of(sums_range(&q(&[("sum", "month")])).unwrap_err()), "sum");
    assert_eq!(field_of(sums_range(&q(&[("limit", "5")])).unwrap_err()), "limit");
    assert_eq!(field_of(sums_range(&q(&[("sum", "day"), ("offset", "0")])).unwrap_err()), "offset");
}

/// A month of daily rows: teams' and keys' rows and their per-model rows, several per day,
/// odd amounts, and one team with the same spend as another (ties ordered by name).
fn month() -> Vec<(String, NaiveDate, SpendTotal)> {
    let first = NaiveDate::from_ymd_opt(2026, 11, 7).unwrap();
    let mut rows = Vec::new();
    for day in 0..31u64 {
        let d = first + chrono::Days::new(day);
        for team in 0..23i64 {
            for model in 0..3i64 {
                let n = i64::try_from(day).unwrap() * 1_000 + team * 10 + model;
                let t = SpendTotal {
                    spent: NanoUsd(n * 1_234_567 + 999_999_937 * (team % 4)),
                    events: n % 13 + 1,
                    prompt_tokens: n % 97,
                    completion_tokens: n % 31,
                };
                rows.push((format!("team/t{team}/model/m{model}"), d, t));
                rows.push((format!("team/t{team}"), d, t));
                rows.push((format!("key/k{team}/model/m{model}"), d, t));
            }
        }
        let same = SpendTotal { spent: NanoUsd(5), events: 1, prompt_tokens: 1, completion_tokens: 1 };
        rows.push(("team/zz-tie/model/m0".to_owned(), d, same));
        rows.push(("team/aa-tie/model/m0".to_owned(), d, same));
    }
    rows
}

#[test]
fn a_groups_range_total_is_the_sum_of_its_day_results_to_the_nano_dollar() {
    let rows = month();
    let summed = sum_days(rows.clone());
    for (kind, by_id) in [("team", true), ("key", true), ("team", false)] {
        let groups = range_groups(summed.iter().map(|(s, t)| (s.as_str(), t)), kind, by_id);
        // What `/spend/daily` answers day by day, summed here per group.
        let mut expected: BTreeMap<&str, SpendTotal> = BTreeMap::new();
        for ((_, id, model), t) in daily_groups(&rows, kind, true) {
            merge(expected.entry(if by_id { id } else { model }).or_default(), &t);
        }
        assert_eq!(groups.len(), expected.len(), "{kind}");
        for (id, t) in &groups {
            assert_eq!(Some(t), expected.get(id), "{kind} {id}");
        }
        // Largest first; the tie by name.
        assert!(groups.windows(2).all(|w| w[0].1.spent >= w[1].1.spent));
    }
    let teams = range_groups(summed.iter().map(|(s, t)| (s.as_str(), t)), "team", true);
    let ties: Vec<&str> = teams.iter().map(|(id, _)| *id).filter(|id| id.ends_with("-tie")).collect();
    assert_eq!(ties, ["aa-tie", "zz-tie"]);
}

#[test]
fn pages_together_are_the_whole_list_and_totals_count_every_group() {
    let rows = month();
    let summed = sum_days(rows.clone());
    let groups = range_groups(summed.iter().map(|(s, t)| (s.as_str(), t)), "team", true);
    assert_eq!(groups.len(), 25);
    let whole = range_answer(&groups, "team_id", Page { offset: 0, limit: MAX_LIMIT });
    let mut paged = Vec::new();
    let mut offset = 0;
    loop {
        let answer = range_answer(&groups, "team_id", Page { offset, limit: 7 });
        assert_eq!(answer["totals"], whole["totals"], "every page states the totals of all groups");
        assert_eq!(answer["total_groups"], 25);
        let results = answer["results"].as_array().unwrap().clone();
        assert!(results.len() <= 7);
        offset += results.len();
        paged.extend(results);
        if !answer["has_more"].as_bool().unwrap() {
            break;
        }
    }
    assert_eq!(offset, 25);
    assert_eq!(&paged, whole["results"].as_array().unwrap());
    // The totals are the sum of the results, exactly; and the sum of every team's day rows.
    let of = |v: &Value, f: &str| v[f].as_i64().unwrap();
    for f in ["spend_nano_usd", "requests", "prompt_tokens", "completion_tokens"] {
        let results: i64 = paged.iter().map(|r| of(r, f)).sum();
        assert_eq!(results, of(&whole["totals"], f), "{f}");
    }
    let day_rows: i64 = rows
        .iter()
        .filter(|(s, _, _)| s.starts_with("team/") && s.contains("/model/"))
        .map(|(_, _, t)| t.spent.0)
        .sum();
    assert_eq!(of(&whole["totals"], "spend_nano_usd"), day_rows);
    // Past the end: no results, still the totals.
    let past = range_answer(&groups, "team_id", Page { offset: 1_000, limit: 10 });
    assert_eq!(past["results"], json!([]));
    assert_eq!(past["has_more"], json!(false));
    assert_eq!(past["totals"], whole["totals"]);
    assert_eq!(whole["results"][0]["team_id"], groups[0].0);
}
