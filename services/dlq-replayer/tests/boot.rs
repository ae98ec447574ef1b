//! The shared boot sequence, exercised through a real service binary: admin
//! endpoints answer, SIGTERM exits 0, wrong credentials and bad settings exit
//! non-zero with one clear line.

use std::time::{Duration, Instant};

use anyhow::Result;
use dora_testkit as tk;

const BIN: &str = env!("CARGO_BIN_EXE_dlq-replayer");

#[tokio::test]
async fn serves_admin_endpoints_and_stops_on_sigterm() -> Result<()> {
    // Its own group, following only its own (empty) dead-letter topic.
    let topic = tk::unique("boot");
    tk::create_topic(&tk::kafka(), &format!("{topic}-dlq"), 1).await?;
    let env = [
        ("DORA_CONSUMER__GROUP_ID", tk::unique("dlq-replayer-boot")),
        (
            "DORA_CONSUMER__TRANSACTIONAL_ID",
            tk::unique("dlq-replayer-boot-tx"),
        ),
        ("DORA_DLQ__PATTERN", format!("^{topic}-dlq$")),
    ];
    let mut service = tk::ServiceProcess::spawn(BIN, &env).await?;
    assert_eq!(service.admin_get("/healthz").await?.0, 200);
    let (status, body) = service.admin_get("/readyz").await?;
    assert_eq!(status, 200, "{body}");
    let (status, _) = service.admin_get("/metrics").await?;
    assert_eq!(status, 200);
    let exit = service.terminate(Duration::from_secs(20)).await?;
    assert!(exit.success(), "exit status {exit}\n{}", service.log());
    Ok(())
}

#[tokio::test]
async fn wrong_scram_password_exits_77_with_one_line() -> Result<()> {
    let sasl = tk::kafka_sasl(dora_kafka::SaslMechanism::ScramSha512)?;
    let dir = tempfile::tempdir()?;
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "definitely-wrong\n")?;
    let start = Instant::now();
    let (status, _stdout, stderr) = tk::run_to_exit(
        BIN,
        &[
            (
                "DORA_KAFKA__BOOTSTRAP_SERVERS",
                sasl.bootstrap_servers.clone(),
            ),
            ("DORA_KAFKA__SECURITY_PROTOCOL", "SASL_SSL".into()),
            ("DORA_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512".into()),
            (
                "DORA_KAFKA__SASL_USERNAME",
                sasl.sasl_username.clone().unwrap_or_default(),
            ),
            (
                "DORA_KAFKA__SASL_PASSWORD_FILE",
                pw.to_string_lossy().into_owned(),
            ),
            (
                "DORA_KAFKA__SSL_CA_LOCATION",
                sasl.ssl_ca_location
                    .as_ref()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            ),
            ("DORA_TELEMETRY__LOG_FILTER", "off".into()),
        ],
        Duration::from_secs(45),
    )
    .await?;
    assert_eq!(status.code(), Some(77), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].contains("authentication failed"), "{stderr}");
    assert!(
        !stderr.contains("definitely-wrong"),
        "password leaked: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(start.elapsed() < Duration::from_secs(40));
    Ok(())
}

#[tokio::test]
async fn invalid_setting_exits_78_naming_the_key() -> Result<()> {
    let (status, _stdout, stderr) = tk::run_to_exit(
        BIN,
        &[("DORA_KAFKA__SECURITY_PROTOCOL", "CARRIER_PIGEON".into())],
        Duration::from_secs(20),
    )
    .await?;
    assert_eq!(status.code(), Some(78), "stderr: {stderr}");
    assert!(stderr.contains("security_protocol"), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn a_permanent_error_type_configured_as_transient_exits_78_naming_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("dlq.toml");
    std::fs::write(
        &file,
        "[[dlq.transient]]\nerror_type = \"InvalidJson\"\nmax_retries = 3\n",
    )?;
    let config = file.to_string_lossy().into_owned();
    for args in [&[][..], &["list"][..]] {
        let (status, _stdout, stderr) = tk::run_with_args(
            BIN,
            args,
            &[("DORA_CONFIG", config.clone())],
            Duration::from_secs(20),
        )
        .await?;
        assert_eq!(status.code(), Some(78), "{args:?}: {stderr}");
        assert!(
            stderr.contains("dlq") && stderr.contains("InvalidJson"),
            "{stderr}"
        );
    }
    Ok(())
}
