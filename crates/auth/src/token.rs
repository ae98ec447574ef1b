//! Bearer tokens: HS256 JWTs signed with a secret key of at least
//! [`MIN_KEY_BYTES`] bytes, issued for one service (`aud`), naming a principal
//! (`sub`) and what it may act for (`orgs`, `roles`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::principal::Role;

/// Shortest signing key accepted, bytes (HS256's output size: a shorter key
/// makes the HMAC easier to brute-force than the hash it is built on).
pub const MIN_KEY_BYTES: usize = 32;

/// Seconds of clock skew tolerated on `exp`.
pub const LEEWAY_SECS: u64 = 5;

/// Claims of a token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The principal the token speaks for (for agent-gateway: the agent id).
    pub sub: String,
    /// The service the token is issued for (e.g. `agent-gateway`).
    pub aud: String,
    /// Issued at, epoch seconds.
    pub iat: u64,
    /// Expires at, epoch seconds.
    pub exp: u64,
    /// Organisations the principal may act for (report-ingest: submit for).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orgs: Vec<String>,
    /// Roles of the principal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<Role>,
}

/// What a token is to say: who, for which service, for how long, and what for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The principal (`sub`).
    pub subject: String,
    /// The service (`aud`).
    pub audience: String,
    /// Validity from now.
    pub ttl: Duration,
    /// Organisations it may act for.
    pub orgs: Vec<String>,
    /// Its roles.
    pub roles: Vec<Role>,
}

impl Grant {
    /// A grant for `subject` at `audience`, valid for `ttl`, with no organisations or roles.
    pub fn new(subject: impl Into<String>, audience: impl Into<String>, ttl: Duration) -> Self {
        Self {
            subject: subject.into(),
            audience: audience.into(),
            ttl,
            orgs: Vec::new(),
            roles: Vec::new(),
        }
    }

    /// Adds a role.
    pub fn with_role(mut self, role: Role) -> Self {
        self.roles.push(role);
        self
    }

    /// Adds an organisation.
    pub fn with_org(mut self, org: impl Into<String>) -> Self {
        self.orgs.push(org.into());
        self
    }
}

/// Why a key or a token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The signing key is shorter than [`MIN_KEY_BYTES`].
    #[error("the token key has {len} bytes; at least {MIN_KEY_BYTES} are required (e.g. `head -c 32 /dev/urandom > key`)")]
    KeyTooShort {
        /// Its length.
        len: usize,
    },
    /// The key file could not be read.
    #[error("cannot read the token key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The token is malformed, badly signed, expired, of another algorithm or
    /// for another audience.
    #[error("invalid token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
}

/// The HMAC key tokens are signed and checked with. Never printed.
#[derive(Clone)]
pub struct TokenKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

