//! Guarantee: while PostgreSQL is down the sink retries with its partitions
//! paused: nothing is dead-lettered, nothing is committed past what is
//! stored, `/readyz` turns not ready after the configured time, and when the
//! database returns everything recovers by itself and every record is stored
//! exactly once. Started while the database is down, the service stays not
//! ready (its start-up gate shut) until the database answers. Uses a private
//! PostgreSQL server, never the shared one.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::{audit_event, Harness};
use dora_testkit as tk;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_for_30_s_mid_stream_loses_and_dead_letters_nothing() -> Result<()> {
    let pg = tk::PrivatePostgres::start().await?;
    let h = Harness::new(1, Some(&pg.params)).await?;
    let t = h.audit_topic.clone();
    let mut sink = h
        .spawn(&[
            ("DORA_AUDIT_SINK__DB_UNAVAILABLE_AFTER_MS", "3000".into()),
            ("DORA_AUDIT_SINK__DB_PROBE_INTERVAL_MS", "500".into()),
        ])
        .await?;
    let events: Vec<_> = (0..60).map(audit_event).collect();
    for e in &events[..20] {
        h.produce_event(e).await?;
    }
    h.wait_rows("audit_events", 20).await?;

    let down_since = Instant::now();
    pg.stop_server()?;
    // The stream goes on while the database is away.
    for e in &events[20..50] {
        h.produce_event(e).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tk::eventually(tk::DEADLINE, || async {
        let (status, body) = sink.admin_get("/readyz").await.ok()?;
        (status != 200 && body.contains("postgres reachable")).then_some(())
    })
    .await
    .context("/readyz stayed ready while the database was down")?;
    let committed_while_down = h.committed(&t, 0).await?;
    assert!(committed_while_down.is_some_and(|c| c <= 20), "committed {committed_while_down:?} past what was stored");

    // The scenario: 30 s without the database.
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(down_since.elapsed())).await;
    assert!(sink.try_wait()?.is_none(), "the sink exited while the database was down: {}", sink.log());
    pg.start_server().await?;
    for e in &events[50..] {
        h.produce_event(e).await?;
    }
    h.wait_rows("audit_events", 60).await?;
    h.wait_committed(&t, 0, 60).await?;
    sink.wait_ready(tk::DEADLINE).await.context("/readyz did not come back")?;
    assert_eq!(h.links(&t, 0).await?, 60, "a record was linked twice or not at all");
    assert_eq!(tk::record_count(&h.kafka, &format!("{t}-dlq")).await?, 0, "something was dead-lettered");
    let (code, out) = h.verify().await?;
    assert_eq!(code, Some(0), "{out}");
    assert!(sink.terminate(tk::DEADLINE).await?.success(), "{}", sink.log());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_without_the_database_it_is_not_ready_until_the_database_answers() -> Result<()> {
    let pg = tk::PrivatePostgres::start().await?;
    let h = Harness::new(1, Some(&pg.params)).await?;
    let t = h.audit_topic.clone();
    for e in (0..5).map(audit_event) {
        h.produce_event(&e).await?;
    }
    pg.stop_server()?;
    let mut sink = tk::ServiceProcess::start(common::BIN, &h.env())?;
    sink.wait_announced("admin", tk::DEADLINE).await?;
    // The boot gate stays shut (the service has not called `started`) and
    // names the database.
    let body = tk::eventually(tk::DEADLINE, || async {
        let (status, body) = sink.admin_get("/readyz").await.ok()?;
        (status != 200 && body.contains("postgres reachable")).then_some(body)
    })
    .await
    .context("/readyz did not name the unreachable database")?;
    assert!(body.contains("starting"), "the start-up gate is open before the database answered: {body}");
    tk::eventually(tk::DEADLINE, || async {
        (sink.log().matches("database not reachable at start-up").count() >= 3).then_some(())
    })
    .await
    .context("no start-up retries logged")?;
    assert!(sink.try_wait()?.is_none(), "the sink gave up on an unreachable database: {}", sink.log());
    assert_eq!(sink.admin_get("/readyz").await?.0, 503, "ready without its database");

    pg.start_server().await?;
    sink.wait_ready(tk::DEADLINE).await.context("/readyz did not turn ready")?;
    h.wait_rows("audit_events", 5).await?;
    h.wait_committed(&t, 0, 5).await?;
    assert!(sink.terminate(tk::DEADLINE).await?.success(), "{}", sink.log());
    Ok(())
}
