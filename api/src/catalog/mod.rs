//! The menu: categories and menu items. Anyone may read; managers write.

pub mod cache;
mod categories;
pub mod error;
pub mod items;

pub use items::MenuItem;

use utoipa_axum::router::OpenApiRouter;

use crate::AppState;
pub use error::CatalogError;

pub fn router() -> OpenApiRouter<AppState> {
    categories::router().merge(items::router())
}

pub(crate) fn check_text(
    field: &str,
    value: &str,
    max: usize,
    required: bool,
) -> Result<(), CatalogError> {
    // As sent (the length the schema states), and not only spaces.
    let n = value.chars().count();
    if (required && crate::text::is_blank(value)) || n > max {
        let need = if required { "1" } else { "0" };
        return Err(CatalogError::Invalid(format!(
            "{field} must be {need} to {max} characters long"
        )));
    }
    Ok(())
}
