//! Integration tests against the real schema registry of the local stack
//! (`deploy/local/stack.sh up`; URL from `DORA_REGISTRY__URL`, default the
//! local Apicurio). Each test uses its own topic, hence its own subject.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use dora_schema::*;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

fn registry_url() -> String {
    std::env::var("DORA_REGISTRY__URL").unwrap_or_else(|_| DEFAULT_REGISTRY_URL.to_string())
}

fn settings(url: String) -> RegistrySettings {
    RegistrySettings {
        url,
        ..RegistrySettings::default()
    }
}

fn codec() -> Codec {
    Codec::new(&settings(registry_url())).unwrap()
}

fn topic(name: &str) -> String {
    format!("schema-test-{name}-{}", uuid::Uuid::new_v4().simple())
}

/// AgentEvent as a newer producer writes it: one added optional field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AgentEventV2 {
    event_id: String,
    agent_id: String,
    timestamp: i64,
    event_type: EventType,
    agent_type: String,
    status: AgentStatus,
    version: String,
    message: Option<String>,
    #[serde(with = "dora_schema::types::json_text")]
    metadata: serde_json::Value,
    task_id: Option<String>,
    priority: Option<i32>,
}

impl AvroRecord for AgentEventV2 {
    const NAME: &'static str = "dora.events.AgentEvent";
    const SCHEMA: &'static str = include_str!("fixtures/AgentEventV2.avsc");
    fn compiled() -> &'static CompiledSchema {
        static C: OnceLock<CompiledSchema> = OnceLock::new();
        C.get_or_init(|| CompiledSchema::parse(Self::NAME, Self::SCHEMA).unwrap())
    }
}

impl AgentEventV2 {
    fn from_v1(e: AgentEvent, priority: Option<i32>) -> Self {
        Self {
            event_id: e.event_id,
            agent_id: e.agent_id,
            timestamp: e.timestamp,
            event_type: e.event_type,
            agent_type: e.agent_type,
            status: e.status,
            version: e.version,
            message: e.message,
            metadata: e.metadata,
            task_id: e.task_id,
            priority,
        }
    }
}

/// AgentEvent with `timestamp` changed to a string: not backward compatible.
struct AgentEventIncompatible;

impl AvroRecord for AgentEventIncompatible {
    const NAME: &'static str = "dora.events.AgentEvent";
    const SCHEMA: &'static str = include_str!("fixtures/AgentEventIncompatible.avsc");
    fn compiled() -> &'static CompiledSchema {
        static C: OnceLock<CompiledSchema> = OnceLock::new();
        C.get_or_init(|| CompiledSchema::parse(Self::NAME, Self::SCHEMA).unwrap())
    }
}

#[test]
fn v2_fixture_is_the_current_schema_plus_one_optional_field() {
    let mut v2: serde_json::Value = serde_json::from_str(AgentEventV2::SCHEMA).unwrap();
    let added = v2["fields"].as_array_mut().unwrap().pop().unwrap();
    assert_eq!(added["name"], "priority");
    assert_eq!(added["default"], serde_json::Value::Null);
    assert_eq!(
        v2,
        serde_json::from_str::<serde_json::Value>(AgentEvent::SCHEMA).unwrap()
    );
}

