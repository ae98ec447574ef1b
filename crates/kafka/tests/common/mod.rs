//! Shared helpers of the dora-kafka integration tests: settings for the local
//! stack, a service context, and recording handlers.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dora_telemetry::ServiceContext;
use dora_kafka::{ConsumerSettings, HandlerError, KafkaSettings, Record, RetryPolicy};

/// The local stack's Kafka settings.
pub fn kafka() -> KafkaSettings {
    dora_testkit::kafka()
}

/// Consumer settings for a fresh group with fast retries and commits.
pub fn consumer(group: &str) -> ConsumerSettings {
    ConsumerSettings {
        group_id: group.to_string(),
        fetch_min_bytes: 1,
        fetch_max_wait_ms: 100,
        max_batch_wait_ms: 100,
        commit_interval_ms: 200,
        session_timeout_ms: 10_000,
        retry: RetryPolicy {
            base_delay_ms: 50,
            max_delay_ms: 400,
            max_retries: 10,
        },
        ..Default::default()
    }
}

/// A service context with its own readiness and shutdown token.
pub fn context(name: &'static str) -> ServiceContext {
    ServiceContext::new(name)
}

/// The schema codec on the local registry (encodes the loop's dead letters).
pub fn codec() -> Arc<dora_schema::Codec> {
    let settings = dora_schema::RegistrySettings {
        url: dora_testkit::registry_url(),
        ..Default::default()
    };
    Arc::new(dora_schema::Codec::new(&settings).expect("codec"))
}

/// Parses a test payload `{"id": n}`; anything else is a permanent error.
pub fn parse_id(r: &Record) -> Result<u64, HandlerError> {
    let v: serde_json::Value =
        serde_json::from_slice(r.payload()).map_err(HandlerError::permanent)?;
    v.get("id")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| HandlerError::rejected("Invalid", "no id"))
}

/// Test payload for id `n`.
pub fn payload(n: u64) -> Vec<u8> {
    format!("{{\"id\":{n}}}").into_bytes()
}

/// Produces ids `range` to `topic` (key = id), awaiting every ack.
pub async fn produce_ids(topic: &str, range: std::ops::Range<u64>) -> anyhow::Result<()> {
    let p = dora_testkit::producer(&kafka())?;
    let mut pending = Vec::new();
    for n in range {
        let key = n.to_string();
        let value = payload(n);
        let record = rdkafka::producer::FutureRecord::to(topic)
            .key(&key)
            .payload(&value);
        pending.push(p.send_result(record).map_err(|(e, _)| e)?);
    }
    for d in pending {
        d.await?.map_err(|(e, _)| e)?;
    }
    Ok(())
}

/// Processed ids, shared between a handler and the test.
#[derive(Clone, Default)]
pub struct Seen(pub Arc<Mutex<Vec<u64>>>);

impl Seen {
    pub fn push(&self, id: u64) {
        self.0.lock().unwrap().push(id);
    }
    pub fn ids(&self) -> Vec<u64> {
        self.0.lock().unwrap().clone()
    }
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    /// Waits until `n` ids were seen.
    pub async fn wait_for(&self, n: usize, deadline: Duration) -> anyhow::Result<()> {
        let me = self.clone();
        dora_testkit::eventually(deadline, || {
            let ok = me.len() >= n;
            async move { ok.then_some(()) }
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}: saw {} of {n}", self.len()))
    }
}

/// Logs to stderr when `TEST_LOG` is set.
pub fn logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info,dora_kafka=debug")
            .with_test_writer()
            .try_init();
    }
}
