//! Extracting the bearer token from a request's headers.

use http::header::AUTHORIZATION;
use http::HeaderMap;

use super::AuthFailure;

/// Returns the token of an `Authorization: Bearer <token>` header, as raw bytes.
///
/// The scheme is case-insensitive (RFC 7235). The token is not required to be UTF-8: bytes that are
/// not simply cannot match an accepted token, which makes them [`AuthFailure::Invalid`] rather than
/// something the caller could tell apart by timing.
pub(super) fn bearer_token(headers: &HeaderMap) -> Result<&[u8], AuthFailure> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(AuthFailure::Missing)?;
    if values.next().is_some() {
        return Err(AuthFailure::Ambiguous);
    }
    let bytes = value.as_bytes();
    let (scheme, rest) = match bytes.iter().position(|&b| b == b' ') {
        Some(space) => (&bytes[..space], &bytes[space + 1..]),
        None => (bytes, &[][..]),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(AuthFailure::Missing);
    }
    let token = rest.trim_ascii();
    if token.is_empty() {
        return Err(AuthFailure::Missing);
    }
    Ok(token)
}
