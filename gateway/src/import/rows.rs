//! LiteLLM's rows as `import-litellm` reads them: the columns of `schema.prisma` that Tollgate
//! carries, typed as Prisma declares them (`Float` is PostgreSQL `double precision`, `BigInt`
//! is `bigint`, `DateTime` is `timestamp(3)` in UTC, `Json` is `jsonb`, `String[]` is `text[]`).
//!
//! Columns not listed here are not read; `NOT_CARRIED` names them (the report and
//! docs/litellm-migration.md list them too).

use chrono::{DateTime, Utc};
use serde_json::Value;

/// `LiteLLM_BudgetTable`: a reusable budget.
#[derive(Clone, Debug, Default)]
pub struct LiteBudget {
    pub budget_id: String,
    pub max_budget: Option<f64>,
    pub soft_budget: Option<f64>,
    pub max_parallel_requests: Option<i32>,
    pub tpm_limit: Option<i64>,
    pub rpm_limit: Option<i64>,
    pub model_max_budget: Option<Value>,
    pub budget_duration: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// `LiteLLM_OrganizationTable`.
#[derive(Clone, Debug, Default)]
pub struct LiteOrganization {
    pub organization_id: String,
    pub organization_alias: Option<String>,
    pub budget_id: Option<String>,
    pub metadata: Option<Value>,
    pub models: Vec<String>,
    pub spend: f64,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// `LiteLLM_TeamTable`.
#[derive(Clone, Debug, Default)]
pub struct LiteTeam {
    pub team_id: String,
    pub team_alias: Option<String>,
    pub organization_id: Option<String>,
    pub admins: Vec<String>,
    pub members: Vec<String>,
    pub members_with_roles: Option<Value>,
    pub metadata: Option<Value>,
    pub max_budget: Option<f64>,
    pub soft_budget: Option<f64>,
    pub spend: f64,
    pub models: Vec<String>,
    pub max_parallel_requests: Option<i32>,
    pub tpm_limit: Option<i64>,
    pub rpm_limit: Option<i64>,
    pub budget_duration: Option<String>,
    pub budget_reset_at: Option<DateTime<Utc>>,
    pub blocked: bool,
    pub model_max_budget: Option<Value>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// `LiteLLM_UserTable`: an internal user.
#[derive(Clone, Debug, Default)]
pub struct LiteUser {
    pub user_id: String,
    pub user_alias: Option<String>,
    pub organization_id: Option<String>,
    pub user_role: Option<String>,
    pub max_budget: Option<f64>,
    pub spend: f64,
    pub user_email: Option<String>,
    pub models: Vec<String>,
    pub metadata: Option<Value>,
    pub max_parallel_requests: Option<i32>,
    pub tpm_limit: Option<i64>,
    pub rpm_limit: Option<i64>,
    pub budget_duration: Option<String>,
    pub budget_reset_at: Option<DateTime<Utc>>,
    pub model_max_budget: Option<Value>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// `LiteLLM_EndUserTable`: a customer.
#[derive(Clone, Debug, Default)]
pub struct LiteEndUser {
    pub user_id: String,
    pub alias: Option<String>,
    pub spend: f64,
    pub budget_id: Option<String>,
    pub blocked: bool,
}

/// `LiteLLM_VerificationToken`: a virtual key, `token` being the SHA-256 hex of the key.
#[derive(Clone, Debug, Default)]
pub struct LiteKey {
    pub token: String,
    pub key_name: Option<String>,
    pub key_alias: Option<String>,
    pub spend: f64,
    pub expires: Option<DateTime<Utc>>,
    pub models: Vec<String>,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub max_parallel_requests: Option<i32>,
    pub metadata: Option<Value>,
    pub blocked: Option<bool>,
    pub tpm_limit: Option<i64>,
    pub rpm_limit: Option<i64>,
    pub max_budget: Option<f64>,
    pub budget_duration: Option<String>,
    pub budget_reset_at: Option<DateTime<Utc>>,
    pub model_max_budget: Option<Value>,
    pub budget_id: Option<String>,
    pub organization_id: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// Everything read from one LiteLLM database.
#[derive(Debug, Default)]
pub struct LiteDatabase {
    pub budgets: Vec<LiteBudget>,
    pub organizations: Vec<LiteOrganization>,
    pub teams: Vec<LiteTeam>,
    pub users: Vec<LiteUser>,
    pub end_users: Vec<LiteEndUser>,
    pub keys: Vec<LiteKey>,
}

impl LiteDatabase {
    pub fn rows(&self) -> usize {
        self.budgets.len()
            + self.organizations.len()
            + self.teams.len()
            + self.users.len()
            + self.end_users.len()
            + self.keys.len()
    }
}

/// The columns of the tables read that Tollgate does not carry, with why, by table.
pub const NOT_CARRIED: &[(&str, &str)] = &[
    (
        "LiteLLM_VerificationToken",
        "soft_budget_cooldown, total_spend, aliases, config, router_settings, agent_id, project_id, permissions, \
         tpd_limit, allowed_cache_controls, allowed_routes, key_type, policies, access_group_ids, model_spend, \
         budget_fallbacks, object_permission_id, created_by, updated_by, settings_updated_at, last_active, \
         rotation_count, auto_rotate, rotation_interval, last_rotation_at, key_rotation_at, budget_limits \
         (spend is carried only with --spend, budget_reset_at only to decide whether it is current)",
    ),
    (
        "LiteLLM_TeamTable",
        "object_permission_id, tpd_limit, model_spend, router_settings, team_member_permissions, access_group_ids, \
         policies, default_team_member_models, budget_limits, model_id, allow_team_guardrail_config",
    ),
    (
        "LiteLLM_UserTable",
        "team_id, teams, sso_user_id, object_permission_id, password, password_reset_required, \
         last_breach_check_at, allowed_cache_controls, policies, model_spend",
    ),
    ("LiteLLM_EndUserTable", "allowed_model_region, default_model, models, object_permission_id"),
    ("LiteLLM_OrganizationTable", "model_spend, object_permission_id, created_by, updated_by"),
    (
        "LiteLLM_BudgetTable",
        "tpd_limit, budget_reset_at, allowed_models, temp_budget_increase, temp_budget_expiry, created_by, updated_by",
    ),
];
