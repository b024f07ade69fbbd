//! The benchmarks' own databases on a PostgreSQL cluster the script
//! started: a fresh one per setup, so no setup reads another's rows, all
//! dropped at the end.

use anyhow::{Context, Result};

/// Databases made for this run on the given cluster, dropped at the end.
pub struct Databases {
    admin: String,
    prefix: String,
    made: std::sync::Mutex<Vec<String>>,
}

impl Databases {
    pub fn new(admin: &str) -> Self {
        Self {
            admin: admin.to_owned(),
            prefix: format!("berth_bench_{:x}", std::process::id()),
            made: std::sync::Mutex::new(Vec::new()),
        }
    }

    async fn connect(&self) -> Result<sqlx::PgConnection> {
        use sqlx::Connection as _;
        sqlx::PgConnection::connect(&self.admin)
            .await
            .context("connecting to the PostgreSQL admin URL")
    }

    /// The server's version and the settings that decide what a commit
    /// costs.
    pub async fn describe(&self) -> Result<(String, String)> {
        use sqlx::Connection as _;
        let mut conn = self.connect().await?;
        let version = show(&mut conn, "server_version").await?;
        let mut settings = Vec::new();
        for name in ["fsync", "synchronous_commit", "max_connections"] {
            settings.push(format!("`{name}={}`", show(&mut conn, name).await?));
        }
        conn.close().await.ok();
        Ok((version, settings.join(", ")))
    }

    /// A new empty database; its URL.
    pub async fn create(&self, name: &str) -> Result<String> {
        let name = format!("{}_{name}", self.prefix);
        let mut conn = self.connect().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .with_context(|| format!("creating database {name}"))?;
        self.made.lock().expect("not poisoned").push(name.clone());
        with_database(&self.admin, &name)
    }

    pub async fn drop_all(&self) {
        let names = std::mem::take(&mut *self.made.lock().expect("not poisoned"));
        if names.is_empty() {
            return;
        }
        let Ok(mut conn) = self.connect().await else {
            eprintln!("berth-bench: could not drop the databases {names:?}");
            return;
        };
        for name in names {
            let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(drop))
                .execute(&mut conn)
                .await
            {
                eprintln!("berth-bench: could not drop database {name}: {e}");
            }
        }
    }
}

async fn show(conn: &mut sqlx::PgConnection, setting: &str) -> Result<String> {
    Ok(
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {setting}")))
            .fetch_one(conn)
            .await?,
    )
}

/// The URL of another database on the same server.
fn with_database(url: &str, name: &str) -> Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").context("not a URL")? + 3;
    let authority_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{name}", &base[..authority_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn another_database() {
        assert_eq!(
            with_database("postgres://berth@127.0.0.1:5432/postgres", "x").unwrap(),
            "postgres://berth@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h:1/postgres?sslmode=disable", "x").unwrap(),
            "postgres://u:p@h:1/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:1", "x").unwrap(),
            "postgres://h:1/x"
        );
    }
}
