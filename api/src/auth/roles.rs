//! Roles and the authenticated caller carried by every protected request.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Customer,
    Kitchen,
    Courier,
    Manager,
    Admin,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Customer,
        Role::Kitchen,
        Role::Courier,
        Role::Manager,
        Role::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Kitchen => "kitchen",
            Role::Courier => "courier",
            Role::Manager => "manager",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// The caller, as proven by a valid access token.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: Uuid,
    pub roles: Vec<Role>,
    /// When the token expires, in seconds since the epoch: long-lived
    /// responses (live order streams) end then.
    pub expires_at: i64,
}

impl AuthUser {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    pub fn has_any(&self, roles: &[Role]) -> bool {
        roles.iter().any(|r| self.has(*r))
    }

    /// The one-line authorization check at the top of a handler.
    pub fn require_any(&self, roles: &[Role]) -> Result<(), ApiError> {
        if self.has_any(roles) {
            Ok(())
        } else {
            let names: Vec<_> = roles.iter().map(|r| r.as_str()).collect();
            Err(ApiError::forbidden(format!(
                "this action needs one of the roles: {}",
                names.join(", ")
            )))
        }
    }

    /// Kitchen staff, managers and admins see every order.
    pub fn is_staff(&self) -> bool {
        self.has_any(&[Role::Kitchen, Role::Manager, Role::Admin])
    }
}

pub fn roles_to_strings(roles: &[Role]) -> Vec<String> {
    roles.iter().map(|r| r.as_str().to_owned()).collect()
}

pub fn roles_from_strings(roles: &[String]) -> Vec<Role> {
    roles.iter().filter_map(|r| Role::parse(r)).collect()
}
