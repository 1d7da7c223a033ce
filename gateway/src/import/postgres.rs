//! Reading LiteLLM's tables from PostgreSQL (`tokio-postgres`). Read-only: it never writes to
//! LiteLLM's database, and never shows the database URL (it holds the password) in an error.
//!
//! `sslmode` in the URL: `disable`, `prefer` (the default: TLS when the server offers it) or
//! `require`; with TLS the server's certificate is checked against the system's roots.

use super::rows::{LiteBudget, LiteDatabase, LiteEndUser, LiteKey, LiteOrganization, LiteTeam, LiteUser};
use super::ImportError;
use chrono::{DateTime, NaiveDateTime, Utc};
use futures::{pin_mut, TryStreamExt};
use std::collections::HashMap;
use std::str::FromStr;
use tokio_postgres::{Client, Row};
use tollgate_schemas::tenancy::Kind;

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
        within_bound(out.len(), table.name, MAX_ROWS_PER_TABLE)?;
        out.push(decode(&row).map_err(|e| ImportError::Postgres(format!("{}: {}", table.name, redacted(&e))))?);
    }
    Ok(out)
}

/// Whether one more row may be read after `read` of `table`.
fn within_bound(read: usize, table: &'static str, max: usize) -> Result<(), ImportError> {
    if read >= max {
        return Err(ImportError::TooManyRows { table, max });
    }
    Ok(())
}

// === Spend logs ===

/// The column of `LiteLLM_SpendLogs` naming an owner of `kind`.
pub fn spend_log_column(kind: Kind) -> &'static str {
    match kind {
        Kind::Key => "api_key",
        Kind::Team => "team_id",
        Kind::User => "user",
        Kind::Customer => "end_user",
        Kind::Organization | Kind::Budget => "organization_id",
    }
}

/// Each owner's spend in `LiteLLM_SpendLogs` since `since` (by `startTime`), summed exactly by
/// PostgreSQL as `numeric` and read as decimal text, by the owner named in `column`.
pub async fn spend_since(
    client: &Client,
    column: &'static str,
    since: DateTime<Utc>,
) -> Result<HashMap<String, String>, ImportError> {
    let sql = format!(
        "SELECT \"{column}\", sum(spend::numeric)::text FROM \"LiteLLM_SpendLogs\" \
         WHERE \"startTime\" >= $1 AND \"{column}\" IS NOT NULL AND \"{column}\" <> '' GROUP BY 1"
    );
    let rows = client
        .query(&sql, &[&since.naive_utc()])
        .await
        .map_err(|e| ImportError::Postgres(format!("reading LiteLLM_SpendLogs: {}", redacted(&e))))?;
    let mut out = HashMap::with_capacity(rows.len());
    for row in rows {
        within_bound(out.len(), "LiteLLM_SpendLogs", MAX_ROWS_PER_TABLE)?;
        let owner: String = row.try_get(0).map_err(query_err)?;
        let sum: Option<String> = row.try_get(1).map_err(query_err)?;
        out.insert(
            if column == "api_key" { owner.to_ascii_lowercase() } else { owner },
            sum.unwrap_or_else(|| "0".to_owned()),
        );
    }
    Ok(out)
}

/// A column read as it is.
fn value<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, column: &str) -> Result<T, tokio_postgres::Error> {
    row.try_get(column)
}

/// A `timestamp(3)` column (Prisma's `DateTime`, stored in UTC).
fn time(row: &Row, column: &str) -> Result<Option<DateTime<Utc>>, tokio_postgres::Error> {
    Ok(row.try_get::<_, Option<NaiveDateTime>>(column)?.map(|t| t.and_utc()))
}

/// A `text[]` column; null is empty.
fn strings(row: &Row, column: &str) -> Result<Vec<String>, tokio_postgres::Error> {
    Ok(row.try_get::<_, Option<Vec<String>>>(column)?.unwrap_or_default())
}

// === The tables ===

/// The columns `import-litellm` reads, by table (the schema test checks them against
/// `schema.prisma`).
pub const TABLES: [(&str, &[&str]); 7] = [
    (BUDGETS.name, BUDGETS.columns),
    (ORGANIZATIONS.name, ORGANIZATIONS.columns),
    (TEAMS.name, TEAMS.columns),
    (USERS.name, USERS.columns),
    (END_USERS.name, END_USERS.columns),
    (KEYS.name, KEYS.columns),
    ("LiteLLM_SpendLogs", &["api_key", "team_id", "user", "end_user", "organization_id", "spend", "startTime"]),
];

