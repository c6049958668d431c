//! What a restore into a clone does to the data before it commits: with
//! `--anonymize`, every column that holds something about a person is
//! replaced with a deterministic fake value derived from the row's id (the
//! same backup anonymised twice gives the same clone); with `--clone`, the
//! clone refuses a database that already holds orders, revokes every
//! session (a refresh token of the source must not log in to the clone)
//! and gives the clone's administrator the password of its own Secret.
//!
//! All of it runs inside the restore's transaction, before COMMIT: nothing
//! personal is ever committed to an anonymised clone. The statements look
//! up which columns the restored schema has, so a backup of an older schema
//! version is anonymised as well.
//!
//! Every column of the schema is listed here, replaced or kept with the
//! reason; a test fails when a migration adds a column that is neither.

/// One table: the columns replaced (with the SQL expression giving the fake
/// value; it may read the row's other columns, as they were) and the
/// columns kept.
pub struct Table {
    pub name: &'static str,
    pub replaced: &'static [(&'static str, &'static str)],
    pub kept: &'static [&'static str],
}

/// The schema, column by column.
pub const TABLES: &[Table] = &[
    Table {
        name: "users",
        replaced: &[
            ("email", "'user-' || id || '@anonymized.invalid'"),
            ("name", "'Customer ' || left(md5(id::text), 8)"),
            // Not a PHC string: no password matches it (login answers 401).
            ("password_hash", "'!anonymized'"),
        ],
        kept: &["id", "roles", "created_at"],
    },
    Table {
        name: "orders",
        replaced: &[
            ("payment_reference", "'anon-' || left(md5(id::text), 16)"),
            // The stored reply of the placement repeats the reference.
            (
                "reply",
                "replace(reply, '\"reference\" : ' || to_json(payment_reference)::text, '\"reference\" : ' || to_json('anon-' || left(md5(id::text), 16))::text)",
            ),
        ],
        kept: &[
            "id",
            "customer_id",
            "status",
            "total_cents",
            "courier_id",
            "idempotency_key",
            "request_hash",
            "payment_id",
            "payment_method",
            "payment_status",
            "created_at",
            "updated_at",
        ],
    },
    Table {
        name: "order_events",
        // Staff write free text here ("customer called, moved to …").
        replaced: &[(
            "reason",
            "CASE WHEN reason IS NULL THEN NULL ELSE '[anonymized]' END",
        )],
        kept: &[
            "order_id",
            "id",
            "from_status",
            "to_status",
            "actor_id",
            "at",
        ],
    },
    Table {
        name: "refunds",
        replaced: &[("reason", "'[anonymized]'")],
        kept: &[
            "id",
            "order_id",
            "payment_id",
            "amount_cents",
            "status",
            "created_at",
            "completed_at",
            "completed_by",
        ],
    },
    Table {
        name: "refresh_tokens",
        // Revoked in every clone (`--clone`); hashes of random tokens.
        replaced: &[],
        kept: &[
            "id",
            "family_id",
            "user_id",
            "token_hash",
            "expires_at",
            "used_at",
            "revoked_at",
            "created_at",
        ],
    },
    Table {
        name: "categories",
        replaced: &[],
        kept: &["id", "name", "description", "position", "created_at"],
    },
    Table {
        name: "menu_items",
        replaced: &[],
        kept: &[
            "id",
            "category_id",
            "name",
            "description",
            "price_cents",
            "available",
            "stock",
            "created_at",
            "updated_at",
            "deleted_at",
        ],
    },
    Table {
        name: "cart_items",
        replaced: &[],
        kept: &["user_id", "menu_item_id", "quantity", "added_at"],
    },
    Table {
        name: "order_items",
        replaced: &[],
        kept: &[
            "order_id",
            "menu_item_id",
            "name",
            "unit_price_cents",
            "quantity",
        ],
    },
    Table {
        name: "_sqlx_migrations",
        replaced: &[],
        kept: &[
            "version",
            "description",
            "installed_on",
            "success",
            "checksum",
            "execution_time",
        ],
    },
];

