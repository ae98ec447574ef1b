//! Guarantee: every audit event and report, produced as Confluent Avro or as
//! the seed's JSON (made by the seed's own classes), becomes one row with
//! every field in its typed column and the original record (topic,
//! partition, offset, Kafka timestamp, key and value bytes) beside it; the
//! chain over them verifies.

mod common;

use std::process::Command;

use anyhow::{ensure, Context, Result};
use chrono::{DateTime, Utc};
use common::{audit_event, risk_report, Harness};
use serde_json::Value;

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// The seed's records as (topic, key, value bytes), from its own Python classes.
fn seed_records() -> Result<Vec<(String, String, Vec<u8>)>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/seed_records.py");
    let out = Command::new("python3").arg(script).output().context("running python3 (the seed's classes)")?;
    ensure!(out.status.success(), "seed_records.py failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)?
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l)?;
            Ok((
                v["topic"].as_str().context("topic")?.to_string(),
                v["key"].as_str().context("key")?.to_string(),
                v["value"].as_str().context("value")?.as_bytes().to_vec(),
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_and_the_seeds_json_become_rows_with_every_field() -> Result<()> {
    let h = Harness::new(2, None).await?;
    let mut sink = h.spawn(&[]).await?;

    let event = audit_event(1);
    let (ep, eo) = h.produce_event(&event).await?;
    let report = risk_report(1);
    let (rp, ro) = h.produce_report(&report).await?;
    let seed = seed_records()?;
    let mut seed_positions = Vec::new();
    for (topic, key, value) in &seed {
        let topic = match topic.as_str() {
            "user-activities" => &h.audit_topic,
            "gap-assessments" => &h.gap_topic,
            _ => &h.risk_topic,
        };
        seed_positions.push((topic.clone(), h.produce(topic, key, value).await?));
    }
    h.wait_rows("audit_events", 3).await?;
    h.wait_rows("compliance_reports", 4).await?;

    let db = h.owner().await?;
    // The Avro audit event, column by column.
    let r = db
        .query_one(
            "SELECT occurred_at, user_id, action, resource, details::text, ip_address, user_agent, session_id, \
             value_format, topic, kafka_partition, kafka_offset, kafka_timestamp, record_key, record_value \
             FROM audit.audit_events WHERE event_id = $1",
            &[&event.event_id],
        )
        .await?;
    assert_eq!(ms(r.get(0)), event.timestamp);
    assert_eq!((r.get::<_, &str>(1), r.get::<_, &str>(2), r.get::<_, &str>(3)), (&*event.user_id, &*event.action, &*event.resource));
    assert_eq!(serde_json::from_str::<Value>(r.get(4))?, event.details);
    assert_eq!(r.get::<_, Option<String>>(5), event.ip_address);
    assert_eq!(r.get::<_, Option<String>>(6), event.user_agent);
    assert_eq!(r.get::<_, Option<String>>(7), event.session_id);
    assert_eq!(r.get::<_, &str>(8), "avro");
    assert_eq!((r.get::<_, &str>(9), r.get::<_, i32>(10), r.get::<_, i64>(11)), (&*h.audit_topic, ep, eo));
    assert!(r.get::<_, Option<DateTime<Utc>>>(12).is_some(), "Kafka timestamp kept");
    assert_eq!(r.get::<_, Option<&[u8]>>(13), Some(&b"2026-11-27-09"[..]));
    assert_eq!(r.get::<_, &[u8]>(14), &h.codec.encode(&h.audit_topic, &event).await?[..]);

    // The Avro risk report.
    let r = db
        .query_one(
            "SELECT organization_id, reported_at, report_type, risk_score, risk_level, data::text, version, \
             value_format, topic, kafka_partition, kafka_offset, record_key, record_value \
             FROM audit.compliance_reports WHERE report_id = $1",
            &[&report.report_id],
        )
        .await?;
    assert_eq!(r.get::<_, &str>(0), report.organization_id);
    assert_eq!(ms(r.get(1)), report.timestamp);
    assert_eq!(r.get::<_, &str>(2), "RISK_ASSESSMENT");
    assert_eq!(r.get::<_, Option<f64>>(3), report.risk_score);
    assert_eq!(r.get::<_, Option<&str>>(4), Some("HIGH"));
    assert_eq!(serde_json::from_str::<Value>(r.get(5))?, report.data);
    assert_eq!(r.get::<_, &str>(6), "1.0");
    assert_eq!(r.get::<_, &str>(7), "avro");
    assert_eq!((r.get::<_, &str>(8), r.get::<_, i32>(9), r.get::<_, i64>(10)), (&*h.risk_topic, rp, ro));
    assert_eq!(r.get::<_, Option<&[u8]>>(11), Some(report.organization_id.as_bytes()));

    // The seed's JSON: every field of each record equals the seed's dict, and
    // the stored value is the seed's exact bytes.
    for ((_, key, value), (topic, (p, o))) in seed.iter().zip(&seed_positions) {
        let sent: Value = serde_json::from_slice(value)?;
        let is_audit = *topic == h.audit_topic;
        let (table, id) = if is_audit { ("audit_events", "eventId") } else { ("compliance_reports", "reportId") };
        let row = db
            .query_one(
                &format!("SELECT to_json(t)::text FROM audit.{table} t WHERE topic = $1 AND kafka_partition = $2 AND kafka_offset = $3"),
                &[topic, p, o],
            )
            .await
            .with_context(|| format!("no row for the seed's {}", sent[id]))?;
        let stored: Value = serde_json::from_str(row.get(0))?;
        assert_eq!(stored["value_format"], "json");
        assert_eq!(stored["record_key"], Value::String(format!("\\x{}", hex(key.as_bytes()))));
        assert_eq!(stored["record_value"], Value::String(format!("\\x{}", hex(value))));
        if is_audit {
            assert_eq!(stored["event_id"], sent["eventId"]);
            assert_eq!(stored["user_id"], sent["userId"]);
            assert_eq!(stored["action"], sent["action"]);
            assert_eq!(stored["resource"], sent["resource"]);
            assert_eq!(stored["details"], sent["details"]);
            assert_eq!(stored["ip_address"], sent["ipAddress"]);
            assert_eq!(stored["user_agent"], sent["userAgent"]);
            assert_eq!(stored["session_id"], sent["sessionId"]);
        } else {
            assert_eq!(stored["report_id"], sent["reportId"]);
            assert_eq!(stored["organization_id"], sent["organizationId"]);
            assert_eq!(stored["report_type"], sent["reportType"]);
            assert_eq!(stored["data"], sent["data"]);
            assert_eq!(stored["version"], sent["version"]);
            assert_eq!(stored["risk_score"].as_f64(), sent["riskScore"].as_f64());
            // The seed may spell the level in lower case; it is stored as the enum symbol.
            assert_eq!(stored["risk_level"].as_str(), sent["riskLevel"].as_str().map(str::to_uppercase).as_deref());
        }
        let occurred = if is_audit { &stored["occurred_at"] } else { &stored["reported_at"] };
        let occurred: DateTime<Utc> = occurred.as_str().context("timestamp")?.parse()?;
        assert_eq!(ms(occurred), sent["timestamp"].as_i64().context("seed timestamp")?);
    }

    let (code, out, err) = h.command(&["verify"]).await?;
    assert_eq!(code, Some(0), "verify: {out}{err}");
    assert!(out.contains("audit trail intact") && out.contains("7 stored rows"), "{out}");
    assert!(sink.terminate(dora_testkit::DEADLINE).await?.success(), "{}", sink.log());
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
