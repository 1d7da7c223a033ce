//! Reading LiteLLM's tables from PostgreSQL (`tokio-postgres`). Read-only: it never writes to
//! LiteLLM's database, and never shows the database URL (it holds the password) in an error.
//!
//! `sslmode` in the URL: `disable`, `prefer` (the default: TLS when the server offers it) or
//! `require`; with TLS the server's certificate is checked against the system's roots.

use super::rows::{LiteBudget, LiteDatabase, LiteEndUser, LiteKey, LiteOrganization, LiteTeam, LiteUser};
use super::ImportError;
use chrono::{DateTime, NaiveDateTime, Utc};
use futures::{pin_mut, TryStreamExt};
use std::str::FromStr;
use tokio_postgres::{Client, Row};

/// The most rows read from one table: beyond it the import stops rather than exhaust memory.
pub const MAX_ROWS_PER_TABLE: usize = 5_000_000;

/// Connects to `url` (`postgres://user:password@host:port/db?sslmode=...`).
pub async fn connect(url: &str) -> Result<Client, ImportError> {
    let config = tokio_postgres::Config::from_str(url)
        .map_err(|e| ImportError::Postgres(format!("the database URL does not parse: {}", redacted(&e))))?;
    let connector = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls())
        .map_err(|e| ImportError::Postgres(format!("TLS setup: {e}")))?
        .build();
    let tls = postgres_openssl::MakeTlsConnector::new(connector);
    let (client, connection) =
        config.connect(tls).await.map_err(|e| ImportError::Postgres(format!("cannot connect: {}", redacted(&e))))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %redacted(&e), "the LiteLLM database connection ended with an error");
        }
    });
    Ok(client)
}

/// A PostgreSQL error's text: the driver does not quote the connection string, but a URL that
/// fails to parse could be named, so nothing after a `://` is ever shown.
fn redacted(e: &tokio_postgres::Error) -> String {
    let text = match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    };
    match text.find("://") {
        Some(at) => format!("{}://…", &text[..at]),
        None => text,
    }
}

/// Every table the import reads, in one read-only, repeatable-read transaction (one snapshot).
pub async fn read_all(client: &mut Client) -> Result<LiteDatabase, ImportError> {
    let tx = client
        .build_transaction()
        .read_only(true)
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .map_err(query_err)?;
    let db = LiteDatabase {
        budgets: read(&tx, BUDGETS, budget).await?,
        organizations: read(&tx, ORGANIZATIONS, organization).await?,
        teams: read(&tx, TEAMS, team).await?,
        users: read(&tx, USERS, user).await?,
        end_users: read(&tx, END_USERS, end_user).await?,
        keys: read(&tx, KEYS, key).await?,
    };
    tx.commit().await.map_err(query_err)?;
    Ok(db)
}

fn query_err(e: tokio_postgres::Error) -> ImportError {
    ImportError::Postgres(redacted(&e))
}

/// One table's query: its name and the columns read.
struct Table {
    name: &'static str,
    columns: &'static [&'static str],
}

impl Table {
    fn select(&self) -> String {
        let columns: Vec<String> = self.columns.iter().map(|c| format!("\"{c}\"")).collect();
        format!("SELECT {} FROM \"{}\"", columns.join(", "), self.name)
    }
}

async fn read<T>(
    tx: &tokio_postgres::Transaction<'_>,
    table: Table,
    decode: fn(&Row) -> Result<T, tokio_postgres::Error>,
) -> Result<Vec<T>, ImportError> {
    let rows = tx
        .query_raw(&table.select(), std::iter::empty::<&str>())
        .await
        .map_err(|e| ImportError::Postgres(format!("reading {}: {}", table.name, redacted(&e))))?;
    pin_mut!(rows);
    let mut out = Vec::new();
    while let Some(row) = rows.try_next().await.map_err(query_err)? {
        if out.len() == MAX_ROWS_PER_TABLE {
            return Err(ImportError::TooManyRows { table: table.name, max: MAX_ROWS_PER_TABLE });
        }
        out.push(decode(&row).map_err(|e| ImportError::Postgres(format!("{}: {}", table.name, redacted(&e))))?);
    }
    Ok(out)
}

