//! Fresh PostgreSQL databases for the benchmark, created from an admin URL and dropped
//! afterwards.

use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result};
use tokio_postgres::{Client, NoTls};

/// A database of the benchmark's own on the server behind `admin_url`.
pub struct BenchDatabase {
    admin_url: String,
    name: String,
    pub url: String,
}

impl BenchDatabase {
    pub async fn create(admin_url: &str) -> Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "transfer_bench_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let admin = connect(admin_url).await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .with_context(|| format!("creating database {name}"))?;
        let url = match admin_url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => format!("{admin_url}/{name}"),
        };
        Ok(Self {
            admin_url: admin_url.to_owned(),
            name,
            url,
        })
    }

    pub async fn connect(&self) -> Result<Client> {
        connect(&self.url).await
    }

    pub async fn remove(self) {
        if let Ok(admin) = connect(&self.admin_url).await {
            let _ = admin
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ))
                .await;
        }
    }
}

pub async fn connect(url: &str) -> Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.context(
        "connecting to PostgreSQL (set DATABASE_URL to a server where databases may be created)",
    )?;
    tokio::spawn(connection);
    Ok(client)
}
