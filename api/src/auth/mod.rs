//! Authentication: registration, password login, rotating refresh tokens,
//! logout, and the extractor that turns a bearer token into an `AuthUser`.

pub mod error;
pub mod password;
pub mod roles;
pub mod tokens;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub use roles::{AuthUser, Role};

use crate::AppState;
use crate::error::{ApiError, ApiResult, Json, unique_violation};
use crate::users::{User, UserRow};
pub use error::AuthError;

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or(AuthError::MissingToken)?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(crate::text::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::MalformedAuthorization)?;
        let access = state.keys.verify_access(token)?;
        Ok(AuthUser {
            id: access.user,
            roles: access.roles,
            expires_at: access.expires_at,
        })
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(token))
        .routes(routes!(refresh))
        .routes(routes!(logout))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    #[schema(
        example = "ada@example.com",
        max_length = 254,
        pattern = r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$"
    )]
    pub email: String,
    /// 8 to 128 characters.
    #[schema(min_length = 8, max_length = 128)]
    pub password: String,
    /// 1 to 100 characters, not only spaces.
    #[schema(
        max_length = 100,
        pattern = r"^[^\x00]*[^\x00\t\n\x0b\x0c\r ][^\x00]*$"
    )]
    pub name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    #[schema(example = "ada@example.com", max_length = 254)]
    pub email: String,
    #[schema(max_length = 1024)]
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    pub refresh_token: String,
    /// Seconds until the refresh token expires.
    pub refresh_expires_in: u64,
}

/// An address a new account may have, exactly as `RegisterRequest` documents
/// it (`local@label.label…` of ASCII letters, digits and `._%+-`, at most 254
/// characters), lowercased.
pub fn new_account_email(email: &str) -> Result<String, AuthError> {
    let local_ok = |c: char| c.is_ascii_alphanumeric() || "._%+-".contains(c);
    let label_ok =
        |l: &str| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && local.chars().all(local_ok)
                && domain.split('.').count() >= 2
                && domain.split('.').all(label_ok)
        });
    if valid {
        Ok(email.to_ascii_lowercase())
    } else {
        Err(AuthError::Invalid(
            "email must be an address such as ada@example.com (ASCII letters, digits and ._%+- before the @, a domain with a dot after it)".into(),
        ))
    }
}

/// The form an address is looked up in: trimmed and lowercased. Any
/// text is a wrong email at worst, so logins accept what older rules let
/// accounts have.
pub fn lookup_email(email: &str) -> String {
    email.trim().to_lowercase()
}

pub fn check_password(password: &str) -> Result<(), AuthError> {
    let n = password.chars().count();
    if (8..=128).contains(&n) {
        Ok(())
    } else {
        Err(AuthError::Invalid(
            "password must be 8 to 128 characters long".into(),
        ))
    }
}

/// Create a customer account.
#[utoipa::path(post, path = "/auth/register", tag = "auth", request_body = RegisterRequest,
    responses((status = 201, body = User), (status = 409, description = "email_taken", body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)))]
async fn register(
    State(state): State<AppState>,
    Json(req): Json<RegisterRequest>,
) -> ApiResult<(StatusCode, Json<User>)> {
    let email = new_account_email(&req.email)?;
    check_password(&req.password)?;
    let name = crate::text::trim(&req.name);
    if name.is_empty() || req.name.chars().count() > 100 {
        return Err(AuthError::Invalid("name must be 1 to 100 characters long".into()).into());
    }
    let hash = password::hash(req.password).await?;
    let user = create_user(&state.pool, &email, name, &hash, &[Role::Customer]).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

pub async fn create_user(
    pool: &sqlx::PgPool,
    email: &str,
    name: &str,
    password_hash: &str,
    roles: &[Role],
) -> Result<User, AuthError> {
    let mut roles = roles.to_vec();
    roles.sort();
    roles.dedup();
    let row: UserRow = sqlx::query_as!(
        UserRow,
        "INSERT INTO users (id, email, name, password_hash, roles) VALUES ($1, $2, $3, $4, $5)
         RETURNING id, email, name, roles, created_at",
        Uuid::now_v7(),
        email,
        name,
        password_hash,
        &roles::roles_to_strings(&roles)
    )
    .fetch_one(pool)
    .await
    .map_err(|e| {
        if unique_violation(&e, "users_email_key") {
            AuthError::EmailTaken
        } else {
            e.into()
        }
    })?;
    Ok(row.into())
}

/// Exchange email and password for an access and a refresh token.
#[utoipa::path(post, path = "/auth/token", tag = "auth", request_body = TokenRequest,
    responses((status = 200, body = TokenResponse), (status = 401, description = "invalid_credentials", body = crate::error::Problem)))]
