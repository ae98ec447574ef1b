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

/// Logs to stderr when `TEST_LOG` is set (and records warnings, see [`capture_warnings`]).
pub fn logs() {
    let _ = warnings();
}

/// Warnings (and errors) logged in this test process, each as one line with its fields.
#[derive(Clone, Default)]
pub struct Warnings(Arc<Mutex<Vec<String>>>);

impl Warnings {
    /// How many were logged so far.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    /// Those logged after the first `from` that mention `needle`.
    pub fn since(&self, from: usize, needle: &str) -> Vec<String> {
        self.0.lock().unwrap()[from..]
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }
}

struct FieldText(String);

impl tracing::field::Visit for FieldText {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={:?}", field.name(), value));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Warnings {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if *event.metadata().level() <= tracing::Level::WARN {
            let mut text = FieldText(format!("{} {}", event.metadata().level(), event.metadata().target()));
            event.record(&mut text);
            self.0.lock().unwrap().push(text.0);
        }
    }
}

fn warnings() -> Warnings {
    use tracing_subscriber::prelude::*;
    static INSTALLED: std::sync::OnceLock<Warnings> = std::sync::OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let captured = Warnings::default();
            let fmt = std::env::var_os("TEST_LOG").is_some().then(|| {
                tracing_subscriber::fmt::layer()
                    .with_test_writer()
                    .with_filter(tracing_subscriber::EnvFilter::new("info,dora_kafka=debug"))
            });
            let _ = tracing_subscriber::registry()
                .with(captured.clone().with_filter(tracing_subscriber::filter::LevelFilter::WARN))
                .with(fmt)
                .try_init();
            captured
        })
        .clone()
}

/// Records every warning this test process logs from now on.
pub fn capture_warnings() -> Warnings {
    warnings()
}

/// Produces ids `range` to one `partition` of `topic` (key = id), awaiting every ack.
pub async fn produce_ids_to(
    topic: &str,
    partition: i32,
    range: std::ops::Range<u64>,
) -> anyhow::Result<()> {
    let p = dora_testkit::producer(&kafka())?;
    let mut pending = Vec::new();
    for n in range {
        let key = n.to_string();
        let value = payload(n);
        let record = rdkafka::producer::FutureRecord::to(topic)
            .partition(partition)
            .key(&key)
            .payload(&value);
        pending.push(p.send_result(record).map_err(|(e, _)| e)?);
    }
    for d in pending {
        d.await?.map_err(|(e, _)| e)?;
    }
    Ok(())
}

/// The ids of `{"id": n}` payloads, in the order given.
pub fn ids_of(records: &[dora_testkit::Record]) -> Vec<u64> {
    records
        .iter()
        .filter_map(|m| {
            serde_json::from_slice::<serde_json::Value>(m.payload()?).ok()?["id"].as_u64()
        })
        .collect()
}

/// Waits until `topic` holds at least `n` committed (read_committed) records and returns them.
pub async fn committed_outputs(topic: &str, n: usize) -> anyhow::Result<Vec<dora_testkit::Record>> {
    let topic = topic.to_string();
    dora_testkit::eventually(dora_testkit::DEADLINE, || {
        let topic = topic.clone();
        async move {
            dora_testkit::read_committed(&kafka(), &topic)
                .await
                .ok()
                .filter(|m| m.len() >= n)
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}: fewer than {n} committed records on {topic}"))
}

/// Asserts that `ids` holds every id of `expected` exactly once.
pub fn assert_exactly_once(ids: &[u64], expected: std::ops::Range<u64>, what: &str) {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    let want: Vec<u64> = expected.collect();
    assert_eq!(sorted, want, "{what}: each input exactly once, none missing, none twice");
}

/// Waits until `group` committed `end` on every partition in `ends` (partition, end offset).
pub async fn wait_committed(group: &str, topic: &str, ends: &[(i32, i64)]) -> anyhow::Result<()> {
    for (p, end) in ends {
        let (g, t, p, end) = (group.to_string(), topic.to_string(), *p, *end);
        dora_testkit::eventually(dora_testkit::DEADLINE, || {
            let (g, t) = (g.clone(), t.clone());
            async move {
                let c = dora_testkit::committed_offset(&kafka(), &g, &t, p).await.ok().flatten();
                (c == Some(end)).then_some(())
            }
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}: {group} never committed {end} on {topic}/{p}"))?;
    }
    Ok(())
}

/// Produces ids `range` to one `partition` of `topic` in one committed Kafka
/// transaction (so the partition ends with a transaction marker).
pub async fn produce_transactionally(
    topic: &str,
    partition: i32,
    range: std::ops::Range<u64>,
) -> anyhow::Result<()> {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let mut cfg = kafka().client_config()?;
        cfg.set("transactional.id", dora_testkit::unique("test-txn"));
        let p: ThreadedProducer<DefaultProducerContext> = cfg.create()?;
        let timeout = Duration::from_secs(30);
        p.init_transactions(timeout)?;
        p.begin_transaction()?;
        for n in range {
            let (key, value) = (n.to_string(), payload(n));
            p.send(BaseRecord::to(&topic).partition(partition).key(&key).payload(&value))
                .map_err(|(e, _)| e)?;
        }
        p.commit_transaction(timeout)?;
        anyhow::Ok(())
    })
    .await?
}
