//! The console bench's calls (`benches/console`): each call the console's pages make, as
//! `tollgate-console-bench measure` times it, and the pages a simulated console user clicks
//! through (`users`), with the calls each page makes now (`gateway/ui/src/pages/*.js`).

use crate::console_data::{self as data, Size};
use anyhow::{Context, Result};
use chrono::Datelike;

/// The console's calls (keys page: 20 whole keys a page). Those the pages make now are marked
/// with the page; the others are the wider reads they made before (31 days, every group), kept
/// for comparison with earlier results.
pub fn calls(keys: u64, today: chrono::NaiveDate) -> Vec<(&'static str, String)> {
    let first = today - chrono::Days::new(30);
    let month = today.with_day(1).unwrap_or(today);
    let fortnight = today - chrono::Days::new(13);
    let burn = today - chrono::Days::new(29);
    let k = keys / 2;
    let size = Size { keys, events: 0 };
    let team = data::team_of(k, size);
    let ten_teams = (0..10u64.min(size.teams())).map(|t| format!("team-{t}")).collect::<Vec<_>>().join(",");
    vec![
        (
            "/spend/daily by model, month to date (Overview)",
            format!("/spend/daily?start_date={month}&end_date={today}&group_by=model"),
        ),
        (
            "/global/spend/report by team, month to date, top 10 (Overview)",
            format!("/global/spend/report?start_date={month}&end_date={today}&group_by=team&limit=10"),
        ),
        ("/ledger/health (Overview)", "/ledger/health".into()),
        ("/team/list of ten teams (Overview)", format!("/team/list?ids={ten_teams}&size=10")),
        ("/key/list first page (20 whole keys)", "/key/list?page=1&size=20&return_full_object=true".into()),
        ("/key/list ids only, page 1 of 100", "/key/list?page=1&size=100".into()),
        ("/key/list page 500 of 20 (skips 9,980)", "/key/list?page=500&size=20&return_full_object=true".into()),
        ("/key/list search by alias", format!("/key/list?page=1&size=20&return_full_object=true&search=svc-{k}")),
        (
            "/key/list search by key prefix",
            format!("/key/list?page=1&size=20&return_full_object=true&search={}", &data::key_id(k)[..12]),
        ),
        ("/key/list team filter", format!("/key/list?page=1&size=20&return_full_object=true&team_id={team}")),
        (
            "/key/list user filter",
            format!("/key/list?page=1&size=20&return_full_object=true&user_id={}", data::user_of(k, size)),
        ),
        (
            "/key/list metadata filter",
            "/key/list?page=1&size=20&return_full_object=true&metadata=cost_center%3Dcc-42".into(),
        ),
        (
            "/key/list sort by spend within a team",
            format!("/key/list?page=1&size=20&return_full_object=true&team_id={team}&sort=spend&order=desc"),
        ),
        ("/key/info (Keys, details)", format!("/key/info?key={}", data::key_id(k))),
        (
            "/spend/daily by model, 14 days (Usage chart)",
            format!("/spend/daily?start_date={fortnight}&end_date={today}&group_by=model"),
        ),
        (
            "/spend/daily by model summed, 14 days, top 50 (Usage table)",
            format!("/spend/daily?start_date={fortnight}&end_date={today}&group_by=model&sum=range&offset=0&limit=50"),
        ),
        (
            "/spend/daily by team summed, 14 days, top 50 (Usage table by team)",
            format!("/spend/daily?start_date={fortnight}&end_date={today}&group_by=team&sum=range&offset=0&limit=50"),
        ),
        ("/team/info (a team's page)", format!("/team/info?team_id={team}")),
        (
            "/spend/daily one team, 30 days (a team's burn-down)",
            format!("/spend/daily?start_date={burn}&end_date={today}&group_by=team&team_id={team}"),
        ),
        (
            "/spend/logs first page (25), today (Logs)",
            format!("/spend/logs?start_date={today}&end_date={today}&page_size=25"),
        ),
        ("/model/info (Models)", "/model/info".into()),
        ("/model/health (Models)", "/model/health".into()),
        ("/spend/daily by model, 31 days", format!("/spend/daily?start_date={first}&end_date={today}&group_by=model")),
        ("/spend/daily by team, 31 days", format!("/spend/daily?start_date={first}&end_date={today}&group_by=team")),
        (
            "/spend/daily by team summed, 31 days, 1,000 from 0 (Usage CSV)",
            format!("/spend/daily?start_date={first}&end_date={today}&group_by=team&sum=range&offset=0&limit=1000"),
        ),
        (
            "/spend/daily by key summed, today, top 50 (Usage table by key, today)",
            format!("/spend/daily?start_date={today}&end_date={today}&group_by=key&sum=range&offset=0&limit=50"),
        ),
        (
            "/spend/daily by key summed, 14 days, top 50 (Usage table by key)",
            format!("/spend/daily?start_date={fortnight}&end_date={today}&group_by=key&sum=range&offset=0&limit=50"),
        ),
        (
            "/spend/daily by key, today, every key's day rows (no page asks for it)",
            format!("/spend/daily?start_date={today}&end_date={today}&group_by=key"),
        ),
        (
            "/global/spend/report by team, 31 days",
            format!("/global/spend/report?start_date={first}&end_date={today}&group_by=team"),
        ),
        (
            "/spend/logs first page (25), 31 days",
            format!("/spend/logs?start_date={first}&end_date={today}&page_size=25"),
        ),
        ("/team/list first page (20) (Teams)", "/team/list?page=1&size=20".into()),
        ("/team/list, every team (no page asks for it)", "/team/list".into()),
    ]
}

