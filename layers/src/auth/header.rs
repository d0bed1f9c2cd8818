//! Extracting the presented token from a request's headers.

use http::header::{HeaderName, AUTHORIZATION};
use http::HeaderMap;

use super::AuthFailure;

/// Where a request's token is read from.
///
/// [`Bearer`](Self::Bearer) by default. [`BearerOrHeader`](Self::BearerOrHeader) also takes the
/// token alone in a header of its own, as API-key clients send it (the Anthropic SDKs send
/// `x-api-key: <token>`); either header may carry it, and a request that sends both must send the
/// same token in each, since which one counts would otherwise be a guess.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TokenSource {
    /// `Authorization: Bearer <token>` only.
    #[default]
    Bearer,
    /// `Authorization: Bearer <token>`, or the named header holding the token alone.
    BearerOrHeader(HeaderName),
}

impl TokenSource {
    /// Returns the token the request presents, as raw bytes.
    pub(super) fn token<'h>(&self, headers: &'h HeaderMap) -> Result<&'h [u8], AuthFailure> {
        match self {
            Self::Bearer => bearer_token(headers),
            Self::BearerOrHeader(name) => {
                let bearer = bearer_token(headers);
                let alone = header_token(headers, name);
                match (bearer, alone) {
                    (Err(AuthFailure::Ambiguous), _) | (_, Err(AuthFailure::Ambiguous)) => {
                        Err(AuthFailure::Ambiguous)
                    }
                    (Ok(bearer), Ok(alone)) if bearer != alone => Err(AuthFailure::Ambiguous),
                    (Ok(token), _) | (_, Ok(token)) => Ok(token),
                    (Err(failure), Err(_)) => Err(failure),
                }
            }
        }
    }
}

/// Returns the token of an `Authorization: Bearer <token>` header, as raw bytes.
///
/// The scheme is case-insensitive (RFC 7235). The token is not required to be UTF-8: bytes that are
/// not simply cannot match an accepted token, which makes them [`AuthFailure::Invalid`] rather than
/// something the caller could tell apart by timing.
fn bearer_token(headers: &HeaderMap) -> Result<&[u8], AuthFailure> {
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

/// Returns the token of a header that holds it alone (`x-api-key: <token>`), trimmed.
fn header_token<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Result<&'h [u8], AuthFailure> {
    let mut values = headers.get_all(name).iter();
    let value = values.next().ok_or(AuthFailure::Missing)?;
    if values.next().is_some() {
        return Err(AuthFailure::Ambiguous);
    }
    let token = value.as_bytes().trim_ascii();
    if token.is_empty() {
        return Err(AuthFailure::Missing);
    }
    Ok(token)
}
