//! Tests of the tenancy view: keys authenticated from the config file and the store, parties
//! refused, model lists, customers charged, absent records cached.

use super::*;
use crate::config::{Secret, VirtualKeyConfig};
use crate::error::{GatewayError, Scope};
use chrono::Utc;
use std::sync::Arc;
use tollgate_schemas::store::{get_record, TenancyStore};
use tollgate_schemas::tenancy::{KeyRecord, Kind, Record};

fn key(raw: &str) -> VirtualKeyConfig {
    VirtualKeyConfig {
        key: Some(Secret::new(raw)),
        key_hash: None,
        key_alias: Some("a".into()),
        team_id: Some("t".into()),
        user_id: None,
        organization_id: None,
        models: vec!["gpt-4o-mini".into()],
        blocked: false,
        expires: None,
        max_budget: None,
        soft_budget: None,
        budget_duration: None,
        rpm_limit: Some(5),
        tpm_limit: None,
        max_parallel_requests: None,
    }
}

#[tokio::test]
async fn config_keys_authenticate_and_unknown_do_not() {
    let tenancy = Tenancy::new(None, &[key("sk-test-000001")], KeyHasher::new(None), None);
    let now = Utc::now();
    let p = tenancy.authenticate("sk-test-000001", now).await.unwrap();
    assert_eq!(p.key.key_id, hash_key("sk-test-000001"));
    assert_eq!(p.key.team_id.as_deref(), Some("t"));
    assert_eq!(p.key.key_name, "sk-...0001");
    assert_eq!(p.parties.len(), 1, "no store: the team is not resolved");
    assert_eq!(p.parties[0].limits.rpm_limit, Some(5));
    assert!(matches!(tenancy.authenticate("sk-2", now).await, Err(GatewayError::InvalidKey)));
}

#[tokio::test]
async fn blocked_and_expired_keys_are_refused() {
    let mut blocked = key("sk-blocked-0001");
    blocked.blocked = true;
    let mut expired = key("sk-expired-0001");
    expired.expires = Some(Utc::now() - chrono::Duration::seconds(1));
    let tenancy = Tenancy::new(None, &[blocked, expired], KeyHasher::new(None), None);
    let now = Utc::now();
    assert!(matches!(tenancy.authenticate("sk-blocked-0001", now).await, Err(GatewayError::KeyBlocked)));
    assert!(matches!(tenancy.authenticate("sk-expired-0001", now).await, Err(GatewayError::KeyExpired)));
}

#[tokio::test]
async fn model_allow_lists_accept_names_groups_and_wildcards() {
    let tenancy = Tenancy::new(None, &[key("sk-test-000001")], KeyHasher::new(None), None);
    let mut p = tenancy.authenticate("sk-test-000001", Utc::now()).await.unwrap();
    let groups = |m: &str| if m == "gpt-4o" { vec!["premium".to_owned()] } else { Vec::new() };
    assert!(p.check_model("gpt-4o-mini", &groups).is_ok());
    assert!(matches!(p.check_model("gpt-4o", &groups), Err(GatewayError::ModelNotAllowed(_))));
    let mut k = (*p.key).clone();
    k.models = vec!["premium".into()];
    p.key = Arc::new(k.clone());
    assert!(p.check_model("gpt-4o", &groups).is_ok());
    k.models = vec!["*".into()];
    p.key = Arc::new(k);
    assert!(p.check_model("anything", &groups).is_ok());
}

/// A tenancy view on a real (embedded) store holding `records`.
async fn store_with(records: &[(Kind, &str, serde_json::Value)]) -> (Tenancy, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = tollgate_ledger::embedded::EmbeddedDb::open(&dir.path().join("t.db")).unwrap();
    for (kind, id, doc) in records {
        assert!(db.create(*kind, id, &doc.to_string()).await.unwrap());
    }
    let store: Arc<dyn TenancyStore> = db;
    (Tenancy::new(Some(store), &[], KeyHasher::new(None), None), dir)
}

#[tokio::test]
async fn a_key_stored_under_its_sha256_works_and_moves_to_its_keyed_hash_on_first_use() {
    let legacy = hash_key("sk-legacy-00001");
    let dir = tempfile::tempdir().unwrap();
    let db = tollgate_ledger::embedded::EmbeddedDb::open(&dir.path().join("t.db")).unwrap();
    let doc = serde_json::json!({"key_id": legacy, "key_alias": "old"}).to_string();
    assert!(db.create(Kind::Key, &legacy, &doc).await.unwrap());
    let store: Arc<dyn TenancyStore> = db.clone();
    let hasher = KeyHasher::new(Some(&[9u8; 32]));
    let lookup = hasher.lookup("sk-legacy-00001");
    let tenancy = Tenancy::new(Some(store), &[], hasher, None);
    for _ in 0..2 {
        let p = tenancy.authenticate("sk-legacy-00001", Utc::now()).await.unwrap();
        assert_eq!(p.key.key_id, legacy, "its identity (and spend) stays");
    }
    assert!(db.get(Kind::Key, &legacy).await.unwrap().is_none(), "the SHA-256 row is gone");
    let (moved, _) = get_record::<KeyRecord>(db.as_ref(), &lookup).await.unwrap().unwrap();
    assert_eq!((moved.key_id.as_str(), moved.id()), (legacy.as_str(), lookup.as_str()));
    assert!(matches!(tenancy.authenticate("sk-other-000001", Utc::now()).await, Err(GatewayError::InvalidKey)));
}

