//! The benchmark's baseline: a bare producer (the runtime's idempotent,
//! acks=all producer with the same Avro codec, no gateway) writing the records
//! the simulator's agents would send, so gateway and producer can be compared
//! side by side in one run.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dora_kafka::{KafkaSettings, Producer, ProducerSettings};
use dora_schema::{AgentEvent, Codec};
use hdrhistogram::Histogram;
use rand::SeedableRng;
use tokio::sync::Semaphore;

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

/// Produces for `duration` with at most `window` records waiting for acks,
/// at `rate` records/s (0: as fast as acks allow), to `topic`.
pub async fn bare_producer(
    kafka: &KafkaSettings,
    codec: &Codec,
    topic: &str,
    agents: usize,
    rate: f64,
    duration: Duration,
    window: usize,
) -> anyhow::Result<BareReport> {
    let producer = Producer::new(
        kafka,
        &ProducerSettings::default(),
        "agent-bench",
        &Default::default(),
    )?;
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let slots = Arc::new(Semaphore::new(window.max(1)));
    let mut next = records(agents, u64::MAX);
    let start = Instant::now();
    let mut sent: u64 = 0;
    let mut tasks = Vec::new();
    while start.elapsed() < duration {
        if rate > 0.0 {
            let due = (start.elapsed().as_secs_f64() * rate) as u64 + 1;
            if sent >= due {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        }
        let permit = slots.clone().acquire_owned().await?;
        let value = next();
        let t0 = Instant::now();
        let delivery = producer
            .enqueue(codec, topic, Some(&value.agent_id), &value)
            .await?;
        sent += 1;
        let (hist, failed) = (hist.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let ok = delivery.await.is_ok();
            drop(permit);
            if ok {
                let us = t0.elapsed().as_micros().clamp(1, 60_000_000) as u64;
                hist.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .saturating_record(us);
            } else {
                failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = start.elapsed();
    let latency_us = Arc::try_unwrap(hist)
        .map_err(|_| anyhow::anyhow!("deliveries still running"))?
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    let failed = failed.load(std::sync::atomic::Ordering::Relaxed);
    Ok(BareReport {
        acked: latency_us.len(),
        failed,
        elapsed,
        latency_us,
    })
}
