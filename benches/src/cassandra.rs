//! How the bench binaries reach the Cassandra of `deploy/local`.

use tollgate_schemas::store::CqlConnection;

/// Where a bench binary keeps its data: `--cassandra` (a contact point) and `--keyspace`.
#[derive(clap::Args, Debug)]
pub struct Place {
    #[arg(long, default_value = "127.0.0.1:9042")]
    pub cassandra: String,
    #[arg(long)]
    pub keyspace: String,
}

/// Cassandra at `contact_point`, with the login in `TOLLGATE_CQL_USER` and
/// `TOLLGATE_CQL_PASSWORD` when they are set.
pub fn connection(contact_point: &str) -> CqlConnection {
    let (username, password) = match (std::env::var("TOLLGATE_CQL_USER"), std::env::var("TOLLGATE_CQL_PASSWORD")) {
        (Ok(user), Ok(password)) => (Some(user), Some(tollgate_schemas::secret::Secret::new(password))),
        _ => (None, None),
    };
    CqlConnection { contact_points: vec![contact_point.to_owned()], username, password, ..Default::default() }
}
