//! The benchmark behind `risk-bench` (a command, not a test), in one run on
//! one broker:
//!
//! 1. **Memory** for `--orgs` organisations (default 100 000) with a few
//!    assessments each in their windows, in process: resident memory before
//!    and after, and the windows' own estimate; plus the bound per
//!    organisation when a score arrives in every second of its window.
//! 2. **Live**: the same backlog of Avro risk assessments (5 minutes of event
//!    time over every organisation) consumed by the service's own consume
//!    loop and transform (window, alerts, transactions every `--batch`
//!    records) and by a bare rdkafka loop that reads, decodes and commits the
//!    same records in transactions of the same size
//!    (`dora_kafka::baseline::transactional_decode_commit`): assessments/s
//!    and their ratio.
//! 3. **Rebuild**: the service restarted on the same group replays those 5
//!    minutes of input (the whole backlog) before it goes on: how long, and
//!    how many times faster than the 5 minutes the input took to arrive.

use std::time::{Duration, Instant};

use dora_kafka::baseline::{self, RawRecord};
use dora_kafka::consume::ConsumerSettings;
use dora_kafka::topics::TopicSpec;
use dora_schema::{AvroRecord, Codec, ComplianceReport, ReportType};
use dora_telemetry::ServiceContext;
use serde::Serialize;
use serde_json::json;

use crate::partition::Observation;
use crate::settings::Settings;
use crate::state::RiskState;
use crate::window::score_of;

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Organisations.
    pub orgs: usize,
    /// Assessments per organisation over the 5 minutes.
    pub per_org: usize,
    /// Records per transaction (the loop's `max_batch_records`, the baseline's interval).
    pub batch: u64,
    /// Event time the input covers, s (the window: 300).
    pub span_secs: i64,
    /// Alternating rounds of the bare loop and the service; medians are reported.
    pub rounds: usize,
    /// Every `at_risk_every`-th organisation has a sustained breach (its alerts
    /// go into the transactions); the others stay well below the threshold.
    pub at_risk_every: usize,
}

/// Resident memory of this process, bytes.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

/// Memory of the windows.
#[derive(Debug, Serialize)]
pub struct Memory {
    /// Organisations tracked.
    pub organizations: usize,
    /// Assessments in each one's window.
    pub per_org: usize,
    /// Growth of resident memory, bytes.
    pub rss_bytes: u64,
    /// The windows' own estimate of their heap, bytes.
    pub estimate_bytes: usize,
    /// Resident bytes per organisation.
    pub rss_per_org: u64,
    /// Estimated bytes per organisation with a score in every second of its window.
    pub full_window_per_org: usize,
    /// Assessments/s through the windows and alert logic alone (no Kafka,
    /// no decoding), one transaction per round of all organisations.
    pub logic_per_s: f64,
}

fn observe(state: &mut RiskState, plan: &Plan, per_org: usize, span_ms: i64, t0: i64) {
    let orgs = plan.orgs;
    let tp = ("bench".to_string(), 0);
    let ids: Vec<String> = (0..orgs).map(|i| format!("org-{i:06}")).collect();
    for k in 0..per_org {
        for (i, org) in ids.iter().enumerate() {
            let ts = t0 + (k as i64 * span_ms + i as i64 * span_ms / orgs as i64) / per_org as i64;
            let report = format!("r-{i}-{k}");
            let obs = Observation {
                organization_id: org,
                timestamp_ms: ts,
                score: score_of(if i % plan.at_risk_every == 0 { 0.9 } else { 0.3 })
                    .unwrap_or_default(),
                report_id: &report,
            };
            state.process(&tp, &obs, 0);
        }
        state.committed();
    }
}

/// Measures the windows of `orgs` organisations in this process.
pub fn memory(settings: &Settings, plan: &Plan) -> anyhow::Result<Memory> {
    let rules = settings.risk.rules().map_err(anyhow::Error::msg)?;
    let span_ms = plan.span_secs * 1000;
    let before = rss_bytes();
    let mut state = RiskState::new(rules);
    let started = Instant::now();
    observe(&mut state, plan, plan.per_org, span_ms, 1_700_000_000_000);
    let logic_per_s = (plan.orgs * plan.per_org) as f64 / started.elapsed().as_secs_f64();
    let (rss, estimate, organizations) = (rss_bytes().saturating_sub(before), state.heap_bytes(), state.organizations());
    drop(state);
    // the bound: a score in every second of the window
    let mut full = RiskState::new(rules);
    let few = Plan { orgs: 200, ..plan.clone() };
    let full_per_org = rules.window_secs as usize;
    observe(&mut full, &few, full_per_org, rules.window_secs * 1000, 1_700_000_000_000);
    Ok(Memory {
        organizations,
        per_org: plan.per_org,
        rss_bytes: rss,
        estimate_bytes: estimate,
        rss_per_org: rss / organizations.max(1) as u64,
        full_window_per_org: full.heap_bytes() / few.orgs,
        logic_per_s,
    })
}

