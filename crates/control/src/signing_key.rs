//! The key berth signs images with: made on the platform's first start, kept in the state
//! store sealed by the keyring (so it is never on disk in the clear, is carried by backups
//! with the store, and is re-sealed by key rotation); its public half is written to
//! `<data>/signing/cosign.pub` for anyone to verify with.

use crate::error::ApiError;
use crate::platform::Platform;
use crate::store::Store;
use berth_data::secrets::{Keyring, Sealed};
use sqlx::Row;

/// Associated data of the sealed key.
const CONTEXT: &str = "signing-key";

/// The signing key's PKCS#8 form, made and sealed the first time.
pub async fn load_or_create(
    store: &Store,
    keyring: &Keyring,
) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
    let row = sqlx::query("SELECT key_id, sealed FROM signing_key WHERE id = 1")
        .fetch_optional(&store.pool)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(row) = row {
        let sealed = Sealed {
            key_id: row.try_get("key_id").map_err(|e| e.to_string())?,
            data: row.try_get("sealed").map_err(|e| e.to_string())?,
        };
        return keyring
            .open_sealed(CONTEXT, &sealed)
            .map_err(|e| format!("opening the image signing key: {e}"));
    }
    let pkcs8 = berth_factory::signing::Signer::generate_pkcs8().map_err(|e| e.to_string())?;
    let sealed = keyring
        .seal(CONTEXT, &pkcs8)
        .map_err(|e| format!("sealing the image signing key: {e}"))?;
    sqlx::query(
        "INSERT INTO signing_key (id, key_id, sealed, created_at) VALUES (1, ?, ?, ?) \
         ON CONFLICT(id) DO NOTHING",
    )
    .bind(&sealed.key_id)
    .bind(&sealed.data)
    .bind(crate::now_secs())
    .execute(&store.pool)
    .await
    .map_err(|e| e.to_string())?;
    Ok(pkcs8)
}

impl Platform {
    /// Re-seals the signing key under the ring's active key (key rotation); how many (0 or 1).
    pub async fn reseal_signing_key(&self, ring: &Keyring) -> Result<usize, ApiError> {
        let Some(row) = sqlx::query("SELECT key_id, sealed FROM signing_key WHERE id = 1")
            .fetch_optional(&self.store.pool)
            .await?
        else {
            return Ok(0);
        };
        let s = ring
            .reseal(
                CONTEXT,
                &Sealed {
                    key_id: row.try_get("key_id")?,
                    data: row.try_get("sealed")?,
                },
            )
            .map_err(|e| ApiError::internal("re-sealing the image signing key", e))?;
        sqlx::query("UPDATE signing_key SET key_id = ?, sealed = ? WHERE id = 1")
            .bind(&s.key_id)
            .bind(&s.data)
            .execute(&self.store.pool)
            .await?;
        Ok(1)
    }
}