/// A store that counts its reads.
struct Counting(Arc<dyn TenancyStore>, std::sync::atomic::AtomicUsize);

impl TenancyStore for Counting {
    fn get(
        &self,
        kind: Kind,
        id: &str,
    ) -> futures::future::BoxFuture<
        '_,
        Result<Option<tollgate_schemas::store::Stored>, tollgate_schemas::store::StoreError>,
    > {
        self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.0.get(kind, id)
    }
    fn create(
        &self,
        kind: Kind,
        id: &str,
        doc: &str,
    ) -> futures::future::BoxFuture<'_, Result<bool, tollgate_schemas::store::StoreError>> {
        self.0.create(kind, id, doc)
    }
    fn update(
        &self,
        kind: Kind,
        id: &str,
        doc: &str,
        expected: i64,
    ) -> futures::future::BoxFuture<'_, Result<bool, tollgate_schemas::store::StoreError>> {
        self.0.update(kind, id, doc, expected)
    }
    fn delete(
        &self,
        kind: Kind,
        id: &str,
        expected: i64,
    ) -> futures::future::BoxFuture<'_, Result<bool, tollgate_schemas::store::StoreError>> {
        self.0.delete(kind, id, expected)
    }
    fn list(
        &self,
        kind: Kind,
    ) -> futures::future::BoxFuture<
        '_,
        Result<Vec<(String, tollgate_schemas::store::Stored)>, tollgate_schemas::store::StoreError>,
    > {
        self.0.list(kind)
    }
}

#[tokio::test]
async fn invalid_keys_and_unknown_customers_are_cached_as_absent() {
    let dir = tempfile::tempdir().unwrap();
    let db = tollgate_ledger::embedded::EmbeddedDb::open(&dir.path().join("t.db")).unwrap();
    let counting = Arc::new(Counting(db, std::sync::atomic::AtomicUsize::new(0)));
    let store: Arc<dyn TenancyStore> = counting.clone();
    let tenancy = Tenancy::new(Some(store), &[key("sk-test-000001")], KeyHasher::new(Some(&[1u8; 32])), None);
    for _ in 0..100 {
        assert!(matches!(tenancy.authenticate("sk-not-a-key-001", Utc::now()).await, Err(GatewayError::InvalidKey)));
    }
    // Its lookup hash and its SHA-256 (a key from before the secret), once each.
    assert_eq!(counting.1.load(std::sync::atomic::Ordering::Relaxed), 2);
    let mut p = tenancy.authenticate("sk-test-000001", Utc::now()).await.unwrap();
    let before = counting.1.load(std::sync::atomic::Ordering::Relaxed);
    for _ in 0..100 {
        assert!(tenancy.with_customer(&mut p, "nobody-knows-me", false).await.unwrap().is_none());
    }
    let reads = counting.1.load(std::sync::atomic::Ordering::Relaxed) - before;
    assert_eq!(reads, 1, "one read for the unknown customer");
}

#[tokio::test]
async fn keys_of_deleted_users_and_organizations_are_refused() {
    let now = Utc::now();
    let (tenancy, _dir) = store_with(&[
        (
            Kind::Key,
            &hash_key("sk-user-gone-0001"),
            serde_json::json!({"key_id": hash_key("sk-user-gone-0001"), "user_id": "gone"}),
        ),
        (
            Kind::Key,
            &hash_key("sk-org-gone-00001"),
            serde_json::json!({"key_id": hash_key("sk-org-gone-00001"), "organization_id": "gone"}),
        ),
        (
            Kind::Key,
            &hash_key("sk-team-org-gone1"),
            serde_json::json!({"key_id": hash_key("sk-team-org-gone1"), "team_id": "t"}),
        ),
        (Kind::Team, "t", serde_json::json!({"team_id": "t", "organization_id": "gone"})),
    ])
    .await;
    for (raw, scope) in [
        ("sk-user-gone-0001", Scope::User),
        ("sk-org-gone-00001", Scope::Organization),
        ("sk-team-org-gone1", Scope::Organization),
    ] {
        match tenancy.authenticate(raw, now).await {
            Err(GatewayError::TenantMissing(s)) => assert_eq!(s, scope, "{raw}"),
            other => panic!("{raw}: {:?}", other.map(|p| p.key.key_id.clone())),
        }
    }
}

