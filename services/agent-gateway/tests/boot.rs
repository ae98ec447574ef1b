//! Start-up refusals: a gateway agents could not authenticate against, or
//! whose token key is shorter than 32 bytes, does not start, and says which
//! setting is wrong.

mod common;

use std::time::Duration;

use anyhow::Result;
use dora_testkit as tk;

#[tokio::test]
async fn without_a_token_key_or_client_ca_the_gateway_refuses_to_start() -> Result<()> {
    let (status, _stdout, stderr) = tk::run_to_exit(
        common::BIN,
        &[
            ("DORA_GATEWAY__GRPC_LISTEN", "127.0.0.1:0".to_string()),
            (
                "DORA_KAFKA__BOOTSTRAP_SERVERS",
                tk::kafka().bootstrap_servers,
            ),
            ("DORA_TELEMETRY__LOG_FILTER", "off".into()),
        ],
        Duration::from_secs(30),
    )
    .await?;
    assert!(
        !status.success(),
        "started without any way to authenticate agents"
    );
    assert!(stderr.contains("DORA_GATEWAY__TOKEN_KEY_FILE"), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn a_token_key_shorter_than_32_bytes_is_refused_at_start() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let key_file = dir.path().join("short-key");
    std::fs::write(&key_file, "31 bytes of key, not enough!!!!")?;
    let (status, _stdout, stderr) = tk::run_to_exit(
        common::BIN,
        &[
            ("DORA_GATEWAY__GRPC_LISTEN", "127.0.0.1:0".to_string()),
            (
                "DORA_GATEWAY__TOKEN_KEY_FILE",
                key_file.display().to_string(),
            ),
            (
                "DORA_KAFKA__BOOTSTRAP_SERVERS",
                tk::kafka().bootstrap_servers,
            ),
            ("DORA_TELEMETRY__LOG_FILTER", "off".into()),
        ],
        Duration::from_secs(30),
    )
    .await?;
    assert!(!status.success(), "started with a 31-byte token key");
    assert!(stderr.contains("gateway.token_key"), "{stderr}");
    assert!(stderr.contains("at least 32"), "{stderr}");
    Ok(())
}
