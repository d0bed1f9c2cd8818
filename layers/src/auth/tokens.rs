//! The set of accepted tokens, kept as SHA-256 digests and compared in constant time.

use std::fmt;
use std::sync::Arc;

use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use super::{AuthFailure, TokenSource};

/// Request extension inserted by [`BearerAuth`](super::BearerAuth): who the caller is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthenticatedCaller {
    /// The name the matching token was registered under with [`Tokens::insert`].
    pub name: Arc<str>,
}

/// The bearer tokens a service accepts, each under a name.
///
/// Only the SHA-256 digest of each secret is kept, and `Debug` prints the names alone, so neither a
/// log line nor a heap dump of this value shows a usable secret.
///
/// ```
/// use gateway_layers::auth::Tokens;
///
/// let mut tokens = Tokens::single("ci", "s3cret");
/// tokens.insert("alice", "other");
/// assert_eq!(tokens.len(), 2);
/// assert_eq!(format!("{tokens:?}"), r#"Tokens { names: ["ci", "alice"] }"#);
/// ```
#[derive(Clone, Default)]
pub struct Tokens {
    /// In insertion order, so the first of several entries with the same secret wins.
    entries: Vec<Entry>,
}

#[derive(Clone)]
struct Entry {
    /// Reported in [`AuthenticatedCaller`] and in `Debug`.
    name: Arc<str>,
    /// SHA-256 of the secret: fixed length, so comparing it leaks nothing about the secret's length.
    digest: [u8; 32],
}

impl Tokens {
    /// An empty set, which accepts no token.
    pub fn new() -> Self {
        Self::default()
    }

    /// A set holding one token.
    pub fn single(name: impl Into<Arc<str>>, secret: &str) -> Self {
        let mut tokens = Self::new();
        tokens.insert(name, secret);
        tokens
    }

    /// Accepts `secret` as a token and names its holder `name`.
    ///
    /// Several secrets may share a name (for rotation: accept old and new for a while). The
    /// presented token is trimmed of surrounding whitespace, so a secret that is empty or starts
    /// or ends with whitespace can never match.
    pub fn insert(&mut self, name: impl Into<Arc<str>>, secret: &str) {
        self.entries.push(Entry {
            name: name.into(),
            digest: Sha256::digest(secret.as_bytes()).into(),
        });
    }

    /// How many tokens are accepted.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no token is accepted (every request is then refused).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The names of the accepted tokens, in insertion order.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.entries.iter().map(|entry| &*entry.name)
    }

    /// Checks the `Authorization` header of a request, as [`BearerAuth`](super::BearerAuth) does.
    pub fn authorize(&self, headers: &HeaderMap) -> Result<AuthenticatedCaller, AuthFailure> {
        self.authorize_from(headers, &TokenSource::Bearer)
    }

    /// Checks the token a request presents where `source` says to look for it.
    pub fn authorize_from(
        &self,
        headers: &HeaderMap,
        source: &TokenSource,
    ) -> Result<AuthenticatedCaller, AuthFailure> {
        let token = source.token(headers)?;
        self.verify(token).ok_or(AuthFailure::Invalid)
    }

    /// Checks a presented token in constant time, returning who holds it.
    ///
    /// The token's digest is compared with every accepted digest, without stopping at a match,
    /// and the matching index is selected without a branch, so the time taken depends only on the
    /// number of accepted tokens and the length of the presented one.
    pub fn verify(&self, token: &[u8]) -> Option<AuthenticatedCaller> {
        let presented: [u8; 32] = Sha256::digest(token).into();
        let mut found = Choice::from(0);
        let mut index = 0u64;
        for (i, entry) in self.entries.iter().enumerate() {
            let hit = entry.digest[..].ct_eq(&presented[..]);
            index.conditional_assign(&(i as u64), hit & !found);
            found |= hit;
        }
        if !bool::from(found) {
            return None;
        }
        let entry = self.entries.get(usize::try_from(index).ok()?)?;
        Some(AuthenticatedCaller {
            name: entry.name.clone(),
        })
    }
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Names<'a>(&'a Tokens);
        impl fmt::Debug for Names<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_list().entries(self.0.names()).finish()
            }
        }
        f.debug_struct("Tokens")
            .field("names", &Names(self))
            .finish()
    }
}
