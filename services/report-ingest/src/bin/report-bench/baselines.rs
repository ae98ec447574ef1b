//! report-bench's baselines without gRPC or the service: the platform
//! producer in a closed loop, the two bare transactional loops, the records
//! the service writes per agent event; and the CPU the process spends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use dora_kafka::baseline::{self, RawRecord};
use dora_kafka::consume::ConsumerSettings;
use dora_kafka::OutboundRecord;
use dora_schema::Codec;
use dora_telemetry::ServiceContext;
use serde_json::json;

use crate::{unique, Args, WARM_UP_CALLS};

/// A rate and the CPU the whole process spent per operation meanwhile
/// (client, service and librdkafka threads: on 2 cores the ratios follow it).
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub per_s: f64,
    pub cpu_us: f64,
}

/// The same records through the platform `Producer` without gRPC: `--callers`
/// tasks, each enqueueing a submission's report and audit event and awaiting
/// both acknowledgements before the next (what the service does per call),
/// after [`WARM_UP_CALLS`] each, over the records `passes` times.
/// Returns submissions/s and CPU µs per submission.
pub async fn closed_loop(
    settings: &report_ingest::Settings,
    records: Vec<RawRecord>,
    args: &Args,
    passes: usize,
) -> anyhow::Result<(f64, f64)> {
    let ctx = ServiceContext::new("report-bench");
    let producer = platform_producer(settings, &ctx)?;
    let (records, next) = (Arc::new(records), Arc::new(AtomicU64::new(0)));
    // `records` holds the warm-up submissions first, as the gRPC callers make them.
    let warm_up = args.callers * WARM_UP_CALLS;
    let ready = Arc::new(tokio::sync::Barrier::new(args.callers + 1));
    let mut tasks = Vec::new();
    for i in 0..args.callers {
        let (producer, records, next, n, ready) = (
            producer.clone(),
            records.clone(),
            next.clone(),
            args.submissions * passes as u64,
            ready.clone(),
        );
        let per_pass = args.submissions;
        tasks.push(tokio::spawn(async move {
            for w in 0..WARM_UP_CALLS {
                submit(&producer, &records, i * WARM_UP_CALLS + w).await?;
            }
            ready.wait().await;
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= n {
                    return anyhow::Ok(());
                }
                submit(&producer, &records, warm_up + (k % per_pass) as usize).await?;
            }
        }));
    }
    ready.wait().await;
    let (cpu0, started) = (cpu_seconds(), Instant::now());
    for t in tasks {
        t.await??;
    }
    let n = (args.submissions * passes as u64) as f64;
    Ok((
        n / started.elapsed().as_secs_f64(),
        (cpu_seconds() - cpu0) * 1e6 / n,
    ))
}

/// Enqueues submission `k`'s report and audit event and awaits both acknowledgements.
async fn submit(
    producer: &dora_kafka::Producer,
    records: &[RawRecord],
    k: usize,
) -> anyhow::Result<()> {
    let mut pending = Vec::with_capacity(2);
    for (topic, key, value) in &records[2 * k..2 * k + 2] {
        let record = OutboundRecord::new(topic, Some(key), value.clone());
        pending.push(producer.enqueue_raw(record).await?);
    }
    for delivery in pending {
        delivery.await?;
    }
    Ok(())
}

/// The two bare transactional loops over the same input, in transactions of
/// `--batch`: a pass-through copying each event to a topic of its own, and
/// one writing per event the records the service writes (`same`: its report
/// and audit event, on topics of their own). Rate and CPU µs per event of each.
pub async fn transactional_baselines(
    settings: &report_ingest::Settings,
    args: &Args,
    same: Vec<[RawRecord; 2]>,
) -> anyhow::Result<(Rate, Rate)> {
    let out = unique("bench-passthrough");
    let (same_report, same_audit) = (same[0][0].0.clone(), same[0][1].0.clone());
    provision(settings, &[&out, &same_report, &same_audit]).await?;
    let (kafka, ps, input, n, batch) = (
        settings.common.kafka.clone(),
        settings.producer.clone(),
        settings.ingest.events_topic.clone(),
        args.events,
        args.batch,
    );
    let consumer = |group: &str| ConsumerSettings {
        group_id: unique(group),
        fetch_min_bytes: 1,
        ..settings.consumer.clone()
    };
    let (cs, txn) = (consumer("bench-bare"), unique("bench-bare-txn"));
    let (k, p, i) = (kafka.clone(), ps.clone(), input.clone());
    let cpu0 = cpu_seconds();
    let bare = tokio::task::spawn_blocking(move || {
        baseline::transactional_passthrough(&k, &cs, &p, &txn, (&i, &out), n, batch)
    })
    .await??;
    let passthrough = Rate {
        per_s: n as f64 / bare.as_secs_f64(),
        cpu_us: (cpu_seconds() - cpu0) * 1e6 / n as f64,
    };
    let (cs, txn) = (consumer("bench-same"), unique("bench-same-txn"));
    let cpu0 = cpu_seconds();
    let bare = tokio::task::spawn_blocking(move || {
        baseline::transactional_consume_produce(&kafka, &cs, &ps, &txn, &input, (n, batch), |k| {
            &same[k as usize % same.len()][..]
        })
    })
    .await??;
    let same_records = Rate {
        per_s: n as f64 / bare.as_secs_f64(),
        cpu_us: (cpu_seconds() - cpu0) * 1e6 / n as f64,
    };
    Ok((passthrough, same_records))
}

