use super::*;
use serde_json::json;

fn team(id: &str, alias: &str, org: Option<&str>, members: &[(&str, &str)]) -> String {
    let members: Vec<_> = members.iter().map(|(u, r)| json!({"user_id": u, "role": r})).collect();
    json!({"team_id": id, "team_alias": alias, "organization_id": org, "members": members}).to_string()
}

fn user(id: &str, alias: Option<&str>, email: Option<&str>) -> String {
    json!({"user_id": id, "user_alias": alias, "user_email": email}).to_string()
}

fn loaded() -> Arc<Directory> {
    let (d, _) = Directory::new();
    d.feed.ready.store(true, std::sync::atomic::Ordering::Release);
    d
}

fn walk_by_cursor(d: &Directory, kind: Kind, filter: &Filter, size: usize) -> Vec<String> {
    let mut seen = Vec::new();
    let mut start = Start::Offset(0);
    loop {
        let page = d.page(kind, filter, &start, size);
        assert!(page.ids.len() <= size);
        seen.extend(page.ids.iter().cloned());
        match page.next {
            Some(after) => start = Start::After(after),
            None => return seen,
        }
    }
}

#[test]
fn pages_walk_every_record_once_in_id_order_by_offset_and_by_cursor() {
    let d = loaded();
    let ids: Vec<String> = (0..53).map(|i| format!("u{i:03}")).collect();
    for id in ids.iter().rev() {
        d.apply(Kind::User, id, Some(&user(id, None, None)));
    }
    for size in [1, 7, 10, 53, 100] {
        assert_eq!(walk_by_cursor(&d, Kind::User, &Filter::default(), size), ids, "size {size}");
        let mut by_offset = Vec::new();
        for n in 0..ids.len().div_ceil(size) {
            let page = d.page(Kind::User, &Filter::default(), &Start::Offset(n * size), size);
            assert_eq!(page.total, 53);
            by_offset.extend(page.ids);
        }
        assert_eq!(by_offset, ids, "size {size}");
    }
    // Filtered walks page the same way.
    let filter = Filter { search: Some("U01".into()), ..Filter::default() };
    // (u010 to u019: no other id holds "u01")
    let want: Vec<String> = (10..20).map(|i| format!("u{i:03}")).collect();
    assert_eq!(walk_by_cursor(&d, Kind::User, &filter, 3), want);
    assert_eq!(d.page(Kind::User, &filter, &Start::Offset(0), 3).total, 10);
    // Other kinds are apart.
    assert_eq!(d.page(Kind::Team, &Filter::default(), &Start::Offset(0), 10), Page::default());
}

#[test]
fn named_ids_page_in_id_order_and_unknown_ones_are_left_out() {
    let d = loaded();
    for i in 0..20 {
        let id = format!("u{i:02}");
        d.apply(Kind::User, &id, Some(&user(&id, None, Some(&format!("{id}@example.com")))));
    }
    let named: BTreeSet<String> = ["u15", "u03", "nobody", "u07", "u11"].map(str::to_owned).into();
    let filter = Filter { within: Some(named), ..Filter::default() };
    assert_eq!(walk_by_cursor(&d, Kind::User, &filter, 2), ["u03", "u07", "u11", "u15"]);
    let page = d.page(Kind::User, &filter, &Start::Offset(1), 2);
    assert_eq!(
        (page.ids.as_slice(), page.total, page.next.as_deref()),
        (&["u07".to_owned(), "u11".to_owned()][..], 4, Some("u11"))
    );
    // With the other filters still applied.
    let narrowed = Filter { search: Some("U1".into()), ..filter };
    assert_eq!(walk_by_cursor(&d, Kind::User, &narrowed, 10), ["u11", "u15"]);
}

#[test]
fn search_finds_part_of_an_id_alias_or_email_in_any_case() {
    let d = loaded();
    d.apply(Kind::User, "ann", Some(&user("ann", Some("Ann Lee"), Some("ann@example.com"))));
    d.apply(Kind::User, "bob", Some(&user("bob", Some("Robert"), Some("Bob@Example.com"))));
    d.apply(Kind::User, "Émile", Some(&user("Émile", None, None)));
    let found = |s: &str| {
        d.page(Kind::User, &Filter { search: Some(s.into()), ..Filter::default() }, &Start::Offset(0), 10).ids
    };
    assert_eq!(found("AN"), ["ann"]);
    assert_eq!(found("rob"), ["bob"]);
    assert_eq!(found("bob@"), ["bob"]);
    assert_eq!(found("LEE"), ["ann"]);
    assert_eq!(found("example.COM"), ["ann", "bob"]);
    assert_eq!(found("zed"), Vec::<String>::new());
    assert_eq!(found("émi"), ["Émile"]);
}

