//! `report-bench`: report-ingest's two paths against bare rdkafka baselines,
//! in the same run on the same broker (`eval "$(deploy/local/stack.sh env)"`):
//!
//! 1. gRPC submissions acknowledged per second (report + audit event each,
//!    `--callers` concurrent calls) vs a bare `FutureProducer` writing the same
//!    records flat out (`dora_kafka::baseline::produce_all`);
//! 2. agent-events -> reports (the service's transactional consume loop and
//!    transform, every event an assessment) vs a bare transactional
//!    consume -> produce pass-through (`dora_kafka::baseline::transactional_passthrough`),
//!    both committing every `--batch` records.
//!
//! Prints one JSON line (for `cargo xtask bench`: `results` as in
//! `crates/bench/src/figures.rs`) and a readable summary. `--quick` (or
//! `DORA_BENCH_QUICK=1`): a few hundred records, figures meaningless.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use dora_kafka::baseline::{self, RawRecord};
use dora_kafka::consume::{ConsumeLoop, ConsumerSettings, HandlerError, Record, Transform};
use dora_kafka::{KafkaSettings, OutboundRecord};
use dora_schema::{Codec, RegistrySettings};
use dora_telemetry::ServiceContext;
use report_ingest::client;
use serde_json::json;

/// Benchmark report-ingest against bare rdkafka.
#[derive(Debug, Parser)]
struct Args {
    /// gRPC submissions to time.
    #[arg(long, default_value_t = 20_000)]
    submissions: u64,
    /// Concurrent gRPC calls.
    #[arg(long, default_value_t = 256)]
    callers: usize,
    /// Agent events to time on the agent path.
    #[arg(long, default_value_t = 50_000)]
    events: u64,
    /// Records per transaction (the loop's `max_batch_records`, the baseline's commit interval).
    #[arg(long, default_value_t = 100)]
    batch: u64,
    /// A run of a few seconds that only shows everything works (`cargo xtask bench --quick`).
    #[arg(long)]
    quick: bool,
}

fn kafka() -> KafkaSettings {
    KafkaSettings {
        bootstrap_servers: std::env::var("DORA_KAFKA__BOOTSTRAP_SERVERS")
            .unwrap_or_else(|_| "127.0.0.1:9092".into()),
        ..Default::default()
    }
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    args.quick |= std::env::var("DORA_BENCH_QUICK").is_ok_and(|v| v == "1");
    if args.quick {
        (args.submissions, args.events, args.callers) = (300, 500, 16);
    }
    let registry = RegistrySettings {
        url: std::env::var("DORA_REGISTRY__URL")
            .unwrap_or_else(|_| report_ingest_registry_default()),
        ..Default::default()
    };
    let codec = Codec::new(&registry)?;
    let mut settings = report_ingest::Settings::default();
    settings.common.kafka = kafka();
    settings.registry = registry.clone();
    let s = &mut settings.ingest;
    for (field, prefix) in [
        (&mut s.events_topic, "bench-events"),
        (&mut s.gap_topic, "bench-gap"),
        (&mut s.risk_topic, "bench-risk"),
        (&mut s.audit_topic, "bench-audit"),
    ] {
        *field = unique(prefix);
    }
    let topics: Vec<dora_kafka::topics::TopicSpec> =
        [&s.events_topic, &s.gap_topic, &s.risk_topic, &s.audit_topic]
            .iter()
            .map(|t| dora_kafka::topics::TopicSpec {
                name: t.to_string(),
                partitions: 3,
                configs: vec![],
            })
            .collect();
    dora_kafka::topics::provision(&settings.common.kafka, &topics, 1, Duration::from_secs(30))
        .await?;

    let (grpc, bare_pairs) = grpc_vs_bare(&settings, &codec, &args).await?;
    let (derive, bare_txn) = derive_vs_bare(&settings, &codec, &args).await?;
    let line = json!({
        "bench": "report-ingest",
        "grpc_submissions_per_s": grpc, "bare_producer_submissions_per_s": bare_pairs, "grpc_ratio": grpc / bare_pairs,
        "agent_events_per_s": derive, "bare_txn_passthrough_per_s": bare_txn, "agent_ratio": derive / bare_txn,
        "submissions": args.submissions, "callers": args.callers, "events": args.events, "batch": args.batch,
        "results": [
            {"group": "gRPC submissions", "name": "report-ingest (report + audit event per call)", "rate": grpc,
             "unit": "submissions/s", "baseline": false},
            {"group": "gRPC submissions", "name": "bare FutureProducer, same records", "rate": bare_pairs,
             "unit": "submissions/s", "baseline": true},
            {"group": "agent events -> reports", "name": "report-ingest transactional loop", "rate": derive,
             "unit": "events/s", "baseline": false},
            {"group": "agent events -> reports", "name": "bare transactional pass-through", "rate": bare_txn,
             "unit": "events/s", "baseline": true},
        ],
    });
    println!("{line}");
    eprintln!("gRPC submissions: {grpc:.0}/s vs bare producer (same records) {bare_pairs:.0}/s: ratio {:.2}", grpc / bare_pairs);
    eprintln!("agent events -> reports: {derive:.0}/s vs bare transactional pass-through {bare_txn:.0}/s: ratio {:.2}", derive / bare_txn);
    Ok(())
}

