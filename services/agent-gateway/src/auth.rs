//! agent-gateway's use of the shared auth crate (`dora-auth`): its token
//! audience, the tokens it expects (an agent's, a reader's) and who may read
//! what. An agent writes only as itself; reading another agent's health needs
//! the reader role.

use std::time::Duration;

pub use dora_auth::{Authenticator, Grant, Principal, Role, TokenKey};
use tonic::Status;

/// The audience (`aud`) of every agent-gateway token.
pub const AUDIENCE: &str = "agent-gateway";

/// A token for `agent_id` to write (and read) as itself.
pub fn agent_token(
    key: &TokenKey,
    agent_id: &str,
    ttl: Duration,
) -> Result<String, dora_auth::TokenError> {
    key.issue(&Grant::new(agent_id, AUDIENCE, ttl))
}

/// A token for `agent_id` to write as itself, also naming the organisations
/// its task results may be about (see `intake::require_result_organization`).
pub fn agent_token_for(
    key: &TokenKey,
    agent_id: &str,
    orgs: &[String],
    ttl: Duration,
) -> Result<String, dora_auth::TokenError> {
    let grant = orgs
        .iter()
        .fold(Grant::new(agent_id, AUDIENCE, ttl), |g, org| g.with_org(org.clone()));
    key.issue(&grant)
}

/// A token for `name` to read every agent's health (operators, dashboards).
pub fn reader_token(
    key: &TokenKey,
    name: &str,
    ttl: Duration,
) -> Result<String, dora_auth::TokenError> {
    key.issue(&Grant::new(name, AUDIENCE, ttl).with_role(Role::Reader))
}

/// GetAgent: an agent reads itself; anything else needs the reader role.
pub fn may_read_agent(caller: &Principal, agent_id: &str) -> Result<(), Status> {
    if caller.name == agent_id {
        Ok(())
    } else {
        caller.require_role(Role::Reader)
    }
}
