//! Guarantees of the store, against the real PostgreSQL, through the store
//! the service uses:
//! - two writers that both believe they own a partition (a zombie after a
//!   rebalance and its successor) cannot both append: the partition's head
//!   row is locked for each transaction and moved only from where it was
//!   read, so overlapping batches stored concurrently give every record
//!   exactly one row and one link, and the chain verifies;
//! - a batch's partitions are stored independently: a producer's duplicate in
//!   one partition sends only that partition from the direct COPY to the
//!   staged path, which stores the new records and links the duplicate.

use anyhow::Result;
use audit_sink::intake::{row_of, Item, Kind};
use audit_sink::settings::{PostgresSettings, SslMode};
use audit_sink::store::Store;
use audit_sink::{db, verify};
use dora_config::Secret;
use dora_kafka::Record;
use dora_testkit as tk;

fn record(topic: &str, offset: i64) -> Record {
    record_with(topic, 0, offset, &format!("evt-{offset}"))
}

/// A record whose value is the seed's JSON of an audit event with `event_id`.
fn record_with(topic: &str, partition: i32, offset: i64, event_id: &str) -> Record {
    let value = serde_json::json!({
        "eventId": event_id, "timestamp": 1_795_771_815_000i64 + offset, "userId": "user-1",
        "action": "LOGIN", "resource": "auth", "details": {"n": offset},
    });
    Record {
        topic: topic.into(),
        partition,
        offset,
        key: Some(b"2026-11-27-09".to_vec()),
        payload: Some(value.to_string().into_bytes()),
        headers: Vec::new(),
        timestamp: Some(1_795_771_815_000 + offset),
    }
}

/// The record decoded as the sink decodes it (verify checks the typed columns against the value).
fn item(record: &Record) -> Item<'_> {
    let row = row_of(Kind::Audit, record.payload.as_deref().expect("a value"), None).expect("the seed's JSON");
    Item { record, row, writer: None }
}

/// A fresh database, migrated, and the writer's settings for it.
async fn migrated() -> Result<(tk::TempDatabase, PostgresSettings)> {
    let server = tk::postgres();
    let mut database = tk::TempDatabase::create(&server).await?;
    let writer = tk::unique("audit_sink").replace('-', "_");
    database.roles.push(writer.clone());
    let settings = PostgresSettings {
        host: server.host.clone(),
        port: server.port,
        database: database.name.clone(),
        user: writer,
        password: Some(Secret::from(uuid::Uuid::new_v4().simple().to_string())),
        admin_user: Some(server.user.clone()),
        admin_password: Some(Secret::from(server.password()?)),
        ssl_mode: SslMode::Disable,
        ..Default::default()
    };
    db::migrate(&settings).await?;
    Ok((database, settings))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_on_one_partition_never_both_append() -> Result<()> {
    let (database, settings) = migrated().await?;
    let connector = db::Connector::new(&settings)?;
    let (zombie, owner) = (
        Store::new(connector.writer_pool(&settings)?),
        Store::new(connector.writer_pool(&settings)?),
    );

    let topic = tk::unique("user-activities");
    let records: Vec<Record> = (0..150).map(|o| record(&topic, o)).collect();
    for round in 0..5 {
        // Both read from the same committed position (the zombie has not
        // noticed it lost the partition) and store overlapping batches at once.
        let base = round * 30;
        let a: Vec<Item<'_>> = records[base..base + 20].iter().map(item).collect();
        let b: Vec<Item<'_>> = records[base..base + 30].iter().map(item).collect();
        let (ra, rb) = tokio::join!(zombie.store(&a), owner.store(&b));
        let (ra, rb) = (ra.map_err(|e| anyhow::anyhow!("{e}"))?, rb.map_err(|e| anyhow::anyhow!("{e}"))?);
        assert_eq!(ra.audit_rows + rb.audit_rows, 30, "round {round}: rows");
        assert_eq!(ra.redelivered + rb.redelivered, 20, "round {round}: the second writer skipped the overlap");
        assert_eq!(ra.duplicates + rb.duplicates, 0);
    }
    let mut client = database.connect().await?;
    let (rows, links, distinct): (i64, i64, i64) = {
        let r = client
            .query_one(
                "SELECT (SELECT count(*) FROM audit.audit_events), (SELECT count(*) FROM audit.chain), \
                 (SELECT count(DISTINCT kafka_offset) FROM audit.chain)",
                &[],
            )
            .await?;
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!((rows, links, distinct), (150, 150, 150));
    let verdict = verify::verify(&mut client).await?;
    assert!(verdict.intact(), "{verdict}");
    assert_eq!(verdict.links, 150);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producers_duplicate_sends_only_its_partition_to_the_staged_path() -> Result<()> {
    let (database, settings) = migrated().await?;
    let store = Store::new(db::Connector::new(&settings)?.writer_pool(&settings)?);
    let topic = tk::unique("user-activities");
    let id = |p: i32, o: i64| format!("evt-{p}-{o}");
    let first: Vec<Record> = (0..20).map(|i| (i % 2, i64::from(i / 2))).map(|(p, o)| record_with(&topic, p, o, &id(p, o))).collect();
    let batch: Vec<Item<'_>> = first.iter().map(item).collect();
    let r = store.store(&batch).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!((r.audit_rows, r.duplicates, r.staged), (20, 0, 0), "new ids: both partitions on the direct path");

    // Partition 0 gets 5 new records around a producer's duplicate of its
    // offset 3 (same eventId, new offset 12); partition 1 gets 5 new records.
    let event = |p: i32, o: i64| if (p, o) == (0, 12) { id(0, 3) } else { id(p, o) };
    let second: Vec<Record> = (10..16)
        .map(|o| record_with(&topic, 0, o, &event(0, o)))
        .chain((10..15).map(|o| record_with(&topic, 1, o, &event(1, o))))
        .collect();
    let batch: Vec<Item<'_>> = second.iter().map(item).collect();
    let r = store.store(&batch).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!((r.audit_rows, r.duplicates, r.staged), (10, 1, 1), "only partition 0 redone on the staged path");

    // The same batch again (a redelivery): skipped below the heads, nothing staged.
    let r = store.store(&batch).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!((r.audit_rows, r.redelivered, r.staged), (0, 11, 0));

    let mut client = database.connect().await?;
    let outcomes: Vec<(i32, i64, String)> = client
        .query(
            "SELECT kafka_partition, kafka_offset, outcome FROM audit.chain WHERE outcome <> 'stored' ORDER BY 1, 2",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(outcomes, vec![(0, 12, "duplicate".to_string())]);
    let rows: i64 = client.query_one("SELECT count(*) FROM audit.audit_events", &[]).await?.get(0);
    assert_eq!(rows, 30);
    let verdict = verify::verify(&mut client).await?;
    assert!(verdict.intact(), "{verdict}");
    assert_eq!((verdict.links, verdict.duplicates), (31, 1));
    Ok(())
}
