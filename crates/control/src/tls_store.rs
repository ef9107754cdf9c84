//! The state store's TLS tables: custom domains, the certificate served for each host (key
//! sealed), and sealed TLS keys (local CA, ACME accounts).

use crate::store::Store;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

/// A custom domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainRow {
    pub name: String,
    pub app: String,
    pub https_redirect: bool,
    pub cert_error: Option<String>,
    pub created_at: i64,
}

/// A certificate as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRow {
    pub name: String,
    pub source: String,
    pub chain_pem: String,
    pub key_id: String,
    pub sealed_key: String,
    pub not_after: i64,
    pub issued_at: i64,
}

/// A sealed TLS key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsKeyRow {
    pub name: String,
    pub public_pem: Option<String>,
    pub key_id: String,
    pub sealed: String,
    pub created_at: i64,
}

fn domain_from_row(r: &SqliteRow) -> Result<DomainRow, sqlx::Error> {
    Ok(DomainRow {
        name: r.try_get("name")?,
        app: r.try_get("app")?,
        https_redirect: r.try_get::<i64, _>("https_redirect")? != 0,
        cert_error: r.try_get("cert_error")?,
        created_at: r.try_get("created_at")?,
    })
}

fn cert_from_row(r: &SqliteRow) -> Result<CertRow, sqlx::Error> {
    Ok(CertRow {
        name: r.try_get("name")?,
        source: r.try_get("source")?,
        chain_pem: r.try_get("chain_pem")?,
        key_id: r.try_get("key_id")?,
        sealed_key: r.try_get("sealed_key")?,
        not_after: r.try_get("not_after")?,
        issued_at: r.try_get("issued_at")?,
    })
}

fn key_from_row(r: &SqliteRow) -> Result<TlsKeyRow, sqlx::Error> {
    Ok(TlsKeyRow {
        name: r.try_get("name")?,
        public_pem: r.try_get("public_pem")?,
        key_id: r.try_get("key_id")?,
        sealed: r.try_get("sealed")?,
        created_at: r.try_get("created_at")?,
    })
}

impl Store {
    /// Adds a domain; fails (unique constraint) when any app already holds it.
    pub async fn insert_domain(&self, d: &DomainRow) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO domains (name, app, https_redirect, cert_error, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&d.name)
        .bind(&d.app)
        .bind(i64::from(d.https_redirect))
        .bind(&d.cert_error)
        .bind(d.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// One domain.
    pub async fn domain(&self, name: &str) -> Result<Option<DomainRow>, sqlx::Error> {
        sqlx::query("SELECT * FROM domains WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(domain_from_row)
            .transpose()
    }

    /// Domains of one app, or of every app.
    pub async fn domains(&self, app: Option<&str>) -> Result<Vec<DomainRow>, sqlx::Error> {
        let rows = match app {
            Some(a) => {
                sqlx::query("SELECT * FROM domains WHERE app = ? ORDER BY name")
                    .bind(a)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query("SELECT * FROM domains ORDER BY name")
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(domain_from_row).collect()
    }

    /// Records why issuing a domain's certificate failed (None: it worked).
    pub async fn set_domain_error(
        &self,
        name: &str,
        error: Option<&str>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE domains SET cert_error = ? WHERE name = ?")
            .bind(error)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Removes a domain and its certificate.
    pub async fn delete_domain(&self, name: &str) -> Result<(), sqlx::Error> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM domains WHERE name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM certificates WHERE name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// Every stored certificate.
    pub async fn certificates(&self) -> Result<Vec<CertRow>, sqlx::Error> {
        let rows = sqlx::query("SELECT * FROM certificates ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(cert_from_row).collect()
    }

    /// The certificate of one host.
    pub async fn certificate(&self, name: &str) -> Result<Option<CertRow>, sqlx::Error> {
        sqlx::query("SELECT * FROM certificates WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(cert_from_row)
            .transpose()
    }

    /// Stores (or replaces) the certificate of a host.
    pub async fn put_certificate(&self, c: &CertRow) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO certificates (name, source, chain_pem, key_id, sealed_key, not_after, issued_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET source = excluded.source, \
             chain_pem = excluded.chain_pem, key_id = excluded.key_id, sealed_key = excluded.sealed_key, \
             not_after = excluded.not_after, issued_at = excluded.issued_at",
        )
        .bind(&c.name)
        .bind(&c.source)
        .bind(&c.chain_pem)
        .bind(&c.key_id)
        .bind(&c.sealed_key)
        .bind(c.not_after)
        .bind(c.issued_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets the certificate of a host.
    pub async fn delete_certificate(&self, name: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM certificates WHERE name = ?")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A sealed TLS key.
    pub async fn tls_key(&self, name: &str) -> Result<Option<TlsKeyRow>, sqlx::Error> {
        sqlx::query("SELECT * FROM tls_keys WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(key_from_row)
            .transpose()
    }

    /// Every sealed TLS key.
    pub async fn tls_keys(&self) -> Result<Vec<TlsKeyRow>, sqlx::Error> {
        let rows = sqlx::query("SELECT * FROM tls_keys ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Stores a sealed TLS key (replacing one of the same name).
    pub async fn put_tls_key(&self, k: &TlsKeyRow) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO tls_keys (name, public_pem, key_id, sealed, created_at) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET public_pem = excluded.public_pem, key_id = excluded.key_id, \
             sealed = excluded.sealed",
        )
        .bind(&k.name)
        .bind(&k.public_pem)
        .bind(&k.key_id)
        .bind(&k.sealed)
        .bind(k.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Re-seals TLS keys and certificate keys in one transaction (key rotation).
    pub async fn reseal_tls(
        &self,
        keys: &[TlsKeyRow],
        certs: &[CertRow],
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.begin_write().await?;
        for k in keys {
            sqlx::query("UPDATE tls_keys SET key_id = ?, sealed = ? WHERE name = ?")
                .bind(&k.key_id)
                .bind(&k.sealed)
                .bind(&k.name)
                .execute(&mut *tx)
                .await?;
        }
        for c in certs {
            sqlx::query("UPDATE certificates SET key_id = ?, sealed_key = ? WHERE name = ?")
                .bind(&c.key_id)
                .bind(&c.sealed_key)
                .bind(&c.name)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }
}
