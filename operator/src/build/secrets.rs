//! The generated credentials: database login and the API's token-signing
//! secret. Values come from the model (read from the existing Secrets, or
//! generated once), so applying never rotates them by accident.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;

use super::{DB_NAME, DB_USER, Model, meta, names};

pub fn database(model: &Model) -> Secret {
    let host = names::db(&model.name);
    let url = format!(
        "postgres://{DB_USER}:{}@{host}:5432/{DB_NAME}?sslmode=disable",
        model.db_password
    );
    Secret {
        metadata: meta(model, names::db(&model.name), "database"),
        type_: Some("Opaque".to_owned()),
        ..Default::default()
    }
    .with_strings(BTreeMap::from([
        ("username".to_owned(), DB_USER.to_owned()),
        ("password".to_owned(), model.db_password.clone()),
        ("database".to_owned(), DB_NAME.to_owned()),
        ("DATABASE_URL".to_owned(), url),
    ]))
}

pub fn api(model: &Model) -> Secret {
    Secret {
        metadata: meta(model, names::api_secret(&model.name), "api"),
        type_: Some("Opaque".to_owned()),
        ..Default::default()
    }
    .with_strings(BTreeMap::from([(
        "JWT_SECRET".to_owned(),
        model.jwt_secret.clone(),
    )]))
}

trait WithStrings {
    fn with_strings(self, values: BTreeMap<String, String>) -> Self;
}

impl WithStrings for Secret {
    /// Stores values under `data` (base64 on the wire), which is what the
    /// API server returns too, so a re-read compares equal.
    fn with_strings(mut self, values: BTreeMap<String, String>) -> Self {
        self.data = Some(
            values
                .into_iter()
                .map(|(k, v)| (k, k8s_openapi::ByteString(v.into_bytes())))
                .collect(),
        );
        self
    }
}

/// A new random secret: 32 bytes, URL-safe characters only (it goes into a URL).
pub fn generate() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..40)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::testing::model;

    fn value(s: &Secret, key: &str) -> String {
        String::from_utf8(s.data.as_ref().unwrap()[key].0.clone()).unwrap()
    }

    #[test]
    fn the_database_secret_holds_a_working_url_with_the_model_password() {
        let s = database(&model());
        assert_eq!(value(&s, "password"), "db-password");
        assert_eq!(
            value(&s, "DATABASE_URL"),
            "postgres://foodapp:db-password@shop-db:5432/foodapp?sslmode=disable"
        );
    }

    #[test]
    fn generated_secrets_are_long_random_and_url_safe() {
        let a = generate();
        assert_eq!(a.len(), 40);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, generate());
    }
}
