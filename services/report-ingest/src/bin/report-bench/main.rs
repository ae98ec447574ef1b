//! `report-bench`: report-ingest's two paths against bare rdkafka baselines,
//! in the same run on the same broker (`eval "$(deploy/local/stack.sh env)"`):
//!
//! 1. gRPC submissions acknowledged per second (report + audit event each,
//!    `--callers` concurrent calls over `--channels` connections, from a
//!    client process of its own: `client_load.rs`) vs a bare `FutureProducer`
//!    writing the same records flat out (`dora_kafka::baseline::produce_all_warm`:
//!    per submission its report and its audit event with the details the
//!    service records, both Avro-encoded before the clock starts, with the
//!    headers the service writes; at most `--bare-window` records awaiting
//!    their acks, its fastest setting here).
//!    The bulk row: the same client process making SubmitAssessments calls of
//!    `--bulk` submissions, `--bulk-callers` at a time, timing at least
//!    100 000 submissions, against the bare producer in `--rounds` pairs
//!    (default 5), the order alternating, the service started afresh for each
//!    (`rounds.rs`); its figures and ratio are the median round's, every
//!    round printed. A diagnostic row: the gRPC health check.
//!    A diagnostic row: the same records through the platform `Producer` by
//!    `--callers` tasks that each await both acknowledgements before the
//!    next, without gRPC (what Kafka allows a closed loop like the service's).
//!    Every row is timed warm: each caller makes [`WARM_UP_CALLS`] untimed
//!    submissions first (the producer rows send those records untimed), and
//!    the producer-only rows write the records as many times over as it takes
//!    to last long enough to time ([`MIN_PRODUCER_SUBMISSIONS`]).
//! 2. agent-events -> reports (the service's transactional consume loop and
//!    transform, every event an assessment) vs two bare transactional loops,
//!    all committing every `--batch` records: a consume -> produce
//!    pass-through (`dora_kafka::baseline::transactional_passthrough`, one
//!    record per event) and one writing the records the service writes per
//!    event, a report and an audit event
//!    (`dora_kafka::baseline::transactional_consume_produce`).
//!
//! Every row also reports the CPU its process spent per operation
//! (`cpu_us_per_op`; for gRPC the service's process and, as `grpc_client`,
//! the client's): everything shares the machine's cores with the broker, so
//! on a busy machine the ratios follow it.
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

mod baselines;
mod client_load;
mod rounds;
mod service;
use baselines::{
    closed_loop, cpu_seconds, platform_producer, provision, same_records, submission_records,
    transactional_baselines, Rate,
};
use client_load::Mode;
use serde_json::json;
use service::{bulk_only, start_service, timed_load};

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
    /// gRPC connections the callers share.
    #[arg(long, default_value_t = 8)]
    channels: usize,
    /// Records per transaction (the loop's `max_batch_records`, the baseline's commit interval).
    #[arg(long, default_value_t = 100)]
    batch: u64,
    /// A run of a few seconds that only shows everything works (`cargo xtask bench --quick`).
    #[arg(long)]
    quick: bool,
    /// linger.ms of every producer in the run, the service's and the
    /// baselines' alike (default: the service's setting, 5 ms). Each
    /// transaction of the agent path waits for it before it commits.
    #[arg(long)]
    linger_ms: Option<u32>,
    /// Internal: be the gRPC load of a report-bench run against this address.
    #[arg(long, hide = true)]
    client_of: Option<String>,
    /// Submissions per SubmitAssessments call in the bulk row.
    #[arg(long, default_value_t = 250)]
    bulk: usize,
    /// Concurrent SubmitAssessments calls in the bulk row (with `--bulk`,
    /// 8 000 submissions in flight by default; the bare producer keeps
    /// `--bare-window` records awaiting acks, its fastest setting). Fewer in
    /// flight, fewer per second: each call waits for linger.ms and the
    /// broker's acks of all its records.
    #[arg(long, default_value_t = 32)]
    bulk_callers: usize,
    /// Internal, with `--client-of`: health checks instead of submissions.
    #[arg(long, hide = true)]
    health_load: bool,
    /// Only the bulk row, no baselines (to profile the service), figures on stderr.
    #[arg(long)]
    bulk_only: bool,
    /// Internal, with `--client-of`: SubmitAssessments calls of `--bulk`.
    #[arg(long, hide = true)]
    bulk_load: bool,
    /// Records the bare producer keeps awaiting their acknowledgement (0:
    /// all of them queued at once). 1024 was its fastest here
    /// (`dora_kafka::baseline::produce_all_warm`).
    #[arg(long, default_value_t = 1024)]
    bare_window: usize,
    /// Rounds of the bulk row against the bare producer, alternating which
    /// goes first; the ratio reported is the median round's (`rounds.rs`).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

