//! The server side: the settings a gRPC service embeds (TLS files, token key),
//! tonic's server TLS config from them, and the [`Authenticator`] that turns a
//! request's bearer token or verified client certificate into a [`Principal`].

use std::path::{Path, PathBuf};

use dora_config::{ExposeSecret, SecretBytes};
use serde::{Deserialize, Serialize};
use tonic::metadata::MetadataMap;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic::{Request, Status};

use crate::certificate;
use crate::principal::{Credential, Principal};
use crate::token::{now_secs, TokenError, TokenKey};
use crate::verified::VerifiedTokens;

/// Authentication settings of a gRPC service, embedded with `#[serde(flatten)]`
/// in its section (env `DORA_<SECTION>__TLS_CERT`, `..._TOKEN_KEY_FILE`, ...).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthSettings {
    /// PEM server certificate; with `tls_key` turns on TLS. Default: none (plaintext).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM CA whose client certificates authenticate callers (identity = the
    /// certificate's one subject CN; organisations = its subject O values).
    /// Default: none (tokens only).
    pub tls_client_ca: Option<PathBuf>,
    /// HMAC key bearer tokens are signed with (at least 32 bytes, any bytes:
    /// the file is read as it is), normally from
    /// `DORA_<SECTION>__TOKEN_KEY_FILE`. Never logged. Required unless client
    /// certificates are configured.
    #[serde(skip_serializing)]
    pub token_key: Option<SecretBytes>,
}

/// Why TLS could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Only one of `tls_cert` / `tls_key` is set, or a client CA without them.
    #[error("{section} TLS: {problem}")]
    Incomplete {
        /// The settings section.
        section: String,
        /// What is missing.
        problem: &'static str,
    },
    /// A PEM file could not be read.
    #[error("{section} TLS: cannot read {path}: {source}")]
    Read {
        /// The settings section.
        section: String,
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Why an authenticator could not be built from settings.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The token key is unusable (e.g. shorter than 32 bytes).
    #[error("{section}.token_key: {source}")]
    Key {
        /// The settings section.
        section: String,
        /// The problem.
        source: TokenError,
    },
    /// Neither a token key nor a client CA: nobody could authenticate.
    #[error("{section}: callers cannot authenticate; set DORA_{env}__TOKEN_KEY_FILE and/or {section}.tls_client_ca")]
    NoCredentials {
        /// The settings section.
        section: String,
        /// Its environment prefix (upper case).
        env: String,
    },
}

impl AuthSettings {
    /// The server TLS config, or `None` for plaintext. `section` names the
    /// settings section in errors.
    pub fn server_tls(&self, section: &str) -> Result<Option<ServerTlsConfig>, TlsError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| TlsError::Read {
                section: section.to_string(),
                path: p.display().to_string(),
                source,
            })
        };
        let incomplete = |problem| TlsError::Incomplete {
            section: section.to_string(),
            problem,
        };
        match (&self.tls_cert, &self.tls_key) {
            (None, None) if self.tls_client_ca.is_some() => {
                Err(incomplete("tls_client_ca needs tls_cert and tls_key"))
            }
            (None, None) => Ok(None),
            (Some(_), None) | (None, Some(_)) => Err(incomplete("set both tls_cert and tls_key")),
            (Some(cert), Some(key)) => {
                let mut cfg =
                    ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
                if let Some(ca) = &self.tls_client_ca {
                    // Callers without a certificate may still come in with a bearer token.
                    cfg = cfg
                        .client_ca_root(Certificate::from_pem(read(ca)?))
                        .client_auth_optional(true);
                }
                Ok(Some(cfg))
            }
        }
    }
}

/// Establishes the caller's [`Principal`] from a bearer token issued for this
/// service or, when the server verifies client certificates, from the
/// certificate's subject.
#[derive(Debug, Clone)]
pub struct Authenticator {
    audience: String,
    key: Option<TokenKey>,
    client_certs: bool,
    verified: VerifiedTokens,
}