/// A page as a console user opens it: its steps in turn, each step's calls at once (a step
/// waits for the one before, as the page awaits an answer before its next call).
pub type Page = Vec<Vec<String>>;

/// The pages a console user clicks through, with the calls each makes now
/// (`gateway/ui/src/pages/*.js`): the Overview (this month by model, the report's top ten teams,
/// the ledger's health, then those teams' budgets), the Keys page (its first page, then
/// another page, a search, a filter or a sort at each click) and a key's details, the Usage
/// page (its default 14 days by model, then the range summed by model, 50 groups a page; and
/// once grouped by team), a team's page (its record, then its burn-down), the Logs page
/// (today's first page), the Models page and the Teams page (its first 20 teams). Labels of
/// `calls`.
const PAGES: &[&[&[&str]]] = &[
    &[
        &[
            "/spend/daily by model, month to date (Overview)",
            "/global/spend/report by team, month to date, top 10 (Overview)",
            "/ledger/health (Overview)",
        ],
        &["/team/list of ten teams (Overview)"],
    ],
    &[&["/key/list first page (20 whole keys)"]],
    &[&["/key/list page 500 of 20 (skips 9,980)"]],
    &[&["/key/list search by alias"]],
    &[&["/key/list search by key prefix"]],
    &[&["/key/list team filter"]],
    &[&["/key/list user filter"]],
    &[&["/key/list metadata filter"]],
    &[&["/key/list sort by spend within a team"]],
    &[&["/key/info (Keys, details)"]],
    &[
        &["/spend/daily by model, 14 days (Usage chart)"],
        &["/spend/daily by model summed, 14 days, top 50 (Usage table)"],
    ],
    &[
        &["/spend/daily by model, 14 days (Usage chart)"],
        &["/spend/daily by team summed, 14 days, top 50 (Usage table by team)"],
    ],
    &[&["/team/info (a team's page)"], &["/spend/daily one team, 30 days (a team's burn-down)"]],
    &[&["/spend/logs first page (25), today (Logs)"]],
    &[&["/model/info (Models)", "/model/health (Models)"]],
    &[&["/team/list first page (20) (Teams)"]],
];

/// `PAGES` with each label's path from `all`; an error names a label `calls` does not have.
pub fn pages(all: &[(&'static str, String)]) -> Result<Vec<Page>> {
    let path = |label: &str| {
        all.iter().find(|(w, _)| *w == label).map(|(_, p)| p.clone()).with_context(|| format!("no call {label}"))
    };
    PAGES.iter().map(|steps| steps.iter().map(|calls| calls.iter().map(|l| path(l)).collect()).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_call_is_a_timed_call() {
        let today = chrono::NaiveDate::from_ymd_opt(2026, 12, 7).unwrap();
        let all = calls(1_000_000, today);
        let pages = pages(&all).unwrap();
        assert_eq!(pages.len(), PAGES.len());
        assert!(pages.iter().all(|p| !p.is_empty() && p.iter().all(|step| !step.is_empty())));
        // The Overview reads this month, from its first day.
        assert!(pages[0][0][0].contains("start_date=2026-12-01&end_date=2026-12-07"), "{}", pages[0][0][0]);
    }

    #[test]
    fn a_missing_label_is_an_error() {
        let today = chrono::NaiveDate::from_ymd_opt(2026, 12, 7).unwrap();
        let mut all = calls(1_000, today);
        all.retain(|(w, _)| !w.contains("(Logs)"));
        assert!(pages(&all).unwrap_err().to_string().contains("(Logs)"));
    }
}