/// The gRPC path's figures.
struct GrpcFigures {
    /// The service's rate; CPU: the service's process alone.
    grpc: Rate,
    /// CPU µs per submission of the client process.
    client_cpu_us: f64,
    /// Health checks over the same connections from the same client: the
    /// gRPC stack's own rate and service CPU per unary call.
    health: Rate,
    /// SubmitAssessments of `--bulk` submissions: submissions/s, service CPU per submission.
    bulk: Rate,
    /// CPU µs per submission of the bulk client process.
    bulk_client_cpu_us: f64,
    /// The bare producer's rate in the median round.
    bare: Rate,
    /// Every round of the bulk row against the bare producer.
    rounds: Vec<rounds::Round>,
    closed_loop: Rate,
}

/// The agent path's figures.
struct AgentFigures {
    service: Rate,
    passthrough: Rate,
    same_records: Rate,
}

/// Untimed calls each gRPC caller makes before the clock starts (the bare
/// producer and the closed loop send the same number of submissions' records
/// untimed first).
pub const WARM_UP_CALLS: usize = 2;

/// Submissions the producer-only rows time at least: `--submissions`
/// written as many times over as it takes (a bare producer writes 20 000
/// submissions' records in about 0.1 s here; a longer phase times the
/// producer, not the scheduler's noise).
const MIN_PRODUCER_SUBMISSIONS: u64 = 200_000;

/// Submissions the bulk row times: `--submissions`, at least
/// [`MIN_PRODUCER_SUBMISSIONS`] / 2 (unless `--quick`), in whole calls.
fn bulk_submissions(args: &Args) -> u64 {
    let bulk = args.bulk.max(1) as u64;
    let n = match args.quick {
        true => args.submissions,
        false => args.submissions.max(MIN_PRODUCER_SUBMISSIONS / 2),
    };
    n.div_ceil(bulk) * bulk
}

