//! Guarantee: every audit event and report, produced as Confluent Avro or as
//! the seed's JSON (made by the seed's own classes), becomes one row with
//! every field in its typed column and the original record (topic,
//! partition, offset, Kafka timestamp, key and value bytes) beside it; the
//! chain over them verifies. `audit-sink export` writes a period of either
//! table, filtered by user or organisation, each row with its chain link.
//! The metrics count rows, records, links and batches and show the newest
//! record's time; a sink behind its lag limit logs it.

mod common;

use std::process::Command;

use anyhow::{ensure, Context, Result};
use chrono::{DateTime, Utc};
use common::{audit_event, metric, risk_report, Harness};
use dora_testkit as tk;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_writes_a_periods_events_or_reports_with_their_chain_links() -> Result<()> {
    use base64::Engine;
    let h = Harness::new(1, None).await?;
    let t = h.audit_topic.clone();
    let events: Vec<_> = (0..4).map(audit_event).collect(); // users 0, 1, 2, 0
    for e in &events {
        h.produce_event(e).await?;
    }
    let reports = [risk_report(0), risk_report(1)];
    for r in &reports {
        h.produce_report(r).await?;
    }
    let mut sink = h.spawn(&[]).await?;
    h.wait_rows("audit_events", 4).await?;
    h.wait_rows("compliance_reports", 2).await?;
    assert!(sink.terminate(dora_testkit::DEADLINE).await?.success(), "{}", sink.log());

    let lines = |out: &str| -> Result<Vec<Value>> { out.lines().map(|l| Ok(serde_json::from_str(l)?)).collect() };
    let (code, out, err) = h.command(&["export", "--from", "2026-01-01", "--to", "2027-01-01", "--user", "user-0"]).await?;
    assert_eq!(code, Some(0), "{err}");
    let rows = lines(&out)?;
    let ids: Vec<&str> = rows.iter().map(|r| r["eventId"].as_str().unwrap_or_default()).collect();
    assert_eq!(ids, [events[0].event_id.as_str(), events[3].event_id.as_str()]);
    let db = h.owner().await?;
    for (row, e) in rows.iter().zip([&events[0], &events[3]]) {
        let link = db
            .query_one(
                "SELECT seq, encode(prev_hash, 'hex'), encode(hash, 'hex') FROM audit.chain \
                 WHERE topic = $1 AND kafka_partition = 0 AND kafka_offset = $2",
                &[&t, &row["offset"].as_i64().context("offset")?],
            )
            .await?;
        assert_eq!(row["chainSeq"].as_i64(), Some(link.get::<_, i64>(0)));
        assert_eq!(row["prevHash"].as_str(), Some(link.get::<_, &str>(1)));
        assert_eq!(row["hash"].as_str(), Some(link.get::<_, &str>(2)));
        let value = base64::engine::general_purpose::STANDARD.decode(row["recordValueBase64"].as_str().context("value")?)?;
        assert_eq!(value, h.codec.encode(&t, e).await?, "the extract does not carry the original record");
        assert_eq!(row["userId"], "user-0");
    }
    // The period's end is exclusive.
    let to = DateTime::from_timestamp_millis(events[3].timestamp).context("time")?;
    let to = to.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let (code, out, err) = h.command(&["export", "--from", "2026-01-01", "--to", &to, "--user", "user-0"]).await?;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(lines(&out)?.len(), 1, "{out}");

    let (code, out, err) = h
        .command(&["export", "--table", "compliance-reports", "--from", "2026-01-01", "--to", "2027-01-01", "--organization", "org-1", "--format", "csv"])
        .await?;
    assert_eq!(code, Some(0), "{err}");
    let mut csv = out.lines();
    assert!(csv.next().is_some_and(|h| h.starts_with(r#""reportId","timestamp","organizationId","reportType","riskScore""#)), "{out}");
    let row = csv.next().context("no report row")?;
    assert!(row.starts_with(&format!("\"{}\",", reports[1].report_id)) && row.contains(",\"0.87\","), "{row}");
    assert!(csv.next().is_none(), "{out}");

    let (code, _, err) = h.command(&["export", "--table", "compliance-reports", "--from", "2026-01-01", "--to", "2027-01-01", "--user", "user-0"]).await?;
    assert_ne!(code, Some(0));
    assert!(err.contains("--user filters audit events"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_rows_links_and_age_and_a_sink_behind_its_lag_limit_says_so() -> Result<()> {
    let h = Harness::new(1, None).await?;
    let t = h.audit_topic.clone();
    for e in (0..3).map(audit_event) {
        h.produce_event(&e).await?;
    }
    let newest = tk::read_all(&h.kafka, &t).await?.iter().filter_map(|r| r.timestamp).max().context("no timestamp")?;
    // The records wait in the topic longer than the sink's lag limit.
    let limit_ms = 300;
    tk::eventually(tk::DEADLINE, || async {
        (chrono::Utc::now().timestamp_millis() > newest + limit_ms).then_some(())
    })
    .await?;
    let mut sink = h.spawn(&[("DORA_AUDIT_SINK__LAG_WARN_MS", limit_ms.to_string())]).await?;
    h.wait_rows("audit_events", 3).await?;
    let m = |name: &'static str, labels: Vec<(&'static str, String)>| {
        let sink = &sink;
        async move {
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            metric(sink, name, &labels).await
        }
    };
    let chain = tk::eventually(tk::DEADLINE, || async {
        m("audit_sink_chain_length", vec![("topic", t.clone()), ("partition", "0".into())]).await.ok()?.filter(|v| *v == 3.0)
    })
    .await
    .context("chain length gauge")?;
    assert_eq!(chain, 3.0);
    assert_eq!(m("audit_sink_rows_stored_total", vec![("table", "audit_events".into())]).await?, Some(3.0));
    assert_eq!(m("audit_sink_records_total", vec![("outcome", "stored".into())]).await?, Some(3.0));
    assert_eq!(m("audit_sink_newest_record_timestamp_ms", vec![]).await?, Some(newest as f64));
    assert_eq!(m("audit_sink_database_up", vec![]).await?, Some(1.0));
    assert!(m("audit_sink_batch_records_sum", vec![]).await?.is_some_and(|v| v == 3.0));
    assert!(m("audit_sink_db_seconds_count", vec![("operation", "batch".into())]).await?.is_some_and(|v| v >= 1.0));
    assert!(m("audit_sink_db_seconds_count", vec![("operation", "commit".into())]).await?.is_some_and(|v| v >= 1.0));
    // The age gauge follows the clock (refreshed by the probe while idle).
    tk::eventually(tk::DEADLINE, || async {
        m("audit_sink_newest_record_age_seconds", vec![]).await.ok()?.filter(|a| *a >= 1.0)
    })
    .await
    .context("the newest record's age did not grow")?;
    assert!(sink.log().contains("audit-sink is behind"), "no lag warning: {}", sink.log());
    assert!(sink.terminate(dora_testkit::DEADLINE).await?.success(), "{}", sink.log());
    Ok(())
}
