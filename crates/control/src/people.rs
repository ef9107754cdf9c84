//! People who sign in with the platform's OIDC provider: the role (and scope) each identity
//! has. An identity the provider vouches for but nobody granted a role has none.

use crate::error::ApiError;
use crate::store::Store;
use crate::tokens::Principal;
use axum::http::StatusCode;
use berth_core::auth::{check_identity, PersonAdd, PersonView, Role};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

fn view_from_row(r: &SqliteRow) -> Result<PersonView, sqlx::Error> {
    let role: String = r.try_get("role")?;
    Ok(PersonView {
        identity: r.try_get("identity")?,
        role: Role::parse(&role).map_err(|e| sqlx::Error::Decode(e.into()))?,
        scope: r.try_get("scope")?,
        created_at: r.try_get("created_at")?,
        created_by: r.try_get("created_by")?,
    })
}

impl Store {
    /// Gives a person a role (replacing the one they had).
    pub async fn add_person(
        &self,
        req: &PersonAdd,
        created_by: &str,
        now: i64,
    ) -> Result<PersonView, ApiError> {
        check_identity(&req.identity).map_err(|e| ApiError::invalid("invalid_identity", e))?;
        let scope = self
            .scope_of(req.project.as_deref(), req.tenant.as_deref())
            .await?;
        sqlx::query(
            "INSERT INTO people (identity, role, scope, created_at, created_by) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (identity) DO UPDATE SET role = excluded.role, scope = excluded.scope, \
             created_at = excluded.created_at, created_by = excluded.created_by",
        )
        .bind(&req.identity)
        .bind(req.role.as_str())
        .bind(&scope)
        .bind(now)
        .bind(created_by)
        .execute(&self.pool)
        .await?;
        Ok(PersonView {
            identity: req.identity.clone(),
            role: req.role,
            scope,
            created_at: now,
            created_by: created_by.to_string(),
        })
    }

    /// Everyone with a role.
    pub async fn people(&self) -> Result<Vec<PersonView>, sqlx::Error> {
        sqlx::query("SELECT * FROM people ORDER BY identity")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(view_from_row)
            .collect()
    }

    /// Takes a person's role away.
    pub async fn remove_person(&self, identity: &str) -> Result<(), ApiError> {
        let done = sqlx::query("DELETE FROM people WHERE identity = ?")
            .bind(identity)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "person_not_found",
                format!("{identity:?} has no role here"),
            )
            .hint("`berth people list` shows who has one"));
        }
        Ok(())
    }

    /// The principal a signed-in person acts as, if they have a role.
    pub async fn person(&self, identity: &str) -> Result<Option<Principal>, sqlx::Error> {
        let row = sqlx::query("SELECT * FROM people WHERE identity = ?")
            .bind(identity)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let v = view_from_row(&r)?;
            Ok(Principal::scoped(
                &format!("{}{}", crate::tokens::PERSON_ID_PREFIX, v.identity),
                &v.identity,
                v.role,
                &v.scope,
            ))
        })
        .transpose()
    }
}