fn report_ingest_registry_default() -> String {
    dora_schema::DEFAULT_REGISTRY_URL.to_string()
}

/// Submissions/s over gRPC, and the bare producer's rate on the same records.
async fn grpc_vs_bare(
    settings: &report_ingest::Settings,
    codec: &Codec,
    args: &Args,
) -> anyhow::Result<(f64, f64)> {
    let key = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let mut settings = settings.clone();
    settings.ingest.grpc_listen = "127.0.0.1:0".parse()?;
    settings.ingest.auth.token_key = Some(key.clone().into_bytes().into());
    settings.consumer.group_id = unique("bench-report-ingest");
    settings.consumer.transactional_id = Some(unique("bench-report-ingest"));
    let announce = std::env::temp_dir().join(unique("report-bench-announce"));
    let ctx = ServiceContext::new("report-ingest").announcing_to(Some(announce.clone()));
    let service = tokio::spawn(report_ingest::run(settings.clone(), ctx.clone()));
    let addr = loop {
        let text = std::fs::read_to_string(&announce).unwrap_or_default();
        if let Some((_, a)) = dora_telemetry::read_announcements(&text)
            .into_iter()
            .find(|(n, _)| n == "grpc")
        {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let token = dora_auth::TokenKey::new(key.as_bytes())?.issue(
        &dora_auth::Grant::new("bench", "report-ingest", Duration::from_secs(3600))
            .with_org("org-bench"),
    )?;
    let data = json!({"framework": "DORA", "gaps": [{"article": "Art. 11", "status": "missing"}]})
        .to_string();
    let next = Arc::new(AtomicU64::new(0));
    let channels: Vec<_> = futures_channels(&format!("http://{addr}"), 8).await?;
    let started = Instant::now();
    let mut callers = Vec::new();
    for i in 0..args.callers {
        let mut c = client::with_token(channels[i % channels.len()].clone(), &token)?;
        let (next, data, n) = (next.clone(), data.clone(), args.submissions);
        callers.push(tokio::spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= n {
                    return anyhow::Ok(());
                }
                c.submit_gap_assessment(client::gap_request(
                    "org-bench",
                    &data,
                    &format!("req-{k}"),
                ))
                .await?;
            }
        }));
    }
    for c in callers {
        c.await??;
    }
    let grpc = args.submissions as f64 / started.elapsed().as_secs_f64();
    ctx.shutdown.cancel();
    service.await??;

    // The same records: a report and an audit event per submission, encoded as the service does.
    let a = report_ingest::assessment::Assessment::gap(
        ("o", "org-bench"),
        serde_json::from_str(&data)?,
        "d",
        &Default::default(),
    )?;
    let mut records: Vec<RawRecord> = Vec::new();
    for k in 0..args.submissions {
        let id = report_ingest::assessment::submitted_report_id(
            "bench",
            dora_schema::ReportType::GapAssessment,
            "org-bench",
            &format!("req-{k}"),
        );
        let report = a.report(id, chrono::Utc::now().timestamp_millis());
        records.push((
            settings.ingest.gap_topic.clone(),
            "org-bench".into(),
            codec.encode(&settings.ingest.gap_topic, &report).await?,
        ));
        let audit = dora_kafka::audit::user_activity(
            "bench",
            "SUBMIT_GAP_ASSESSMENT",
            &report.report_id,
            json!({"request_id": k}),
            chrono::Utc::now(),
        );
        let bucket = dora_kafka::audit::hour_bucket(chrono::Utc::now());
        records.push((
            settings.ingest.audit_topic.clone(),
            bucket,
            codec.encode(&settings.ingest.audit_topic, &audit).await?,
        ));
    }
    let bare = baseline::produce_all(&settings.common.kafka, &settings.producer, &records).await?;
    Ok((grpc, args.submissions as f64 / bare.as_secs_f64()))
}

async fn futures_channels(url: &str, n: usize) -> anyhow::Result<Vec<tonic::transport::Channel>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(client::connect(url).await?);
    }
    Ok(out)
}