/// A `timestamp(3)` column (Prisma's `DateTime`, stored in UTC).
fn time(row: &Row, column: &str) -> Result<Option<DateTime<Utc>>, tokio_postgres::Error> {
    Ok(row.try_get::<_, Option<NaiveDateTime>>(column)?.map(|t| t.and_utc()))
}

fn strings(row: &Row, column: &str) -> Result<Vec<String>, tokio_postgres::Error> {
    Ok(row.try_get::<_, Option<Vec<String>>>(column)?.unwrap_or_default())
}

// === The tables ===

/// The columns `import-litellm` reads, by table (the schema test checks them against
/// `schema.prisma`).
pub const TABLES: [(&str, &[&str]); 6] = [
    (BUDGETS.name, BUDGETS.columns),
    (ORGANIZATIONS.name, ORGANIZATIONS.columns),
    (TEAMS.name, TEAMS.columns),
    (USERS.name, USERS.columns),
    (END_USERS.name, END_USERS.columns),
    (KEYS.name, KEYS.columns),
];

const BUDGETS: Table = Table {
    name: "LiteLLM_BudgetTable",
    columns: &[
        "budget_id",
        "max_budget",
        "soft_budget",
        "max_parallel_requests",
        "tpm_limit",
        "rpm_limit",
        "model_max_budget",
        "budget_duration",
        "created_at",
        "updated_at",
    ],
};

fn budget(row: &Row) -> Result<LiteBudget, tokio_postgres::Error> {
    Ok(LiteBudget {
        budget_id: row.try_get("budget_id")?,
        max_budget: row.try_get("max_budget")?,
        soft_budget: row.try_get("soft_budget")?,
        max_parallel_requests: row.try_get("max_parallel_requests")?,
        tpm_limit: row.try_get("tpm_limit")?,
        rpm_limit: row.try_get("rpm_limit")?,
        model_max_budget: row.try_get("model_max_budget")?,
        budget_duration: row.try_get("budget_duration")?,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
    })
}

const ORGANIZATIONS: Table = Table {
    name: "LiteLLM_OrganizationTable",
    columns: &[
        "organization_id",
        "organization_alias",
        "budget_id",
        "metadata",
        "models",
        "spend",
        "created_at",
        "updated_at",
    ],
};

fn organization(row: &Row) -> Result<LiteOrganization, tokio_postgres::Error> {
    Ok(LiteOrganization {
        organization_id: row.try_get("organization_id")?,
        organization_alias: row.try_get("organization_alias")?,
        budget_id: row.try_get("budget_id")?,
        metadata: row.try_get("metadata")?,
        models: strings(row, "models")?,
        spend: row.try_get("spend")?,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
    })
}

const TEAMS: Table = Table {
    name: "LiteLLM_TeamTable",
    columns: &[
        "team_id",
        "team_alias",
        "organization_id",
        "admins",
        "members",
        "members_with_roles",
        "metadata",
        "max_budget",
        "soft_budget",
        "spend",
        "models",
        "max_parallel_requests",
        "tpm_limit",
        "rpm_limit",
        "budget_duration",
        "budget_reset_at",
        "blocked",
        "model_max_budget",
        "created_at",
        "updated_at",
    ],
};

fn team(row: &Row) -> Result<LiteTeam, tokio_postgres::Error> {
    Ok(LiteTeam {
        team_id: row.try_get("team_id")?,
        team_alias: row.try_get("team_alias")?,
        organization_id: row.try_get("organization_id")?,
        admins: strings(row, "admins")?,
        members: strings(row, "members")?,
        members_with_roles: row.try_get("members_with_roles")?,
        metadata: row.try_get("metadata")?,
        max_budget: row.try_get("max_budget")?,
        soft_budget: row.try_get("soft_budget")?,
        spend: row.try_get("spend")?,
        models: strings(row, "models")?,
        max_parallel_requests: row.try_get("max_parallel_requests")?,
        tpm_limit: row.try_get("tpm_limit")?,
        rpm_limit: row.try_get("rpm_limit")?,
        budget_duration: row.try_get("budget_duration")?,
        budget_reset_at: time(row, "budget_reset_at")?,
        blocked: row.try_get("blocked")?,
        model_max_budget: row.try_get("model_max_budget")?,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
    })
}

