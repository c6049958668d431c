//! What can go wrong with the menu, as a type; `crate::error` turns it into
//! problem documents, in one place.

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The request breaks a rule of its own (no state needed to tell).
    #[error("{0}")]
    Invalid(String),
    #[error("category not found")]
    CategoryNotFound,
    #[error("menu item not found")]
    ItemNotFound,
    #[error("a category with this name already exists")]
    NameTaken,
    #[error("category_id does not name an existing category")]
    UnknownCategory,
    #[error("the category still has menu items; move or delete them first")]
    CategoryHasItems,
    #[error("the category is referenced by past orders' items and cannot be deleted")]
    CategoryInHistory,
    #[error("the cursor belongs to a different sort order")]
    CursorOfAnotherSort,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("internal error: {0}")]
    Internal(String),
}
