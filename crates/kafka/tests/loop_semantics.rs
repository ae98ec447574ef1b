//! The consume loop against the real broker: retries, dead letters, batches,
//! transactions, rebalances, regex subscription, seek on assign, metrics.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use dora_kafka::topics::dlq_topic;
use dora_kafka::{
    BatchHandler, ConsumeLoop, Handler, HandlerError, OutboundRecord, Producer, ProducerSettings,
    Record, StartAt, Transform,
};
use dora_testkit::{
    committed_offset, create_topic, eventually, read_all, read_committed, unique, DEADLINE,
};

/// Fails retryably `failures` times on id `poisoned`, recording the group's
/// committed offset at each failure, then succeeds.
struct Flaky {
    seen: Seen,
    poisoned: u64,
    failures: u32,
    attempts: AtomicU32,
    group: String,
    committed_during_failures: Mutex<Vec<Option<i64>>>,
}

impl Handler for Flaky {
    #[tracing::instrument(skip_all, fields(topic = %r.topic, partition = r.partition, offset = r.offset, key = r.key_str()))]
    async fn handle(&self, r: &Record) -> Result<(), HandlerError> {
        let id = parse_id(r)?;
        if id == self.poisoned && self.attempts.fetch_add(1, Ordering::SeqCst) < self.failures {
            let c = committed_offset(&kafka(), &self.group, &r.topic, r.partition)
                .await
                .ok()
                .flatten();
            self.committed_during_failures.lock().unwrap().push(c);
            return Err(HandlerError::unavailable(
                "DatabaseUnavailable",
                "connection refused",
            ));
        }
        self.seen.push(id);
        Ok(())
    }
}

#[tokio::test]
async fn retryable_failures_are_retried_then_committed_and_never_dead_lettered(
) -> anyhow::Result<()> {
    let topic = unique("retry");
    let group = unique("retry-g");
    create_topic(&kafka(), &topic, 1).await?;
    create_topic(&kafka(), &dlq_topic(&topic), 1).await?;
    produce_ids(&topic, 0..20).await?;
    let ctx = context("retry-test");
    let handler = Arc::new(Flaky {
        seen: Seen::default(),
        poisoned: 7,
        failures: 3,
        attempts: AtomicU32::new(0),
        group: group.clone(),
        committed_during_failures: Mutex::new(Vec::new()),
    });
    let lp = ConsumeLoop::new(&kafka(), &consumer(&group), &ctx, codec()).topics(&[&topic]);
    let task = tokio::spawn(lp.run(handler.clone()));
    handler.seen.wait_for(20, DEADLINE).await?;
    // Processed once, in order: nothing after id 7 ran before 7 succeeded.
    assert_eq!(handler.seen.ids(), (0..20).collect::<Vec<_>>());
    assert_eq!(
        handler.attempts.load(Ordering::SeqCst),
        4,
        "3 failures then the success"
    );
    // While 7 (offset 7) was failing, nothing at or past it was committed.
    let during = handler.committed_during_failures.lock().unwrap().clone();
    assert_eq!(during.len(), 3);
    assert!(
        during.iter().all(|c| c.is_none_or(|c| c <= 7)),
        "committed past the failing record: {during:?}"
    );
    let g = group.clone();
    let t = topic.clone();
    eventually(DEADLINE, || {
        let (g, t) = (g.clone(), t.clone());
        async move {
            (committed_offset(&kafka(), &g, &t, 0).await.ok().flatten() == Some(20)).then_some(())
        }
    })
    .await?;
    ctx.shutdown.cancel();
    task.await??;
    assert!(
        read_all(&kafka(), &dlq_topic(&topic)).await?.is_empty(),
        "a retryable failure was dead-lettered"
    );
    Ok(())
}

struct Strict(Seen);

impl Handler for Strict {
    #[tracing::instrument(skip_all, fields(topic = %r.topic, partition = r.partition, offset = r.offset, key = r.key_str()))]
    async fn handle(&self, r: &Record) -> Result<(), HandlerError> {
        self.0.push(parse_id(r)?);
        Ok(())
    }
}