/// How many times the producer-only rows write the `submissions` records.
fn passes(submissions: u64) -> usize {
    MIN_PRODUCER_SUBMISSIONS.div_ceil(submissions.max(1)) as usize
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
    if let Some(addr) = &args.client_of {
        return client_load::serve_load(addr, &args).await;
    }
    args.quick |= std::env::var("DORA_BENCH_QUICK").is_ok_and(|v| v == "1");
    if args.quick {
        (args.submissions, args.events, args.callers, args.rounds) = (300, 500, 16, 1);
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
    if let Some(linger) = args.linger_ms {
        settings.producer.linger_ms = linger;
    }
    let s = &mut settings.ingest;
    for (field, prefix) in [
        (&mut s.events_topic, "bench-events"),
        (&mut s.gap_topic, "bench-gap"),
        (&mut s.risk_topic, "bench-risk"),
        (&mut s.audit_topic, "bench-audit"),
    ] {
        *field = unique(prefix);
    }
    let topics = [&s.events_topic, &s.gap_topic, &s.risk_topic, &s.audit_topic].map(|t| t.clone());
    provision(&settings, &topics.iter().collect::<Vec<_>>()).await?;

    if args.bulk_only {
        return bulk_only(&settings, &args).await;
    }
    let g = grpc_vs_bare(&settings, &codec, &args).await?;
    let a = derive_vs_bare(&settings, &codec, &args).await?;
    let row = |group: &str, name: &str, r: Rate, unit: &str, baseline: bool| json!({"group": group, "name": name, "rate": r.per_s, "unit": unit, "baseline": baseline});
    let (gs, ae) = ("gRPC submissions", "agent events -> reports");
    let line = json!({
        "bench": "report-ingest",
        "grpc_submissions_per_s": g.grpc.per_s, "bare_producer_submissions_per_s": g.bare.per_s,
        "grpc_ratio": g.grpc.per_s / g.bare.per_s,
        "closed_loop_submissions_per_s": g.closed_loop.per_s,
        "grpc_health_checks_per_s": g.health.per_s, "grpc_health_ratio": g.health.per_s / g.bare.per_s,
        "grpc_bulk_submissions_per_s": g.bulk.per_s, "grpc_bulk_ratio": g.bulk.per_s / g.bare.per_s,
        "grpc_bulk_rounds": g.rounds.iter().map(|r| json!({"bulk_per_s": r.bulk.per_s, "bulk_cpu_us": r.bulk.cpu_us, "bare_per_s": r.bare.per_s, "bare_cpu_us": r.bare.cpu_us, "ratio": r.ratio()})).collect::<Vec<_>>(),
        "agent_events_per_s": a.service.per_s, "bare_txn_passthrough_per_s": a.passthrough.per_s,
        "agent_ratio": a.service.per_s / a.passthrough.per_s,
        "bare_txn_same_records_per_s": a.same_records.per_s,
        "agent_ratio_same_records": a.service.per_s / a.same_records.per_s,
        "cpu_us_per_op": {"grpc": g.grpc.cpu_us, "grpc_client": g.client_cpu_us, "grpc_health_check": g.health.cpu_us, "grpc_bulk": g.bulk.cpu_us, "grpc_bulk_client": g.bulk_client_cpu_us, "bare_producer": g.bare.cpu_us, "closed_loop": g.closed_loop.cpu_us,
            "agent_loop": a.service.cpu_us, "bare_passthrough": a.passthrough.cpu_us, "bare_same_records": a.same_records.cpu_us},
        "rounds": args.rounds, "bare_window": args.bare_window, "linger_ms": settings.producer.linger_ms, "submissions": args.submissions, "callers": args.callers, "bulk": args.bulk, "bulk_callers": args.bulk_callers, "channels": args.channels, "events": args.events, "batch": args.batch,
        "results": [
            row(gs, "report-ingest (report + audit event per call)", g.grpc, "submissions/s", false),
            row(gs, &format!("report-ingest SubmitAssessments, {} submissions per call, {} calls at a time", args.bulk, args.bulk_callers), g.bulk, "submissions/s", false),
            row(gs, "platform Producer, same records, callers awaiting both acks, no gRPC", g.closed_loop, "submissions/s", false),
            row(gs, "gRPC health checks, same client and server (a unary call with nothing behind it)", g.health, "calls/s", false),
            row(gs, "bare FutureProducer, same records", g.bare, "submissions/s", true),
            row(ae, "report-ingest transactional loop", a.service, "events/s", false),
            row(ae, "bare transactional pass-through", a.passthrough, "events/s", true),
            row(ae, "bare transactional loop writing the same records (report + audit event)", a.same_records, "events/s", true),
        ],
    });
    println!("{line}");
    let show =
        |what: &str, r: Rate| eprintln!("{what}: {:.0}/s, {:.1} us CPU per op", r.per_s, r.cpu_us);
    show("gRPC submissions (report-ingest)", g.grpc);
    eprintln!(
        "  client process: {:.1} us CPU per submission",
        g.client_cpu_us
    );
    show(
        "  platform Producer, same records, closed loop, no gRPC",
        g.closed_loop,
    );
    show(
        "  gRPC health checks, same client and server, no Kafka",
        g.health,
    );
    show("  SubmitAssessments (bulk, the median round)", g.bulk);
    eprintln!(
        "    client process: {:.1} us CPU per submission",
        g.bulk_client_cpu_us
    );
    show("  bare FutureProducer, same records (baseline, the median round)", g.bare);
    let ratios: Vec<String> = g.rounds.iter().map(|r| format!("{:.3}", r.ratio())).collect();
    eprintln!(
        "  ratio {:.2} (unary), {:.2} (bulk: the median of {} rounds: {})",
        g.grpc.per_s / g.bare.per_s,
        g.bulk.per_s / g.bare.per_s,
        g.rounds.len(),
        ratios.join(" ")
    );
    show("agent events -> reports (report-ingest)", a.service);
    show(
        "  bare transactional pass-through (baseline)",
        a.passthrough,
    );
    show(
        "  bare transactional loop, same records (baseline)",
        a.same_records,
    );
    eprintln!(
        "  ratios {:.2} (pass-through), {:.2} (same records)",
        a.service.per_s / a.passthrough.per_s,
        a.service.per_s / a.same_records.per_s
    );
    Ok(())
}

fn report_ingest_registry_default() -> String {
    dora_schema::DEFAULT_REGISTRY_URL.to_string()
}

/// Submissions/s over gRPC, the bare producer's rate on the same records, and
/// the platform producer's in a closed loop without gRPC.
async fn grpc_vs_bare(
    settings: &report_ingest::Settings,
    codec: &Codec,
    args: &Args,
) -> anyhow::Result<GrpcFigures> {
    let (settings, service) = start_service(settings).await?;
    let (addr, token) = (&service.addr, &service.token);
    // The calls come from a process of their own, warmed up before the clock starts.
    let (grpc, client_cpu_us) = timed_load(addr, token, args, Mode::Unary).await?;
    // The same number of health checks: a unary call through the same stack, nothing behind it.
    let (health, _) = timed_load(addr, token, args, Mode::Health).await?;
    service.stop().await?;

    let warm_up = (args.callers * WARM_UP_CALLS) as u64;
    let records = submission_records(&settings, codec, warm_up, args.submissions).await?;
    let (warm, timed) = records.split_at(2 * warm_up as usize);
    let passes = if args.quick {
        1
    } else {
        passes(args.submissions)
    };
    // The bulk row and the bare producer, `--rounds` times, alternating.
    let rounds = rounds::bulk_vs_bare(&settings, args, (warm, timed, passes)).await?;
    let median = rounds::median_round(&rounds);
    let (closed, closed_cpu) = closed_loop(&settings, records, args, passes).await?;
    Ok(GrpcFigures {
        grpc,
        client_cpu_us,
        health,
        bulk: median.bulk,
        bulk_client_cpu_us: median.bulk_client_cpu_us,
        bare: median.bare,
        rounds,
        closed_loop: Rate {
            per_s: closed,
            cpu_us: closed_cpu,
        },
    })
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

/// Agent events/s through the service's transactional path, and the two bare loops'.
async fn derive_vs_bare(
    settings: &report_ingest::Settings,
    codec: &Codec,
    args: &Args,
) -> anyhow::Result<AgentFigures> {
    let s = &settings.ingest;
    let mut input: Vec<RawRecord> = Vec::new();
    // What the service writes per event (its report and audit event), for the
    // baseline that writes the same records.
    let (same_risk, same_audit) = (unique("bench-same-risk"), unique("bench-same-audit"));
    let mut same: Vec<[RawRecord; 2]> = Vec::new();
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
        same.push(same_records(codec, &event, (&same_risk, &same_audit), k).await?);
    }
    baseline::produce_all(&settings.common.kafka, &settings.producer, &input).await?;

    let (passthrough, same_records) = transactional_baselines(settings, args, same).await?;
    let cpu0 = cpu_seconds();

    // The service's path: its transform in its consume loop, same batch size.
    let ctx = ServiceContext::new("report-ingest");
    let producer = platform_producer(settings, &ctx)?;
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
    let cpu_us = (cpu_seconds() - cpu0) * 1e6 / args.events as f64;
    ctx.shutdown.cancel();
    task.await?.context("consume loop")?;
    Ok(AgentFigures {
        service: Rate {
            per_s: args.events as f64 / elapsed.as_secs_f64(),
            cpu_us,
        },
        passthrough,
        same_records,
    })
}
