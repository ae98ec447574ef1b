//! Tamper evidence: the role the service writes with can INSERT and SELECT
//! but not UPDATE, DELETE or TRUNCATE the audit tables (grants, plus a trigger
//! that refuses even the owner until disabled); a row changed, deleted or
//! inserted by a superuser who bypasses the trigger is found by `audit-sink
//! verify`, which exits non-zero naming topic, partition, offset and row.

mod common;

use anyhow::Result;
use common::{audit_event, rewrite_as_format_1, Harness};
use dora_testkit as tk;
use tokio_postgres::error::SqlState;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_role_cannot_update_delete_or_truncate_and_the_trigger_refuses_the_owner() -> Result<()> {
    let h = Harness::new(1, None).await?;
    let mut sink = h.spawn(&[]).await?;
    let e = audit_event(0);
    h.produce_event(&e).await?;
    h.wait_rows("audit_events", 1).await?;

    let writer = h.as_writer().await?;
    let n: i64 = writer.query_one("SELECT count(*) FROM audit.audit_events", &[]).await?.get(0);
    assert_eq!(n, 1, "the writer may read");
    for table in ["audit_events", "compliance_reports", "chain"] {
        for statement in [
            format!("UPDATE audit.{table} SET topic = 'x'"),
            format!("DELETE FROM audit.{table}"),
            format!("TRUNCATE audit.{table}"),
        ] {
            let err = writer.batch_execute(&statement).await.expect_err(&statement);
            assert_eq!(err.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{statement}: {err:?}");
        }
    }
    // Even the owner is refused while the trigger is in place.
    let owner = h.owner().await?;
    let err = owner
        .execute("UPDATE audit.audit_events SET user_id = 'mallory' WHERE event_id = $1", &[&e.event_id])
        .await
        .expect_err("the owner's update");
    assert!(format!("{err:?}").contains("append-only"), "{err:?}");
    assert_eq!(h.count("audit_events").await?, 1);
    assert!(sink.terminate(tk::DEADLINE).await?.success());
    Ok(())
}

/// `audit-sink verify` must fail and name every fragment in `expect`.
async fn broken(h: &Harness, expect: &[&str]) -> Result<()> {
    let (code, out) = h.verify().await?;
    assert_eq!(code, Some(1), "verify should fail: {out}");
    for fragment in expect {
        assert!(out.contains(fragment), "verify output lacks {fragment:?}: {out}");
    }
    Ok(())
}

async fn intact(h: &Harness) -> Result<()> {
    let (code, out) = h.verify().await?;
    assert_eq!(code, Some(0), "verify should pass: {out}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_a_row_changed_deleted_or_inserted_by_a_superuser() -> Result<()> {
    let h = Harness::new(1, None).await?;
    let t = h.audit_topic.clone();
    let mut sink = h.spawn(&[]).await?;
    let events: Vec<_> = (0..5).map(audit_event).collect();
    for e in &events {
        h.produce_event(e).await?;
    }
    h.wait_rows("audit_events", 5).await?;
    assert!(sink.terminate(tk::DEADLINE).await?.success());
    intact(&h).await?;

    // A superuser who switches the trigger off (session_replication_role).
    let su = h.owner().await?;
    su.batch_execute("SET session_replication_role = replica").await?;

    // Changed: one typed column of one row. The chain (format 2) does not hash typed columns: only the
    // check of each column against what the row's stored value decodes to can name it.
    let (e2, e3) = (&events[2].event_id, &events[3].event_id);
    su.execute("UPDATE audit.audit_events SET user_id = 'mallory' WHERE event_id = $1", &[e2]).await?;
    broken(&h, &[&format!("{t}/0 seq 2 offset 2"), &format!("event_id={e2}"), "changed: user_id is not what its record value holds"]).await?;
    su.execute("UPDATE audit.audit_events SET user_id = $2 WHERE event_id = $1", &[e2, &events[2].user_id]).await?;
    intact(&h).await?;

    // Changed: the original record bytes of a row (one byte of the value).
    su.execute("UPDATE audit.audit_events SET record_value = set_byte(record_value, 20, get_byte(record_value, 20) # 1) WHERE event_id = $1", &[e2]).await?;
    broken(&h, &[&format!("{t}/0 seq 2 offset 2"), &format!("event_id={e2}"), "its record does not hash to the chained hash"]).await?;
    su.execute("UPDATE audit.audit_events SET record_value = set_byte(record_value, 20, get_byte(record_value, 20) # 1) WHERE event_id = $1", &[e2]).await?;
    intact(&h).await?;

    // Changed or removed: the writer schema the values are decoded with.
    su.batch_execute("CREATE TEMP TABLE saved_schemas AS SELECT * FROM audit.writer_schemas").await?;
    su.batch_execute("UPDATE audit.writer_schemas SET definition = definition || ' '").await?;
    broken(&h, &[&format!("{t}/0 seq 0 offset 0"), "does not hash"]).await?;
    su.batch_execute("DELETE FROM audit.writer_schemas").await?;
    broken(&h, &[&format!("{t}/0 seq 0 offset 0"), "is not in audit.writer_schemas"]).await?;
    su.batch_execute("INSERT INTO audit.writer_schemas SELECT * FROM saved_schemas").await?;
    intact(&h).await?;

    // Deleted: a row whose record the chain says was stored.
    su.execute("CREATE TEMP TABLE saved AS SELECT * FROM audit.audit_events WHERE event_id = $1", &[e3]).await?;
    su.execute("DELETE FROM audit.audit_events WHERE event_id = $1", &[e3]).await?;
    broken(&h, &[&format!("{t}/0 seq 3 offset 3"), e3, "missing (deleted)"]).await?;
    su.batch_execute("INSERT INTO audit.audit_events SELECT * FROM saved").await?;
    intact(&h).await?;

    // Inserted: a forged row at a position the sink never consumed.
    su.execute(
        "INSERT INTO audit.audit_events SELECT 'forged', occurred_at, 'mallory', action, resource, details, \
         ip_address, user_agent, session_id, value_format, topic, kafka_partition, 99, kafka_timestamp, \
         record_key, record_value FROM audit.audit_events WHERE event_id = $1",
        &[e3],
    )
    .await?;
    broken(&h, &[&format!("{t}/0 offset 99"), "event_id=forged", "no link"]).await?;
    su.batch_execute("DELETE FROM audit.audit_events WHERE event_id = 'forged'").await?;
    intact(&h).await?;

    // Inserted: a forged row, and a forged link, in a partition the sink has no chain for.
    su.execute(
        "INSERT INTO audit.audit_events SELECT 'forged', occurred_at, 'mallory', action, resource, details, \
         ip_address, user_agent, session_id, value_format, topic, 7, 0, kafka_timestamp, \
         record_key, record_value FROM audit.audit_events WHERE event_id = $1",
        &[e3],
    )
    .await?;
    su.execute("INSERT INTO audit.chain SELECT topic, 5, seq, kafka_offset, outcome, entity_id, reason, consumed_at, \
         kafka_timestamp, record_key, record_value, prev_hash, hash, format FROM audit.chain WHERE topic = $1 AND seq < 2", &[&t])
    .await?;
    broken(&h, &[
        &format!("{t}/7: 1 audit_events rows of a partition without a chain head"),
        &format!("{t}/5: 2 chain rows of a partition without a chain head"),
    ])
    .await?;
    su.batch_execute("DELETE FROM audit.audit_events WHERE event_id = 'forged'; DELETE FROM audit.chain WHERE kafka_partition = 5")
        .await?;
    intact(&h).await?;

    // A link removed from the chain itself.
    su.batch_execute("CREATE TEMP TABLE saved_link AS SELECT * FROM audit.chain WHERE seq = 1").await?;
    su.batch_execute("DELETE FROM audit.chain WHERE seq = 1").await?;
    broken(&h, &[&format!("{t}/0 seq 2 offset 2"), "links 1..1 are missing"]).await?;
    su.batch_execute("INSERT INTO audit.chain SELECT * FROM saved_link").await?;
    intact(&h).await?;

    // A link inserted by hand that repeats a position (since V2 no index on seq refuses it).
    su.batch_execute(
        "INSERT INTO audit.chain SELECT topic, kafka_partition, seq, 98, outcome, entity_id, reason, consumed_at, \
         kafka_timestamp, record_key, record_value, prev_hash, hash, format FROM audit.chain WHERE seq = 4",
    )
    .await?;
    broken(&h, &[&format!("{t}/0 seq 4 offset 98"), "position repeats"]).await?;
    su.batch_execute("DELETE FROM audit.chain WHERE kafka_offset = 98").await?;
    intact(&h).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_begun_in_format_1_still_verifies_and_goes_on_in_format_2() -> Result<()> {
    let h = Harness::new(1, None).await?;
    let t = h.audit_topic.clone();
    let events: Vec<_> = (0..5).map(audit_event).collect();
    let mut sink = h.spawn(&[]).await?;
    for e in &events[..3] {
        h.produce_event(e).await?;
    }
    h.wait_rows("audit_events", 3).await?;
    assert!(sink.terminate(tk::DEADLINE).await?.success());
    let su = h.owner().await?;
    su.batch_execute("SET session_replication_role = replica").await?;
    rewrite_as_format_1(&su, &t).await?;
    intact(&h).await?;

    // The sink continues the chain from the format-1 head, in format 2.
    let mut sink = h.spawn(&[]).await?;
    for e in &events[3..] {
        h.produce_event(e).await?;
    }
    h.wait_rows("audit_events", 5).await?;
    assert!(sink.terminate(tk::DEADLINE).await?.success());
    let formats: Vec<i16> = su
        .query("SELECT format FROM audit.chain WHERE topic = $1 ORDER BY seq", &[&t])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(formats, [1, 1, 1, 2, 2]);
    intact(&h).await?;

    // A typed column of a format-1 row is in its hash; of a format-2 row, checked against its value.
    let (e1, e4) = (&events[1].event_id, &events[4].event_id);
    su.execute("UPDATE audit.audit_events SET action = 'LOGOUT' WHERE event_id = $1", &[e1]).await?;
    broken(&h, &[&format!("{t}/0 seq 1 offset 1"), &format!("event_id={e1}"), "changed: its values do not hash"]).await?;
    su.execute("UPDATE audit.audit_events SET action = $2 WHERE event_id = $1", &[e1, &events[1].action]).await?;
    su.execute("UPDATE audit.audit_events SET action = 'LOGOUT' WHERE event_id = $1", &[e4]).await?;
    broken(&h, &[&format!("{t}/0 seq 4 offset 4"), &format!("event_id={e4}"), "changed: action is not what its record value holds"]).await?;
    // A link whose stored version is changed no longer hashes.
    su.execute("UPDATE audit.audit_events SET action = $2 WHERE event_id = $1", &[e4, &events[4].action]).await?;
    su.execute("UPDATE audit.chain SET format = 2 WHERE topic = $1 AND seq = 0", &[&t]).await?;
    broken(&h, &[&format!("{t}/0 seq 0 offset 0"), "changed"]).await?;
    su.execute("UPDATE audit.chain SET format = 1 WHERE topic = $1 AND seq = 0", &[&t]).await?;
    intact(&h).await?;
    Ok(())
}
