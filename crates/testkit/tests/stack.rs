//! The local stack really works: produce and consume over PLAINTEXT and over
//! SASL_SSL (SCRAM-SHA-256 and -512, certificate verified), a wrong password
//! fails fast with a clear error, the registry's Confluent API registers and
//! serves schemas, topics provision idempotently, Kafka's own tools run.

use std::time::{Duration, Instant};

use anyhow::Result;
use dora_kafka::topics::{catalog, provision};
use dora_kafka::{check_connection, KafkaError, SaslMechanism};
use dora_testkit as tk;

async fn roundtrip(settings: &dora_kafka::KafkaSettings) -> Result<()> {
    let topic = tk::unique("stack-roundtrip");
    tk::create_topic(&tk::kafka(), &topic, 2).await?;
    let producer = tk::producer(settings)?;
    let mut sent = Vec::new();
    for i in 0..10 {
        let value = format!("value-{i}");
        let key = format!("key-{}", i % 3);
        tk::produce(&producer, &topic, Some(key.as_bytes()), value.as_bytes(), &[("h", b"v")]).await?;
        sent.push(value);
    }
    let got = tk::read_all(settings, &topic).await?;
    let mut values: Vec<String> =
        got.iter().map(|m| String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap()).collect();
    values.sort();
    sent.sort();
    assert_eq!(values, sent);
    Ok(())
}

#[tokio::test]
async fn produce_and_consume_over_plaintext() -> Result<()> {
    roundtrip(&tk::kafka()).await
}

#[tokio::test]
async fn produce_and_consume_over_sasl_ssl_scram_sha_256() -> Result<()> {
    let settings = tk::kafka_sasl(SaslMechanism::ScramSha256)?;
    assert!(settings.ssl_ca_location.as_ref().is_some_and(|p| p.exists()), "stack CA missing");
    roundtrip(&settings).await
}

#[tokio::test]
async fn produce_and_consume_over_sasl_ssl_scram_sha_512() -> Result<()> {
    roundtrip(&tk::kafka_sasl(SaslMechanism::ScramSha512)?).await
}

#[tokio::test]
async fn wrong_scram_password_fails_fast_with_a_clear_error() -> Result<()> {
    let mut settings = tk::kafka_sasl(SaslMechanism::ScramSha256)?;
    settings.sasl_password = Some(dora_config::Secret::from("not-the-password".to_string()));
    let start = Instant::now();
    let err = check_connection(&settings, Duration::from_secs(20)).await.expect_err("wrong password accepted");
    assert!(matches!(err, KafkaError::Authentication(_)), "expected an authentication error, got: {err}");
    let text = err.to_string();
    assert!(text.contains("authentication"), "{text}");
    assert!(!text.contains('\n'), "error should be one line: {text}");
    assert!(!text.contains("not-the-password"), "password leaked into the error: {text}");
    assert!(start.elapsed() < Duration::from_secs(20), "no answer before the deadline");
    Ok(())
}

#[tokio::test]
async fn broker_certificate_is_verified() -> Result<()> {
    // A CA that did not sign the broker's certificate must be refused.
    let dir = tempfile::tempdir()?;
    let (key, pem) = (dir.path().join("k"), dir.path().join("other-ca.pem"));
    let status = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=other"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&pem)
        .stderr(std::process::Stdio::null())
        .status()?;
    assert!(status.success());
    let mut settings = tk::kafka_sasl(SaslMechanism::ScramSha256)?;
    settings.ssl_ca_location = Some(pem);
    let err = check_connection(&settings, Duration::from_secs(10)).await.expect_err("untrusted broker accepted");
    assert!(matches!(err, KafkaError::Unreachable(_)), "{err}");
    assert!(err.to_string().to_lowercase().contains("ssl") || err.to_string().contains("certificate"), "{err}");
    Ok(())
}

#[tokio::test]
async fn registry_registers_a_schema_and_serves_it_by_id() -> Result<()> {
    let base = tk::registry_url();
    let subject = format!("{}-value", tk::unique("stack-registry"));
    let schema = r#"{"type":"record","name":"Probe","namespace":"dev.dora.test","fields":[{"name":"id","type":"string"}]}"#;
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{base}/subjects/{subject}/versions"))
        .header("content-type", "application/vnd.schemaregistry.v1+json")
        .json(&serde_json::json!({ "schema": schema }))
        .send()
        .await?;
    assert!(resp.status().is_success(), "register: {} {}", resp.status(), resp.text().await?);
    let id = resp.json::<serde_json::Value>().await?["id"].as_i64().expect("id in response");
    let fetched: serde_json::Value = client.get(format!("{base}/schemas/ids/{id}")).send().await?.json().await?;
    let fetched: serde_json::Value = serde_json::from_str(fetched["schema"].as_str().expect("schema field"))?;
    assert_eq!(fetched, serde_json::from_str::<serde_json::Value>(schema)?);
    let subjects: Vec<String> = client.get(format!("{base}/subjects")).send().await?.json().await?;
    assert!(subjects.contains(&subject));
    Ok(())
}

#[tokio::test]
async fn topic_catalog_provisions_idempotently() -> Result<()> {
    let settings = tk::kafka();
    provision(&settings, &catalog(), 1, Duration::from_secs(30)).await?;
    let again = provision(&settings, &catalog(), 1, Duration::from_secs(30)).await?;
    assert!(again.is_empty(), "second provisioning created {again:?}");
    // every topic exists with its partition count
    let consumer: rdkafka::consumer::BaseConsumer = settings.client_config()?.create()?;
    let md = tokio::task::spawn_blocking(move || {
        rdkafka::consumer::Consumer::fetch_metadata(&consumer, None, Duration::from_secs(10))
    })
    .await??;
    for spec in catalog() {
        let t = md.topics().iter().find(|t| t.name() == spec.name).unwrap_or_else(|| panic!("{} missing", spec.name));
        assert_eq!(t.partitions().len(), spec.partitions as usize, "{}", spec.name);
    }
    Ok(())
}

#[tokio::test]
async fn kafka_command_line_tools_run_from_the_cached_jars() -> Result<()> {
    let topic = tk::unique("stack-tools");
    tk::create_topic(&tk::kafka(), &topic, 3).await?;
    let out = tokio::process::Command::new("bash")
        .arg(tk::repo_root().join("deploy/local/kafka-tool.sh"))
        .args(["topics", "--bootstrap-server", &tk::kafka().bootstrap_servers, "--describe", "--topic", &topic])
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("PartitionCount: 3"), "{stdout}");
    Ok(())
}