const POISON: &[u8] = b"\x00\x00\x00\x00\x2a{not json at all \xff";

async fn produce_with_poison(topic: &str) -> anyhow::Result<(i32, i64)> {
    produce_ids(topic, 0..10).await?;
    let p = dora_testkit::producer(&kafka())?;
    let at = dora_testkit::produce(
        &p,
        topic,
        Some(b"poison-key"),
        POISON,
        &[("origin", b"test"), ("trace", b"x")],
    )
    .await?;
    produce_ids(topic, 10..20).await?;
    Ok(at)
}

async fn assert_dead_letter(topic: &str, at: (i32, i64), failed_by: &str) -> anyhow::Result<()> {
    let dlq = read_all(&kafka(), &dlq_topic(topic)).await?;
    assert_eq!(dlq.len(), 1, "exactly the poison record is dead-lettered");
    assert_eq!(
        dlq[0].key(),
        Some(&b"poison-key"[..]),
        "the dead letter keeps the original key"
    );
    let letter: dora_schema::DeadLetter = codec()
        .decode(&dlq_topic(topic), dlq[0].payload().unwrap())
        .await?;
    assert_eq!(letter.original_message, POISON, "byte-exact original value");
    assert_eq!(letter.original_key.as_deref(), Some(&b"poison-key"[..]));
    assert_eq!((letter.original_partition, letter.original_offset), at);
    assert_eq!(letter.original_topic, topic);
    assert_eq!(
        letter
            .original_headers
            .iter()
            .map(|h| (h.key.as_str(), h.value.as_deref()))
            .collect::<Vec<_>>(),
        vec![("origin", Some(&b"test"[..])), ("trace", Some(&b"x"[..]))]
    );
    assert_eq!(letter.error_type, "Error", "serde_json::Error");
    assert!(
        letter.error_message.contains("expected value"),
        "{}",
        letter.error_message
    );
    assert_eq!(letter.failed_by, failed_by);
    assert_eq!((letter.retry_count, letter.processing_attempts), (0, 1));
    assert_eq!(
        dlq[0].header("producer"),
        Some(failed_by.as_bytes())
    );
    Ok(())
}

#[tokio::test]
async fn a_poison_record_is_dead_lettered_byte_exact_and_the_loop_goes_on() -> anyhow::Result<()> {
    let topic = unique("poison");
    let group = unique("poison-g");
    create_topic(&kafka(), &topic, 1).await?;
    create_topic(&kafka(), &dlq_topic(&topic), 1).await?;
    let at = produce_with_poison(&topic).await?;
    let ctx = context("poison-test");
    let seen = Seen::default();
    let lp = ConsumeLoop::new(&kafka(), &consumer(&group), &ctx, codec()).topics(&[&topic]);
    let task = tokio::spawn(lp.run(Strict(seen.clone())));
    seen.wait_for(20, DEADLINE).await?;
    assert_eq!(seen.ids(), (0..20).collect::<Vec<_>>());
    let (g, t) = (group.clone(), topic.clone());
    eventually(DEADLINE, || {
        let (g, t) = (g.clone(), t.clone());
        async move {
            (committed_offset(&kafka(), &g, &t, 0).await.ok().flatten() == Some(21)).then_some(())
        }
    })
    .await?;
    ctx.shutdown.cancel();
    task.await??;
    assert_dead_letter(&topic, at, "poison-test").await
}

struct Bulk {
    seen: Seen,
    batch_sizes: Mutex<Vec<usize>>,
}

impl BatchHandler for Bulk {
    async fn handle_batch(&self, records: &[Record]) -> Result<(), HandlerError> {
        self.batch_sizes.lock().unwrap().push(records.len());
        let ids = records
            .iter()
            .map(parse_id)
            .collect::<Result<Vec<_>, _>>()?;
        for id in ids {
            self.seen.push(id);
        }
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(topic = %r.topic, partition = r.partition, offset = r.offset, key = r.key_str()))]
    async fn handle_one(&self, r: &Record) -> Result<(), HandlerError> {
        self.seen.push(parse_id(r)?);
        Ok(())
    }
}

