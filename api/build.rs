//! The migrations are embedded by `sqlx::migrate!`: a new or changed file
//! under `migrations/` must rebuild the crate (the macro cannot say so on
//! stable Rust).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