async fn token(
    State(state): State<AppState>,
    Json(req): Json<TokenRequest>,
) -> ApiResult<Json<TokenResponse>> {
    // An address no account can have (too long, or with a NUL, which
    // PostgreSQL cannot even compare) is just a wrong email.
    let email = Some(lookup_email(&req.email)).filter(|e| e.len() <= 254 && !e.contains('\0'));
    let row: Option<(Uuid, String, Vec<String>)> = match &email {
        Some(email) => sqlx::query!(
            "SELECT id, password_hash, roles FROM users WHERE lower(email) = $1",
            email
        )
        .fetch_optional(&state.pool)
        .await?
        .map(|r| (r.id, r.password_hash, r.roles)),
        None => None,
    };
    let (stored, found) = match row {
        Some((id, hash, roles)) => (Some(hash), Some((id, roles))),
        None => (None, None),
    };
    let ok = password::verify(req.password, stored).await?;
    match (ok, found) {
        (true, Some((id, roles))) => {
            let roles = roles::roles_from_strings(&roles);
            Ok(Json(issue_pair(&state, id, &roles, Uuid::now_v7()).await?))
        }
        _ => Err(AuthError::InvalidCredentials.into()),
    }
}

async fn issue_pair(
    state: &AppState,
    user: Uuid,
    roles: &[Role],
    family: Uuid,
) -> ApiResult<TokenResponse> {
    let access_token = state.keys.issue_access(user, roles)?;
    let (refresh_token, hash) = tokens::new_refresh_token()?;
    let ttl = state.keys.refresh_ttl;
    sqlx::query!(
        "INSERT INTO refresh_tokens (id, family_id, user_id, token_hash, expires_at)
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))",
        Uuid::now_v7(),
        family,
        user,
        hash,
        ttl.as_secs_f64()
    )
    .execute(&state.pool)
    .await?;
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: state.keys.access_ttl.as_secs(),
        refresh_token,
        refresh_expires_in: ttl.as_secs(),
    })
}

/// Trade a refresh token for a new pair. Each refresh token works once:
/// presenting a used one again revokes every token of its family.
#[utoipa::path(post, path = "/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenResponse),
              (status = 401, description = "invalid_refresh_token or refresh_token_reused", body = crate::error::Problem)))]