const USERS: Table = Table {
    name: "LiteLLM_UserTable",
    columns: &[
        "user_id",
        "user_alias",
        "organization_id",
        "user_role",
        "max_budget",
        "spend",
        "user_email",
        "models",
        "metadata",
        "max_parallel_requests",
        "tpm_limit",
        "rpm_limit",
        "budget_duration",
        "budget_reset_at",
        "model_max_budget",
        "created_at",
        "updated_at",
    ],
};

fn user(row: &Row) -> Result<LiteUser, tokio_postgres::Error> {
    Ok(LiteUser {
        user_id: row.try_get("user_id")?,
        user_alias: row.try_get("user_alias")?,
        organization_id: row.try_get("organization_id")?,
        user_role: row.try_get("user_role")?,
        max_budget: row.try_get("max_budget")?,
        spend: row.try_get("spend")?,
        user_email: row.try_get("user_email")?,
        models: strings(row, "models")?,
        metadata: row.try_get("metadata")?,
        max_parallel_requests: row.try_get("max_parallel_requests")?,
        tpm_limit: row.try_get("tpm_limit")?,
        rpm_limit: row.try_get("rpm_limit")?,
        budget_duration: row.try_get("budget_duration")?,
        budget_reset_at: time(row, "budget_reset_at")?,
        model_max_budget: row.try_get("model_max_budget")?,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
    })
}

const END_USERS: Table =
    Table { name: "LiteLLM_EndUserTable", columns: &["user_id", "alias", "spend", "budget_id", "blocked"] };

fn end_user(row: &Row) -> Result<LiteEndUser, tokio_postgres::Error> {
    Ok(LiteEndUser {
        user_id: row.try_get("user_id")?,
        alias: row.try_get("alias")?,
        spend: row.try_get("spend")?,
        budget_id: row.try_get("budget_id")?,
        blocked: row.try_get("blocked")?,
    })
}

const KEYS: Table = Table {
    name: "LiteLLM_VerificationToken",
    columns: &[
        "token",
        "key_name",
        "key_alias",
        "spend",
        "expires",
        "models",
        "user_id",
        "team_id",
        "max_parallel_requests",
        "metadata",
        "blocked",
        "tpm_limit",
        "rpm_limit",
        "max_budget",
        "budget_duration",
        "budget_reset_at",
        "model_max_budget",
        "budget_id",
        "organization_id",
        "created_at",
        "updated_at",
    ],
};

fn key(row: &Row) -> Result<LiteKey, tokio_postgres::Error> {
    Ok(LiteKey {
        token: row.try_get("token")?,
        key_name: row.try_get("key_name")?,
        key_alias: row.try_get("key_alias")?,
        spend: row.try_get("spend")?,
        expires: time(row, "expires")?,
        models: strings(row, "models")?,
        user_id: row.try_get("user_id")?,
        team_id: row.try_get("team_id")?,
        max_parallel_requests: row.try_get("max_parallel_requests")?,
        metadata: row.try_get("metadata")?,
        blocked: row.try_get("blocked")?,
        tpm_limit: row.try_get("tpm_limit")?,
        rpm_limit: row.try_get("rpm_limit")?,
        max_budget: row.try_get("max_budget")?,
        budget_duration: row.try_get("budget_duration")?,
        budget_reset_at: time(row, "budget_reset_at")?,
        model_max_budget: row.try_get("model_max_budget")?,
        budget_id: row.try_get("budget_id")?,
        organization_id: row.try_get("organization_id")?,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
    })
}