#[test]
fn memberships_follow_every_change_of_a_team() {
    let d = loaded();
    d.apply(Kind::Team, "t1", Some(&team("t1", "One", Some("o1"), &[("ann", "admin"), ("bob", "user")])));
    d.apply(Kind::Team, "t2", Some(&team("t2", "Two", None, &[("ann", "user")])));
    let teams = |u: &str| d.teams_of(u).unwrap_or_default().into_iter().collect::<Vec<_>>();
    assert_eq!(teams("ann"), [("t1".to_owned(), true), ("t2".to_owned(), false)]);
    assert_eq!(teams("bob"), [("t1".to_owned(), false)]);
    // Bob removed, Ann demoted; then t2 deleted.
    d.apply(Kind::Team, "t1", Some(&team("t1", "One", Some("o1"), &[("ann", "user")])));
    assert_eq!(teams("bob"), []);
    assert_eq!(teams("ann"), [("t1".to_owned(), false), ("t2".to_owned(), false)]);
    d.apply(Kind::Team, "t2", None);
    assert_eq!(teams("ann"), [("t1".to_owned(), false)]);
    // Teams of a user, users of a team, teams of an organization.
    let of = |kind, f: Filter| d.page(kind, &f, &Start::Offset(0), 10).ids;
    assert_eq!(of(Kind::Team, Filter { user_id: Some("ann".into()), ..Filter::default() }), ["t1"]);
    assert_eq!(of(Kind::Team, Filter { organization_id: Some("o1".into()), ..Filter::default() }), ["t1"]);
    d.apply(Kind::User, "ann", Some(&user("ann", None, None)));
    d.apply(Kind::User, "bob", Some(&user("bob", None, None)));
    assert_eq!(of(Kind::User, Filter { team_id: Some("t1".into()), ..Filter::default() }), ["ann"]);
    assert!(of(Kind::User, Filter { team_id: Some("nope".into()), ..Filter::default() }).is_empty());
    let within = Filter { within: Some(["bob".to_owned()].into()), ..Filter::default() };
    assert_eq!(of(Kind::User, within), ["bob"]);
}

#[test]
fn a_record_under_another_id_or_not_decodable_is_not_listed() {
    let d = loaded();
    d.apply(Kind::User, "x", Some(&user("y", None, None)));
    d.apply(Kind::User, "z", Some("not json"));
    assert_eq!(d.page(Kind::User, &Filter::default(), &Start::Offset(0), 10).total, 0);
    d.apply(Kind::Customer, "c1", Some(&json!({"user_id": "c1", "team_id": "t1"}).to_string()));
    d.apply(Kind::Customer, "c2", Some(&json!({"user_id": "c2"}).to_string()));
    let f = Filter { team_id: Some("t1".into()), ..Filter::default() };
    assert_eq!(d.page(Kind::Customer, &f, &Start::Offset(0), 10).ids, ["c1"]);
}

#[test]
fn nothing_is_known_of_a_users_teams_before_the_first_load() {
    let (d, _) = Directory::new();
    d.apply(Kind::Team, "t1", Some(&team("t1", "One", None, &[("ann", "admin")])));
    assert_eq!(d.teams_of("ann"), None);
}

#[test]
fn a_cursor_walk_while_records_are_added_sees_every_earlier_record_once() {
    let d = loaded();
    let ids: Vec<String> = (0..30).map(|i| format!("t{:03}", i * 2)).collect();
    for id in &ids {
        d.apply(Kind::Team, id, Some(&team(id, "x", None, &[])));
    }
    let (mut seen, mut start, mut added) = (Vec::new(), Start::Offset(0), 0);
    loop {
        let page = d.page(Kind::Team, &Filter::default(), &start, 4);
        seen.extend(page.ids.iter().cloned());
        // A record before the cursor and one after it, between two pages.
        for id in [format!("t{:03}", added * 2 + 1), format!("s{added:03}")] {
            d.apply(Kind::Team, &id, Some(&team(&id, "x", None, &[])));
        }
        added += 1;
        match page.next {
            Some(after) => start = Start::After(after),
            None => break,
        }
    }
    let distinct: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(distinct.len(), seen.len(), "a record twice: {seen:?}");
    assert!(ids.iter().all(|id| seen.contains(id)), "an earlier record missed: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "not in id order: {seen:?}");
}