async fn refresh(
    State(state): State<AppState>,
    Json(req): Json<RefreshRequest>,
) -> ApiResult<Json<TokenResponse>> {
    let hash = tokens::hash_refresh_token(&req.refresh_token);
    let (next_token, next_hash) = tokens::new_refresh_token()?;
    let ttl = state.keys.refresh_ttl;
    // One statement rotates: marking the token used is the claim (of two
    // concurrent refreshes with the same token exactly one gets the row
    // back) and its successor is written with it. A reuse that revokes the
    // family therefore sees the successor, or makes the claim fail.
    let claimed: Option<(Uuid, Uuid, Vec<String>)> = sqlx::query!(
        r#"WITH claimed AS (
            UPDATE refresh_tokens t SET used_at = now()
            FROM users u
            WHERE t.token_hash = $1 AND t.user_id = u.id
              AND t.used_at IS NULL AND t.revoked_at IS NULL AND t.expires_at > now()
            RETURNING t.user_id, t.family_id, u.roles
         ), successor AS (
            INSERT INTO refresh_tokens (id, family_id, user_id, token_hash, expires_at)
            SELECT $2, family_id, user_id, $3, now() + make_interval(secs => $4) FROM claimed
         )
         SELECT user_id AS "user_id!", family_id AS "family_id!", roles AS "roles!" FROM claimed"#,
        &hash,
        Uuid::now_v7(),
        &next_hash,
        ttl.as_secs_f64()
    )
    .fetch_optional(&state.pool)
    .await?
    .map(|r| (r.user_id, r.family_id, r.roles));
    if let Some((user, _, roles)) = claimed {
        let roles = roles::roles_from_strings(&roles);
        return Ok(Json(TokenResponse {
            access_token: state.keys.issue_access(user, &roles)?,
            token_type: "Bearer",
            expires_in: state.keys.access_ttl.as_secs(),
            refresh_token: next_token,
            refresh_expires_in: ttl.as_secs(),
        }));
    }
    let known: Option<(Uuid, bool)> = sqlx::query!(
        r#"SELECT family_id, used_at IS NOT NULL AS "used!" FROM refresh_tokens WHERE token_hash = $1"#,
        &hash
    )
    .fetch_optional(&state.pool)
    .await?
    .map(|r| (r.family_id, r.used));
    match known {
        Some((family, true)) => {
            revoke_family(&state.pool, family).await?;
            tracing::warn!(%family, "refresh token reused; family revoked");
            Err(AuthError::RefreshTokenReused.into())
        }
        _ => Err(AuthError::InvalidRefreshToken.into()),
    }
}

async fn revoke_family(pool: &sqlx::PgPool, family: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL",
        family
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Sign out: revoke the refresh token and every token rotated from the same login.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", request_body = RefreshRequest,
    responses((status = 204, description = "signed out (also when the token was already revoked)")))]
async fn logout(
    State(state): State<AppState>,
    Json(req): Json<RefreshRequest>,
) -> ApiResult<StatusCode> {
    let hash = tokens::hash_refresh_token(&req.refresh_token);
    let family: Option<Uuid> = sqlx::query_scalar!(
        "SELECT family_id FROM refresh_tokens WHERE token_hash = $1",
        &hash
    )
    .fetch_optional(&state.pool)
    .await?;
    if let Some(family) = family {
        revoke_family(&state.pool, family).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Creates the first administrator from ADMIN_EMAIL/ADMIN_PASSWORD when no
/// account has that email yet; an existing account is left as it is.
pub async fn bootstrap_admin(
    pool: &sqlx::PgPool,
    email: &str,
    password: &str,
) -> anyhow::Result<bool> {
    let email = new_account_email(email.trim()).map_err(|e| anyhow::anyhow!("ADMIN_EMAIL: {e}"))?;
    check_password(password).map_err(|e| anyhow::anyhow!("ADMIN_PASSWORD: {e}"))?;
    let exists: bool = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM users WHERE lower(email) = $1) AS "exists!""#,
        &email
    )
    .fetch_one(pool)
    .await?;
    if exists {
        return Ok(false);
    }
    let hash = password::hash(password.to_owned())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    match create_user(
        pool,
        &email,
        "Administrator",
        &hash,
        &[Role::Admin, Role::Manager],
    )
    .await
    {
        Ok(_) => Ok(true),
        // Another replica created it at the same moment.
        Err(AuthError::EmailTaken) => Ok(false),
        Err(e) => Err(anyhow::anyhow!("{e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_addresses_follow_the_documented_pattern_and_lookups_normalize() {
        assert_eq!(
            new_account_email("Ada.Lovelace+x@Example.co.UK").unwrap(),
            "ada.lovelace+x@example.co.uk"
        );
        assert_eq!(lookup_email(" Ada@Example.COM "), "ada@example.com");
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@example",
            "a da@example.com",
            " ada@example.com",
            "ada@.com",
            "ada@example.",
            "0@0.000*",
            "ada@exa_mple.com",
            "adä@example.com",
        ] {
            assert!(new_account_email(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn password_length_is_bounded() {
        assert!(check_password("short").is_err());
        assert!(check_password("long enough").is_ok());
        assert!(check_password(&"x".repeat(129)).is_err());
    }
}
