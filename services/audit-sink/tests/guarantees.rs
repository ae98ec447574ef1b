//! The sink's delivery guarantees, each against the real stack with
//! audit-sink as a real process: redelivery and producer duplicates add no
//! row; a crash between the database commit and the Kafka commit stores
//! every record exactly once and reads none twice; a Kafka commit ahead of
//! the database skips nothing; SIGTERM stores and commits the open batch; one
//! bad item is dead-lettered with the database's reason while the rest of its
//! batch is stored.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::{audit_event, metric, Harness, BIN};
use dora_schema::DeadLetter;
use dora_testkit as tk;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_records_and_a_producers_duplicate_add_no_row() -> Result<()> {
    let h = Harness::new(1, None).await?;
    let t = h.audit_topic.clone();
    let mut sink = h.spawn(&[]).await?;
    let events: Vec<_> = (0..5).map(audit_event).collect();
    for e in &events {
        h.produce_event(e).await?;
    }
    h.wait_rows("audit_events", 5).await?;
    // The producer sends the first event again: same eventId, new offset.
    h.produce_event(&events[0]).await?;
    tk::eventually(tk::DEADLINE, || async { (h.links(&t, 0).await.ok()? == 6).then_some(()) }).await?;
    assert_eq!(h.count("audit_events").await?, 5, "a duplicate made a row");
    let staged = metric(&sink, "audit_sink_staged_transactions_total", &[]).await?;
    assert!(staged.unwrap_or(0.0) >= 1.0, "the duplicate's direct COPY did not fall back to the staged path");
    assert!(sink.terminate(tk::DEADLINE).await?.success(), "{}", sink.log());
    assert_eq!(h.committed(&t, 0).await?, Some(6));

    // Rewind the group: Kafka would hand every record to the sink again, but
    // the sink starts from the database's offset (6): nothing is read twice.
    tk::commit_offset(&h.kafka, &h.group, &t, 0, 0).await?;
    let mut again = h.spawn(&[]).await?;
    let later = audit_event(5);
    h.produce_event(&later).await?;
    h.wait_rows("audit_events", 6).await?;
    h.wait_committed(&t, 0, 7).await?;
    assert_eq!(h.links(&t, 0).await?, 7, "redelivery extended the chain");
    let redelivered = metric(&again, "audit_sink_records_total", &[("outcome", "redelivered")]).await?;
    assert_eq!(redelivered.unwrap_or(0.0), 0.0, "records below the database's offset were read again");
    let db = h.owner().await?;
    let outcomes: Vec<(i64, String)> = db
        .query("SELECT kafka_offset, outcome FROM audit.chain ORDER BY seq", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(outcomes[5], (5, "duplicate".to_string()));
    assert_eq!(outcomes.last(), Some(&(6, "stored".to_string())));
    let (code, out) = h.verify().await?;
    assert_eq!(code, Some(0), "{out}");
    assert!(again.terminate(tk::DEADLINE).await?.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_database_commit_and_the_kafka_commit_stores_every_record_once() -> Result<()> {
    let h = Harness::new(1, None).await?;
    let t = h.audit_topic.clone();
    for e in (0..20).map(audit_event) {
        h.produce_event(&e).await?;
    }
    let mut env = h.env();
    env.push(("DORA_AUDIT_SINK__FAULT", "exit_after_db_commit".into()));
    let mut crashing = tk::ServiceProcess::start(BIN, &env)?;
    let status = crashing.wait_exit(tk::DEADLINE * 2).await?;
    ensure!(status.signal() == Some(9), "expected the fault point's SIGKILL, got {status}: {}", crashing.log());
    let stored = h.next_offset(&t, 0).await?.context("nothing stored before the crash")?;
    assert!(stored > 0);
    let committed = h.committed(&t, 0).await?;
    assert!(committed.is_none_or(|c| c < stored), "Kafka commit {committed:?} not behind the database's {stored}: the crash was not between the two");

    for e in (20..30).map(audit_event) {
        h.produce_event(&e).await?;
    }
    let mut sink = h.spawn(&[]).await?;
    h.wait_rows("audit_events", 30).await?;
    h.wait_committed(&t, 0, 30).await?;
    assert_eq!(h.links(&t, 0).await?, 30, "a record was linked twice");
    let redelivered = metric(&sink, "audit_sink_records_total", &[("outcome", "redelivered")]).await?;
    assert_eq!(redelivered.unwrap_or(0.0), 0.0, "the restart read records the database had stored: {}", sink.log());
    let db = h.owner().await?;
    let dup: i64 = db.query_one("SELECT count(*) FROM audit.chain WHERE outcome <> 'stored'", &[]).await?.get(0);
    assert_eq!(dup, 0);
    let (code, out) = h.verify().await?;
    assert_eq!(code, Some(0), "{out}");
    assert!(sink.terminate(tk::DEADLINE).await?.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_commit_ahead_of_the_database_skips_nothing() -> Result<()> {
    let h = Harness::new(1, None).await?;
    let t = h.audit_topic.clone();
    // The group says 10, the (empty) database has nothing: the database decides.
    for e in (0..10).map(audit_event) {
        h.produce_event(&e).await?;
    }
    tk::commit_offset(&h.kafka, &h.group, &t, 0, 10).await?;
    let mut sink = h.spawn(&[]).await?;
    h.wait_rows("audit_events", 10).await?;
    assert!(sink.terminate(tk::DEADLINE).await?.success(), "{}", sink.log());
    assert_eq!(h.next_offset(&t, 0).await?, Some(10));

    // The Kafka commit runs ahead of the database's 10 (e.g. the database
    // restored from a backup): the sink still starts at 10.
    for e in (10..20).map(audit_event) {
        h.produce_event(&e).await?;
    }
    tk::commit_offset(&h.kafka, &h.group, &t, 0, 20).await?;
    let mut again = h.spawn(&[]).await?;
    h.wait_rows("audit_events", 20).await?;
    assert_eq!(h.links(&t, 0).await?, 20);
    assert_eq!(h.next_offset(&t, 0).await?, Some(20));
    let (code, out) = h.verify().await?;
    assert_eq!(code, Some(0), "{out}");
    assert!(again.terminate(tk::DEADLINE).await?.success(), "{}", again.log());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stores_and_commits_the_open_batch_and_exits_zero() -> Result<()> {
    let h = Harness::new(1, None).await?;
    let t = h.audit_topic.clone();
    // A batch that stays open for a minute unless the sink is stopped.
    let mut sink = h
        .spawn(&[
            ("DORA_CONSUMER__MAX_BATCH_WAIT_MS", "60000".into()),
            ("DORA_CONSUMER__MAX_BATCH_RECORDS", "10000".into()),
            ("DORA_CONSUMER__LAG_INTERVAL_MS", "200".into()),
        ])
        .await?;
    for e in (0..50).map(audit_event) {
        h.produce_event(&e).await?;
    }
    // Lag 0 with nothing stored: all 50 records are in the loop's open batch.
    tk::eventually(tk::DEADLINE, || async {
        let lag = metric(&sink, "kafka_consumer_lag", &[("topic", &t), ("partition", "0")]).await.ok()??;
        (lag == 0.0).then_some(())
    })
    .await
    .context("the records never reached the loop")?;
    assert_eq!(h.count("audit_events").await?, 0, "the batch closed before SIGTERM: {}", sink.log());
    let status = sink.terminate(tk::DEADLINE).await?;
    assert!(status.success(), "exit {status}: {}", sink.log());
    assert_eq!(h.count("audit_events").await?, 50);
    assert_eq!(h.committed(&t, 0).await?, Some(50));
    assert_eq!(h.next_offset(&t, 0).await?, Some(50));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_item_is_dead_lettered_with_the_databases_reason_and_the_rest_stored() -> Result<()> {
    let h = Harness::new(1, None).await?;
    let t = h.audit_topic.clone();
    let mut bad = audit_event(1);
    bad.user_id = "user\u{0}7".into(); // PostgreSQL text cannot hold a NUL
    let good = [audit_event(0), audit_event(2)];
    h.produce_event(&good[0]).await?;
    let (_, bad_offset) = h.produce_event(&bad).await?;
    h.produce_event(&good[1]).await?;
    // Started after the three are in the topic, so they arrive as one batch.
    let mut sink = h.spawn(&[]).await?;
    h.wait_rows("audit_events", 2).await?;
    let dlq = format!("{t}-dlq");
    let letters = tk::eventually(tk::DEADLINE, || async {
        let r = tk::read_all(&h.kafka, &dlq).await.ok()?;
        (!r.is_empty()).then_some(r)
    })
    .await?;
    assert_eq!(letters.len(), 1);
    let letter: DeadLetter = h.codec.decode(&dlq, letters[0].payload().context("dead letter value")?).await?;
    assert_eq!(letter.error_type, "DatabaseRejected");
    assert!(letter.error_message.contains("PostgreSQL 22021") && letter.error_message.contains("0x00"), "{}", letter.error_message);
    assert_eq!((letter.original_topic.as_str(), letter.original_offset), (t.as_str(), bad_offset));
    assert_eq!(letter.original_message, h.codec.encode(&t, &bad).await?);
    assert!(sink.log().contains("batch failed"), "the three were not one batch: {}", sink.log());

    let db = h.owner().await?;
    let r = db
        .query_one("SELECT outcome, reason, record_value FROM audit.chain WHERE kafka_offset = $1", &[&bad_offset])
        .await?;
    assert_eq!(r.get::<_, &str>(0), "rejected");
    assert_eq!(r.get::<_, &str>(1), letter.error_message);
    assert_eq!(r.get::<_, &[u8]>(2), &letter.original_message[..]);
    h.wait_committed(&t, 0, 3).await?;
    let (code, out) = h.verify().await?;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("2 stored rows") && out.contains("1 rejected"), "{out}");
    assert!(sink.terminate(Duration::from_secs(30)).await?.success());
    Ok(())
}