/// The bench's input: every organisation's assessments over `span_secs` of
/// event time ending a few seconds ago, Avro, in timestamp order.
async fn input(codec: &Codec, topic: &str, plan: &Plan) -> anyhow::Result<Vec<(RawRecord, i64)>> {
    let span_ms = plan.span_secs * 1000;
    let t0 = chrono::Utc::now().timestamp_millis() - span_ms - 5_000;
    let mut out = Vec::with_capacity(plan.orgs * plan.per_org);
    for k in 0..plan.per_org {
        for i in 0..plan.orgs {
            let ts = t0 + (k as i64 * span_ms + i as i64 * span_ms / plan.orgs as i64) / plan.per_org as i64;
            let report = ComplianceReport {
                report_id: format!("r-{i}-{k}"),
                organization_id: format!("org-{i:06}"),
                timestamp: ts,
                report_type: ReportType::RiskAssessment,
                risk_score: Some(if i % plan.at_risk_every == 0 {
                    0.9
                } else {
                    0.1 + (i % 50) as f64 / 100.0
                }),
                risk_level: None,
                data: json!({}),
                version: "1.0".into(),
            };
            let value = codec.encode(topic, &report).await?;
            out.push(((topic.to_string(), report.organization_id, value), ts));
        }
    }
    Ok(out)
}

/// The samples of metric `name` of the default Prometheus registry (those with `label` when given).
fn samples(name: &str, label: Option<(&str, &str)>) -> Vec<prometheus::proto::Metric> {
    prometheus::gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| {
            label.is_none_or(|(k, v)| m.get_label().iter().any(|l| l.name() == k && l.value() == v))
        })
        .cloned()
        .collect()
}

/// The value of a counter of the default Prometheus registry.
fn counter(name: &str, label: Option<(&str, &str)>) -> f64 {
    samples(name, label).iter().map(|m| m.get_counter().get_value()).sum()
}

/// The sum of a histogram of the default Prometheus registry, seconds.
fn histogram_sum(name: &str, label: Option<(&str, &str)>) -> f64 {
    samples(name, label).iter().map(|m| m.get_histogram().get_sample_sum()).sum()
}

