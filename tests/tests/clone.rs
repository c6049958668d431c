//! A restore into a clone, run as the real agent against PostgreSQL and
//! s3s-fs: `--anonymize` leaves nothing of what the source said about
//! people (checked against every row of every table), keeps everything
//! else, gives the same clone twice; `--clone` revokes every session, gives
//! the clone's administrator its own password, and refuses a database that
//! holds orders without changing it. And the list of columns the
//! anonymisation knows is the schema's.

use foodapp_e2e::{Database, agent, contents, env, new_bucket, s3, success};
use foodapp_operator::agent::anonymize::TABLES;
use serde_json::Value;

const CLONE_ADMIN_PASSWORD: &str = "clone-admin-password-1";

/// Everything the source says about people, to look for in the clone.
struct Personal {
    values: Vec<String>,
}

struct Source {
    app: String,
    db: Database,
    endpoint: String,
    bucket: String,
    key: String,
    personal: Personal,
}

/// A shop whose customers, staff notes and payments carry recognisable
/// personal values, and one backup of it.
async fn source() -> Source {
    let db = Database::new().await;
    foodapp_api::seed::seed_demo(&db.pool, false).await.unwrap();
    let mut values = Vec::new();
    for i in 0..4 {
        let (email, name, hash) = (
            format!("ada.lovelace{i}@personal.example"),
            format!("Ada Lovelace-{i}"),
            format!("$argon2id$v=19$m=19456,t=2,p=1$c291cmNlc2FsdA$SOURCEHASH{i}"),
        );
        sqlx::query(
            "INSERT INTO users (id, email, name, password_hash, roles) VALUES (gen_random_uuid(), $1, $2, $3, '{customer}')",
        )
        .bind(&email)
        .bind(&name)
        .bind(&hash)
        .execute(&db.pool)
        .await
        .unwrap();
        values.extend([email, name, hash]);
    }
    let admin_hash = "$argon2id$v=19$m=19456,t=2,p=1$c291cmNlc2FsdA$SOURCEADMINHASH";
    sqlx::query(
        "INSERT INTO users (id, email, name, password_hash, roles) VALUES (gen_random_uuid(), 'admin@foodapp.local', 'Grace Source-Admin', $1, '{admin,manager}')",
    )
    .bind(admin_hash)
    .execute(&db.pool)
    .await
    .unwrap();
    values.extend([admin_hash.to_owned(), "Grace Source-Admin".to_owned()]);
    // Orders placed the way the API places them (stored reply included),
    // each with a payment reference of its own.
    let orders: Vec<(uuid::Uuid, uuid::Uuid)> = sqlx::query_as(
        "WITH o AS (SELECT gen_random_uuid() AS id, g FROM generate_series(1, 6) g)
         SELECT o.id, p.payment FROM o
         JOIN LATERAL (SELECT id FROM users WHERE email LIKE 'ada%' ORDER BY id OFFSET (o.g % 4) LIMIT 1) u ON true
         JOIN LATERAL (SELECT id FROM menu_items WHERE stock IS NULL ORDER BY id LIMIT 1) m ON true
         JOIN LATERAL (SELECT gen_random_uuid() AS payment) p ON true
         JOIN LATERAL place_order(o.id, u.id, 'key' || o.g, '\\x00', ARRAY[m.id], ARRAY[1], now(),
                                  to_json(now())::text, p.payment, 'card', 'PAYREF-SECRET-' || o.g, false, NULL) r ON true
         WHERE r.outcome = 'placed'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(orders.len(), 6);
    values.extend((1..=6).map(|g| format!("PAYREF-SECRET-{g}")));
    let (order, payment) = orders[0];
    sqlx::query(
        "INSERT INTO order_events (order_id, from_status, to_status, reason, at)
         VALUES ($1, 'placed', 'rejected', 'called Ada on 555-0100', now())",
    )
    .bind(order)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO refunds (id, order_id, payment_id, amount_cents, reason, created_at)
         VALUES (gen_random_uuid(), $1, $2, 100, 'Ada moved to 12 Crescent Road', now())",
    )
    .bind(order)
    .bind(payment)
    .execute(&db.pool)
    .await
    .unwrap();
    values.extend(["555-0100".to_owned(), "Crescent Road".to_owned()]);
    sqlx::query(
        "INSERT INTO refresh_tokens (id, family_id, user_id, token_hash, expires_at)
         SELECT gen_random_uuid(), gen_random_uuid(), id, sha256(id::text::bytea), now() + interval '1 day'
         FROM users WHERE email LIKE 'ada%'",
    )
    .execute(&db.pool)
    .await
    .unwrap();

    let endpoint = env("S3_ENDPOINT");
    let bucket = new_bucket(&s3(&endpoint)).await;
    let app = format!("shop{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let backup = success(
        &agent(
            &db.url,
            &endpoint,
            &bucket,
            &["backup"],
            &[("FOODAPP_NAME", &app)],
        )
        .await,
    );
    let key = backup["objectKey"].as_str().unwrap().to_owned();
    Source {
        app,
        db,
        endpoint,
        bucket,
        key,
        personal: Personal { values },
    }
}

