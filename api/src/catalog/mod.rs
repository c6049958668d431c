//! The menu: categories and menu items. Anyone may read; managers write.

pub mod cache;
mod categories;
mod items;

pub use items::MenuItem;

use utoipa_axum::router::OpenApiRouter;

use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    categories::router().merge(items::router())
}

/// Distinguishes a field left out of a PATCH body (`None`) from one set to
/// null (`Some(None)`).
pub(crate) fn double_option<'de, T, D>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    serde::Deserialize::deserialize(de).map(Some)
}

pub(crate) fn check_text(
    field: &str,
    value: &str,
    max: usize,
    required: bool,
) -> Result<(), crate::error::ApiError> {
    let n = value.trim().chars().count();
    if (required && n == 0) || n > max {
        let need = if required { "1" } else { "0" };
        return Err(crate::error::ApiError::validation(format!(
            "{field} must be {need} to {max} characters long"
        )));
    }
    Ok(())
}
