//! Agent authentication: bearer tokens (HS256 JWTs signed with the key from
//! `DORA_GATEWAY__TOKEN_KEY_FILE`) and the rule that an agent writes only as
//! itself.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tonic::metadata::MetadataMap;
use tonic::Status;

/// The audience every agent token is issued for.
pub const AUDIENCE: &str = "agent-gateway";

/// Claims of an agent token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The agent id the token speaks for.
    pub sub: String,
    /// Always [`AUDIENCE`].
    pub aud: String,
    /// Issued at, epoch seconds.
    pub iat: u64,
    /// Expires at, epoch seconds.
    pub exp: u64,
}

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The call carried no `authorization: Bearer` header.
    #[error("missing bearer token")]
    Missing,
    /// The token is malformed, badly signed, expired or for another audience.
    #[error("invalid token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    /// The signing key is empty.
    #[error("the token key is empty")]
    EmptyKey,
}

/// The HMAC key tokens are signed and checked with.
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

impl TokenKey {
    /// A key from secret bytes (the contents of the key file).
    pub fn new(secret: &[u8]) -> Result<Self, AuthError> {
        if secret.is_empty() {
            return Err(AuthError::EmptyKey);
        }
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        })
    }

    /// Issues a token for `agent_id`, valid for `ttl`.
    pub fn issue(&self, agent_id: &str, ttl: Duration) -> Result<String, AuthError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = Claims {
            sub: agent_id.to_string(),
            aud: AUDIENCE.to_string(),
            iat: now,
            exp: now + ttl.as_secs(),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    /// The agent id a token speaks for, if the token is valid.
    pub fn verify(&self, token: &str) -> Result<String, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "sub", "aud"]);
        validation.leeway = 5;
        Ok(
            jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)?
                .claims
                .sub,
        )
    }
}

/// Who is calling, as established by [`Authenticator::identify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentIdentity(pub String);

impl AgentIdentity {
    /// PERMISSION_DENIED unless this identity is `agent_id`.
    pub fn authorize(&self, agent_id: &str) -> Result<(), Status> {
        if self.0 == agent_id {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "agent_id: caller is authenticated as {:?} and may not write for {:?}",
                self.0, agent_id
            )))
        }
    }
}

/// Establishes the caller's identity from a bearer token or, when the server
/// verifies client certificates, from the certificate's subject common name.
#[derive(Debug, Clone)]
pub struct Authenticator {
    key: Option<TokenKey>,
    client_certs: bool,
}

impl Authenticator {
    /// Tokens checked with `key` (if any); client certificates accepted when
    /// `client_certs` (the TLS layer has already verified them against the CA).
    pub fn new(key: Option<TokenKey>, client_certs: bool) -> Self {
        Self { key, client_certs }
    }

    /// The caller's identity, or UNAUTHENTICATED.
    pub fn identify<T>(&self, request: &tonic::Request<T>) -> Result<AgentIdentity, Status> {
        match (bearer(request.metadata()), &self.key) {
            (Some(token), Some(key)) => {
                return key
                    .verify(token)
                    .map(AgentIdentity)
                    .map_err(|e| Status::unauthenticated(e.to_string()));
            }
            (Some(_), None) => {
                return Err(Status::unauthenticated(
                    "bearer tokens are not accepted by this gateway",
                ))
            }
            (None, _) => {}
        }
        if self.client_certs {
            if let Some(certs) = request.peer_certs() {
                if let Some(cn) = certs
                    .first()
                    .and_then(|c| crate::tls::subject_common_name(c.as_ref()))
                {
                    return Ok(AgentIdentity(cn));
                }
            }
        }
        Err(Status::unauthenticated(AuthError::Missing.to_string()))
    }
}

fn bearer(md: &MetadataMap) -> Option<&str> {
    let value = md.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_to_their_agent() {
        let key = TokenKey::new(b"k3y").unwrap();
        let t = key.issue("agent-1", Duration::from_secs(60)).unwrap();
        assert_eq!(key.verify(&t).unwrap(), "agent-1");
    }

    #[test]
    fn a_token_signed_with_another_key_is_rejected() {
        let t = TokenKey::new(b"other")
            .unwrap()
            .issue("agent-1", Duration::from_secs(60))
            .unwrap();
        assert!(TokenKey::new(b"k3y").unwrap().verify(&t).is_err());
        assert!(TokenKey::new(b"k3y").unwrap().verify("not-a-jwt").is_err());
    }

    #[test]
    fn an_expired_token_is_rejected() {
        let key = TokenKey::new(b"k3y").unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = Claims {
            sub: "a".into(),
            aud: AUDIENCE.into(),
            iat: now - 120,
            exp: now - 60,
        };
        let t =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key.encoding).unwrap();
        assert!(key.verify(&t).is_err());
    }

    #[test]
    fn identity_comes_from_the_authorization_header() {
        let key = TokenKey::new(b"k3y").unwrap();
        let auth = Authenticator::new(Some(key.clone()), false);
        let mut req = tonic::Request::new(());
        assert_eq!(
            auth.identify(&req).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let t = key.issue("agent-9", Duration::from_secs(60)).unwrap();
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
        let id = auth.identify(&req).unwrap();
        assert_eq!(id, AgentIdentity("agent-9".into()));
        assert!(id.authorize("agent-9").is_ok());
        assert_eq!(
            id.authorize("agent-8").unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
    }

    #[test]
    fn empty_key_is_refused() {
        assert!(matches!(TokenKey::new(b""), Err(AuthError::EmptyKey)));
    }
}
