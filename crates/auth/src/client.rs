//! The client side: a tonic interceptor that sends a bearer token with every call.

use tonic::metadata::{Ascii, MetadataValue};

/// Adds `authorization: Bearer <token>` to every call of a client built
/// `with_interceptor(channel, BearerToken::new(token)?)`.
#[derive(Clone)]
pub struct BearerToken(MetadataValue<Ascii>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

impl BearerToken {
    /// The interceptor for `token`; an error when the token is not valid header text.
    pub fn new(token: &str) -> Result<Self, tonic::metadata::errors::InvalidMetadataValue> {
        let mut value: MetadataValue<Ascii> = format!("Bearer {token}").parse()?;
        value.set_sensitive(true);
        Ok(Self(value))
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    #[test]
    fn every_call_carries_the_token_and_debug_hides_it() {
        let mut b = BearerToken::new("t0k3n").unwrap();
        let req = b.call(tonic::Request::new(())).unwrap();
        assert_eq!(req.metadata().get("authorization").unwrap(), "Bearer t0k3n");
        assert!(!format!("{b:?}").contains("t0k3n"));
        assert!(BearerToken::new("bad\ntoken").is_err());
    }
}
