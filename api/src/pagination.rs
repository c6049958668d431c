//! Opaque cursors for keyset pagination: the last row's sort key, encoded so
//! clients cannot depend on its shape.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

pub fn limit(requested: Option<i64>) -> Result<i64, ApiError> {
    match requested {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("limit must be between 1 and {MAX_LIMIT}, got {n}"),
        )),
    }
}

/// The page size and the decoded cursor of a list request.
pub fn start<C: DeserializeOwned>(
    limit: Option<i64>,
    cursor: Option<&str>,
) -> Result<(i64, Option<C>), ApiError> {
    Ok((self::limit(limit)?, cursor.map(decode).transpose()?))
}

pub fn encode<C: Serialize>(cursor: &C) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(cursor).unwrap_or_default())
}

pub fn decode<C: DeserializeOwned>(cursor: &str) -> Result<C, ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "invalid_cursor",
                "the cursor is not one this server issued for this list",
            )
        })
}

/// Builds a page from `limit + 1` fetched rows: the extra row only signals
/// that another page exists.
pub fn page<R, T>(
    mut rows: Vec<R>,
    limit: i64,
    cursor_of: impl Fn(&R) -> String,
    into: impl Fn(R) -> T,
) -> Page<T> {
    let more = rows.len() as i64 > limit;
    if more {
        rows.truncate(limit as usize);
    }
    let next_cursor = if more {
        rows.last().map(&cursor_of)
    } else {
        None
    };
    Page {
        items: rows.into_iter().map(into).collect(),
        next_cursor,
    }
}

/// Cursor of lists ordered by creation time, then id. A time the server
/// could not have written (outside years 1 to 9999, which PostgreSQL may not
/// even hold) makes the cursor unreadable: 400, not a database error.
#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(try_from = "RawTimeCursor")]
pub struct TimeCursor {
    pub t: chrono::DateTime<chrono::Utc>,
    pub id: uuid::Uuid,
}

#[derive(Deserialize)]
struct RawTimeCursor {
    t: chrono::DateTime<chrono::Utc>,
    id: uuid::Uuid,
}

impl TryFrom<RawTimeCursor> for TimeCursor {
    type Error = &'static str;
    fn try_from(raw: RawTimeCursor) -> Result<Self, Self::Error> {
        use chrono::Datelike;
        if (1..=9999).contains(&raw.t.year()) {
            Ok(TimeCursor {
                t: raw.t,
                id: raw.id,
            })
        } else {
            Err("a time no row has")
        }
    }
}

impl TimeCursor {
    /// The opaque cursor that continues after the row created at `t` with `id`.
    pub fn after(t: chrono::DateTime<chrono::Utc>, id: uuid::Uuid) -> String {
        encode(&TimeCursor { t, id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_rejected() {
        let c = TimeCursor {
            t: chrono::Utc::now(),
            id: uuid::Uuid::new_v4(),
        };
        let back: TimeCursor = decode(&encode(&c)).unwrap();
        assert_eq!(back, c);
        assert!(decode::<TimeCursor>("not-a-cursor").is_err());
        assert!(decode::<TimeCursor>(&encode(&42)).is_err());
        let far = serde_json::json!({"t": "+262142-12-31T23:59:59Z", "id": uuid::Uuid::nil()});
        assert!(decode::<TimeCursor>(&encode(&far)).is_err());
    }

    #[test]
    fn limit_bounds_are_enforced() {
        assert_eq!(limit(None).unwrap(), DEFAULT_LIMIT);
        assert_eq!(limit(Some(100)).unwrap(), 100);
        assert!(limit(Some(0)).is_err());
        assert!(limit(Some(101)).is_err());
    }
}
