//! `GET /model/health`: each deployment's health as this gateway's router sees it, read from
//! memory (no call to any provider): its state (healthy, failing this minute, cooled down), the
//! cooldown left, and the calls that ended in this minute and the last: how many, how many
//! failed, and the latency p50 and p99 of the successful ones (`routing::outcomes`).

use super::Answer;
use crate::routing::outcomes::LATENCY_BOUNDS_MS;
use crate::routing::router::DeploymentState;
use crate::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

fn state_name(state: DeploymentState) -> &'static str {
    match state {
        DeploymentState::Healthy => "healthy",
        DeploymentState::Failing => "failing",
        DeploymentState::CooledDown => "cooled_down",
    }
}

/// A latency bucket's bound as shown: the last, unbounded bucket as the largest bound.
fn shown_ms(bound: u64) -> u64 {
    bound.min(LATENCY_BOUNDS_MS[LATENCY_BOUNDS_MS.len() - 2])
}

pub(crate) async fn model_health(req: HttpRequest, state: web::Data<AppState>) -> Answer {
    super::roles::admins_only(&req, &state).await?;
    let data: Vec<_> = state
        .router
        .deployment_health()
        .into_iter()
        .map(|(d, h)| {
            json!({
                "id": d.id,
                "model_name": d.model_name,
                "provider": d.provider,
                "state": state_name(h.state),
                "cooldown_remaining_ms": h.cooldown_remaining_ms,
                "calls": h.outcomes.calls,
                "failures": h.outcomes.failures,
                "latency_p50_ms": h.outcomes.p50_ms.map(shown_ms),
                "latency_p99_ms": h.outcomes.p99_ms.map(shown_ms),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"gateway_id": state.gateway_id, "data": data})))
}
