//! Opaque list cursors and pages, the same on every backend (a client may page through one
//! node and continue on another).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::{Page, StoreError, StoreResult};

/// Encodes the sort key of the last row of a page.
pub(crate) fn encode_cursor(parts: &[&str]) -> String {
    URL_SAFE_NO_PAD.encode(parts.join("\n"))
}

/// Decodes a cursor made by [`encode_cursor`] into its `parts` parts. No cursor gives `None`;
/// one that is not ours is an error, so a confused client does not page from the start forever.
pub(crate) fn decode_cursor(
    cursor: Option<&str>,
    parts: usize,
) -> StoreResult<Option<Vec<String>>> {
    let Some(cursor) = cursor else {
        return Ok(None);
    };
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .map(|s| s.split('\n').map(str::to_owned).collect::<Vec<_>>())
        .filter(|v| v.len() == parts)
        .map(Some)
        .ok_or(StoreError::InvalidCursor)
}

/// Decodes a `(created_at, id)` cursor of a newest-first list; no cursor starts after every
/// row (`i64::MAX` and `~`, which sorts after every id).
pub(crate) fn decode_time_cursor(cursor: Option<&str>) -> StoreResult<(i64, String)> {
    match decode_cursor(cursor, 2)? {
        Some(v) => Ok((
            v[0].parse::<i64>().map_err(|_| StoreError::InvalidCursor)?,
            v[1].clone(),
        )),
        None => Ok((i64::MAX, "~".to_owned())),
    }
}

/// Decodes the name cursor of a list ordered by identifier; no cursor starts before every row.
pub(crate) fn decode_name_cursor(cursor: Option<&str>) -> StoreResult<String> {
    Ok(decode_cursor(cursor, 1)?
        .and_then(|v| v.into_iter().next())
        .unwrap_or_default())
}

/// Decodes a sequence-number cursor of a newest-first list; no cursor starts after every row.
pub(crate) fn decode_seq_cursor(cursor: Option<&str>) -> StoreResult<i64> {
    match decode_cursor(cursor, 1)? {
        Some(v) => v[0].parse().map_err(|_| StoreError::InvalidCursor),
        None => Ok(i64::MAX),
    }
}

/// A page of `limit` items from `items`, fetched with `limit + 1` so that a further row says
/// there is a next page.
pub(crate) fn page<T>(mut items: Vec<T>, limit: u32, cursor_of: impl Fn(&T) -> String) -> Page<T> {
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(cursor_of)
    } else {
        None
    };
    Page { items, next_cursor }
}
