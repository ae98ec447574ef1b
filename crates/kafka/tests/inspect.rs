//! The read-only topic reader against the real broker: committed records only
//! (aborted transactions skipped, transaction markers crossed), from given
//! offsets, chosen partitions, up to the end at open. And the group-less
//! tailing reader (`dora_kafka::tail`): it reads a topic whole and follows
//! it, committed records only, its positions pass transaction markers and
//! aborted records (so a caller waiting for an `Ends` lookup is released
//! exactly when it has read what was there), and it leaves no consumer group.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Result};
use dora_kafka::inspect::{topic_names, ReadRequest, TopicReader};
use dora_kafka::tail::{PartitionEnd, TopicTail};
use dora_kafka::Record;
use dora_testkit::{create_topic, produce, producer, unique};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::ClientConfig;

fn kafka() -> dora_kafka::KafkaSettings {
    dora_testkit::kafka()
}

async fn read(request: ReadRequest) -> Result<Vec<Record>> {
    let mut reader = TopicReader::open(&kafka(), request).await?;
    let mut out = Vec::new();
    while let Some(batch) = reader.next_batch().await {
        out.extend(batch?);
    }
    Ok(out)
}

fn values(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(r.payload()).into_owned())
        .collect()
}

/// Writes `values` to partition 0 of `topic` in one transaction, committed or aborted.
fn transaction(topic: &str, values: &[&str], commit: bool) -> Result<BaseProducer> {
    let mut cfg: ClientConfig = kafka().client_config()?;
    cfg.set("transactional.id", unique("inspect-tx"));
    let p: BaseProducer = cfg.create()?;
    p.init_transactions(Duration::from_secs(30))?;
    p.begin_transaction()?;
    for v in values {
        p.send(BaseRecord::<(), str>::to(topic).partition(0).payload(*v))
            .map_err(|(e, _)| e)?;
    }
    p.flush(Duration::from_secs(30))?;
    if commit {
        p.commit_transaction(Duration::from_secs(30))?;
    } else {
        p.abort_transaction(Duration::from_secs(30))?;
    }
    Ok(p)
}

#[tokio::test]
async fn reads_committed_records_only_and_crosses_transaction_markers() -> Result<()> {
    let topic = unique("inspect");
    create_topic(&kafka(), &topic, 1).await?;
    let plain = producer(&kafka())?;
    produce(&plain, &topic, Some(b"k"), b"a", &[("h", b"1")]).await?;
    let t = topic.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        transaction(&t, &["b", "c"], true)?;
        transaction(&t, &["aborted"], false)?;
        Ok(())
    })
    .await??;
    produce(&plain, &topic, None, b"d", &[]).await?;
    // The log ends with a commit marker: the read must still finish.
    let t = topic.clone();
    tokio::task::spawn_blocking(move || transaction(&t, &["e"], true).map(drop)).await??;

    let all = read(ReadRequest::whole(&topic)).await?;
    assert_eq!(values(&all), ["a", "b", "c", "d", "e"]);
    assert_eq!(all[0].key.as_deref(), Some(&b"k"[..]));
    assert_eq!(all[0].header("h"), Some(&b"1"[..]));
    assert!(all.windows(2).all(|w| w[0].offset < w[1].offset));

    // From an offset: only what follows it.
    let from_c = all[2].offset;
    let mut req = ReadRequest::whole(&topic);
    req.from = HashMap::from([(0, from_c)]);
    assert_eq!(values(&read(req).await?), ["c", "d", "e"]);
    Ok(())
}