/// Waits until `counter` reaches `target`; the time from its first increment.
async fn timed_until(name: &str, label: Option<(&str, &str)>, base: f64, target: f64) -> anyhow::Result<Duration> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut first = None;
    loop {
        let v = counter(name, label) - base;
        if v > 0.0 {
            first.get_or_insert_with(Instant::now);
        }
        if v >= target {
            return Ok(first.map(|f| f.elapsed()).unwrap_or_default());
        }
        anyhow::ensure!(Instant::now() < deadline, "{name} stuck at {v} of {target}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The service's loop, running until its context is cancelled.
async fn service_run(
    settings: &Settings,
    codec: &Codec,
) -> anyhow::Result<(ServiceContext, tokio::task::JoinHandle<anyhow::Result<()>>)> {
    let ctx = ServiceContext::new("risk-streamer");
    let (consume, streamer) = crate::consume_loop(settings, codec.clone(), &ctx)?;
    let task = tokio::spawn(async move {
        consume.run_transactional(streamer).await.map_err(anyhow::Error::from)
    });
    Ok((ctx, task))
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

/// The bare loop over the whole input in a fresh group: its time.
async fn bare_round(settings: &Settings, input: &str, n: u64, batch: u64) -> anyhow::Result<Duration> {
    let consumer = ConsumerSettings {
        group_id: unique("bench-bare"),
        ..settings.consumer.clone()
    };
    let (kafka, producer, topic) = (
        settings.common.kafka.clone(),
        settings.producer.clone(),
        input.to_string(),
    );
    let took = tokio::task::spawn_blocking(move || {
        let tx = unique("bench-bare-tx");
        baseline::transactional_decode_commit(&kafka, &consumer, &producer, &tx, &topic, (n, batch), |bytes| {
            let body = bytes.get(dora_schema::HEADER_LEN..).ok_or("short value")?;
            dora_schema::decode_body::<ComplianceReport>(ComplianceReport::compiled(), body)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    })
    .await??;
    Ok(took)
}

/// What one live round of the service took and where the time went.
struct Live {
    took: Duration,
    transform_s: f64,
    window_s: f64,
}

/// The service over the whole input in a fresh group (kept in `settings`).
async fn live_round(settings: &mut Settings, codec: &Codec, n: u64) -> anyhow::Result<Live> {
    settings.consumer.group_id = unique("bench-risk-streamer");
    settings.consumer.transactional_id = Some(unique("bench-risk-streamer-tx"));
    let topic = settings.risk.assessments_topic.clone();
    let processed = Some(("topic", topic.as_str()));
    let base = counter("kafka_messages_processed_total", processed);
    let (transform0, window0) = (
        histogram_sum("kafka_processing_duration_seconds", processed),
        histogram_sum("risk_streamer_window_update_seconds", None),
    );
    let (ctx, task) = service_run(settings, codec).await?;
    let took = timed_until("kafka_messages_processed_total", processed, base, n as f64).await?;
    ctx.shutdown.cancel();
    task.await??;
    Ok(Live {
        took,
        transform_s: histogram_sum("kafka_processing_duration_seconds", processed) - transform0,
        window_s: histogram_sum("risk_streamer_window_update_seconds", None) - window0,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Runs the whole benchmark and returns its JSON line.
pub async fn run(mut settings: Settings, plan: Plan) -> anyhow::Result<serde_json::Value> {
    let memory = memory(&settings, &plan)?;
    eprintln!("memory: {memory:?}");
    let codec = Codec::new(&settings.registry)?;
    // Both sides: a transaction's offsets sent right after the previous
    // commit meet CONCURRENT_TRANSACTIONS while the coordinator writes its
    // markers, and librdkafka backs off retry.backoff.ms (100) before trying
    // again — the faster loop would pay it more often.
    settings.common.kafka.extra.insert("retry.backoff.ms".into(), "10".into());
    let kafka = settings.common.kafka.clone();
    let (input_topic, alerts_topic) = (unique("bench-risk-assessments"), unique("bench-risk-alerts"));
    let specs: Vec<TopicSpec> = [&input_topic, &alerts_topic, &format!("{input_topic}-dlq")]
        .iter()
        .map(|t| TopicSpec { name: t.to_string(), partitions: 3, configs: vec![] })
        .collect();
    dora_kafka::topics::provision(&kafka, &specs, 1, Duration::from_secs(30)).await?;
    let records = input(&codec, &input_topic, &plan).await?;
    let n = records.len() as u64;
    baseline::produce_timed(&kafka, &settings.producer, &records).await?;
    drop(records);
    settings.risk.assessments_topic = input_topic.clone();
    settings.risk.alerts_topic = alerts_topic;
    settings.risk.tick_ms = 3_600_000;
    settings.consumer.max_batch_records = plan.batch as usize;

    // alternating rounds, fresh groups: the machine's noise hits both sides
    let (mut bare, mut live) = (Vec::new(), Vec::new());
    let rss_before = rss_bytes();
    for round in 0..plan.rounds {
        let b = bare_round(&settings, &input_topic, n, plan.batch).await?;
        let l = live_round(&mut settings, &codec, n).await?;
        eprintln!(
            "round {round}: bare {:.0}/s, risk-streamer {:.0}/s (transform {:.2} s, window {:.2} s of {:.2} s)",
            n as f64 / b.as_secs_f64(),
            n as f64 / l.took.as_secs_f64(),
            l.transform_s,
            l.window_s,
            l.took.as_secs_f64()
        );
        bare.push(n as f64 / b.as_secs_f64());
        live.push(l);
    }
    let live_rss = rss_bytes().saturating_sub(rss_before);

    // rebuild: the last round's group again replays the 5 minutes before going on
    let replayed = counter("risk_streamer_replayed_records_total", None);
    let started = Instant::now();
    let (ctx, task) = service_run(&settings, &codec).await?;
    timed_until("risk_streamer_replayed_records_total", None, replayed, n as f64).await?;
    let rebuild = started.elapsed();
    ctx.shutdown.cancel();
    task.await??;

    let live_per_s: Vec<f64> = live.iter().map(|l| n as f64 / l.took.as_secs_f64()).collect();
    let (risk, bare_median) = (median(live_per_s.clone()), median(bare.clone()));
    let input_per_s = n as f64 / plan.span_secs as f64;
    let rebuild_per_s = n as f64 / rebuild.as_secs_f64();
    Ok(json!({
        "bench": "risk-streamer",
        "results": [
            {"group": "live: read, decode, transactions", "name": "risk-streamer (window + alerts)",
             "rate": risk, "unit": "records/s", "baseline": false},
            {"group": "live: read, decode, transactions", "name": "bare rdkafka read+decode+commit (transactional)",
             "rate": bare_median, "unit": "records/s", "baseline": true},
            {"group": "rebuild", "name": "replay of 5 min of input (StartAt::Rebuild)",
             "rate": rebuild_per_s, "unit": "records/s", "baseline": false},
        ],
        "records": n, "organizations": plan.orgs, "batch": plan.batch, "rounds": plan.rounds,
        "at_risk_every": plan.at_risk_every,
        "assessments_per_s": risk, "bare_decode_commit_per_s": bare_median, "ratio": risk / bare_median,
        "assessments_per_s_rounds": live_per_s, "bare_per_s_rounds": bare,
        "transform_s_rounds": live.iter().map(|l| l.transform_s).collect::<Vec<_>>(),
        "window_s_rounds": live.iter().map(|l| l.window_s).collect::<Vec<_>>(),
        "input_span_s": plan.span_secs, "input_per_s": input_per_s,
        "rebuild_s": rebuild.as_secs_f64(), "rebuild_per_s": rebuild_per_s,
        "rebuild_speedup": rebuild_per_s / input_per_s,
        "memory": memory, "live_rss_growth_bytes": live_rss,
    }))
}
