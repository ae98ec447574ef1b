//! Bearer tokens already verified, by their exact text, until they expire. A
//! client sends the same token with every call; verifying it again (base64,
//! two JSON documents, an HMAC) cost more than the rest of a small unary call.
//! The cache holds only tokens that verified with this authenticator's key and
//! audience, and checks `exp` on every hit as verification does: a cached
//! token expires at the same second as an uncached one. Failures are never
//! cached, so a forged or altered token is checked in full every time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::token::{Claims, LEEWAY_SECS};

/// At most this many tokens are kept; when full, the cache starts over.
const MAX_TOKENS: usize = 1024;

/// The verified tokens of one authenticator. Cheap to clone; clones share it.
#[derive(Debug, Clone, Default)]
pub(crate) struct VerifiedTokens {
    by_text: Arc<Mutex<HashMap<String, Claims>>>,
}

impl VerifiedTokens {
    /// The claims of `token` if it verified before and has not expired at `now` (epoch seconds).
    pub fn get(&self, token: &str, now: u64) -> Option<Claims> {
        let mut map = self.by_text.lock().unwrap_or_else(|p| p.into_inner());
        let claims = map.get(token)?;
        if claims.exp.saturating_add(LEEWAY_SECS) >= now {
            return Some(claims.clone());
        }
        map.remove(token);
        None
    }

    /// Remembers that `token` verified to `claims`.
    pub fn insert(&self, token: &str, claims: &Claims) {
        let mut map = self.by_text.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TOKENS {
            map.clear();
        }
        map.insert(token.to_string(), claims.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "p".into(),
            aud: "report-ingest".into(),
            iat: 0,
            exp,
            orgs: vec!["org-1".into()],
            roles: Vec::new(),
        }
    }

    #[test]
    fn a_cached_token_expires_when_verification_would_reject_it() {
        let cache = VerifiedTokens::default();
        cache.insert("t", &claims(100));
        assert_eq!(cache.get("t", 100), Some(claims(100)));
        assert_eq!(cache.get("t", 100 + LEEWAY_SECS), Some(claims(100)));
        assert_eq!(cache.get("t", 101 + LEEWAY_SECS), None);
        // Gone for good: a later lookup does not find it either.
        assert_eq!(cache.get("t", 100), None);
        assert_eq!(cache.get("other", 0), None);
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache = VerifiedTokens::default();
        for i in 0..=MAX_TOKENS {
            cache.insert(&format!("t{i}"), &claims(u64::MAX));
        }
        let kept = cache.by_text.lock().unwrap().len();
        assert!(kept <= MAX_TOKENS, "{kept}");
        assert!(cache.get(&format!("t{MAX_TOKENS}"), 0).is_some());
    }
}
