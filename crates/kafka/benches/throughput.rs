//! Throughput of the runtime against bare rdkafka on the same local broker, in
//! the same run: the consume loop (consume + decode + commit) vs a bare
//! `StreamConsumer` loop doing the same work, and the producer path vs a bare
//! `FutureProducer` with the same settings.
//!
//! `cargo bench -p dora-kafka --bench throughput` (needs `deploy/local/stack.sh up`;
//! `BENCH_RECORDS` sets the record count, default 200000).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dora_kafka::consume::DeadLetterEncoder;
use dora_telemetry::ServiceContext;
use dora_kafka::{
    ConsumeLoop, ConsumerSettings, Handler, HandlerError, OutboundRecord, Producer,
    ProducerSettings, Record,
};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

struct NoLetters;

impl DeadLetterEncoder for NoLetters {
    async fn encode_dead_letter(
        &self,
        _: &str,
        _: &Record,
        _: &HandlerError,
        _: u32,
        _: &str,
    ) -> Result<Vec<u8>, (String, bool)> {
        Err(("no dead letters in the bench".into(), false))
    }
}

fn decode(bytes: &[u8]) -> Result<serde_json::Value, HandlerError> {
    serde_json::from_slice(bytes).map_err(HandlerError::permanent)
}

struct Counting(Arc<AtomicU64>);

impl Handler for Counting {
    async fn handle(&self, r: &Record) -> Result<(), HandlerError> {
        decode(r.payload())?;
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn payload(i: u64) -> Vec<u8> {
    format!(r#"{{"eventId":"{i:020}","agentId":"agent-{}","timestamp":1700000000000,"eventType":"HEARTBEAT","status":"HEALTHY"}}"#, i % 64)
        .into_bytes()
}

async fn bare_produce(
    cfg: &rdkafka::ClientConfig,
    topic: &str,
    n: u64,
) -> anyhow::Result<Duration> {
    let p: FutureProducer = cfg.create()?;
    let started = Instant::now();
    let mut pending = Vec::with_capacity(n as usize);
    for i in 0..n {
        let key = (i % 64).to_string();
        let value = payload(i);
        loop {
            match p.send_result(FutureRecord::to(topic).key(&key).payload(&value)) {
                Ok(f) => {
                    pending.push(f);
                    break;
                }
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    _,
                )) => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => anyhow::bail!(e),
            }
        }
    }
    for f in pending {
        f.await?.map_err(|(e, _)| e)?;
    }
    Ok(started.elapsed())
}

async fn loop_produce(p: &Producer, topic: &str, n: u64) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut pending = Vec::with_capacity(n as usize);
    for i in 0..n {
        let key = (i % 64).to_string();
        pending.push(
            p.enqueue_raw(OutboundRecord::new(topic, Some(&key), payload(i)))
                .await?,
        );
    }
    for d in pending {
        d.await?;
    }
    Ok(started.elapsed())
}

async fn bare_consume(
    cfg: &rdkafka::ClientConfig,
    topic: &str,
    n: u64,
    commit_every: u64,
) -> anyhow::Result<Duration> {
    let c: StreamConsumer = cfg.create()?;
    c.subscribe(&[topic])?;
    let mut started = None;
    let mut next: std::collections::HashMap<i32, i64> = Default::default();
    let mut count = 0;
    let mut since = 0;
    while count < n {
        let m = c.recv().await?;
        // Timed from the first record: group join is not part of throughput.
        started.get_or_insert_with(Instant::now);
        decode(m.payload().unwrap_or_default()).map_err(|e| anyhow::anyhow!("{e}"))?;
        next.insert(m.partition(), m.offset() + 1);
        count += 1;
        since += 1;
        if since >= commit_every {
            let mut tpl = TopicPartitionList::new();
            for (p, o) in &next {
                tpl.add_partition_offset(topic, *p, Offset::Offset(*o))?;
            }
            c.commit(&tpl, CommitMode::Async)?;
            since = 0;
        }
    }
    let mut tpl = TopicPartitionList::new();
    for (p, o) in &next {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*o))?;
    }
    c.commit(&tpl, CommitMode::Sync)?;
    Ok(started.map(|s| s.elapsed()).unwrap_or_default())
}

async fn loop_consume(
    settings: &ConsumerSettings,
    topic: &str,
    n: u64,
) -> anyhow::Result<Duration> {
    let ctx = ServiceContext::new("bench");
    let count = Arc::new(AtomicU64::new(0));
    let lp = ConsumeLoop::new(&dora_testkit::kafka(), settings, &ctx, Arc::new(NoLetters))
        .topics(&[topic]);
    let handler = Counting(count.clone());
    let task = tokio::spawn(lp.run(handler));
    // Timed from the first record, as the bare loop; the 1 ms poll bounds the error.
    while count.load(Ordering::Relaxed) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let started = Instant::now();
    dora_testkit::eventually(Duration::from_secs(300), || {
        let done = count.load(Ordering::Relaxed) >= n;
        async move { done.then_some(()) }
    })
    .await?;
    let elapsed = started.elapsed();
    ctx.shutdown.cancel();
    task.await??;
    Ok(elapsed)
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let n: u64 = std::env::var("BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let kafka = dora_testkit::kafka();
    let topic = dora_testkit::unique("bench");
    dora_testkit::create_topic(&kafka, &topic, 3).await?;
    let ps = ProducerSettings::default();
    let pcfg = ps.client_config(&kafka)?;

    // Producer path: bare FutureProducer vs dora Producer (same settings), twice each, best of.
    let producer = Producer::new(&kafka, &ps, "bench", &dora_telemetry::Readiness::new())?;
    let mut bare_p = Duration::MAX;
    let mut ours_p = Duration::MAX;
    for _ in 0..2 {
        let (cfg, t) = (pcfg.clone(), topic.clone());
        bare_p =
            bare_p.min(tokio::spawn(async move { bare_produce(&cfg, &t, n / 2).await }).await??);
        let (p, t) = (producer.clone(), topic.clone());
        ours_p = ours_p.min(tokio::spawn(async move { loop_produce(&p, &t, n / 2).await }).await??);
    }
    let produced = 2 * 2 * (n / 2);

    // Consume path: both read all `produced` records from the beginning, fresh groups.
    let mut cs = ConsumerSettings {
        fetch_min_bytes: 1,
        ..Default::default()
    };
    let mut bare_c = Duration::MAX;
    let mut ours_c = Duration::MAX;
    for _ in 0..2 {
        cs.group_id = dora_testkit::unique("bench-bare");
        // On a runtime worker like the loop's task, not on the block_on thread.
        let (cfg, t, every) = (
            cs.client_config(&kafka)?,
            topic.clone(),
            cs.commit_every_records,
        );
        bare_c = bare_c.min(
            tokio::spawn(async move { bare_consume(&cfg, &t, produced, every).await }).await??,
        );
        cs.group_id = dora_testkit::unique("bench-loop");
        ours_c = ours_c.min(loop_consume(&cs, &topic, produced).await?);
    }

    let (bp, op) = (rate(n / 2, bare_p), rate(n / 2, ours_p));
    let (bc, oc) = (rate(produced, bare_c), rate(produced, ours_c));
    println!(
        "producer: bare rdkafka {bp:>10.0} rec/s, dora Producer {op:>10.0} rec/s, ratio {:.2}",
        op / bp
    );
    println!(
        "consumer: bare rdkafka {bc:>10.0} rec/s, dora loop     {oc:>10.0} rec/s, ratio {:.2}",
        oc / bc
    );
    Ok(())
}
