//! The database the catalog and the audit trail share: SQLite (the
//! embedded default, a file under the data directory) or PostgreSQL,
//! through sqlx's `Any` driver, one pool. Both dialects accept `$N`
//! parameters, so queries are written once; what differs ([`Backend`]) is
//! asked of [`Database::backend`]. The two migration folders
//! (`migrations/postgres`, `migrations/sqlite`) are embedded here and run
//! by [`Database::migrate`].

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Row};

static PG_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/sqlite");

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database {url}: {message}")]
    Connect { url: String, message: String },
    #[error("database migrations failed: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// One pool on the catalog-and-audit database.
#[derive(Clone)]
pub struct Database {
    pool: AnyPool,
    backend: Backend,
}

fn redact(url: &str) -> String {
    // postgres://user:password@host/db -> postgres://user:***@host/db
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..s + 3], user, &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl Database {
    /// Connects; for SQLite, creates the file (and its folder) and turns WAL on.
    pub async fn connect(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Self, StorageError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        };
        let err = |e: sqlx::Error| StorageError::Connect {
            url: redact(url),
            message: e.to_string(),
        };
        if backend == Backend::Sqlite {
            let path = url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:")
                .split('?')
                .next()
                .unwrap_or_default();
            if !path.is_empty()
                && path != ":memory:"
                && let Some(dir) = Path::new(path)
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir).map_err(|e| StorageError::Connect {
                    url: redact(url),
                    message: format!("creating {}: {e}", dir.display()),
                })?;
            }
        }
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(acquire_timeout)
            .connect(url)
            .await
            .map_err(err)?;
        if backend == Backend::Sqlite {
            sqlx::query("PRAGMA journal_mode=WAL")
                .fetch_optional(&pool)
                .await
                .map_err(err)?;
        }
        Ok(Self { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    fn migrator(&self) -> &'static Migrator {
        match self.backend {
            Backend::Postgres => &PG_MIGRATIONS,
            Backend::Sqlite => &SQLITE_MIGRATIONS,
        }
    }

    pub async fn migrate(&self) -> Result<(), StorageError> {
        self.migrator()
            .run(&self.pool)
            .await
            .map_err(StorageError::Migrate)
    }

    /// True when the database answers and every embedded migration is applied.
    pub async fn ready(&self) -> Result<bool, StorageError> {
        let latest = self.migrator().iter().map(|m| m.version).max().unwrap_or(0);
        let row = sqlx::query(
            "SELECT COALESCE(MAX(version), 0) AS v FROM _sqlx_migrations WHERE success = TRUE",
        )
        .fetch_one(&self.pool)
        .await;
        match row {
            Ok(row) => Ok(row.try_get::<i64, _>("v")? >= latest),
            Err(sqlx::Error::Database(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("sqlite://./x.db"), "sqlite://./x.db");
    }
}