#[tokio::test]
async fn reads_chosen_partitions_up_to_the_end_at_open() -> Result<()> {
    let topic = unique("inspect-parts");
    create_topic(&kafka(), &topic, 3).await?;
    let plain = producer(&kafka())?;
    for p in 0..3 {
        for i in 0..3 {
            let value = format!("p{p}-{i}");
            let record = rdkafka::producer::FutureRecord::<(), _>::to(&topic)
                .partition(p)
                .payload(&value);
            plain
                .send(record, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| e)?;
        }
    }
    let mut reader = TopicReader::open(&kafka(), ReadRequest::whole(&topic).partition(1)).await?;
    assert_eq!(reader.ranges().len(), 1);
    assert_eq!((reader.ranges()[0].low, reader.ranges()[0].end), (0, 3));
    // Written after the reader opened: beyond its end.
    produce(&plain, &topic, None, b"late", &[]).await?;
    let mut got = Vec::new();
    while let Some(batch) = reader.next_batch().await {
        got.extend(batch?);
    }
    assert_eq!(values(&got), ["p1-0", "p1-1", "p1-2"]);
    assert!(got.iter().all(|r| r.partition == 1));

    let whole = read(ReadRequest::whole(&topic)).await?;
    assert_eq!(whole.len(), 10);
    Ok(())
}

#[tokio::test]
async fn a_missing_topic_or_partition_is_named() -> Result<()> {
    let missing = unique("no-such-topic");
    let err = TopicReader::open(&kafka(), ReadRequest::whole(&missing))
        .await
        .err()
        .expect("missing topic");
    assert!(err.to_string().contains(&missing), "{err}");

    let topic = unique("inspect-one");
    create_topic(&kafka(), &topic, 1).await?;
    let err = TopicReader::open(&kafka(), ReadRequest::whole(&topic).partition(4))
        .await
        .err()
        .expect("missing partition");
    assert!(err.to_string().contains("no partition 4"), "{err}");

    let names = topic_names(&kafka(), Duration::from_secs(10)).await?;
    assert!(names.contains(&topic));
    assert!(!names.iter().any(|n| n.starts_with("__")));
    Ok(())
}

/// A producer with a transaction left open, holding `value` on partition 0 of `topic`.
async fn open_transaction(topic: &str, value: &'static str) -> Result<BaseProducer> {
    let t = topic.to_string();
    tokio::task::spawn_blocking(move || -> Result<BaseProducer> {
        let mut cfg: ClientConfig = kafka().client_config()?;
        cfg.set("transactional.id", unique("inspect-open-tx"));
        let p: BaseProducer = cfg.create()?;
        p.init_transactions(Duration::from_secs(30))?;
        p.begin_transaction()?;
        p.send(BaseRecord::<(), str>::to(&t).partition(0).payload(value))
            .map_err(|(e, _)| e)?;
        p.flush(Duration::from_secs(30))?;
        Ok(p)
    })
    .await?
}

#[tokio::test]
async fn the_read_ends_at_the_last_stable_offset_before_an_open_transaction() -> Result<()> {
    let topic = unique("inspect-open");
    create_topic(&kafka(), &topic, 1).await?;
    let plain = producer(&kafka())?;
    produce(&plain, &topic, None, b"before", &[]).await?;
    // Keep the producer (and its open transaction) alive during the read.
    let open = open_transaction(&topic, "open").await?;
    produce(&plain, &topic, None, b"after", &[]).await?;
    let mut reader = TopicReader::open(&kafka(), ReadRequest::whole(&topic)).await?;
    assert_eq!(
        reader.ranges()[0].end,
        1,
        "the end is the last stable offset"
    );
    let mut got = Vec::new();
    while let Some(batch) = reader.next_batch().await {
        got.extend(batch?);
    }
    assert_eq!(values(&got), ["before"]);
    tokio::task::spawn_blocking(move || open.commit_transaction(Duration::from_secs(30))).await??;
    assert_eq!(
        values(&read(ReadRequest::whole(&topic)).await?),
        ["before", "open", "after"]
    );
    Ok(())
}