#[tokio::test]
async fn a_batch_with_one_bad_item_falls_back_one_by_one() -> anyhow::Result<()> {
    let topic = unique("batch");
    let group = unique("batch-g");
    create_topic(&kafka(), &topic, 1).await?;
    create_topic(&kafka(), &dlq_topic(&topic), 1).await?;
    let at = produce_with_poison(&topic).await?;
    let ctx = context("batch-test");
    let handler = Arc::new(Bulk {
        seen: Seen::default(),
        batch_sizes: Mutex::new(Vec::new()),
    });
    let mut settings = consumer(&group);
    settings.max_batch_records = 50;
    settings.max_batch_wait_ms = 1000;
    let lp = ConsumeLoop::new(&kafka(), &settings, &ctx, codec()).topics(&[&topic]);
    let task = tokio::spawn(lp.run_batches(handler.clone()));
    handler.seen.wait_for(20, DEADLINE).await?;
    let ids: BTreeSet<u64> = handler.seen.ids().into_iter().collect();
    assert_eq!(ids, (0..20).collect(), "every good record processed");
    assert_eq!(handler.seen.len(), 20, "no good record processed twice");
    assert!(
        handler.batch_sizes.lock().unwrap().iter().any(|n| *n > 1),
        "records were handed over in batches"
    );
    let (g, t) = (group.clone(), topic.clone());
    eventually(DEADLINE, || {
        let (g, t) = (g.clone(), t.clone());
        async move {
            (committed_offset(&kafka(), &g, &t, 0).await.ok().flatten() == Some(21)).then_some(())
        }
    })
    .await?;
    ctx.shutdown.cancel();
    task.await??;
    assert_dead_letter(&topic, at, "batch-test").await
}

/// Copies each input to the output topic; the first `before_commit` checks
/// what a read_committed reader sees and then fails.
struct Copy {
    output: String,
    checked: Mutex<Option<(usize, usize)>>,
}

impl Transform for Copy {
    #[tracing::instrument(skip_all, fields(topic = %r.topic, partition = r.partition, offset = r.offset, key = r.key_str()))]
    async fn transform(&self, r: &Record) -> Result<Vec<OutboundRecord>, HandlerError> {
        let id = parse_id(r)?;
        Ok(vec![OutboundRecord::new(
            &self.output,
            r.key_str(),
            payload(id),
        )])
    }

    async fn before_commit(&self) -> Result<(), HandlerError> {
        if self.checked.lock().unwrap().is_some() {
            return Ok(());
        }
        let uncommitted = read_all(&kafka(), &self.output)
            .await
            .map_err(|e| HandlerError::unavailable("Read", e.to_string()))?;
        let committed = read_committed(&kafka(), &self.output)
            .await
            .map_err(|e| HandlerError::unavailable("Read", e.to_string()))?;
        *self.checked.lock().unwrap() = Some((uncommitted.len(), committed.len()));
        Err(HandlerError::unavailable(
            "InjectedFailure",
            "failing after producing, before commit",
        ))
    }
}

