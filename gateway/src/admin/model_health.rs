//! `GET /model/health`: each deployment's state as this gateway's router sees it (healthy,
//! failing this minute, cooled down), read from memory: no call to any provider.

use super::{caller, Answer, Caller};
use crate::error::GatewayError;
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

pub(crate) async fn model_health(req: HttpRequest, state: web::Data<AppState>) -> Answer {
    if let Caller::Own(_) = caller(&req, &state, false).await? {
        return Err(GatewayError::Forbidden("this key may not use the admin API".into()));
    }
    let data: Vec<_> = state
        .router
        .deployment_states()
        .into_iter()
        .map(|(d, s)| json!({"id": d.id, "model_name": d.model_name, "provider": d.provider, "state": state_name(s)}))
        .collect();
    Ok(HttpResponse::Ok().json(json!({"gateway_id": state.gateway_id, "data": data})))
}