#[tokio::test]
async fn user_and_organization_model_lists_apply() {
    let (tenancy, _dir) = store_with(&[
        (
            Kind::Key,
            &hash_key("sk-listed-000001"),
            serde_json::json!({"key_id": hash_key("sk-listed-000001"), "user_id": "u", "organization_id": "o"}),
        ),
        (Kind::User, "u", serde_json::json!({"user_id": "u", "models": ["a", "b"]})),
        (Kind::Organization, "o", serde_json::json!({"organization_id": "o", "models": ["b", "c"]})),
    ])
    .await;
    let p = tenancy.authenticate("sk-listed-000001", Utc::now()).await.unwrap();
    let no_groups = |_: &str| Vec::new();
    assert!(p.check_model("b", &no_groups).is_ok());
    assert!(matches!(p.check_model("a", &no_groups), Err(GatewayError::ModelNotAllowed(_))), "not the organization's");
    assert!(matches!(p.check_model("c", &no_groups), Err(GatewayError::ModelNotAllowed(_))), "not the user's");
}

#[tokio::test]
async fn a_key_charges_only_customers_of_its_team_or_organization() {
    let key = |raw: &str, team: &str| {
        (Kind::Key, hash_key(raw), serde_json::json!({"key_id": hash_key(raw), "team_id": team}))
    };
    let (ka, kb) = (key("sk-team-a-000001", "a"), key("sk-team-b-000001", "b"));
    let (tenancy, _dir) = store_with(&[
        (ka.0, &ka.1, ka.2),
        (kb.0, &kb.1, kb.2),
        (Kind::Team, "a", serde_json::json!({"team_id": "a", "organization_id": "o"})),
        (Kind::Team, "b", serde_json::json!({"team_id": "b"})),
        (Kind::Organization, "o", serde_json::json!({"organization_id": "o"})),
        (Kind::Customer, "of-a", serde_json::json!({"user_id": "of-a", "team_id": "a", "max_budget": 5})),
        (Kind::Customer, "of-o", serde_json::json!({"user_id": "of-o", "organization_id": "o"})),
        (Kind::Customer, "shared", serde_json::json!({"user_id": "shared"})),
    ])
    .await;
    let now = Utc::now();
    let charge = |raw: &'static str, customer: &'static str, shared: bool| {
        let tenancy = &tenancy;
        async move {
            let mut p = tenancy.authenticate(raw, now).await.unwrap();
            tenancy.with_customer(&mut p, customer, shared).await.map(|party| (party.is_some(), p.customer_id))
        }
    };
    assert_eq!(charge("sk-team-a-000001", "of-a", false).await.unwrap(), (true, Some("of-a".into())));
    assert!(charge("sk-team-a-000001", "of-o", false).await.unwrap().0, "the team's organization");
    assert!(matches!(charge("sk-team-b-000001", "of-a", false).await, Err(GatewayError::CustomerNotAllowed)));
    assert!(matches!(charge("sk-team-b-000001", "of-o", false).await, Err(GatewayError::CustomerNotAllowed)));
    assert!(matches!(charge("sk-team-b-000001", "shared", false).await, Err(GatewayError::CustomerNotAllowed)));
    assert!(charge("sk-team-b-000001", "shared", true).await.is_ok(), "the documented opt-in");
    // No record: metered under its id, nothing to protect.
    assert_eq!(charge("sk-team-b-000001", "nobody", false).await.unwrap(), (false, Some("nobody".into())));
}

#[tokio::test]
async fn blocked_parties_are_refused_for_requests_but_charged_for_past_usage() {
    let now = Utc::now();
    let raw = "sk-blocked-parties1";
    let id = hash_key(raw);
    let (tenancy, _dir) = store_with(&[
        (Kind::Key, &id, serde_json::json!({"key_id": id, "team_id": "t", "user_id": "u", "organization_id": "gone"})),
        (Kind::Team, "t", serde_json::json!({"team_id": "t", "blocked": true})),
        (Kind::User, "u", serde_json::json!({"user_id": "u", "blocked": true})),
    ])
    .await;
    // The first party refused is the team: team, user, organization in that order.
    match tenancy.authenticate(raw, now).await {
        Err(GatewayError::Blocked(s)) => assert_eq!(s, Scope::Team),
        other => panic!("{:?}", other.map(|p| p.key.key_id.clone())),
    }
    // Past usage is charged to the blocked team and user; the missing organization is left out.
    let owner = tenancy.owner(&id).await.unwrap().unwrap();
    let scopes: Vec<&str> = owner.parties.iter().map(|p| p.scope_id.as_str()).collect();
    assert_eq!(scopes, [format!("key/{id}").as_str(), "team/t", "user/u"]);
    assert!(owner.organization.is_none());
    assert_eq!(owner.organization_id.as_deref(), Some("gone"));
    assert!(tenancy.owner("no-such-key").await.unwrap().is_none());
}
