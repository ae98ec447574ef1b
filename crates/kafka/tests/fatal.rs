//! Fatal producer errors against the real broker: a fenced producer stops
//! every consume loop of its service with an error (so the process exits
//! non-zero and is restarted), nothing is dead-lettered because of it, and
//! each producer has a readiness condition of its own.

mod common;

use std::sync::Arc;

use common::*;
use dora_kafka::topics::dlq_topic;
use dora_kafka::{
    ConsumeLoop, Handler, HandlerError, OutboundRecord, ProduceError, Producer, ProducerSettings,
    Record, Transform,
};
use dora_testkit::{create_topic, eventually, read_all, unique, DEADLINE};

#[tokio::test]
async fn each_producer_has_its_own_readiness_condition() -> anyhow::Result<()> {
    let ctx = context("two-producers");
    let _a = Producer::new(&kafka(), &ProducerSettings::default(), ctx.name, &ctx.readiness)?;
    let _b = Producer::new(&kafka(), &ProducerSettings::default(), ctx.name, &ctx.readiness)?;
    let report = ctx.readiness.report();
    let producers = report.lines().filter(|l| l.contains("producer")).count();
    assert_eq!(producers, 2, "one condition per producer:\n{report}");
    Ok(())
}

/// Copies each input to the topic it holds.
struct Passthrough(String);

impl Transform for Passthrough {
    #[tracing::instrument(skip_all, fields(topic = %r.topic, partition = r.partition, offset = r.offset, key = r.key_str()))]
    async fn transform(&self, r: &Record) -> Result<Vec<OutboundRecord>, HandlerError> {
        Ok(vec![OutboundRecord::new(&self.0, r.key_str(), r.payload().to_vec())])
    }
}

/// Rejects what is not `{"id": n}` (a dead letter) and records the rest.
struct Strict(Seen);

impl Handler for Strict {
    #[tracing::instrument(skip_all, fields(topic = %r.topic, partition = r.partition, offset = r.offset, key = r.key_str()))]
    async fn handle(&self, r: &Record) -> Result<(), HandlerError> {
        self.0.push(parse_id(r)?);
        Ok(())
    }
}

/// A service runs a per-message loop and a transactional loop; a second
/// instance with the same `transactional.id` fences the latter's producer.
/// The fatal error stops both loops of the service with an error, and the
/// per-message loop does not dead-letter a bad record that arrives after it.
#[tokio::test]
async fn a_fenced_producer_stops_every_loop_of_its_service_and_dead_letters_nothing(
) -> anyhow::Result<()> {
    logs();
    let (events, txn_in, other_in, out) = (
        unique("fatal-ev"),
        unique("fatal-in"),
        unique("fatal-other"),
        unique("fatal-out"),
    );
    for t in [&events, &dlq_topic(&events), &txn_in, &other_in, &out] {
        create_topic(&kafka(), t, 1).await?;
    }
    let txn = unique("fatal-txn");
    let service = context("fatal-svc");
    let seen = Seen::default();
    let per_message = tokio::spawn(
        ConsumeLoop::new(&kafka(), &consumer(&unique("fatal-ev-g")), &service, codec())
            .topics(&[&events])
            .run(Strict(seen.clone())),
    );
    let mut ts = consumer(&unique("fatal-txn-g"));
    ts.transactional_id = Some(txn.clone());
    let transactional = tokio::spawn(
        ConsumeLoop::new(&kafka(), &ts, &service, codec())
            .topics(&[&txn_in])
            .run_transactional(Passthrough(out.clone())),
    );
    let r = service.readiness.clone();
    eventually(DEADLINE, || {
        let ok = r.report().matches("assigned: ok").count() == 2;
        async move { ok.then_some(()) }
    })
    .await?;
    produce_ids(&events, 0..3).await?;
    seen.wait_for(3, DEADLINE).await?;
    // The newer instance fences the service's transactional producer.
    let fencer = context("fatal-fencer");
    let mut fs = consumer(&unique("fatal-fencer-g"));
    fs.transactional_id = Some(txn.clone());
    let fencing = tokio::spawn(
        ConsumeLoop::new(&kafka(), &fs, &fencer, codec())
            .topics(&[&other_in])
            .run_transactional(Passthrough(out.clone())),
    );
    let r = fencer.readiness.clone();
    eventually(DEADLINE, || {
        let ok = r.report().contains("assigned: ok");
        async move { ok.then_some(()) }
    })
    .await?;
    produce_ids(&txn_in, 0..1).await?;
    let fenced = tokio::time::timeout(DEADLINE, transactional).await??;
    assert!(fenced.is_err(), "the fenced loop must stop with an error");
    // A bad record for the per-message loop, after the fatal error.
    let p = dora_testkit::producer(&kafka())?;
    dora_testkit::produce(&p, &events, Some(b"k"), b"not json", &[]).await?;
    let stopped = tokio::time::timeout(DEADLINE, per_message).await;
    let stopped = stopped.map_err(|_| {
        anyhow::anyhow!("the per-message loop of a service with a fatal producer kept running")
    })??;
    assert!(stopped.is_err(), "it stops with an error (exit non-zero)");
    assert!(
        read_all(&kafka(), &dlq_topic(&events)).await?.is_empty(),
        "nothing is dead-lettered because a producer is fatal"
    );
    assert!(!service.readiness.is_ready(), "{}", service.readiness.report());
    fencer.shutdown.cancel();
    fencing.await??;
    Ok(())
}

/// Fails id 3 with its producer's fatal error (as a handler whose own
/// producer was fenced does), converted with `?`/`into`.
struct FatalAt3(Seen);

impl Handler for FatalAt3 {
    #[tracing::instrument(skip_all, fields(topic = %r.topic, partition = r.partition, offset = r.offset, key = r.key_str()))]
    async fn handle(&self, r: &Record) -> Result<(), HandlerError> {
        let id = parse_id(r)?;
        if id == 3 {
            return Err(ProduceError::Fatal("producer fenced by a newer instance".into()).into());
        }
        self.0.push(id);
        Ok(())
    }
}

#[tokio::test]
async fn a_handlers_fatal_produce_error_stops_the_loop_without_a_dead_letter(
) -> anyhow::Result<()> {
    logs();
    let (topic, group) = (unique("hfatal"), unique("hfatal-g"));
    create_topic(&kafka(), &topic, 1).await?;
    create_topic(&kafka(), &dlq_topic(&topic), 1).await?;
    produce_ids(&topic, 0..10).await?;
    let ctx = context("hfatal-test");
    let seen = Seen::default();
    let task = tokio::spawn(
        ConsumeLoop::new(&kafka(), &consumer(&group), &ctx, codec())
            .topics(&[&topic])
            .run(Arc::new(FatalAt3(seen.clone()))),
    );
    let result = tokio::time::timeout(DEADLINE, task).await??;
    let err = result.expect_err("the loop stops with an error");
    assert!(err.to_string().contains("fenced"), "{err}");
    assert_eq!(seen.ids(), vec![0, 1, 2], "nothing after the fatal error ran");
    assert!(read_all(&kafka(), &dlq_topic(&topic)).await?.is_empty());
    let committed = dora_testkit::committed_offset(&kafka(), &group, &topic, 0).await?;
    assert!(committed.is_none_or(|c| c <= 3), "committed past the failed record: {committed:?}");
    Ok(())
}