/// Counts transformed records and notes when `expected` are about to commit.
struct Timed<T> {
    inner: T,
    seen: AtomicU64,
    first: std::sync::OnceLock<Instant>,
    last: std::sync::Mutex<Option<Instant>>,
    expected: u64,
}

impl<T: Transform> Transform for Timed<T> {
    async fn transform(&self, record: &Record) -> Result<Vec<OutboundRecord>, HandlerError> {
        self.first.get_or_init(Instant::now);
        let out = self.inner.transform(record).await?;
        self.seen.fetch_add(1, Ordering::SeqCst);
        Ok(out)
    }
    async fn before_commit(&self) -> Result<(), HandlerError> {
        if self.seen.load(Ordering::SeqCst) >= self.expected {
            self.last
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert_with(Instant::now);
        }
        Ok(())
    }
}

/// Agent events/s through the service's transactional path, and the bare pass-through's.
async fn derive_vs_bare(
    settings: &report_ingest::Settings,
    codec: &Codec,
    args: &Args,
) -> anyhow::Result<(f64, f64)> {
    let s = &settings.ingest;
    let mut input: Vec<RawRecord> = Vec::new();
    for k in 0..args.events {
        let event = dora_schema::AgentEvent {
            event_id: uuid::Uuid::new_v4().to_string(),
            agent_id: format!("bench-agent-{}", k % 32),
            timestamp: chrono::Utc::now().timestamp_millis(),
            event_type: dora_schema::EventType::TaskCompleted,
            agent_type: "RISK_ASSESSOR".into(),
            status: dora_schema::AgentStatus::Healthy,
            version: "1.0.0".into(),
            message: None,
            metadata: json!({"result_summary": {"organization_id": format!("org-{}", k % 7), "assessment": {"overall_score": 0.42, "risk_level": "MEDIUM"}}}),
            task_id: Some(format!("task-{k}")),
        };
        input.push((
            s.events_topic.clone(),
            event.agent_id.clone(),
            codec.encode(&s.events_topic, &event).await?,
        ));
    }
    baseline::produce_all(&settings.common.kafka, &settings.producer, &input).await?;

    // Bare: copy every event to a topic of its own, in transactions of `batch`.
    let out = unique("bench-passthrough");
    dora_kafka::topics::provision(
        &settings.common.kafka,
        &[dora_kafka::topics::TopicSpec {
            name: out.clone(),
            partitions: 3,
            configs: vec![],
        }],
        1,
        Duration::from_secs(30),
    )
    .await?;
    let cs = ConsumerSettings {
        group_id: unique("bench-bare"),
        fetch_min_bytes: 1,
        ..settings.consumer.clone()
    };
    let (kafka, ps, input_topic, n, batch) = (
        settings.common.kafka.clone(),
        settings.producer.clone(),
        s.events_topic.clone(),
        args.events,
        args.batch,
    );
    let txn = unique("bench-bare-txn");
    let bare = tokio::task::spawn_blocking(move || {
        baseline::transactional_passthrough(&kafka, &cs, &ps, &txn, (&input_topic, &out), n, batch)
    })
    .await??;

    // The service's path: its transform in its consume loop, same batch size.
    let ctx = ServiceContext::new("report-ingest");
    let producer = dora_kafka::Producer::new(
        &settings.common.kafka,
        &settings.producer,
        ctx.name,
        &ctx.readiness,
    )?;
    let audit =
        dora_kafka::audit::AuditProducer::with_topic(producer, codec.clone(), &s.audit_topic);
    let timed = Arc::new(Timed {
        inner: report_ingest::derive::ReportDeriver::new(
            codec.clone(),
            audit,
            s.report_topics(),
            s.limits(),
        ),
        seen: AtomicU64::new(0),
        first: Default::default(),
        last: Default::default(),
        expected: args.events,
    });
    let cs = ConsumerSettings {
        group_id: unique("bench-derive"),
        transactional_id: Some(unique("bench-derive-txn")),
        max_batch_records: args.batch as usize,
        ..settings.consumer.clone()
    };
    let run = ConsumeLoop::new(&settings.common.kafka, &cs, &ctx, Arc::new(codec.clone()))
        .topics(&[s.events_topic.as_str()])
        .producer_settings(&settings.producer)
        .run_transactional(timed.clone());
    let task = tokio::spawn(run);
    let elapsed = loop {
        if let (Some(first), Some(last)) = (
            timed.first.get(),
            *timed.last.lock().unwrap_or_else(|p| p.into_inner()),
        ) {
            break last - *first;
        }
        anyhow::ensure!(!task.is_finished(), "the consume loop stopped early");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    ctx.shutdown.cancel();
    task.await?.context("consume loop")?;
    Ok((
        args.events as f64 / elapsed.as_secs_f64(),
        args.events as f64 / bare.as_secs_f64(),
    ))
}