#[tokio::test]
async fn through_open_transactions_waits_for_them_and_returns_what_commits() -> Result<()> {
    let topic = unique("inspect-through");
    create_topic(&kafka(), &topic, 1).await?;
    let plain = producer(&kafka())?;
    produce(&plain, &topic, None, b"before", &[]).await?;
    let open = open_transaction(&topic, "open").await?;
    let reader = TopicReader::open(&kafka(), ReadRequest::whole(&topic).through_open_transactions()).await?;
    assert_eq!(reader.ranges()[0].end, 2, "the end is the high watermark");
    let read = tokio::spawn(async move {
        let mut reader = reader;
        let mut got = Vec::new();
        while let Some(batch) = reader.next_batch().await {
            got.extend(batch?);
        }
        anyhow::Ok(got)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!read.is_finished(), "the read waits for the open transaction");
    tokio::task::spawn_blocking(move || open.commit_transaction(Duration::from_secs(30))).await??;
    let got = tokio::time::timeout(Duration::from_secs(30), read).await???;
    assert_eq!(values(&got), ["before", "open"]);
    Ok(())
}

/// Reads batches until every end in `ends` is reached; the values read.
async fn read_to(tail: &mut TopicTail, ends: &[PartitionEnd], read: &mut HashMap<i32, i64>) -> Result<Vec<String>> {
    let mut values = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !ends.iter().all(|e| e.reached_by(read.get(&e.partition).copied())) {
        let batch = match tokio::time::timeout_at(deadline, tail.next()).await {
            Ok(Some(b)) => b?,
            Ok(None) => bail!("the tail stopped"),
            Err(_) => bail!("ends {ends:?} not reached; positions {read:?}, values so far {values:?}"),
        };
        for r in &batch.records {
            values.push(String::from_utf8_lossy(r.payload.as_deref().unwrap_or_default()).into_owned());
        }
        read.extend(batch.positions);
    }
    Ok(values)
}

#[tokio::test]
async fn a_tail_reads_committed_records_passes_markers_and_follows_new_ones() -> Result<()> {
    let topic = unique("tail");
    create_topic(&kafka(), &topic, 2).await?;
    let plain = producer(&kafka())?;
    produce(&plain, &topic, Some(b"k"), b"a", &[]).await?;
    let t = topic.clone();
    tokio::task::spawn_blocking(move || {
        transaction(&t, &["committed"], true)?;
        // Partition 0 ends with an aborted transaction: only markers and
        // aborted records after the last visible one.
        transaction(&t, &["aborted-1", "aborted-2"], false).map(drop)
    })
    .await??;

    let mut tail = TopicTail::open(&kafka(), &topic).await?;
    assert_eq!(tail.partitions(), [0, 1]);
    let ends = tail.ends().now().await?;
    assert!(ends.iter().all(|e| e.high > e.low), "{ends:?}");
    let mut read = HashMap::new();
    let mut values = read_to(&mut tail, &ends, &mut read).await?;
    values.sort();
    assert_eq!(values, ["a", "committed"]);

    // What is written afterwards is followed.
    produce(&plain, &topic, Some(b"k"), b"later", &[]).await?;
    let ends = tail.ends().now().await?;
    assert_eq!(read_to(&mut tail, &ends, &mut read).await?, ["later"]);

    // No reader (tail or inspect) ever leaves a consumer group behind.
    let groups = dora_testkit::group_names(&kafka()).await?;
    let left: Vec<&String> = groups.iter().filter(|g| g.starts_with("dora-inspect-")).collect();
    assert!(left.is_empty(), "groups left behind: {left:?}");
    Ok(())
}

#[tokio::test]
async fn an_empty_topic_is_read_to_its_end_at_once_and_a_missing_one_is_named() -> Result<()> {
    let topic = unique("tail-empty");
    create_topic(&kafka(), &topic, 3).await?;
    let tail = TopicTail::open(&kafka(), &topic).await?;
    let ends = tail.ends().now().await?;
    assert_eq!(ends.len(), 3);
    assert!(ends.iter().all(|e| e.reached_by(None)), "{ends:?}");
    let missing = unique("tail-missing");
    match TopicTail::open(&kafka(), &missing).await {
        Ok(_) => bail!("opened a topic that does not exist"),
        Err(e) => assert!(e.to_string().contains(&missing), "{e}"),
    }
    Ok(())
}
