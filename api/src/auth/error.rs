//! What can go wrong with accounts and tokens, as types; `crate::error`
//! turns them into problem documents, in one place.

use super::tokens::TokenError;

/// Password hashing: no HTTP here.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Every hashing slot stayed taken for the whole short wait.
    #[error("too many password checks at once; retry shortly")]
    Busy,
    #[error("password hashing failed: {0}")]
    Failed(String),
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("this endpoint needs an Authorization: Bearer token")]
    MissingToken,
    #[error("the Authorization header must be `Bearer <token>`")]
    MalformedAuthorization,
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// The request breaks a rule of its own (no state needed to tell).
    #[error("{0}")]
    Invalid(String),
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("the email or password is wrong")]
    InvalidCredentials,
    #[error("the refresh token is unknown, expired or revoked")]
    InvalidRefreshToken,
    #[error("this refresh token was already used; every session it belongs to is now signed out")]
    RefreshTokenReused,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}
