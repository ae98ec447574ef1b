//! The benchmark's baseline: bare rdkafka (idempotent, acks=all, the
//! platform producer's settings, no gateway) writing the Avro records the
//! simulator's agents would send, encoded beforehand, so gateway and Kafka can
//! be compared side by side in one run.

use std::time::Duration;

use dora_kafka::baseline::{self, RawRecord};
use dora_kafka::{KafkaSettings, ProducerSettings};
use dora_schema::{AgentEvent, Codec};
use hdrhistogram::Histogram;
use rand::SeedableRng;

use crate::intake::StampedEvent;
use crate::simulator::{scripted_event, AGENT_TYPES};
use crate::validation::{publish_request, Limits};
use crate::wire::agent_event;

/// What the bare producer achieved.
#[derive(Debug)]
pub struct BareReport {
    /// Records acknowledged by the broker.
    pub acked: u64,
    /// Records whose delivery failed.
    pub failed: u64,
    /// Time from first send to last ack.
    pub elapsed: Duration,
    /// Ack latency, microseconds.
    pub latency_us: Histogram<u64>,
}

impl BareReport {
    /// Acknowledged records per second.
    pub fn rate(&self) -> f64 {
        self.acked as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A latency percentile in milliseconds.
    pub fn latency_ms(&self, percentile: f64) -> f64 {
        self.latency_us.value_at_quantile(percentile / 100.0) as f64 / 1_000.0
    }
}

/// The records `agents` simulated agents send, round robin, as the gateway
/// would produce them (the bare producer's records; `agent-bench` also
/// measures their encoded size from them).
pub fn records(agents: usize, n: u64) -> impl FnMut() -> AgentEvent {
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let mut i: u64 = 0;
    move || {
        let agent = (i % agents as u64) as usize;
        let seq = i / agents as u64;
        i = (i + 1) % n.max(1);
        let id = format!("bench-agent-{agent}");
        let req = scripted_event(
            &id,
            AGENT_TYPES[agent % AGENT_TYPES.len()],
            seq,
            &mut rng,
            0.1,
        );
        let draft = publish_request(&req, &Limits::default()).expect("scripted events are valid");
        agent_event(&StampedEvent::stamp(draft))
    }
}

/// The records `agents` agents send, `per_agent` each, encoded as the
/// gateway writes them: the bare producer's input, ready to send.
pub async fn encoded_records(
    codec: &Codec,
    topic: &str,
    agents: usize,
    per_agent: u64,
) -> anyhow::Result<Vec<RawRecord>> {
    let n = agents.max(1) as u64 * per_agent.max(1);
    let mut next = records(agents.max(1), n);
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let value = next();
        let bytes = codec.encode(topic, &value).await?;
        out.push((topic.to_string(), value.agent_id, bytes));
    }
    Ok(out)
}

/// The baseline: bare rdkafka (`dora_kafka::baseline::produce_for`, the
/// platform producer's librdkafka settings) writing `records` flat out for
/// `duration`, at most `window` waiting for acks. The records are encoded
/// beforehand, so this is what the broker and librdkafka allow on this
/// machine, the ceiling for the gateway, which also validates and encodes.
pub async fn bare_producer(
    kafka: &KafkaSettings,
    settings: &ProducerSettings,
    records: &[RawRecord],
    duration: Duration,
    window: usize,
) -> anyhow::Result<BareReport> {
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let run = baseline::produce_for(kafka, settings, records, (duration, window), |t| {
        latency_us.saturating_record(t.as_micros().clamp(1, 60_000_000) as u64);
    })
    .await?;
    Ok(BareReport {
        acked: run.acked,
        failed: run.failed,
        elapsed: run.elapsed,
        latency_us,
    })
}
