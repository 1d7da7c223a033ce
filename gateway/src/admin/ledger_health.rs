//! `GET /ledger/health`: what this gateway knows of the ledger's health, read from its own state
//! (no database or Kafka call): how fresh its budget view is (the ledger consumer's newest
//! heartbeat on the budget-state topic) against `budgets.max_staleness_secs`, and any replay of
//! usage events an earlier run left in the spool.

use super::{caller, Answer, Caller};
use crate::config::WhenStale;
use crate::error::GatewayError;
use crate::limits::budget_view::BudgetView;
use crate::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

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

pub(crate) async fn ledger_health(req: HttpRequest, state: web::Data<AppState>) -> Answer {
    if let Caller::Own(_) = caller(&req, &state, false).await? {
        return Err(GatewayError::Forbidden("this key may not use the admin API".into()));
    }
    let replay = state.sink.replay().map(
        |(in_progress, replayed, found)| json!({"in_progress": in_progress, "replayed": replayed, "found": found}),
    );
    let settings = &state.budget_settings;
    Ok(HttpResponse::Ok().json(json!({
        "gateway_id": state.gateway_id,
        "budget_view": budget_view(&state.budget_view, settings.max_staleness_secs, Utc::now()),
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
        view.apply(&BudgetState::Heartbeat { consumer: "c".into(), at_ms: now.timestamp_millis() - 5_000 });
        let seen = budget_view(&view, 30, now);
        assert_eq!((seen["stale"].clone(), seen["heartbeat_age_ms"].clone()), (json!(false), json!(5_000)));
        assert_eq!(budget_view(&view, 4, now)["stale"], true, "older than its 4 s bound");
    }
}
