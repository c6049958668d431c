//! The generated credentials: database login, the API's token-signing
//! secret and the first administrator. The controller creates each once,
//! where it reads them (dereference), and never rewrites one; they are not
//! owned by the FoodApp: they live as long as the data does.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;

use super::{DB_NAME, DB_USER, Model, names, unowned_meta};

/// The administrator the operator creates when the user names no Secret.
pub const ADMIN_EMAIL: &str = "admin@foodapp.local";

pub fn database(model: &Model) -> Secret {
    let host = names::db(&model.name);
    let url = format!(
        "postgres://{DB_USER}:{}@{host}:5432/{DB_NAME}?sslmode=disable",
        model.db_password
    );
    Secret {
        metadata: unowned_meta(model, names::db(&model.name), "database"),
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

/// DATABASE_URL of a database the operator does not run, composed from
/// what its owner published (CloudNativePG's app Secret, or the user's
/// Secret for an external server). Owned by the FoodApp and re-applied
/// whenever those change: it holds nothing the data depends on.
pub fn connection(model: &Model, c: &super::Connection) -> Secret {
    Secret {
        metadata: super::meta(model, names::db_connection(&model.name), "database"),
        type_: Some("Opaque".to_owned()),
        ..Default::default()
    }
    .with_strings(BTreeMap::from([("DATABASE_URL".to_owned(), c.url())]))
}

pub fn api(model: &Model) -> Secret {
    Secret {
        metadata: unowned_meta(model, names::api_secret(&model.name), "api"),
        type_: Some("Opaque".to_owned()),
        ..Default::default()
    }
    .with_strings(BTreeMap::from([(
        "JWT_SECRET".to_owned(),
        model.jwt_secret.clone(),
    )]))
}

/// The first administrator's login, with a freshly generated password.
pub fn admin(model: &Model, password: &str) -> Secret {
    Secret {
        metadata: unowned_meta(model, names::admin_secret(&model.name), "api"),
        type_: Some("Opaque".to_owned()),
        ..Default::default()
    }
    .with_strings(BTreeMap::from([
        ("email".to_owned(), ADMIN_EMAIL.to_owned()),
        ("password".to_owned(), password.to_owned()),
    ]))
}

/// Every Secret the operator generates for this FoodApp (the admin one only
/// when the user named none).
pub fn generated(model: &Model, admin_password: &str) -> Vec<Secret> {
    let mut out = Vec::new();
    if model.spec.database.engine == crate::crd::Engine::BuiltIn {
        out.push(database(model));
    }
    out.push(api(model));
    if model.generates_admin_secret() {
        out.push(admin(model, admin_password));
    }
    out
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
    fn a_connection_url_encodes_what_would_break_it() {
        let c = crate::build::Connection {
            host: "db.example.com".into(),
            port: 25060,
            database: "defaultdb".into(),
            user: "doadmin".into(),
            password: "p@ss/w:rd?#%".into(),
            sslmode: "require".into(),
        };
        let s = connection(&model(), &c);
        let url = value(&s, "DATABASE_URL");
        assert_eq!(
            url,
            "postgres://doadmin:p%40ss%2Fw%3Ard%3F%23%25@db.example.com:25060/defaultdb?sslmode=require"
        );
        let parsed = url::Url::parse(&url).unwrap();
        assert_eq!(parsed.host_str(), Some("db.example.com"));
        assert!(s.metadata.owner_references.is_some());
    }

    #[test]
    fn generated_secrets_outlive_the_foodapp() {
        let mut m = model();
        let all = generated(&m, "admin-password");
        assert_eq!(all.len(), 3);
        for s in &all {
            assert!(
                s.metadata.owner_references.is_none(),
                "{:?}",
                s.metadata.name
            );
        }
        assert_eq!(value(&all[2], "email"), ADMIN_EMAIL);
        m.spec.api.admin_secret = Some("mine".into());
        assert_eq!(generated(&m, "x").len(), 2, "the user's Secret is theirs");
    }

    #[test]
    fn generated_secrets_are_long_random_and_url_safe() {
        let a = generate();
        assert_eq!(a.len(), 40);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, generate());
    }
}