/// Now, epoch seconds.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl TokenKey {
    /// A key from secret bytes (the key file's contents, any bytes).
    pub fn new(secret: &[u8]) -> Result<Self, TokenError> {
        if secret.len() < MIN_KEY_BYTES {
            return Err(TokenError::KeyTooShort { len: secret.len() });
        }
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        })
    }

    /// A key from a key file, read as raw bytes (no newline is trimmed: a key
    /// is bytes, e.g. `head -c 32 /dev/urandom > key`).
    pub fn from_file(path: &std::path::Path) -> Result<Self, TokenError> {
        let secret = std::fs::read(path).map_err(|source| TokenError::KeyFile {
            path: path.display().to_string(),
            source,
        })?;
        Self::new(&secret)
    }

    /// Signs `grant` as a token valid from now.
    pub fn issue(&self, grant: &Grant) -> Result<String, TokenError> {
        let now = now_secs();
        let claims = Claims {
            sub: grant.subject.clone(),
            aud: grant.audience.clone(),
            iat: now,
            exp: now.saturating_add(grant.ttl.as_secs()),
            orgs: grant.orgs.clone(),
            roles: grant.roles.clone(),
        };
        self.sign(&claims)
    }

    /// Signs arbitrary claims (HS256).
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &self.encoding,
        )?)
    }

    /// The claims of `token` if it is HS256-signed with this key, issued for
    /// `audience` and not expired.
    pub fn verify(&self, token: &str, audience: &str) -> Result<Claims, TokenError> {
        // Only HS256: `alg: none` and any other algorithm fail here.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "sub", "aud"]);
        validation.leeway = LEEWAY_SECS;
        Ok(jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)?.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8; 32] = b"0123456789abcdef0123456789abcdef";
    const AUD: &str = "agent-gateway";

    fn grant(sub: &str) -> Grant {
        Grant::new(sub, AUD, Duration::from_secs(60))
    }

    #[test]
    fn issued_tokens_verify_to_their_claims() {
        let key = TokenKey::new(KEY).unwrap();
        let t = key
            .issue(&grant("ops").with_org("org-1").with_role(Role::Reader))
            .unwrap();
        let c = key.verify(&t, AUD).unwrap();
        assert_eq!(c.sub, "ops");
        assert_eq!(c.orgs, ["org-1"]);
        assert_eq!(c.roles, [Role::Reader]);
    }

    #[test]
    fn a_binary_key_with_non_utf8_bytes_signs_and_verifies() {
        let mut secret = [0u8; 32];
        for (i, b) in secret.iter_mut().enumerate() {
            *b = 0x80 | (i as u8 * 7); // every byte >= 0x80: never valid UTF-8 on its own
        }
        assert!(std::str::from_utf8(&secret).is_err());
        let key = TokenKey::new(&secret).unwrap();
        let t = key.issue(&grant("agent-1")).unwrap();
        assert_eq!(key.verify(&t, AUD).unwrap().sub, "agent-1");
        let mut other = secret;
        other[31] ^= 1;
        assert!(TokenKey::new(&other).unwrap().verify(&t, AUD).is_err());
    }

    #[test]
    fn keys_shorter_than_32_bytes_are_refused() {
        assert!(matches!(
            TokenKey::new(b""),
            Err(TokenError::KeyTooShort { len: 0 })
        ));
        assert!(matches!(
            TokenKey::new(&KEY[..31]),
            Err(TokenError::KeyTooShort { len: 31 })
        ));
        let msg = TokenKey::new(b"short").unwrap_err().to_string();
        assert!(msg.contains("at least 32"), "{msg}");
    }

    #[test]
    fn a_token_signed_with_another_key_or_malformed_is_rejected() {
        let t = TokenKey::new(b"another key that is 32 bytes lng")
            .unwrap()
            .issue(&grant("agent-1"))
            .unwrap();
        let key = TokenKey::new(KEY).unwrap();
        assert!(key.verify(&t, AUD).is_err());
        assert!(key.verify("not-a-jwt", AUD).is_err());
    }

    #[test]
    fn a_token_for_another_audience_is_rejected() {
        let key = TokenKey::new(KEY).unwrap();
        let t = key
            .issue(&Grant::new(
                "agent-1",
                "report-ingest",
                Duration::from_secs(60),
            ))
            .unwrap();
        assert!(key.verify(&t, "report-ingest").is_ok());
        let err = key.verify(&t, AUD).unwrap_err().to_string();
        assert!(err.contains("InvalidAudience"), "{err}");
    }

    #[test]
    fn an_unsigned_alg_none_token_is_rejected() {
        let key = TokenKey::new(KEY).unwrap();
        let now = now_secs();
        let claims = serde_json::json!({"sub": "agent-1", "aud": AUD, "iat": now, "exp": now + 60});
        let header = base64_url(br#"{"alg":"none","typ":"JWT"}"#);
        let body = base64_url(claims.to_string().as_bytes());
        for token in [format!("{header}.{body}."), format!("{header}.{body}")] {
            assert!(
                key.verify(&token, AUD).is_err(),
                "alg none accepted: {token}"
            );
        }
        // The same claims signed HS256 pass: the refusal is about the algorithm.
        let signed: Claims = serde_json::from_value(claims).unwrap();
        assert!(key.verify(&key.sign(&signed).unwrap(), AUD).is_ok());
    }

    #[test]
    fn an_expired_token_is_rejected() {
        let key = TokenKey::new(KEY).unwrap();
        let now = now_secs();
        let claims = Claims {
            sub: "a".into(),
            aud: AUD.into(),
            iat: now - 120,
            exp: now - 60,
            orgs: vec![],
            roles: vec![],
        };
        let err = key
            .verify(&key.sign(&claims).unwrap(), AUD)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ExpiredSignature"), "{err}");
    }

    /// Unpadded base64url, enough for a hand-made JWT segment.
    fn base64_url(bytes: &[u8]) -> String {
        const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
}