impl Source {
    /// The backup restored into `into` as a clone.
    async fn clone_into(&self, into: &Database, anonymize: bool) -> std::process::Output {
        agent(
            &into.url,
            &self.endpoint,
            &self.bucket,
            &["restore", "--object-key", &self.key],
            &[
                ("FOODAPP_NAME", &self.app),
                ("CHECK_COUNTS", "true"),
                ("CLONE", "true"),
                ("ANONYMIZE", if anonymize { "true" } else { "false" }),
                ("CLONE_ADMIN_EMAIL", "Admin@FoodApp.local"),
                ("CLONE_ADMIN_PASSWORD", CLONE_ADMIN_PASSWORD),
            ],
        )
        .await
    }
}

async fn rows(db: &Database, query: &str) -> Vec<String> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(query.to_owned()))
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

/// Every table's rows but the sessions (revoked at the clone's own time).
async fn data(db: &Database) -> Vec<(String, Vec<String>)> {
    contents(&db.pool)
        .await
        .into_iter()
        .filter(|(t, _)| t != "public.refresh_tokens")
        .collect()
}

#[tokio::test]
async fn an_anonymised_clone_holds_nothing_personal_and_everything_else() {
    let src = source().await;
    let clone = Database::new().await;
    let out = success(&src.clone_into(&clone, true).await);
    assert_eq!(out["verified"], true, "{out}");
    assert_eq!(out["anonymized"], true, "{out}");

    // Nothing personal, anywhere in the clone.
    let everything = contents(&clone.pool).await;
    let text: String = everything
        .iter()
        .flat_map(|(_, rows)| rows.iter().cloned())
        .collect::<Vec<_>>()
        .join("\n");
    for value in &src.personal.values {
        assert!(
            !text.contains(value.as_str()),
            "{value} is still in the clone"
        );
    }
    // The same rows in every table, and what is not personal unchanged:
    // ids, who ordered what, totals, times, the menu.
    let source_rows = contents(&src.db.pool).await;
    for ((t, a), (u, b)) in source_rows.iter().zip(&everything) {
        assert_eq!(t, u);
        assert_eq!(a.len(), b.len(), "{t}");
    }
    for query in [
        "SELECT row_to_json(o)::text FROM (SELECT id, customer_id, status, total_cents, payment_id, created_at FROM orders) o ORDER BY 1",
        "SELECT row_to_json(m)::text FROM menu_items m ORDER BY 1",
        "SELECT row_to_json(i)::text FROM order_items i ORDER BY 1",
        "SELECT row_to_json(u)::text FROM (SELECT id, roles, created_at FROM users) u ORDER BY 1",
    ] {
        assert_eq!(
            rows(&src.db, query).await,
            rows(&clone, query).await,
            "{query}"
        );
    }

    // Fake values that still work: unique emails, a stored reply that is
    // still the order's JSON and names the new reference.
    let (emails, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT lower(email)) FROM users")
            .fetch_one(&clone.pool)
            .await
            .unwrap();
    assert_eq!(emails, distinct);
    let replies: Vec<(String, String)> =
        sqlx::query_as("SELECT reply, payment_reference FROM orders WHERE reply IS NOT NULL")
            .fetch_all(&clone.pool)
            .await
            .unwrap();
    assert_eq!(replies.len(), 6);
    for (reply, reference) in replies {
        let v: Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(v["payment"]["reference"], reference.as_str(), "{reply}");
        assert!(reference.starts_with("anon-"), "{reference}");
    }
    // Nobody of the source can log in; the clone's administrator is made
    // by the API from the clone's own Secret (no user has its email now).
    let hashes: Vec<String> = sqlx::query_scalar("SELECT DISTINCT password_hash FROM users")
        .fetch_all(&clone.pool)
        .await
        .unwrap();
    assert_eq!(hashes, vec!["!anonymized".to_owned()]);
    assert!(
        foodapp_api::auth::bootstrap_admin(
            &clone.pool,
            "admin@foodapp.local",
            CLONE_ADMIN_PASSWORD
        )
        .await
        .unwrap(),
        "the clone's administrator is created"
    );
    let revoked: bool =
        sqlx::query_scalar("SELECT bool_and(revoked_at IS NOT NULL) FROM refresh_tokens")
            .fetch_one(&clone.pool)
            .await
            .unwrap();
    assert!(revoked, "no session of the source works on the clone");

    // Deterministic: the same backup anonymised again gives the same data.
    let again = Database::new().await;
    success(&src.clone_into(&again, true).await);
    assert_eq!(data(&again).await, {
        // The administrator the API created above is the first clone's own.
        sqlx::query("DELETE FROM users WHERE email = 'admin@foodapp.local'")
            .execute(&clone.pool)
            .await
            .unwrap();
        data(&clone).await
    });
}

