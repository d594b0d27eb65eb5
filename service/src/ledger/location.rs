//! Where the ledger lives, from a database URL, and opening it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Ledger, LedgerError, PostgresLedger, SqliteLedger};

/// Where the ledger lives, from a database URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerLocation {
    /// `postgres://…` or `postgresql://…`.
    Postgres(String),
    /// `sqlite://PATH` (relative or absolute path of the database file).
    Sqlite(PathBuf),
}

impl LedgerLocation {
    /// The ledger a URL names; without a URL, the embedded SQLite file in `data_dir`.
    pub fn from_url(url: Option<&str>, data_dir: &Path) -> Result<Self, String> {
        let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) else {
            return Ok(LedgerLocation::Sqlite(data_dir.join("ledger.sqlite3")));
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(LedgerLocation::Postgres(url.to_owned()));
        }
        match url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            Some(path) if !path.is_empty() => Ok(LedgerLocation::Sqlite(PathBuf::from(path))),
            _ => Err(format!(
                "unsupported database URL {url:?}: use postgres://USER@HOST:PORT/DB or sqlite://PATH"
            )),
        }
    }

    /// Opens the ledger, applying pending migrations. On PostgreSQL, the connections that
    /// answer requests are driven on `requests_runtime` if one is given (see
    /// [`PostgresLedger::connect_serving_requests_on`]).
    pub async fn open(
        &self,
        pool_size: usize,
        requests_runtime: Option<tokio::runtime::Handle>,
    ) -> Result<Arc<dyn Ledger>, LedgerError> {
        Ok(match self {
            LedgerLocation::Postgres(url) => Arc::new(
                PostgresLedger::connect_serving_requests_on(url, pool_size, requests_runtime)
                    .await?,
            ),
            LedgerLocation::Sqlite(path) => Arc::new(SqliteLedger::open(path, pool_size).await?),
        })
    }
}

impl fmt::Display for LedgerLocation {
    /// Shown in logs: the password of a PostgreSQL URL is left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerLocation::Postgres(url) => {
                let (base, query) = url.split_once('?').unwrap_or((url, ""));
                let mut shown = match (base.find("://"), base.rfind('@')) {
                    (Some(scheme), Some(at)) if at > scheme => {
                        let user = &base[scheme + 3..at];
                        let user = user.split(':').next().unwrap_or_default();
                        format!("{}{user}@{}", &base[..scheme + 3], &base[at + 1..])
                    }
                    _ => base.to_owned(),
                };
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| !pair.is_empty() && !pair.starts_with("password="))
                    .collect();
                if !kept.is_empty() {
                    shown = format!("{shown}?{}", kept.join("&"));
                }
                write!(f, "PostgreSQL {shown}")
            }
            LedgerLocation::Sqlite(path) => write!(f, "embedded SQLite {}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LedgerLocation;
    use std::path::{Path, PathBuf};

    #[test]
    fn no_url_means_the_embedded_ledger_in_the_data_directory() {
        assert_eq!(
            LedgerLocation::from_url(None, Path::new("/data")).unwrap(),
            LedgerLocation::Sqlite(PathBuf::from("/data/ledger.sqlite3"))
        );
    }

    #[test]
    fn the_url_scheme_picks_the_ledger() {
        let dir = Path::new("d");
        assert_eq!(
            LedgerLocation::from_url(Some("sqlite:///var/lib/t.db"), dir).unwrap(),
            LedgerLocation::Sqlite(PathBuf::from("/var/lib/t.db"))
        );
        assert_eq!(
            LedgerLocation::from_url(Some("sqlite://rel/t.db"), dir).unwrap(),
            LedgerLocation::Sqlite(PathBuf::from("rel/t.db"))
        );
        assert!(matches!(
            LedgerLocation::from_url(Some("postgresql://u@h/db"), dir).unwrap(),
            LedgerLocation::Postgres(_)
        ));
        assert!(LedgerLocation::from_url(Some("mysql://h/db"), dir).is_err());
        assert!(LedgerLocation::from_url(Some("sqlite://"), dir).is_err());
    }

    #[test]
    fn logs_never_show_a_database_password() {
        let location = LedgerLocation::Postgres("postgres://app:secret@db:5432/transfer".into());
        assert_eq!(
            location.to_string(),
            "PostgreSQL postgres://app@db:5432/transfer"
        );
        let in_query =
            LedgerLocation::Postgres("postgres://app@db/t?password=secret&sslmode=require".into());
        assert_eq!(
            in_query.to_string(),
            "PostgreSQL postgres://app@db/t?sslmode=require"
        );
    }
}
