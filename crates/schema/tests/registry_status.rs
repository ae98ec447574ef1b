//! Unit test of how registry answers are classified, against a stub HTTP
//! server: the real registry of the local stack cannot be made to answer 401,
//! 403, 429 or 5xx, so only here does a fake stand in for it. What the real
//! registry does answer (404 for an unknown id, 409, outages) is tested in
//! registry.rs against the real one.
//!
//! A consumer must retry what a later attempt can fix (credentials being
//! rotated, rate limiting, an overloaded or lagging registry) and dead-letter
//! only what is wrong with the record itself.

use dora_schema::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves `status` with a Confluent-style error body to every request, and
/// returns the base URL.
async fn registry_answering(status: u16, reason: &str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = format!(r#"{{"error_code":{status}01,"message":"stub says {reason}"}}"#);
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/vnd.schemaregistry.v1+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let response = response.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                // One request per connection (`connection: close`): read its head.
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = conn.write_all(response.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

fn codec(url: String) -> Codec {
    Codec::new(&RegistrySettings { url, ..RegistrySettings::default() }).unwrap()
}

const FRAME: [u8; 6] = [MAGIC_BYTE, 0, 0, 0, 42, 0x02];

#[tokio::test]
async fn refused_rate_limited_and_failing_registries_are_retried() {
    for (status, reason) in [
        (401, "Unauthorized"),
        (403, "Forbidden"),
        (408, "Request Timeout"),
        (429, "Too Many Requests"),
        (500, "Internal Server Error"),
        (503, "Service Unavailable"),
    ] {
        let codec = codec(registry_answering(status, reason).await);
        let err = codec.decode::<AgentEvent>("agent-events", &FRAME).await.unwrap_err();
        assert!(matches!(err, SchemaError::RegistryUnavailable { .. }), "{status}: {err:?}");
        assert!(err.is_retryable(), "{status}");
        assert!(err.to_string().contains(&status.to_string()), "{status}: {err}");
        let err = codec.register::<AgentEvent>("agent-events").await.unwrap_err();
        assert!(err.is_retryable(), "registering, {status}: {err:?}");
    }
}

#[tokio::test]
async fn an_id_the_registry_does_not_have_is_retried() {
    let codec = codec(registry_answering(404, "Not Found").await);
    let err = codec.decode::<AgentEvent>("agent-events", &FRAME).await.unwrap_err();
    assert!(matches!(err, SchemaError::UnknownSchemaId { id: 42 }), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_request_the_registry_calls_wrong_is_not_retried() {
    for (status, reason) in [(400, "Bad Request"), (422, "Unprocessable Entity")] {
        let codec = codec(registry_answering(status, reason).await);
        let err = codec.decode::<AgentEvent>("agent-events", &FRAME).await.unwrap_err();
        assert!(matches!(err, SchemaError::Registry { .. }), "{status}: {err:?}");
        assert!(!err.is_retryable(), "{status}");
    }
}