/// A SQL string literal (standard_conforming_strings is on: the statements
/// set it).
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The statements that anonymise: per table, one UPDATE of the replaced
/// columns the restored schema has.
pub fn anonymize_sql() -> String {
    let mut sql = String::from("SET LOCAL standard_conforming_strings = on;\n");
    for table in TABLES.iter().filter(|t| !t.replaced.is_empty()) {
        let values = table
            .replaced
            .iter()
            .map(|(column, expr)| format!("({}, {})", literal(column), literal(expr)))
            .collect::<Vec<_>>()
            .join(", ");
        sql.push_str(&format!(
            "DO $anonymize$
DECLARE sets text;
BEGIN
  SELECT string_agg(format('%I = %s', r.col, r.expr), ', ') INTO sets
    FROM (VALUES {values}) AS r (col, expr)
   WHERE EXISTS (SELECT FROM information_schema.columns c
                  WHERE c.table_schema = 'public' AND c.table_name = {table}
                    AND c.column_name = r.col);
  IF sets IS NOT NULL THEN
    EXECUTE format('UPDATE public.%I SET ', {table}) || sets;
  END IF;
END $anonymize$;
",
            table = literal(table.name),
        ));
    }
    sql
}

/// Before the restored schema replaces the clone's: the clone must not
/// hold orders (it would be a live shop, not a new one).
pub const REQUIRE_NO_ORDERS: &str = "DO $clone$
BEGIN
  -- Nested: PL/pgSQL plans a whole condition, and a new FoodApp's empty
  -- database has no orders table to plan a query on.
  IF to_regclass('public.orders') IS NOT NULL THEN
    IF EXISTS (SELECT FROM public.orders) THEN
      RAISE EXCEPTION 'the database to clone into holds orders: a clone goes into a new FoodApp; nothing was changed'
        USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
  END IF;
END $clone$;
";

/// After the restored data: no session of the source works on the clone,
/// and the clone's administrator (when the backup has that email) logs in
/// with the clone's own password (`hash`, argon2id).
pub fn clone_sql(admin: Option<(&str, &str)>) -> String {
    let mut sql = String::from(
        "SET LOCAL standard_conforming_strings = on;
DO $clone$
BEGIN
  IF to_regclass('public.refresh_tokens') IS NOT NULL THEN
    UPDATE public.refresh_tokens SET revoked_at = now() WHERE revoked_at IS NULL;
  END IF;
END $clone$;
",
    );
    if let Some((email, hash)) = admin {
        sql.push_str(&format!(
            "UPDATE public.users SET password_hash = {} WHERE lower(email) = lower({});\n",
            literal(hash),
            literal(email.trim()),
        ));
    }
    sql
}

/// An argon2id hash of the clone's administrator password, in the form
/// (and with the parameters) the API writes and verifies.
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    use rand::TryRngCore;
    let mut salt = [0u8; 16];
    rand::rngs::OsRng
        .try_fill_bytes(&mut salt)
        .map_err(|e| format!("no randomness: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| format!("salt: {e}"))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("hash: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_literal_cannot_end_early() {
        assert_eq!(literal("o'neil"), "'o''neil'");
        assert_eq!(literal("a''); DROP"), "'a''''); DROP'");
    }

    #[test]
    fn no_column_is_both_replaced_and_kept() {
        for t in TABLES {
            for (c, _) in t.replaced {
                assert!(!t.kept.contains(c), "{}.{c}", t.name);
            }
        }
    }

    #[test]
    fn the_admin_hash_verifies_as_the_api_verifies() {
        use argon2::password_hash::{PasswordHash, PasswordVerifier};
        let hash = hash_password("clone-admin-pass").unwrap();
        let parsed = PasswordHash::new(&hash).unwrap();
        assert!(
            argon2::Argon2::default()
                .verify_password(b"clone-admin-pass", &parsed)
                .is_ok()
        );
        assert!(PasswordHash::new("!anonymized").is_err());
    }
}