/// CPU seconds (user + system) this process has used, from `/proc/self/stat`.
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<f64> = after
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // After the command: state (skipped, not a number), ppid, ..., utime (10th number), stime (11th); clock ticks.
    (f.get(10).copied().unwrap_or(0.0) + f.get(11).copied().unwrap_or(0.0)) / 100.0
}

/// The records the service writes for `event`: its report and audit event, encoded.
pub async fn same_records(
    codec: &Codec,
    event: &dora_schema::AgentEvent,
    (report_topic, audit_topic): (&str, &str),
    k: u64,
) -> anyhow::Result<[RawRecord; 2]> {
    let a = report_ingest::derive::assessment_of(event, &Default::default())?
        .context("the bench's event carries an assessment")?;
    let report = a.into_report(
        report_ingest::assessment::derived_report_id(&event.event_id),
        event.timestamp,
    );
    let now = chrono::Utc::now();
    let audit = dora_kafka::audit::user_activity(
        &event.agent_id,
        report_ingest::derive::derive_action(report.report_type),
        &report.report_id,
        json!({"organization_id": report.organization_id, "event_id": event.event_id, "agent_type": event.agent_type,
               "task_id": event.task_id, "source": format!("bench-events/0/{k}")}),
        now,
    );
    Ok([
        (
            report_topic.to_string(),
            report.organization_id.clone(),
            codec.encode(report_topic, &report).await?,
        ),
        (
            audit_topic.to_string(),
            dora_kafka::audit::hour_bucket(now),
            codec.encode(audit_topic, &audit).await?,
        ),
    ])
}

/// Creates `topics` (3 partitions each) for a run.
pub async fn provision(
    settings: &report_ingest::Settings,
    topics: &[&String],
) -> anyhow::Result<()> {
    let specs: Vec<_> = topics
        .iter()
        .map(|t| dora_kafka::topics::TopicSpec {
            name: t.to_string(),
            partitions: 3,
            configs: vec![],
        })
        .collect();
    dora_kafka::topics::provision(&settings.common.kafka, &specs, 1, Duration::from_secs(30))
        .await?;
    Ok(())
}

/// The platform `Producer` with the service's producer settings.
pub fn platform_producer(
    settings: &report_ingest::Settings,
    ctx: &ServiceContext,
) -> anyhow::Result<dora_kafka::Producer> {
    let (kafka, producer) = (&settings.common.kafka, &settings.producer);
    Ok(dora_kafka::Producer::new(
        kafka,
        producer,
        ctx.name,
        &ctx.readiness,
    )?)
}

/// The records the service writes for the gRPC submissions of the run
/// (`warm_up` untimed ones first, then `submissions`): each one's report and
/// audit event, encoded as the service encodes them, with the audit details
/// the service records for a call from the bench's client.
pub async fn submission_records(
    settings: &report_ingest::Settings,
    codec: &Codec,
    warm_up: u64,
    submissions: u64,
) -> anyhow::Result<Vec<RawRecord>> {
    let s = &settings.ingest;
    let a = report_ingest::assessment::Assessment::gap(
        ("o", "org-bench"),
        serde_json::from_str(crate::client_load::DATA)?,
        "d",
        &Default::default(),
    )?;
    let mut records: Vec<RawRecord> = Vec::new();
    for k in 0..warm_up + submissions {
        let request_id = match k.checked_sub(warm_up) {
            Some(k) => format!("req-{k}"),
            None => format!("warm-{k}"),
        };
        let id = report_ingest::assessment::submitted_report_id(
            "bench",
            dora_schema::ReportType::GapAssessment,
            "org-bench",
            &request_id,
        );
        let now = chrono::Utc::now();
        let report = a.clone().into_report(id, now.timestamp_millis());
        records.push((
            s.gap_topic.clone(),
            "org-bench".into(),
            codec.encode(&s.gap_topic, &report).await?,
        ));
        let details = json!({"ip_address": "127.0.0.1", "user_agent": TONIC_USER_AGENT, "channel": "grpc",
            "organization_id": "org-bench", "request_id": request_id, "report_type": "GAP_ASSESSMENT"});
        let audit = dora_kafka::audit::user_activity(
            "bench",
            "SUBMIT_GAP_ASSESSMENT",
            &report.report_id,
            details,
            now,
        );
        records.push((
            s.audit_topic.clone(),
            dora_kafka::audit::hour_bucket(now),
            codec.encode(&s.audit_topic, &audit).await?,
        ));
    }
    Ok(records)
}

/// The user agent the bench's tonic client sends (what the service records).
const TONIC_USER_AGENT: &str = "tonic/0.14.9";