impl Authenticator {
    /// Tokens for `audience` checked with `key` (if any); client certificates
    /// accepted when `client_certs` (the TLS layer has verified them against the CA).
    pub fn new(audience: impl Into<String>, key: Option<TokenKey>, client_certs: bool) -> Self {
        Self {
            audience: audience.into(),
            key,
            client_certs,
            verified: VerifiedTokens::default(),
        }
    }

    /// The authenticator `settings` describe for the service `audience`
    /// (settings section `section`); an error when the key is unusable or
    /// nobody could authenticate.
    pub fn from_settings(
        audience: &str,
        section: &str,
        settings: &AuthSettings,
    ) -> Result<Self, SetupError> {
        let key =
            match &settings.token_key {
                Some(secret) => Some(TokenKey::new(secret.expose_secret()).map_err(|source| {
                    SetupError::Key {
                        section: section.to_string(),
                        source,
                    }
                })?),
                None => None,
            };
        let client_certs = settings.tls_client_ca.is_some();
        if key.is_none() && !client_certs {
            return Err(SetupError::NoCredentials {
                section: section.to_string(),
                env: section.to_ascii_uppercase().replace('-', "_"),
            });
        }
        Ok(Self::new(audience, key, client_certs))
    }

    /// The caller, or UNAUTHENTICATED saying why not.
    pub fn identify<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        match (bearer(request.metadata()), &self.key) {
            (Some(token), Some(key)) => {
                let claims = match self.verified.get(token, now_secs()) {
                    Some(claims) => claims,
                    None => {
                        let claims = key
                            .verify(token, &self.audience)
                            .map_err(|e| Status::unauthenticated(e.to_string()))?;
                        self.verified.insert(token, &claims);
                        claims
                    }
                };
                return Ok(Principal {
                    name: claims.sub,
                    orgs: claims.orgs,
                    roles: claims.roles,
                    credential: Credential::Token {
                        expires_at: claims.exp,
                    },
                });
            }
            (Some(_), None) => {
                return Err(Status::unauthenticated(
                    "bearer tokens are not accepted by this service",
                ))
            }
            (None, _) => {}
        }
        if self.client_certs {
            if let Some(cert) = request
                .peer_certs()
                .as_ref()
                .and_then(|c| c.first().cloned())
            {
                return certificate_principal(cert.as_ref());
            }
        }
        Err(Status::unauthenticated("missing bearer token"))
    }
}

