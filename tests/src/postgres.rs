//! A private PostgreSQL for a test: Debian's `postgresql` package (deploy/local/prereqs), a
//! cluster of its own in a scratch directory, on loopback and a free port, with a password;
//! stopped and removed when dropped. PostgreSQL refuses to run as root, so as root it runs as the
//! `postgres` user. LiteLLM's schema comes from `tests/litellm/fetch-schema` (PyPI, cached).

use crate::services::free_port;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Postgres {
    pub port: u16,
    pub password: String,
    bin: PathBuf,
    data: PathBuf,
    as_postgres: bool,
}

/// The newest `/usr/lib/postgresql/<version>/bin` with `initdb`.
fn bin_dir() -> Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed (deploy/local/prereqs installs it)")?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).context("no PostgreSQL with initdb under /usr/lib/postgresql")
}

impl Postgres {
    /// Starts a new cluster under `dir`.
    pub fn start(dir: &Path) -> Result<Postgres> {
        let bin = bin_dir()?;
        let root = dir.join("postgres");
        std::fs::create_dir_all(&root)?;
        let as_postgres = Command::new("id").arg("-u").output()?.stdout.starts_with(b"0\n");
        let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
        let pwfile = root.join("pwfile");
        std::fs::write(&pwfile, &password)?;
        if as_postgres {
            run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&root))?;
        }
        let pg = Postgres { port: free_port()?, password, bin, data: root.join("data"), as_postgres };
        pg.run_as(
            "initdb",
            &[
                "-D".as_ref(),
                pg.data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--auth=scram-sha-256".as_ref(),
                "--pwfile".as_ref(),
                pwfile.as_os_str(),
            ],
        )?;
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1", pg.port, root.display());
        let log = root.join("server.log");
        pg.run_as(
            "pg_ctl",
            &[
                "start".as_ref(),
                "-w".as_ref(),
                "-D".as_ref(),
                pg.data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-o".as_ref(),
                options.as_ref(),
            ],
        )?;
        Ok(pg)
    }

    fn run_as(&self, tool: &str, args: &[&std::ffi::OsStr]) -> Result<()> {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        run(cmd.args(args))
    }

    /// The database URL (with its password) of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres:{}@127.0.0.1:{}/{db}?sslmode=disable", self.password, self.port)
    }

    /// Runs the SQL file `sql` in database `db` with `psql`, statement by statement (migrations
    /// hold statements that cannot run in a transaction, `CREATE INDEX CONCURRENTLY`).
    pub fn apply(&self, db: &str, sql: &Path) -> Result<()> {
        run(Command::new(self.bin.join("psql"))
            .args(["-q", "-X", "-v", "ON_ERROR_STOP=1", "-f"])
            .arg(sql)
            .arg(format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port))
            .env("PGPASSWORD", &self.password))
    }

    /// A client of database `db`.
    pub async fn client(&self, db: &str) -> Result<tokio_postgres::Client> {
        let (client, connection) = tokio_postgres::connect(&self.url(db), tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

impl Drop for Postgres {
    /// Stops the cluster and removes its files (about 40 MB); its log stays for inspection.
    fn drop(&mut self) {
        let stop = ["stop".as_ref(), "-m".as_ref(), "fast".as_ref(), "-D".as_ref(), self.data.as_os_str()];
        if self.run_as("pg_ctl", &stop).is_ok() {
            let _ = std::fs::remove_dir_all(&self.data);
        }
    }
}

/// LiteLLM's schema: (the path of `schema.sql`, the text of `schema.prisma`), fetched once
/// from PyPI and cached.
pub fn litellm_schema() -> Result<(PathBuf, String)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("litellm/fetch-schema");
    let out = Command::new(&script).output().with_context(|| format!("cannot run {}", script.display()))?;
    if !out.status.success() {
        bail!("{}: {}", script.display(), String::from_utf8_lossy(&out.stderr));
    }
    let dir = PathBuf::from(String::from_utf8(out.stdout)?.trim());
    Ok((dir.join("schema.sql"), std::fs::read_to_string(dir.join("schema.prisma"))?))
}

/// The scalar fields of Prisma `model`, as (column, Prisma type): `@map("...")` renames a
/// column; relation fields (another model's type) have none.
pub fn prisma_columns(schema: &str, model: &str) -> Result<Vec<(String, String)>> {
    const SCALARS: [&str; 9] = ["String", "Int", "BigInt", "Float", "Boolean", "DateTime", "Json", "Decimal", "Bytes"];
    let start = schema.find(&format!("model {model} {{")).with_context(|| format!("no model {model}"))?;
    let body = &schema[start..];
    let body = &body[body.find('{').unwrap_or(0) + 1..body.find("\n}").unwrap_or(body.len())];
    let mut out = Vec::new();
    for line in body.lines() {
        let line = line.split("//").next().unwrap_or_default().trim();
        let mut parts = line.split_whitespace();
        let (Some(name), Some(ty)) = (parts.next(), parts.next()) else { continue };
        if name.starts_with('@') {
            continue;
        }
        let base = ty.trim_end_matches('?').trim_end_matches("[]");
        if !SCALARS.contains(&base) {
            continue;
        }
        let column = line.split("@map(\"").nth(1).and_then(|rest| rest.split('"').next()).unwrap_or(name);
        out.push((column.to_owned(), ty.to_owned()));
    }
    Ok(out)
}
