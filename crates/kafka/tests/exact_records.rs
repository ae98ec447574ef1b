//! Records that must reproduce another byte-exact (a dead letter's replay):
//! exact headers (order, duplicates, null values) instead of the producer's
//! own, and an explicit partition; and the producer's headers kept on
//! records that waited for room in librdkafka's full queue.

use anyhow::Result;
use dora_kafka::consume::RecordHeader;
use dora_kafka::producer::PRODUCER_HEADER;
use dora_kafka::{OutboundRecord, Producer, ProducerSettings};
use dora_telemetry::Readiness;
use dora_testkit::{create_topic, read_all, unique};

fn header(key: &str, value: Option<&[u8]>) -> RecordHeader {
    RecordHeader {
        key: key.into(),
        value: value.map(<[u8]>::to_vec),
    }
}

#[tokio::test]
async fn exact_headers_are_written_as_given_to_the_chosen_partition() -> Result<()> {
    let kafka = dora_testkit::kafka();
    let topic = unique("exact");
    create_topic(&kafka, &topic, 3).await?;
    let producer = Producer::new(
        &kafka,
        &ProducerSettings::default(),
        "exact-test",
        &Readiness::new(),
    )?;

    let exact = vec![
        header(
            "traceparent",
            Some(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ),
        header(PRODUCER_HEADER, Some(b"agent-gateway")),
        header("dup", Some(b"1")),
        header("dup", Some(b"2")),
        header("empty", None),
        header("binary", Some(&[0, 255, 7])),
    ];
    let mut record = OutboundRecord::new(&topic, None, vec![0, 1, 2, 255])
        .to_partition(2)
        .with_exact_headers(exact.clone())
        .with_header("dora-replay-count", "1");
    record.key = Some(vec![0xC3, 0x28]); // not UTF-8: bytes, not text
    let delivered = producer.send_raw(record).await?;
    assert_eq!(delivered.partition, 2);
    // An ordinary record still gets the producer's own headers.
    producer
        .send_raw(OutboundRecord::new(&topic, Some("k"), b"plain".to_vec()).to_partition(0))
        .await?;

    let back = read_all(&kafka, &topic).await?;
    let replayed = back
        .iter()
        .find(|r| r.partition == 2)
        .expect("record on partition 2");
    let mut expected: Vec<(String, Option<Vec<u8>>)> =
        exact.into_iter().map(|h| (h.key, h.value)).collect();
    expected.push(("dora-replay-count".into(), Some(b"1".to_vec())));
    assert_eq!(replayed.headers, expected);
    assert_eq!(replayed.key.as_deref(), Some(&[0xC3, 0x28][..]));
    assert_eq!(replayed.payload.as_deref(), Some(&[0, 1, 2, 255][..]));

    let plain = back
        .iter()
        .find(|r| r.partition == 0)
        .expect("record on partition 0");
    assert_eq!(plain.header(PRODUCER_HEADER), Some(&b"exact-test"[..]));
    Ok(())
}

#[tokio::test]
async fn records_that_waited_for_a_full_queue_keep_their_headers() -> Result<()> {
    let mut kafka = dora_testkit::kafka();
    let topic = unique("queue-full");
    create_topic(&kafka, &topic, 1).await?;
    // Room for one record: every enqueue after the first meets a full queue
    // and is handed over again once the one before it was delivered.
    kafka
        .extra
        .insert("queue.buffering.max.messages".into(), "1".into());
    let producer = Producer::new(
        &kafka,
        &ProducerSettings::default(),
        "queue-full-test",
        &Readiness::new(),
    )?;
    let mut deliveries = Vec::new();
    for i in 0..20 {
        let record = OutboundRecord::new(&topic, Some("k"), vec![i])
            .with_header("n", i.to_string());
        deliveries.push(producer.enqueue_raw(record).await?);
    }
    for d in deliveries {
        d.await?;
    }
    let back = read_all(&dora_testkit::kafka(), &topic).await?;
    assert_eq!(back.len(), 20);
    for (i, r) in back.iter().enumerate() {
        assert_eq!(r.payload.as_deref(), Some(&[i as u8][..]));
        assert_eq!(r.header(PRODUCER_HEADER), Some(&b"queue-full-test"[..]), "record {i}");
        assert_eq!(r.header("n"), Some(i.to_string().as_bytes()), "record {i}");
    }
    Ok(())
}
