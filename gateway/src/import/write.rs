//! Writing imported records through the tenancy store (`TenancyStore`: Cassandra/ScyllaDB or
//! the embedded file), the same conditional writes the admin API makes, and announcing each
//! change in the change log so running gateways drop cached copies (with a database).
//!
//! A record equal to what is stored is left alone (a re-run of an unchanged database writes
//! nothing); a record changed meanwhile by an admin is read again and retried.

use super::map::Refused;
use super::ImportError;
use crate::tenancy::changes::ChangeLog;
use std::sync::Arc;
use tollgate_schemas::store::{get_record, TenancyStore};
use tollgate_schemas::tenancy::{Kind, Record};

/// What became of one row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Updated,
    /// Stored already, as LiteLLM has it.
    Unchanged,
    /// Not imported, and why (the row's id and the reason).
    Refused(String, Refused),
}

/// How many times a write that lost to a concurrent change is tried again.
const ATTEMPTS: usize = 5;

pub struct Writer {
    pub store: Arc<dyn TenancyStore>,
    pub changes: Option<Arc<ChangeLog>>,
    pub dry_run: bool,
}

impl Writer {
    /// Writes the record `map` makes from the stored one (or a default one when none is
    /// stored). `ids`: where the record may be stored, the first being where a new one goes
    /// (a key imported earlier may have moved to its keyed hash since).
    pub async fn write<R: Record + PartialEq + Default>(
        &self,
        ids: &[String],
        map: impl Fn(R) -> Result<R, Refused>,
    ) -> Result<Outcome, ImportError> {
        let Some(first) = ids.first() else { return Err(ImportError::Internal("a row without an id".into())) };
        for _ in 0..ATTEMPTS {
            let mut stored = None;
            for id in ids {
                if let Some(found) = get_record::<R>(self.store.as_ref(), id).await? {
                    stored = Some(found);
                    break;
                }
            }
            let (base, version) = match &stored {
                Some((record, version)) => (record.clone(), Some(*version)),
                None => (R::default(), None),
            };
            let record = match map(base) {
                Ok(r) => r,
                Err(reason) => return Ok(Outcome::Refused(first.clone(), reason)),
            };
            if stored.as_ref().is_some_and(|(s, _)| *s == record) {
                return Ok(Outcome::Unchanged);
            }
            let outcome = if version.is_some() { Outcome::Updated } else { Outcome::Created };
            if self.dry_run {
                return Ok(outcome);
            }
            let doc = serde_json::to_string(&record).map_err(|e| ImportError::Internal(e.to_string()))?;
            let written = match version {
                Some(v) => self.store.update(R::KIND, record.id(), &doc, v).await?,
                None => self.store.create(R::KIND, record.id(), &doc).await?,
            };
            if written {
                self.announce(R::KIND, record.id()).await;
                return Ok(outcome);
            }
        }
        Err(ImportError::Contended { kind: R::KIND.as_str(), id: first.clone() })
    }

    /// Logs the change, so every gateway drops its cached copy within about a second. A failed
    /// log write does not fail the import: cached copies expire (docs/design.md §6).
    async fn announce(&self, kind: Kind, id: &str) {
        let Some(log) = &self.changes else { return };
        if let Err(e) = log.record(kind, id).await {
            tracing::warn!(failure = e.kind(), "an imported record's change could not be logged; caches expire it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_schemas::tenancy::{KeyRecord, TeamRecord};

    fn writer(dry_run: bool) -> (Writer, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let db = tollgate_ledger::embedded::EmbeddedDb::open(&dir.path().join("t.db")).unwrap();
        (Writer { store: db, changes: None, dry_run }, dir)
    }

    fn team(alias: &'static str) -> impl Fn(TeamRecord) -> Result<TeamRecord, Refused> {
        move |base| Ok(TeamRecord { team_id: "t".into(), team_alias: Some(alias.into()), ..base })
    }

    #[tokio::test]
    async fn a_record_is_created_then_skipped_then_updated_when_litellm_changed_it() {
        let (w, _dir) = writer(false);
        let ids = ["t".to_owned()];
        assert_eq!(w.write(&ids, team("a")).await.unwrap(), Outcome::Created);
        assert_eq!(w.write(&ids, team("a")).await.unwrap(), Outcome::Unchanged);
        assert_eq!(w.write(&ids, team("b")).await.unwrap(), Outcome::Updated);
        let (stored, version) = get_record::<TeamRecord>(w.store.as_ref(), "t").await.unwrap().unwrap();
        assert_eq!((stored.team_alias.as_deref(), version), (Some("b"), 2));
        let refuse = |_: TeamRecord| -> Result<TeamRecord, Refused> { Err("bad".into()) };
        assert_eq!(w.write(&ids, refuse).await.unwrap(), Outcome::Refused("t".into(), "bad".into()));
    }

    #[tokio::test]
    async fn a_dry_run_writes_nothing() {
        let (w, _dir) = writer(true);
        assert_eq!(w.write(&["t".to_owned()], team("a")).await.unwrap(), Outcome::Created);
        assert!(get_record::<TeamRecord>(w.store.as_ref(), "t").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_key_that_moved_to_its_keyed_hash_is_found_there_and_not_created_again() {
        let (w, _dir) = writer(false);
        let moved = KeyRecord { key_id: "sha".into(), stored_id: Some("hmac".into()), ..KeyRecord::default() };
        w.store.create(Kind::Key, "hmac", &serde_json::to_string(&moved).unwrap()).await.unwrap();
        let ids = ["sha".to_owned(), "hmac".to_owned()];
        let map = |base: KeyRecord| Ok(KeyRecord { key_id: "sha".into(), key_alias: Some("x".into()), ..base });
        assert_eq!(w.write(&ids, map).await.unwrap(), Outcome::Updated);
        assert!(get_record::<KeyRecord>(w.store.as_ref(), "sha").await.unwrap().is_none());
        let (stored, _) = get_record::<KeyRecord>(w.store.as_ref(), "hmac").await.unwrap().unwrap();
        assert_eq!(stored.key_alias.as_deref(), Some("x"));
    }
}
