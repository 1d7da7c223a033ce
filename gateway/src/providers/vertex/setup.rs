//! A Vertex AI deployment's own settings, read at start-up: the service account, the project
//! and the location, and the base URL they make.

use super::ServiceAccount;
use crate::config::LitellmParams;
use crate::providers::{Setup, SetupError};
use std::sync::Arc;

/// LiteLLM's default region.
pub const DEFAULT_LOCATION: &str = "us-central1";

/// The public host of a location: `https://{location}-aiplatform.googleapis.com`, or
/// `https://aiplatform.googleapis.com` for the `global` location.
pub fn base_url(location: &str) -> String {
    if location == "global" {
        "https://aiplatform.googleapis.com".to_owned()
    } else {
        format!("https://{location}-aiplatform.googleapis.com")
    }
}

/// The deployment's base URL (`{host}/v1/projects/{project}/locations/{location}`; the host is
/// `api_base` when set, else [`base_url`]) and its service account.
pub fn setup(params: &LitellmParams) -> Result<Setup, SetupError> {
    let credentials = params.vertex_credentials.as_ref().ok_or_else(|| SetupError {
        field: "vertex_credentials",
        message: "a Vertex AI deployment needs a service account key (a file path or the JSON itself)".to_owned(),
    })?;
    let account = ServiceAccount::from_config(credentials.expose())
        .map_err(|e| SetupError { field: "vertex_credentials", message: e.to_string() })?;
    let project = match &params.vertex_project {
        Some(project) => project.clone(),
        None => account.project_id().map(str::to_owned).ok_or_else(|| SetupError {
            field: "vertex_project",
            message: "not set, and the service account names no `project_id`".to_owned(),
        })?,
    };
    path_segment("vertex_project", &project)?;
    let location = params.vertex_location.as_deref().unwrap_or(DEFAULT_LOCATION);
    path_segment("vertex_location", location)?;
    let host = params.api_base.clone().unwrap_or_else(|| base_url(location));
    let api_base = format!("{}/v1/projects/{project}/locations/{location}", host.trim_end_matches('/'));
    Ok(Setup { api_base: Some(api_base), service_account: Some(Arc::new(account)) })
}

/// Project ids and locations are lower-case letters, digits and hyphens: nothing that could
/// change the URL they go into.
fn path_segment(field: &'static str, value: &str) -> Result<(), SetupError> {
    let valid = (1..=63).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(SetupError { field, message: "must be 1 to 63 lower-case letters, digits or hyphens".to_owned() })
    }
}
