//! `GET /ledger/health`: what this gateway knows of the ledger's health: how fresh its budget
//! view is (the ledger consumers' newest heartbeat on the budget-state topic) against
//! `budgets.max_staleness_secs`, each consumer's last heartbeat and the lag it reported, any
//! replay of usage events an earlier run left in the spool (all from memory), and the dead
//! letters counted by reason (one bounded database read, `DEAD_LETTER_SAMPLE` rows at most) and
//! the newest run of `reconcile` (one row).

use super::Answer;
use crate::config::WhenStale;
use crate::limits::budget_view::BudgetView;
use crate::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tollgate_schemas::store::{DeadLetterSummary, ReconcileRun, StoreError};

/// The budget view's part of the answer at `now`.
fn budget_view(view: &BudgetView, max_staleness_secs: u64, now: DateTime<Utc>) -> Value {
    let age_ms = view.age_ms(now);
    let bound_ms = i64::try_from(max_staleness_secs.saturating_mul(1_000)).unwrap_or(i64::MAX);
    json!({
        "caught_up": view.caught_up(),
        "heartbeat_age_ms": age_ms,
        "max_staleness_ms": bound_ms,
        // No heartbeat heard (or the topic not read to its end) is stale too.
        "stale": age_ms.is_none_or(|age| age > bound_ms),
    })
}

/// Each consumer's newest heartbeat: its age and the lag it reported.
fn consumers(view: &BudgetView, now: DateTime<Utc>) -> Vec<Value> {
    let now_ms = now.timestamp_millis();
    view.consumers()
        .into_iter()
        .map(|(consumer, beat)| {
            json!({"consumer": consumer, "heartbeat_age_ms": (now_ms - beat.at_ms).max(0), "lag": beat.lag})
        })
        .collect()
}

/// What a ledger read found: null for nothing, `{"error"}` when the database did not answer
/// (the error itself is logged, never shown).
fn shown<T>(read: Result<Option<T>, StoreError>, json_of: fn(&T) -> Value, what: &str) -> Value {
    match read {
        Ok(found) => found.as_ref().map_or(Value::Null, json_of),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the {what} for /ledger/health");
            json!({"error": "the database did not answer"})
        }
    }
}

fn dead_letters_json(s: &DeadLetterSummary) -> Value {
    json!({"count": s.count, "more": s.more, "by_reason": s.by_reason, "newest": s.newest})
}

fn reconcile_json(r: &ReconcileRun) -> Value {
    json!({
        "finished_at": r.finished_at,
        "range_from": r.range_from,
        "range_to": r.range_to,
        "ok": r.ok,
        "events": r.events,
        "rows_compared": r.rows_compared,
        "differences": r.differences,
        "read_model_behind": r.read_model_behind,
        "key_index_missing": r.key_index_missing,
        "key_index_stray": r.key_index_stray,
        "dead_letters": r.dead_letters,
    })
}

pub(crate) async fn ledger_health(req: HttpRequest, state: web::Data<AppState>) -> Answer {
    super::roles::admins_only(&req, &state).await?;
    let replay = state.sink.replay().map(
        |(in_progress, replayed, found)| json!({"in_progress": in_progress, "replayed": replayed, "found": found}),
    );
    let settings = &state.budget_settings;
    let now = Utc::now();
    let (dead_letters, last_reconcile) = match &state.spend {
        None => (Value::Null, Value::Null),
        Some(spend) => {
            let (dead, run) = futures::join!(spend.dead_letters(), spend.last_reconcile());
            (shown(dead, dead_letters_json, "dead letters"), shown(run, reconcile_json, "last reconcile"))
        }
    };
    Ok(HttpResponse::Ok().json(json!({
        "gateway_id": state.gateway_id,
        "budget_view": budget_view(&state.budget_view, settings.max_staleness_secs, now),
        "consumers": consumers(&state.budget_view, now),
        "dead_letters": dead_letters,
        "last_reconcile": last_reconcile,
        "when_stale": match settings.when_stale {
            WhenStale::FailClosed => "fail_closed",
            WhenStale::FailOpen => "fail_open",
        },
        "spool_replay": replay,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_schemas::tenancy::BudgetState;

    #[test]
    fn the_view_is_stale_until_a_recent_heartbeat_is_read() {
        let view = BudgetView::new();
        let now = Utc::now();
        let fresh = budget_view(&view, 30, now);
        assert_eq!(fresh["stale"], true, "{fresh}");
        assert!(fresh["heartbeat_age_ms"].is_null());
        view.set_caught_up();
        view.apply(&BudgetState::Heartbeat { consumer: "c".into(), at_ms: now.timestamp_millis() - 5_000, lag: None });
        let seen = budget_view(&view, 30, now);
        assert_eq!((seen["stale"].clone(), seen["heartbeat_age_ms"].clone()), (json!(false), json!(5_000)));
        assert_eq!(budget_view(&view, 4, now)["stale"], true, "older than its 4 s bound");
        view.apply(&BudgetState::Heartbeat {
            consumer: "d".into(),
            at_ms: now.timestamp_millis() - 1_000,
            lag: Some(7),
        });
        assert_eq!(
            Value::Array(consumers(&view, now)),
            json!([{"consumer": "d", "heartbeat_age_ms": 1_000, "lag": 7}, {"consumer": "c", "heartbeat_age_ms": 5_000, "lag": null}])
        );
    }
}
