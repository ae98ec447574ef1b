//! The authenticated caller and what it may act for.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tonic::Status;

/// A role a principal may hold beyond acting for itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May read what other principals wrote (agent-gateway: every agent's health).
    Reader,
}

/// How the principal proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// A bearer token, valid until `expires_at` (epoch seconds).
    Token {
        /// The token's `exp`.
        expires_at: u64,
    },
    /// A client certificate verified by the TLS layer for the connection.
    Certificate,
}

/// Who is calling, as established by [`crate::Authenticator::identify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Token `sub` or the certificate's subject CN.
    pub name: String,
    /// Organisations it may act for (token `orgs`, certificate subject `O`).
    pub orgs: Vec<String>,
    /// Its roles (token `roles`; certificates carry none).
    pub roles: Vec<Role>,
    /// How it authenticated.
    pub credential: Credential,
}

impl Principal {
    /// PERMISSION_DENIED naming `field` unless this principal is `subject`
    /// (agent-gateway: an agent writes only as itself).
    pub fn require_self(&self, field: &str, subject: &str) -> Result<(), Status> {
        if self.name == subject {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "{field}: caller is authenticated as {:?} and may not act for {subject:?}",
                self.name
            )))
        }
    }

    /// PERMISSION_DENIED naming `field` unless this principal may act for `org`.
    pub fn require_org(&self, field: &str, org: &str) -> Result<(), Status> {
        if self.orgs.iter().any(|o| o == org) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "{field}: {:?} may not act for organisation {org:?}",
                self.name
            )))
        }
    }

    /// True when the principal holds `role`.
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// PERMISSION_DENIED unless the principal holds `role`.
    pub fn require_role(&self, role: Role) -> Result<(), Status> {
        if self.has_role(role) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "{:?} lacks the {role:?} role this call needs",
                self.name
            )))
        }
    }

    /// How long the credential stays valid from now (`None`: as long as the
    /// connection, for a certificate). Long calls end when it runs out.
    pub fn remaining(&self) -> Option<std::time::Duration> {
        match self.credential {
            Credential::Token { expires_at } => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                let end = expires_at.saturating_add(crate::token::LEEWAY_SECS);
                Some(std::time::Duration::from_secs(end.saturating_sub(now)))
            }
            Credential::Certificate => None,
        }
    }

    /// UNAUTHENTICATED once a token-authenticated principal's token expired
    /// (long-lived calls such as streams check this as they go).
    pub fn check_still_valid(&self) -> Result<(), Status> {
        match self.credential {
            Credential::Token { expires_at } => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                if now > expires_at.saturating_add(crate::token::LEEWAY_SECS) {
                    Err(Status::unauthenticated("token expired during the call"))
                } else {
                    Ok(())
                }
            }
            Credential::Certificate => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(expires_at: u64) -> Principal {
        Principal {
            name: "agent-9".into(),
            orgs: vec!["org-1".into()],
            roles: vec![],
            credential: Credential::Token { expires_at },
        }
    }

    #[test]
    fn acts_only_for_itself_and_its_organisations() {
        let p = principal(u64::MAX);
        assert!(p.require_self("agent_id", "agent-9").is_ok());
        let err = p.require_self("agent_id", "agent-8").unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert!(err.message().starts_with("agent_id:"), "{}", err.message());
        assert!(p.require_org("organization_id", "org-1").is_ok());
        assert!(p.require_org("organization_id", "org-2").is_err());
        assert!(p.require_role(Role::Reader).is_err());
    }

    #[test]
    fn an_expired_token_ends_the_principal() {
        assert!(principal(u64::MAX).check_still_valid().is_ok());
        let err = principal(1).check_still_valid().unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    }
}