/// A table's [`Table`] and its row decoder, from one list: each field is the column of its
/// name, read with `value`, `time` or `strings`.
macro_rules! table {
    ($table:ident, $decode:ident, $name:literal, $row:ident { $($field:ident: $read:ident),* $(,)? }) => {
        const $table: Table = Table { name: $name, columns: &[$(stringify!($field)),*] };

        fn $decode(row: &Row) -> Result<$row, tokio_postgres::Error> {
            Ok($row { $($field: $read(row, stringify!($field))?),* })
        }
    };
}

table!(
    BUDGETS,
    budget,
    "LiteLLM_BudgetTable",
    LiteBudget {
        budget_id: value,
        max_budget: value,
        soft_budget: value,
        max_parallel_requests: value,
        tpm_limit: value,
        rpm_limit: value,
        model_max_budget: value,
        budget_duration: value,
        created_at: time,
        updated_at: time,
    }
);

table!(
    ORGANIZATIONS,
    organization,
    "LiteLLM_OrganizationTable",
    LiteOrganization {
        organization_id: value,
        organization_alias: value,
        budget_id: value,
        metadata: value,
        models: strings,
        spend: value,
        created_at: time,
        updated_at: time,
    }
);

table!(
    TEAMS,
    team,
    "LiteLLM_TeamTable",
    LiteTeam {
        team_id: value,
        team_alias: value,
        organization_id: value,
        admins: strings,
        members: strings,
        members_with_roles: value,
        metadata: value,
        max_budget: value,
        soft_budget: value,
        spend: value,
        models: strings,
        max_parallel_requests: value,
        tpm_limit: value,
        rpm_limit: value,
        budget_duration: value,
        budget_reset_at: time,
        blocked: value,
        model_max_budget: value,
        created_at: time,
        updated_at: time,
    }
);

table!(
    USERS,
    user,
    "LiteLLM_UserTable",
    LiteUser {
        user_id: value,
        user_alias: value,
        organization_id: value,
        user_role: value,
        max_budget: value,
        spend: value,
        user_email: value,
        models: strings,
        metadata: value,
        max_parallel_requests: value,
        tpm_limit: value,
        rpm_limit: value,
        budget_duration: value,
        budget_reset_at: time,
        model_max_budget: value,
        created_at: time,
        updated_at: time,
    }
);

table!(
    END_USERS,
    end_user,
    "LiteLLM_EndUserTable",
    LiteEndUser { user_id: value, alias: value, spend: value, budget_id: value, blocked: value }
);

table!(
    KEYS,
    key,
    "LiteLLM_VerificationToken",
    LiteKey {
        token: value,
        key_name: value,
        key_alias: value,
        spend: value,
        expires: time,
        models: strings,
        user_id: value,
        team_id: value,
        max_parallel_requests: value,
        metadata: value,
        blocked: value,
        tpm_limit: value,
        rpm_limit: value,
        max_budget: value,
        budget_duration: value,
        budget_reset_at: time,
        model_max_budget: value,
        budget_id: value,
        organization_id: value,
        created_at: time,
        updated_at: time,
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_is_read_up_to_its_bound_and_not_a_row_more() {
        assert!(within_bound(MAX_ROWS_PER_TABLE - 1, "t", MAX_ROWS_PER_TABLE).is_ok());
        let e = within_bound(MAX_ROWS_PER_TABLE, "t", MAX_ROWS_PER_TABLE).unwrap_err();
        assert_eq!(e.to_string(), format!("LiteLLM table t has more than {MAX_ROWS_PER_TABLE} rows"));
    }

    #[test]
    fn selects_quote_litellm_s_mixed_case_names() {
        assert_eq!(
            END_USERS.select(),
            r#"SELECT "user_id", "alias", "spend", "budget_id", "blocked" FROM "LiteLLM_EndUserTable""#
        );
    }

    #[test]
    fn urls_never_reach_an_error_message() {
        // A URL that does not parse: whatever the driver says, nothing after `://` is shown.
        let e = tokio_postgres::Config::from_str("postgres://u:hunter2@h:notaport/db").unwrap_err();
        assert!(!redacted(&e).contains("hunter2"), "{}", redacted(&e));
    }
}
