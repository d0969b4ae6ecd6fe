//! The authenticated caller a use case acts for: identity claims and live roles.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::roles::Groups;

/// The SHA-256 of a bearer token, the key of the per-token groups cache. Its `Debug` output does
/// not show the digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenKey([u8; 32]);

impl TokenKey {
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub sub: Uuid,
    pub email: String,
    pub preferred_username: String,
    pub name: Option<String>,
    pub groups: Arc<Groups>,
    /// The groups-cache key of the token that authenticated this caller.
    token_key: Option<TokenKey>,
}

impl Caller {
    /// A caller not tied to a token (tests, jobs). [`Authenticator::forget_groups`] ignores it.
    pub fn new(
        sub: Uuid,
        email: String,
        preferred_username: String,
        name: Option<String>,
        groups: Groups,
    ) -> Self {
        Self {
            sub,
            email,
            preferred_username,
            name,
            groups: Arc::new(groups),
            token_key: None,
        }
    }

    /// `name`, else `preferred_username`.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.preferred_username)
    }
}

impl Caller {
    /// A caller authenticated by a bearer token, whose groups are cached under `token_key`.
    pub fn authenticated(
        sub: Uuid,
        email: String,
        preferred_username: String,
        name: Option<String>,
        groups: Arc<Groups>,
        token_key: TokenKey,
    ) -> Self {
        Self {
            sub,
            email,
            preferred_username,
            name,
            groups,
            token_key: Some(token_key),
        }
    }

    /// The groups-cache key of the token that authenticated this caller, if any.
    pub fn token_key(&self) -> Option<&TokenKey> {
        self.token_key.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_the_sha256_and_is_not_printed() {
        let key = TokenKey::of("abc");
        assert_eq!(
            key.0[..4],
            [0xba, 0x78, 0x16, 0xbf],
            "SHA-256(\"abc\") starts with ba7816bf"
        );
        assert_eq!(format!("{key:?}"), "TokenKey(..)");
    }
}