#[tokio::test]
async fn register_is_idempotent_and_sets_backward_transitive() {
    let topic = topic("register");
    let codec = codec();
    let id = codec.register::<AgentEvent>(&topic).await.unwrap();
    assert_eq!(
        codec.register::<AgentEvent>(&topic).await.unwrap(),
        id,
        "cached"
    );
    assert_eq!(
        crate::codec().register::<AgentEvent>(&topic).await.unwrap(),
        id,
        "registry answers the same id"
    );

    let config: serde_json::Value = reqwest::get(format!(
        "{}/config/{}",
        registry_url(),
        value_subject(&topic)
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(config["compatibilityLevel"], COMPATIBILITY, "{config}");

    let versions: Vec<u32> = reqwest::get(format!(
        "{}/subjects/{}/versions",
        registry_url(),
        value_subject(&topic)
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        versions.len(),
        1,
        "registering twice made one version: {versions:?}"
    );
}

#[tokio::test]
async fn encode_then_decode_by_id_with_a_cold_cache() {
    let writer = codec();
    let reader = codec();

    async fn check<T>(writer: &Codec, reader: &Codec, name: &str, value: T)
    where
        T: AvroRecord + Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let topic = topic(name);
        let bytes = writer.encode(&topic, &value).await.unwrap();
        let id = writer.register::<T>(&topic).await.unwrap();
        assert_eq!(bytes[0], MAGIC_BYTE);
        assert_eq!(u32::from_be_bytes(bytes[1..5].try_into().unwrap()), id);
        let back: T = reader.decode(&topic, &bytes).await.unwrap();
        assert_eq!(back, value, "{name}");
    }

    check(&writer, &reader, "agent-events", common::agent_event()).await;
    check(&writer, &reader, "agent-health", common::agent_health()).await;
    check(
        &writer,
        &reader,
        "risk-assessments",
        common::compliance_report(),
    )
    .await;
    check(&writer, &reader, "user-activities", common::audit_event()).await;
    check(&writer, &reader, "risk-alerts", common::risk_alert()).await;
    check(&writer, &reader, "agent-events-dlq", common::dead_letter()).await;
}

#[tokio::test]
async fn newer_writer_is_read_by_older_reader() {
    let topic = topic("newer-writer");
    let old = codec();
    let new = codec();
    let v1_id = old.register::<AgentEvent>(&topic).await.unwrap();
    let v2_id = new.register::<AgentEventV2>(&topic).await.unwrap();
    assert_ne!(v1_id, v2_id, "the added field is a new schema");

    let sent = AgentEventV2::from_v1(common::agent_event(), Some(5));
    let bytes = new.encode(&topic, &sent).await.unwrap();
    let read: AgentEvent = old.decode(&topic, &bytes).await.unwrap();
    assert_eq!(
        read,
        common::agent_event(),
        "the old reader drops the new field and keeps the rest"
    );

    // apache-avro's generic reader (the resolution path) takes an early end
    // of input for null; a truncated body must still be an error.
    let truncated = &bytes[..bytes.len() - 3];
    let r = old.decode::<AgentEvent>(&topic, truncated).await;
    assert!(matches!(r, Err(SchemaError::InvalidAvro { .. })), "{r:?}");
    let mut trailing = bytes.clone();
    trailing.push(0);
    let r = old.decode::<AgentEvent>(&topic, &trailing).await;
    assert!(matches!(r, Err(SchemaError::InvalidAvro { .. })), "{r:?}");
}

#[tokio::test]
async fn older_writer_is_read_by_newer_reader() {
    let topic = topic("older-writer");
    let old = codec();
    let new = codec();
    let bytes = old.encode(&topic, &common::agent_event()).await.unwrap();
    new.register::<AgentEventV2>(&topic).await.unwrap();
    let read: AgentEventV2 = new.decode(&topic, &bytes).await.unwrap();
    assert_eq!(
        read,
        AgentEventV2::from_v1(common::agent_event(), None),
        "the new field takes its default"
    );
}

#[tokio::test]
async fn registry_rejects_an_incompatible_schema_and_says_so() {
    let topic = topic("incompatible");
    let codec = codec();
    codec.register::<AgentEvent>(&topic).await.unwrap();
    let err = codec
        .register::<AgentEventIncompatible>(&topic)
        .await
        .unwrap_err();
    assert!(!err.is_retryable());
    match &err {
        SchemaError::IncompatibleSchema {
            subject,
            record,
            reason,
        } => {
            assert_eq!(subject, &value_subject(&topic));
            assert_eq!(record, "dora.events.AgentEvent");
            assert!(reason.to_lowercase().contains("incompatible"), "{reason}");
        }
        other => panic!("expected IncompatibleSchema, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("incompatible") && text.contains(&value_subject(&topic)),
        "{text}"
    );
}

/// A frame with a schema id no registry of ours has handed out.
fn frame_with_unknown_id(id: u32) -> Vec<u8> {
    let mut frame = vec![MAGIC_BYTE];
    frame.extend_from_slice(&id.to_be_bytes());
    frame.push(0x02);
    frame
}

#[tokio::test]
async fn an_unknown_schema_id_is_retryable_not_a_bad_record() {
    // A replica may not have the id the producer registered yet: retry, do not
    // dead-letter (the consume loop's retry cap reports the partition stuck).
    let err = codec()
        .decode::<AgentEvent>("agent-events", &frame_with_unknown_id(0x7fff_fff0))
        .await
        .unwrap_err();
    assert!(
        matches!(err, SchemaError::UnknownSchemaId { id: 0x7fff_fff0 }),
        "{err:?}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn an_unknown_schema_id_is_answered_from_memory_until_its_time_is_up() {
    let (proxy, url) = proxied_registry().await;
    let remembering = Codec::new(&RegistrySettings {
        unknown_id_cache_ms: 60_000,
        ..settings(url.clone())
    })
    .unwrap();
    let forgetting = Codec::new(&RegistrySettings {
        unknown_id_cache_ms: 300,
        ..settings(url)
    })
    .unwrap();
    let (a, b) = (frame_with_unknown_id(0x7fff_ffe1), frame_with_unknown_id(0x7fff_ffe2));
    for codec in [&remembering, &forgetting] {
        let err = codec.decode::<AgentEvent>("agent-events", &a).await.unwrap_err();
        assert!(matches!(err, SchemaError::UnknownSchemaId { .. }), "{err:?}");
    }

    proxy.cut().await;

    // Asking now would fail as unavailable: an unknown id means no request was made.
    for _ in 0..3 {
        let err = remembering.decode::<AgentEvent>("agent-events", &a).await.unwrap_err();
        assert!(matches!(err, SchemaError::UnknownSchemaId { .. }), "{err:?}");
    }
    // Another id is asked for (and the registry is really gone).
    let err = remembering.decode::<AgentEvent>("agent-events", &b).await.unwrap_err();
    assert!(matches!(err, SchemaError::RegistryUnavailable { .. }), "{err:?}");
    // Once its time is up, the id is asked for again.
    let asked_again = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            match forgetting.decode::<AgentEvent>("agent-events", &a).await {
                Err(SchemaError::RegistryUnavailable { .. }) => break,
                Err(SchemaError::UnknownSchemaId { .. }) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    assert!(asked_again.is_ok(), "the unknown id was never asked for again");
}

#[tokio::test]
async fn a_value_of_another_record_is_a_schema_mismatch() {
    let codec = codec();
    let topic = topic("mismatch");
    let bytes = codec.encode(&topic, &common::risk_alert()).await.unwrap();
    let err = codec
        .decode::<AgentEvent>(&topic, &bytes)
        .await
        .unwrap_err();
    assert!(matches!(err, SchemaError::SchemaMismatch { .. }), "{err:?}");
}

/// A TCP forwarder in front of the real registry that can be cut, to take
/// the registry away from one codec without stopping the shared one.
struct CuttableProxy {
    addr: SocketAddr,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl CuttableProxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let conns = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                conns.lock().unwrap().push(conn);
            }
        });
        tasks.lock().unwrap().push(accept);
        Self { addr, tasks }
    }

    /// Closes the listener and every forwarded connection (pooled keep-alive ones too).
    async fn cut(&self) {
        let tasks: Vec<JoinHandle<()>> = self.tasks.lock().unwrap().drain(..).collect();
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        assert!(
            TcpStream::connect(self.addr).await.is_err(),
            "proxy still accepts connections"
        );
    }
}

/// The real registry behind a proxy that can be cut; returns the proxy and
/// the registry URL through it.
async fn proxied_registry() -> (CuttableProxy, String) {
    let url = reqwest::Url::parse(&registry_url()).unwrap();
    let upstream = tokio::net::lookup_host((
        url.host_str().unwrap(),
        url.port_or_known_default().unwrap(),
    ))
    .await
    .unwrap()
    .next()
    .unwrap();
    let proxy = CuttableProxy::start(upstream).await;
    let mut via_proxy = url.clone();
    via_proxy.set_port(Some(proxy.addr.port())).unwrap();
    via_proxy.set_host(Some("127.0.0.1")).unwrap();
    (proxy, via_proxy.as_str().trim_end_matches('/').to_string())
}

#[tokio::test]
async fn registry_outage_after_warm_up_stops_neither_encode_nor_decode() {
    let (proxy, via_proxy) = proxied_registry().await;

    let topic = topic("outage");
    // another producer wrote a value with a newer schema; our codec has to fetch it once
    let other_bytes = codec()
        .encode(
            &topic,
            &AgentEventV2::from_v1(common::agent_event(), Some(1)),
        )
        .await
        .unwrap();

    let warm = Codec::new(&settings(via_proxy.clone())).unwrap();
    let own_bytes = warm.encode(&topic, &common::agent_event()).await.unwrap();
    let _: AgentEvent = warm.decode(&topic, &other_bytes).await.unwrap();

    proxy.cut().await;

    // after warm-up: no registry needed
    assert_eq!(
        warm.encode(&topic, &common::agent_event()).await.unwrap(),
        own_bytes
    );
    let read: AgentEvent = warm.decode(&topic, &own_bytes).await.unwrap();
    assert_eq!(read, common::agent_event());
    let read: AgentEvent = warm.clone().decode(&topic, &other_bytes).await.unwrap();
    assert_eq!(read, common::agent_event());

    // what is not cached fails as retryable, not as a bad message
    let cold = Codec::new(&settings(via_proxy)).unwrap();
    let err = cold
        .decode::<AgentEvent>(&topic, &own_bytes)
        .await
        .unwrap_err();
    assert!(
        matches!(err, SchemaError::RegistryUnavailable { .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
    let err = warm.register::<RiskAlert>(&topic).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
}

#[tokio::test]
async fn decode_generic_shows_any_value_without_its_type() {
    let writer = codec();
    let reader = codec();
    let topic = topic("generic");
    let event = common::agent_event();
    let bytes = writer.encode(&topic, &event).await.unwrap();
    let id = writer.register::<AgentEvent>(&topic).await.unwrap();

    let shown = reader.decode_generic(&bytes).await.unwrap();
    assert_eq!(shown.framing, Framing::Avro { id });
    assert_eq!(shown.record.as_deref(), Some("dora.events.AgentEvent"));
    assert_eq!(shown.json["agentId"], "gap-analyzer-1");
    assert_eq!(shown.json["eventType"], "TASK_COMPLETED");
    assert_eq!(shown.json["taskId"], "task-42");
    assert_eq!(shown.json["timestamp"], 1_795_771_815_123i64);

    let legacy = br#"{"agent_id": "py-1", "status": "healthy"}"#;
    let shown = reader.decode_generic(legacy).await.unwrap();
    assert_eq!(shown.framing, Framing::LegacyJson);
    assert_eq!(shown.record, None);
    assert_eq!(
        shown.json,
        serde_json::json!({"agent_id": "py-1", "status": "healthy"})
    );

    // Neither: the same errors as a typed decode.
    assert!(matches!(
        reader.decode_generic(b"\x07garbage").await,
        Err(SchemaError::UnknownMagicByte { byte: 7 })
    ));
    let mut truncated = bytes.clone();
    truncated.truncate(bytes.len() - 3);
    let r = reader.decode_generic(&truncated).await;
    assert!(matches!(r, Err(SchemaError::InvalidAvro { .. })), "{r:?}");
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(matches!(
        reader.decode_generic(&trailing).await,
        Err(SchemaError::InvalidAvro { .. })
    ));
}