/// The principal a verified client certificate names: exactly one CN.
fn certificate_principal(der: &[u8]) -> Result<Principal, Status> {
    let subject = certificate::subject(der).map_err(|e| Status::unauthenticated(e.to_string()))?;
    let [name] = <[String; 1]>::try_from(subject.common_names).map_err(|cns| {
        Status::unauthenticated(format!(
            "client certificate: the subject must name exactly one CN; it names {}",
            cns.len()
        ))
    })?;
    Ok(Principal {
        name,
        orgs: subject.organizations,
        roles: Vec::new(),
        credential: Credential::Certificate,
    })
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
    use std::time::Duration;

    use super::*;
    use crate::token::Grant;
    use crate::Role;

    const KEY: &[u8; 32] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn identity_comes_from_the_authorization_header() {
        let key = TokenKey::new(KEY).unwrap();
        let auth = Authenticator::new("agent-gateway", Some(key.clone()), false);
        let mut req = Request::new(());
        assert_eq!(
            auth.identify(&req).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let grant =
            Grant::new("agent-9", "agent-gateway", Duration::from_secs(60)).with_role(Role::Reader);
        let t = key.issue(&grant).unwrap();
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
        let p = auth.identify(&req).unwrap();
        assert_eq!(p.name, "agent-9");
        assert!(p.has_role(Role::Reader));
        assert!(matches!(p.credential, Credential::Token { .. }));
    }

    #[test]
    fn a_verified_token_is_remembered_and_an_altered_one_still_refused() {
        let key = TokenKey::new(KEY).unwrap();
        let auth = Authenticator::new("report-ingest", Some(key.clone()), false);
        let grant = Grant::new("p", "report-ingest", Duration::from_secs(60)).with_org("org-1");
        let t = key.issue(&grant).unwrap();
        let call = |token: &str| {
            let mut req = Request::new(());
            req.metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            auth.identify(&req)
        };
        assert_eq!(call(&t).unwrap().orgs, ["org-1"]);
        assert_eq!(auth.verified.get(&t, now_secs()).unwrap().sub, "p");
        assert_eq!(call(&t).unwrap().orgs, ["org-1"]);
        // Same claims, another signature: not the cached text, verified and refused.
        let i = t.len() - 10; // inside the signature, away from its padding bits
        let c = if &t[i..=i] == "A" { "B" } else { "A" };
        let forged = format!("{}{c}{}", &t[..i], &t[i + 1..]);
        assert_eq!(
            call(&forged).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        // Signed with another key for the same claims: refused too.
        let other = TokenKey::new(b"fedcba9876543210fedcba9876543210").unwrap();
        let t2 = other.issue(&grant).unwrap();
        assert_eq!(call(&t2).unwrap_err().code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn a_token_for_another_service_is_unauthenticated() {
        let key = TokenKey::new(KEY).unwrap();
        let auth = Authenticator::new("agent-gateway", Some(key.clone()), false);
        let t = key
            .issue(&Grant::new("p", "report-ingest", Duration::from_secs(60)))
            .unwrap();
        let mut req = Request::new(());
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
        assert_eq!(
            auth.identify(&req).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn settings_refuse_a_short_key_and_no_credentials() {
        let mut s = AuthSettings::default();
        let err = Authenticator::from_settings("agent-gateway", "gateway", &s).unwrap_err();
        assert!(
            err.to_string().contains("DORA_GATEWAY__TOKEN_KEY_FILE"),
            "{err}"
        );
        s.token_key = Some(b"too short".to_vec().into());
        let err = Authenticator::from_settings("agent-gateway", "gateway", &s).unwrap_err();
        assert!(err.to_string().contains("gateway.token_key"), "{err}");
        assert!(err.to_string().contains("at least 32"), "{err}");
        s.token_key = Some(vec![0xff; 32].into());
        assert!(Authenticator::from_settings("agent-gateway", "gateway", &s).is_ok());
    }

    #[test]
    fn settings_flatten_into_a_service_section_under_their_env_names() {
        #[derive(Debug, Default, Serialize, Deserialize)]
        #[serde(default)]
        struct Section {
            limit: u64,
            #[serde(flatten)]
            auth: AuthSettings,
        }
        #[derive(Debug, Default, Serialize, Deserialize)]
        #[serde(default)]
        struct Settings {
            gateway: Section,
        }
        let dir = std::env::temp_dir().join(format!("dora-auth-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key_file = dir.join("key");
        std::fs::write(&key_file, "k".repeat(40)).unwrap();
        let vars = [
            ("DORA_GATEWAY__LIMIT", "7".to_string()),
            ("DORA_GATEWAY__TLS_CERT", "/x/cert.pem".to_string()),
            (
                "DORA_GATEWAY__TOKEN_KEY_FILE",
                key_file.display().to_string(),
            ),
        ]
        .map(|(k, v)| (k.to_string(), v));
        let s: Settings = dora_config::load_from(&vars).unwrap();
        assert_eq!(s.gateway.limit, 7);
        assert_eq!(
            s.gateway.auth.tls_cert.as_deref(),
            Some(Path::new("/x/cert.pem"))
        );
        assert_eq!(s.gateway.auth.token_key.unwrap().expose_secret().len(), 40);
        std::fs::remove_dir_all(dir).ok();
    }
}
