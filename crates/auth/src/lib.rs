//! Authentication shared by every gRPC service (agent-gateway, report-ingest):
//! one implementation of bearer tokens (HS256 JWTs), TLS client-certificate
//! identity and the [`Principal`] they establish.
//!
//! A principal is a name (a token's `sub`, a certificate's one subject CN)
//! plus what it may act for: the organisations it may submit for (`orgs`
//! claim, certificate subject `O` attributes) and its roles (`roles` claim;
//! e.g. [`Role::Reader`], which lets a caller read what other principals
//! wrote). Each service decides which of these it asks for: agent-gateway
//! lets a principal write only as the agent it names, report-ingest only for
//! the organisations it names.
//!
//! **Invariant:** a token is accepted only when signed HS256 with the
//! service's key (at least [`MIN_KEY_BYTES`] bytes), issued for that service
//! (`aud`), unexpired; `alg: none` and every other algorithm are refused.

pub mod certificate;
pub mod client;
pub mod principal;
pub mod server;
pub mod token;
mod verified;

pub use client::BearerToken;
pub use principal::{Credential, Principal, Role};
pub use server::{AuthSettings, Authenticator, TlsError};
pub use token::{Claims, Grant, TokenError, TokenKey, MIN_KEY_BYTES};
