//! Access tokens (short-lived HS256 JWTs carrying the roles) and refresh
//! tokens (random, stored only as a SHA-256 hash, rotated on every use).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::TryRngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::roles::{Role, roles_from_strings};

const ISSUER: &str = "foodapp-api";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: Uuid,
    roles: Vec<String>,
    iss: String,
    iat: i64,
    exp: i64,
}

pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

impl JwtKeys {
    pub fn new(secret: &[u8], access_ttl: Duration, refresh_ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        JwtKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            access_ttl,
            refresh_ttl,
        }
    }

    pub fn issue_access(&self, user: Uuid, roles: &[Role]) -> Result<String, TokenError> {
        self.issue_access_at(user, roles, chrono::Utc::now().timestamp())
    }

    /// Issues a token as if at `iat` (seconds since the epoch); tests use it
    /// to make expired tokens.
    pub fn issue_access_at(
        &self,
        user: Uuid,
        roles: &[Role],
        iat: i64,
    ) -> Result<String, TokenError> {
        let claims = Claims {
            sub: user,
            roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
            iss: ISSUER.to_owned(),
            iat,
            exp: iat + self.access_ttl.as_secs() as i64,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| TokenError::Signing(e.to_string()))
    }

    pub fn verify_access(&self, token: &str) -> Result<Access, TokenError> {
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })?;
        Ok(Access {
            user: data.claims.sub,
            roles: roles_from_strings(&data.claims.roles),
            expires_at: data.claims.exp,
        })
    }
}

/// What a valid access token proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub user: Uuid,
    pub roles: Vec<Role>,
    /// Seconds since the epoch.
    pub expires_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the access token has expired; refresh it")]
    Expired,
    #[error("the access token is invalid")]
    Invalid,
    #[error("signing a token: {0}")]
    Signing(String),
    #[error("no randomness for a token: {0}")]
    NoRandomness(String),
}

/// A new random refresh token and the hash under which it is stored.
pub fn new_refresh_token() -> Result<(String, Vec<u8>), TokenError> {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| TokenError::NoRandomness(e.to_string()))?;
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash_refresh_token(&token);
    Ok((token, hash))
}

pub fn hash_refresh_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> JwtKeys {
        JwtKeys::new(
            b"0123456789abcdef0123456789abcdef",
            Duration::from_secs(900),
            Duration::from_secs(3600),
        )
    }

    #[test]
    fn access_tokens_round_trip_with_roles() {
        let k = keys();
        let id = Uuid::new_v4();
        let t = k
            .issue_access(id, &[Role::Customer, Role::Kitchen])
            .unwrap();
        let access = k.verify_access(&t).unwrap();
        assert_eq!(access.user, id);
        assert_eq!(access.roles, vec![Role::Customer, Role::Kitchen]);
        let lifetime = access.expires_at - chrono::Utc::now().timestamp();
        assert!((895..=900).contains(&lifetime), "{lifetime}");
    }

    #[test]
    fn expired_tampered_and_foreign_tokens_are_refused() {
        let k = keys();
        let id = Uuid::new_v4();
        let old = k
            .issue_access_at(id, &[Role::Admin], chrono::Utc::now().timestamp() - 3600)
            .unwrap();
        assert!(matches!(k.verify_access(&old), Err(TokenError::Expired)));

        let good = k.issue_access(id, &[Role::Customer]).unwrap();
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        let forged = URL_SAFE_NO_PAD.encode(
            serde_json::json!({"sub": id, "roles": ["admin"], "iss": ISSUER, "iat": 0, "exp": 9999999999i64})
                .to_string(),
        );
        parts[1] = forged;
        assert!(k.verify_access(&parts.join(".")).is_err());

        let other = JwtKeys::new(
            b"another-secret-another-secret-xx",
            k.access_ttl,
            k.refresh_ttl,
        );
        assert!(other.verify_access(&good).is_err());
    }

    #[test]
    fn refresh_tokens_are_random_and_hashed() {
        let (a, ha) = new_refresh_token().unwrap();
        let (b, _) = new_refresh_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(ha, hash_refresh_token(&a));
        assert_eq!(ha.len(), 32);
    }
}
