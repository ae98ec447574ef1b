//! A delivery group (records enqueued together, awaited with one wake-up):
//! each record's outcome is the one librdkafka reported for that record, in
//! the order enqueued, also when some are refused by the broker and when the
//! records had to wait for room in librdkafka's queue.

use anyhow::Result;
use dora_kafka::producer::PRODUCER_HEADER;
use dora_kafka::{OutboundRecord, Producer, ProducerSettings};
use dora_telemetry::Readiness;
use dora_testkit::{create_topic_with, read_all, unique};

/// Bytes that snappy cannot shrink below the topic's limit.
fn incompressible(len: usize) -> Vec<u8> {
    (0..len).map(|_| rand::random::<u8>()).collect()
}

#[tokio::test]
async fn each_record_of_a_group_has_its_own_outcome_in_the_order_enqueued() -> Result<()> {
    let mut kafka = dora_testkit::kafka();
    let topic = unique("group");
    // Partition 2 takes only the records over the topic's size limit, so the
    // broker refuses their batches alone.
    create_topic_with(&kafka, &topic, 3, &[("max.message.bytes", "4000")]).await?;
    // Room for 4 records in librdkafka's queue: most enqueues wait for
    // deliveries and hand the record (and its slot in the group) over again.
    kafka
        .extra
        .insert("queue.buffering.max.messages".into(), "4".into());
    let producer = Producer::new(
        &kafka,
        &ProducerSettings::default(),
        "group-test",
        &Readiness::new(),
    )?;
    assert!(producer.group().acknowledged().await.is_empty());

    let too_large = |i: usize| i % 10 == 7;
    let mut group = producer.group();
    let mut sent = Vec::new();
    for i in 0..40 {
        let (payload, partition) = match too_large(i) {
            true => (incompressible(8000), 2),
            false => (format!("record {i}").into_bytes(), (i % 2) as i32),
        };
        let record =
            OutboundRecord::new(&topic, Some("k"), payload.clone()).to_partition(partition);
        assert_eq!(
            group.enqueue_raw(record).await?,
            i,
            "indexes follow the enqueue order"
        );
        sent.push(payload);
    }
    assert_eq!(group.len(), 40);
    let outcomes = group.acknowledged().await;
    assert_eq!(outcomes.len(), 40);

    let back = read_all(&dora_testkit::kafka(), &topic).await?;
    assert_eq!(
        back.len(),
        36,
        "the four records over the limit are not on the topic"
    );
    for (i, outcome) in outcomes.iter().enumerate() {
        match (too_large(i), outcome) {
            (true, Err(e)) => assert_eq!(e.error_type(), "MessageSizeTooLarge", "record {i}: {e}"),
            (true, Ok(d)) => panic!("record {i} is over the topic's limit, yet reported at {d:?}"),
            (false, Err(e)) => panic!("record {i} reported failed: {e}"),
            (false, Ok(d)) => {
                // The position reported for record i holds record i.
                let at = back
                    .iter()
                    .find(|r| r.partition == d.partition && r.offset == d.offset)
                    .unwrap_or_else(|| panic!("record {i}: nothing at {d:?}"));
                assert_eq!(
                    at.payload.as_deref(),
                    Some(&sent[i][..]),
                    "record {i} at {d:?}"
                );
                assert_eq!(at.header(PRODUCER_HEADER), Some(&b"group-test"[..]));
            }
        }
    }
    Ok(())
}
