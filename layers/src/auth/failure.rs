//! Why a request was refused.

use std::fmt;

/// Why [`BearerAuth`](super::BearerAuth) refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthFailure {
    /// No credential: no `Authorization` header, a scheme other than `Bearer`, or `Bearer` with an
    /// empty token (and, with [`TokenSource::BearerOrHeader`](super::TokenSource), no token in
    /// its header either).
    Missing,
    /// A bearer token that matches none of the accepted tokens.
    Invalid,
    /// More than one `Authorization` header (or API-key header), or a bearer token and an API key
    /// that differ: which one counts would be a guess (proxies and servers disagree), so none
    /// does. A malformed request (400) rather than a wrong credential.
    Ambiguous,
}

impl AuthFailure {
    /// Whether the request is malformed (answer 400) rather than unauthenticated (401).
    pub const fn is_malformed(self) -> bool {
        matches!(self, Self::Ambiguous)
    }
}

impl fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Missing => "Missing bearer token",
            Self::Invalid => "Invalid token",
            Self::Ambiguous => {
                "Several Authorization headers, or API keys that differ; send exactly one"
            }
        })
    }
}

impl std::error::Error for AuthFailure {}