#[tokio::test]
async fn a_failed_transaction_leaves_nothing_visible_and_the_retry_yields_one_output_each(
) -> anyhow::Result<()> {
    logs();
    let input = unique("txn-in");
    let output = unique("txn-out");
    let group = unique("txn-g");
    create_topic(&kafka(), &input, 2).await?;
    create_topic(&kafka(), &output, 2).await?;
    produce_ids(&input, 0..30).await?;
    let ctx = context("txn-test");
    let mut settings = consumer(&group);
    settings.transactional_id = Some(unique("txn-id"));
    settings.max_batch_records = 100;
    settings.max_batch_wait_ms = 500;
    let copy = Arc::new(Copy {
        output: output.clone(),
        checked: Mutex::new(None),
    });
    let lp = ConsumeLoop::new(&kafka(), &settings, &ctx, codec()).topics(&[&input]);
    let task = tokio::spawn(lp.run_transactional(copy.clone()));
    let out = output.clone();
    let outputs = eventually(DEADLINE * 2, || {
        let out = out.clone();
        let stopped = task.is_finished();
        async move {
            assert!(!stopped, "the loop stopped");
            match read_committed(&kafka(), &out).await {
                Ok(m) if m.len() >= 30 => Some(m),
                Ok(m) => {
                    tracing::info!(outputs = m.len(), "committed outputs so far");
                    None
                }
                Err(e) => {
                    tracing::info!(error = %e, "read_committed failed");
                    None
                }
            }
        }
    })
    .await?;
    let (uncommitted, committed) = copy.checked.lock().unwrap().expect("before_commit ran");
    assert!(
        uncommitted > 0,
        "the failed transaction had produced its outputs"
    );
    assert_eq!(
        committed, 0,
        "a read_committed reader saw outputs of an uncommitted transaction"
    );
    let ids: Vec<u64> = outputs
        .iter()
        .map(|m| {
            serde_json::from_slice::<serde_json::Value>(m.payload().unwrap()).unwrap()["id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let unique_ids: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(ids.len(), 30, "exactly one output per input: {ids:?}");
    assert_eq!(unique_ids, (0..30).collect());
    // Every input offset is committed, up to each partition's end.
    let inputs = read_all(&kafka(), &input).await?;
    let ends: Vec<(i32, i64)> = (0..2)
        .map(|p| {
            let end = inputs.iter().filter(|m| m.partition == p).map(|m| m.offset + 1).max();
            (p, end.unwrap_or(0))
        })
        .filter(|(_, end)| *end > 0)
        .collect();
    assert_eq!(inputs.len(), 30);
    wait_committed(&group, &input, &ends).await?;
    ctx.shutdown.cancel();
    task.await??;
    Ok(())
}

struct Tagged(Arc<Mutex<Vec<(u64, &'static str)>>>, &'static str);

impl Handler for Tagged {
    #[tracing::instrument(skip_all, fields(topic = %r.topic, partition = r.partition, offset = r.offset, key = r.key_str()))]
    async fn handle(&self, r: &Record) -> Result<(), HandlerError> {
        let id = parse_id(r)?;
        self.0.lock().unwrap().push((id, self.1));
        Ok(())
    }
}

#[tokio::test]
async fn two_consumers_one_leaves_nothing_lost_and_nothing_processed_twice() -> anyhow::Result<()> {
    let topic = unique("pair");
    let group = unique("pair-g");
    create_topic(&kafka(), &topic, 4).await?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (a, b) = (context("pair-a"), context("pair-b"));
    let settings = consumer(&group);
    let ta = tokio::spawn(
        ConsumeLoop::new(&kafka(), &settings, &a, codec())
            .topics(&[&topic])
            .run(Tagged(seen.clone(), "a")),
    );
    let tb = tokio::spawn(
        ConsumeLoop::new(&kafka(), &settings, &b, codec())
            .topics(&[&topic])
            .run(Tagged(seen.clone(), "b")),
    );
    // Both members own partitions before the stream starts.
    eventually(DEADLINE, || {
        let ok = [&a, &b]
            .iter()
            .all(|c| c.readiness.is_ready() && c.readiness.report().contains("assigned: ok"));
        async move { ok.then_some(()) }
    })
    .await?;
    produce_ids(&topic, 0..200).await?;
    let s = seen.clone();
    eventually(DEADLINE, || {
        let ok = s.lock().unwrap().iter().any(|(_, w)| *w == "a") && s.lock().unwrap().len() >= 100;
        async move { ok.then_some(()) }
    })
    .await?;
    a.shutdown.cancel();
    ta.await??;
    produce_ids(&topic, 200..400).await?;
    let s = seen.clone();
    eventually(DEADLINE, || {
        let n = s
            .lock()
            .unwrap()
            .iter()
            .map(|(id, _)| *id)
            .collect::<BTreeSet<_>>()
            .len();
        async move { (n == 400).then_some(()) }
    })
    .await?;
    b.shutdown.cancel();
    tb.await??;
    let all = seen.lock().unwrap().clone();
    let ids: BTreeSet<u64> = all.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, (0..400).collect(), "nothing lost");
    assert!(
        all.iter().any(|(_, w)| *w == "a") && all.iter().any(|(_, w)| *w == "b"),
        "both members worked"
    );
    assert_eq!(
        all.len(),
        400,
        "revoke and leave committed every processed offset: nothing processed twice"
    );
    Ok(())
}

#[tokio::test]
async fn regex_subscription_reads_every_matching_topic() -> anyhow::Result<()> {
    let prefix = unique("rx");
    let (t1, t2, other) = (
        format!("{prefix}-a-dlq"),
        format!("{prefix}-b-dlq"),
        format!("{prefix}-c"),
    );
    for t in [&t1, &t2, &other] {
        create_topic(&kafka(), t, 1).await?;
    }
    produce_ids(&t1, 0..5).await?;
    produce_ids(&t2, 5..10).await?;
    produce_ids(&other, 100..105).await?;
    let ctx = context("regex-test");
    let seen = Seen::default();
    let lp = ConsumeLoop::new(&kafka(), &consumer(&unique("rx-g")), &ctx, codec())
        .pattern(&format!("^{prefix}-.*-dlq$"));
    let task = tokio::spawn(lp.run(Strict(seen.clone())));
    seen.wait_for(10, DEADLINE).await?;
    ctx.shutdown.cancel();
    task.await??;
    let ids: BTreeSet<u64> = seen.ids().into_iter().collect();
    assert_eq!(
        ids,
        (0..10).collect(),
        "both -dlq topics read, the other topic not"
    );
    Ok(())
}

#[tokio::test]
async fn on_assign_can_seek_back_by_timestamp() -> anyhow::Result<()> {
    let topic = unique("seek");
    let group = unique("seek-g");
    create_topic(&kafka(), &topic, 1).await?;
    produce_ids(&topic, 0..5).await?;
    // Ids 5..10 get a later timestamp than 0..5: wait until the clock moved on.
    let ts4 = read_all(&kafka(), &topic).await?[4].timestamp.unwrap();
    eventually(DEADLINE, || async move {
        (chrono::Utc::now().timestamp_millis() > ts4).then_some(())
    })
    .await?;
    produce_ids(&topic, 5..10).await?;
    let records = read_all(&kafka(), &topic).await?;
    let ts5 = records[5].timestamp.unwrap();
    assert!(records[4].timestamp.unwrap() < ts5, "5 is the first record at ts5");
    // First run: process and commit everything.
    let ctx = context("seek-test");
    let seen = Seen::default();
    let task = tokio::spawn(
        ConsumeLoop::new(&kafka(), &consumer(&group), &ctx, codec())
            .topics(&[&topic])
            .run(Strict(seen.clone())),
    );
    seen.wait_for(10, DEADLINE).await?;
    ctx.shutdown.cancel();
    task.await??;
    assert_eq!(
        committed_offset(&kafka(), &group, &topic, 0).await?,
        Some(10)
    );
    // Second run, same group: the callback moves the partition back to the record at ts5.
    let ctx = context("seek-test");
    let again = Seen::default();
    let lp = ConsumeLoop::new(&kafka(), &consumer(&group), &ctx, codec())
        .topics(&[&topic])
        .on_assign(move |_, _| StartAt::Timestamp(ts5));
    let task = tokio::spawn(lp.run(Strict(again.clone())));
    again.wait_for(5, DEADLINE).await?;
    ctx.shutdown.cancel();
    task.await??;
    assert_eq!(again.ids(), (5..10).collect::<Vec<_>>());
    Ok(())
}

#[tokio::test]
async fn metrics_show_the_seeds_names_with_real_values_and_lag_returns_to_zero(
) -> anyhow::Result<()> {
    let topic = unique("metrics");
    let group = unique("metrics-g");
    create_topic(&kafka(), &topic, 2).await?;
    let ctx = context("metrics-test");
    let admin = dora_telemetry::serve_admin("127.0.0.1:0".parse()?, ctx.readiness.clone()).await?;
    let producer = Producer::new(
        &kafka(),
        &ProducerSettings::default(),
        "metrics-test",
        &ctx.readiness,
    )?;
    let mut deliveries = Vec::new();
    for n in 0..50u64 {
        deliveries.push(
            producer
                .enqueue_raw(OutboundRecord::new(
                    &topic,
                    Some(&n.to_string()),
                    payload(n),
                ))
                .await?,
        );
    }
    for d in deliveries {
        d.await?;
    }
    // A slow handler, so lag is visible before it drains.
    struct Slow(Seen);
    impl Handler for Slow {
        #[tracing::instrument(skip_all, fields(topic = %r.topic, partition = r.partition, offset = r.offset, key = r.key_str()))]
        async fn handle(&self, r: &Record) -> Result<(), HandlerError> {
            tokio::time::sleep(Duration::from_millis(40)).await;
            self.0.push(parse_id(r)?);
            Ok(())
        }
    }
    let seen = Seen::default();
    let task = tokio::spawn(
        ConsumeLoop::new(&kafka(), &consumer(&group), &ctx, codec())
            .topics(&[&topic])
            .run(Slow(seen.clone())),
    );
    let url = format!("http://{}/metrics", admin.local_addr);
    let scrape = || async { reqwest::get(&url).await.ok()?.text().await.ok() };
    let value = |body: &str, name: &str, labels: &[(&str, &str)]| {
        dora_testkit::metric_value(body, name, labels)
    };
    let lag_sum = |body: &str| {
        (0..2)
            .map(|p| {
                value(
                    body,
                    "kafka_consumer_lag",
                    &[("topic", &topic), ("partition", &p.to_string())],
                )
            })
            .sum::<Option<f64>>()
    };
    let positive = eventually(DEADLINE, || async {
        scrape()
            .await
            .filter(|b| lag_sum(b).is_some_and(|l| l > 0.0))
    })
    .await?;
    assert!(lag_sum(&positive).unwrap() > 0.0);
    seen.wait_for(50, DEADLINE).await?;
    let body = eventually(DEADLINE, || async {
        scrape().await.filter(|b| lag_sum(b) == Some(0.0))
    })
    .await?;
    assert_eq!(
        value(
            &body,
            "kafka_messages_processed_total",
            &[("topic", &topic)]
        ),
        Some(50.0)
    );
    assert_eq!(
        value(&body, "kafka_messages_sent_total", &[("topic", &topic)]),
        Some(50.0)
    );
    assert_eq!(
        value(
            &body,
            "kafka_send_duration_seconds_count",
            &[("topic", &topic)]
        ),
        Some(50.0)
    );
    assert_eq!(
        value(
            &body,
            "kafka_processing_duration_seconds_count",
            &[("topic", &topic)]
        ),
        Some(50.0)
    );
    assert!(
        value(
            &body,
            "kafka_consumer_rebalances_total",
            &[("group", &group), ("kind", "assign")]
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    assert_eq!(
        value(&body, "kafka_producer_errors_total", &[("topic", &topic)]),
        None,
        "no producer error on the topic"
    );
    let (status, ready) = {
        let r = reqwest::get(format!("http://{}/readyz", admin.local_addr)).await?;
        (r.status().as_u16(), r.text().await?)
    };
    assert_eq!(status, 200, "{ready}");
    ctx.shutdown.cancel();
    task.await??;
    Ok(())
}

/// Fails retryably while `down` is set (a dependency outage).
struct Outage {
    down: std::sync::atomic::AtomicBool,
    seen: Seen,
}

impl Handler for Outage {
    #[tracing::instrument(skip_all, fields(topic = %r.topic, partition = r.partition, offset = r.offset, key = r.key_str()))]
    async fn handle(&self, r: &Record) -> Result<(), HandlerError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(HandlerError::unavailable(
                "DatabaseUnavailable",
                "connection refused",
            ));
        }
        self.seen.push(parse_id(r)?);
        Ok(())
    }
}

#[tokio::test]
async fn readyz_reports_a_partition_stuck_on_retries_and_recovers() -> anyhow::Result<()> {
    let topic = unique("stuck");
    create_topic(&kafka(), &topic, 1).await?;
    create_topic(&kafka(), &dlq_topic(&topic), 1).await?;
    produce_ids(&topic, 0..3).await?;
    let ctx = context("stuck-test");
    let mut settings = consumer(&unique("stuck-g"));
    settings.retry.max_retries = 2;
    let handler = Arc::new(Outage {
        down: std::sync::atomic::AtomicBool::new(true),
        seen: Seen::default(),
    });
    let lp = ConsumeLoop::new(&kafka(), &settings, &ctx, codec()).topics(&[&topic]);
    let task = tokio::spawn(lp.run(handler.clone()));
    let r = ctx.readiness.clone();
    let report = eventually(DEADLINE, || {
        let report = (!r.is_ready()).then(|| r.report());
        async move { report.filter(|rep| rep.contains("stuck at offset 0")) }
    })
    .await?;
    assert!(report.contains("progress"), "{report}");
    assert!(
        handler.seen.ids().is_empty(),
        "nothing past the failing record ran"
    );
    handler.down.store(false, Ordering::SeqCst);
    handler.seen.wait_for(3, DEADLINE).await?;
    let r = ctx.readiness.clone();
    eventually(DEADLINE, || {
        let ok = r.is_ready();
        async move { ok.then_some(()) }
    })
    .await?;
    ctx.shutdown.cancel();
    task.await??;
    assert!(
        read_all(&kafka(), &dlq_topic(&topic)).await?.is_empty(),
        "an outage dead-lettered nothing"
    );
    Ok(())
}

struct Passthrough(String);

impl Transform for Passthrough {
    #[tracing::instrument(skip_all, fields(topic = %r.topic, partition = r.partition, offset = r.offset, key = r.key_str()))]
    async fn transform(&self, r: &Record) -> Result<Vec<OutboundRecord>, HandlerError> {
        Ok(vec![OutboundRecord::new(
            &self.0,
            r.key_str(),
            r.payload().to_vec(),
        )])
    }
}

#[tokio::test]
async fn a_fenced_producer_is_fatal_surfaced_and_not_ready() -> anyhow::Result<()> {
    logs();
    let (in_a, in_b, out) = (unique("fence-a"), unique("fence-b"), unique("fence-out"));
    for t in [&in_a, &in_b, &out] {
        create_topic(&kafka(), t, 1).await?;
    }
    let txn = unique("fence-id");
    let (a, b) = (context("fence-a"), context("fence-b"));
    let mut sa = consumer(&unique("fence-ga"));
    sa.transactional_id = Some(txn.clone());
    let mut sb = consumer(&unique("fence-gb"));
    sb.transactional_id = Some(txn.clone());
    let ta = tokio::spawn(
        ConsumeLoop::new(&kafka(), &sa, &a, codec())
            .topics(&[&in_a])
            .run_transactional(Passthrough(out.clone())),
    );
    let r = a.readiness.clone();
    eventually(DEADLINE, || {
        // Joined (not just "no conditions registered yet") and ready.
        let ok = r.is_ready() && r.report().contains("assigned: ok");
        async move { ok.then_some(()) }
    })
    .await?;
    // A second instance with the same transactional.id fences the first.
    let tb = tokio::spawn(
        ConsumeLoop::new(&kafka(), &sb, &b, codec())
            .topics(&[&in_b])
            .run_transactional(Passthrough(out.clone())),
    );
    let r = b.readiness.clone();
    eventually(DEADLINE, || {
        // Joined (not just "no conditions registered yet") and ready.
        let ok = r.is_ready() && r.report().contains("assigned: ok");
        async move { ok.then_some(()) }
    })
    .await?;
    produce_ids(&in_a, 0..3).await?;
    let result = tokio::time::timeout(DEADLINE, ta).await??;
    let err = result.expect_err("the fenced loop must stop with an error");
    assert!(
        matches!(err, dora_kafka::consume::ConsumeError::Transaction(_)),
        "{err}"
    );
    assert!(
        !a.readiness.is_ready(),
        "a fenced instance must not stay ready"
    );
    assert!(
        a.readiness.report().contains("fence") || a.readiness.report().contains("failed"),
        "{}",
        a.readiness.report()
    );
    b.shutdown.cancel();
    tb.await??;
    Ok(())
}