#[tokio::test]
async fn a_clone_without_anonymisation_keeps_the_data_but_not_the_sessions_or_the_admin_password() {
    let src = source().await;
    let clone = Database::new().await;
    // As a new FoodApp's database is: no tables at all.
    sqlx::raw_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
        .execute(&clone.pool)
        .await
        .unwrap();
    success(&src.clone_into(&clone, false).await);
    let emails: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE email LIKE 'ada%'")
        .fetch_one(&clone.pool)
        .await
        .unwrap();
    assert_eq!(emails, 4);
    let hash: String =
        sqlx::query_scalar("SELECT password_hash FROM users WHERE email = 'admin@foodapp.local'")
            .fetch_one(&clone.pool)
            .await
            .unwrap();
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    let parsed = PasswordHash::new(&hash).expect("an argon2 PHC string");
    assert!(
        argon2::Argon2::default()
            .verify_password(CLONE_ADMIN_PASSWORD.as_bytes(), &parsed)
            .is_ok(),
        "the clone's administrator logs in with the clone's own password"
    );
    let live: i64 =
        sqlx::query_scalar("SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NULL")
            .fetch_one(&clone.pool)
            .await
            .unwrap();
    assert_eq!(live, 0, "no session of the source works on the clone");
}

#[tokio::test]
async fn a_clone_into_a_database_with_orders_is_refused_and_changes_nothing() {
    let src = source().await;
    let before = contents(&src.db.pool).await;
    // The source itself: it holds orders.
    let out = src.clone_into(&src.db, true).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("holds orders"), "{stderr}");
    assert_eq!(before, contents(&src.db.pool).await);
}

#[tokio::test]
async fn every_column_of_the_schema_is_either_anonymised_or_kept_on_purpose() {
    let db = Database::new().await;
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns
         WHERE table_schema = 'public' ORDER BY 1, 2",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let known = |t: &str, c: &str| {
        TABLES.iter().any(|table| {
            table.name == t
                && (table.kept.contains(&c) || table.replaced.iter().any(|(r, _)| *r == c))
        })
    };
    let unknown: Vec<String> = columns
        .iter()
        .filter(|(t, c)| !known(t, c))
        .map(|(t, c)| format!("{t}.{c}"))
        .collect();
    assert!(
        unknown.is_empty(),
        "columns agent::anonymize does not know (replace or keep each, in TABLES and docs/restores.md): {unknown:?}"
    );
    let stale: Vec<String> = TABLES
        .iter()
        .flat_map(|t| {
            t.kept
                .iter()
                .copied()
                .chain(t.replaced.iter().map(|(c, _)| *c))
                .map(move |c| (t.name, c))
        })
        .filter(|(t, c)| !columns.iter().any(|(a, b)| a == t && b == c))
        .map(|(t, c)| format!("{t}.{c}"))
        .collect();
    assert!(stale.is_empty(), "listed but not in the schema: {stale:?}");
}
