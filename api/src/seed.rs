//! `seed-demo`: a small demo menu, and on request demo accounts. Running it
//! again changes nothing.

use sqlx::PgPool;
use uuid::Uuid;

use crate::auth::{self, Role};

/// name, description, price in cents, stock (None = unlimited)
type DemoItem = (&'static str, &'static str, i64, Option<i32>);

const MENU: &[(&str, &[DemoItem])] = &[
    (
        "Pizza",
        &[
            ("Margherita", "Tomato, mozzarella, basil", 950, None),
            ("Diavola", "Spicy salami, chili, mozzarella", 1150, None),
            ("Quattro formaggi", "Four cheeses", 1250, Some(40)),
        ],
    ),
    (
        "Burgers",
        &[
            ("Classic burger", "Beef, cheddar, pickles", 1090, None),
            ("Veggie burger", "Black bean patty, avocado", 1050, Some(30)),
        ],
    ),
    (
        "Salads",
        &[
            ("Caesar salad", "Romaine, parmesan, croutons", 890, None),
            ("Greek salad", "Feta, olives, cucumber", 850, None),
        ],
    ),
    (
        "Drinks",
        &[
            ("Lemonade", "Fresh, 0.4 l", 350, None),
            ("Sparkling water", "0.5 l", 250, None),
        ],
    ),
    (
        "Desserts",
        &[
            ("Tiramisu", "House made", 650, Some(12)),
            ("Chocolate cake", "Dark chocolate", 600, Some(10)),
        ],
    ),
];

pub const DEMO_PASSWORD: &str = "demo-password";
pub const DEMO_USERS: &[(&str, &str, &[Role])] = &[
    (
        "customer@demo.foodapp.io",
        "Demo Customer",
        &[Role::Customer],
    ),
    ("kitchen@demo.foodapp.io", "Demo Kitchen", &[Role::Kitchen]),
    ("courier@demo.foodapp.io", "Demo Courier", &[Role::Courier]),
    ("manager@demo.foodapp.io", "Demo Manager", &[Role::Manager]),
];

pub struct Seeded {
    pub categories: u64,
    pub items: u64,
    pub users: u64,
}

pub async fn seed_demo(pool: &PgPool, with_users: bool) -> anyhow::Result<Seeded> {
    let mut seeded = Seeded {
        categories: 0,
        items: 0,
        users: 0,
    };
    let mut tx = pool.begin().await?;
    for (position, (category, items)) in MENU.iter().enumerate() {
        let inserted = sqlx::query(
            "INSERT INTO categories (id, name, position) VALUES ($1, $2, $3)
             ON CONFLICT ((lower(name))) DO NOTHING",
        )
        .bind(Uuid::now_v7())
        .bind(category)
        .bind(position as i32)
        .execute(&mut *tx)
        .await?;
        seeded.categories += inserted.rows_affected();
        let category_id: Uuid =
            sqlx::query_scalar("SELECT id FROM categories WHERE lower(name) = lower($1)")
                .bind(category)
                .fetch_one(&mut *tx)
                .await?;
        for (name, description, price, stock) in *items {
            let inserted = sqlx::query(
                "INSERT INTO menu_items (id, category_id, name, description, price_cents, stock)
                 SELECT $1, $2, $3, $4, $5, $6
                 WHERE NOT EXISTS (SELECT 1 FROM menu_items WHERE name = $3 AND deleted_at IS NULL)",
            )
            .bind(Uuid::now_v7())
            .bind(category_id)
            .bind(name)
            .bind(description)
            .bind(price)
            .bind(stock)
            .execute(&mut *tx)
            .await?;
            seeded.items += inserted.rows_affected();
        }
    }
    tx.commit().await?;
    if with_users {
        let hash = auth::password::hash(DEMO_PASSWORD.to_owned())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for (email, name, roles) in DEMO_USERS {
            match auth::create_user(pool, email, name, &hash, roles).await {
                Ok(_) => seeded.users += 1,
                Err(auth::AuthError::EmailTaken) => {}
                Err(e) => return Err(anyhow::anyhow!("{e}")),
            }
        }
    }
    Ok(seeded)
}
