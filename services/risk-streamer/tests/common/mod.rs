//! Shared harness of risk-streamer's integration tests: per test its own
//! input, alerts and dead-letter topics; risk-streamer runs as a real
//! process with a short window (event time driven by the timestamps the test
//! sets on the records it produces); alerts are read back `read_committed`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use dora_kafka::KafkaSettings;
use dora_schema::{
    Codec, ComplianceReport, DeadLetter, RegistrySettings, ReportType, RiskAlert, RiskAlertState,
};
use dora_testkit as tk;
use serde_json::json;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_risk-streamer");

/// Window of the tests (unless a test sets its own), ms.
pub const WINDOW_MS: i64 = 6_000;
/// Allowed lateness of the tests (unless a test sets its own), ms.
pub const LATENESS_MS: i64 = 1_000;

/// One test's world: topics, a group, the codec.
#[derive(Clone)]
pub struct Harness {
    pub kafka: KafkaSettings,
    pub input: String,
    pub alerts: String,
    pub group: String,
    pub codec: Codec,
    /// The window the service runs with, ms.
    pub window_ms: i64,
    /// The allowed lateness the service runs with, ms.
    pub lateness_ms: i64,
}

/// A risk assessment to produce.
#[derive(Clone, Debug)]
pub struct Assessment {
    pub org: String,
    pub timestamp_ms: i64,
    pub score: Option<f64>,
    pub report_id: String,
    /// Input partition; `None`: by key.
    pub partition: Option<i32>,
}

/// An assessment of `org` at `timestamp_ms`.
pub fn assessment(org: &str, timestamp_ms: i64, score: f64) -> Assessment {
    Assessment {
        org: org.into(),
        timestamp_ms,
        score: Some(score),
        report_id: format!("{org}-{timestamp_ms}"),
        partition: None,
    }
}

/// What a transition says, without wall-clock fields (produced at, detected at).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seen {
    pub state: String,
    pub window_end: i64,
    pub samples: i32,
    pub average_micros: i64,
    pub top: Vec<String>,
}

impl Harness {
    /// Fresh topics: the input with `partitions` partitions and its DLQ, the alerts topic.
    pub async fn new(partitions: i32) -> Result<Self> {
        let kafka = tk::kafka();
        let input = tk::unique("risk-assessments");
        let alerts = tk::unique("risk-alerts");
        tk::create_topic(&kafka, &input, partitions).await?;
        tk::create_topic(&kafka, &format!("{input}-dlq"), 1).await?;
        tk::create_topic(&kafka, &alerts, 3).await?;
        let codec = Codec::new(&RegistrySettings {
            url: tk::registry_url(),
            ..Default::default()
        })?;
        Ok(Self {
            kafka,
            input,
            alerts,
            group: tk::unique("risk-streamer"),
            codec,
            window_ms: WINDOW_MS,
            lateness_ms: LATENESS_MS,
        })
    }

    /// The same with another window and lateness, ms.
    pub fn with_window(mut self, window_ms: i64, lateness_ms: i64) -> Self {
        self.window_ms = window_ms;
        self.lateness_ms = lateness_ms;
        self
    }

    /// Another alerts topic and group on the same input (a reference run).
    pub async fn reference(&self) -> Result<Self> {
        let alerts = tk::unique("risk-alerts-ref");
        tk::create_topic(&self.kafka, &alerts, 3).await?;
        Ok(Self {
            kafka: self.kafka.clone(),
            input: self.input.clone(),
            alerts,
            group: tk::unique("risk-streamer-ref"),
            codec: self.codec.clone(),
            window_ms: self.window_ms,
            lateness_ms: self.lateness_ms,
        })
    }

    /// The service's environment: this test's topics and group, the short
    /// window, and `transactional_id`. `tick_ms` 0 turns the quiet check off
    /// (an hour) for tests whose outcome must not depend on wall-clock time.
    pub fn env(&self, transactional_id: &str, tick_ms: u64) -> Vec<(&'static str, String)> {
        vec![
            ("DORA_RISK__ASSESSMENTS_TOPIC", self.input.clone()),
            ("DORA_RISK__ALERTS_TOPIC", self.alerts.clone()),
            ("DORA_RISK__WINDOW_MS", self.window_ms.to_string()),
            (
                "DORA_RISK__ALLOWED_LATENESS_MS",
                self.lateness_ms.to_string(),
            ),
            (
                "DORA_RISK__TICK_MS",
                if tick_ms == 0 { 3_600_000 } else { tick_ms }.to_string(),
            ),
            ("DORA_CONSUMER__GROUP_ID", self.group.clone()),
            (
                "DORA_CONSUMER__TRANSACTIONAL_ID",
                transactional_id.to_string(),
            ),
            ("DORA_CONSUMER__FETCH_MIN_BYTES", "1".into()),
            ("DORA_CONSUMER__MAX_BATCH_WAIT_MS", "50".into()),
            ("DORA_CONSUMER__SESSION_TIMEOUT_MS", "6000".into()),
            ("DORA_PRODUCER__LINGER_MS", "1".into()),
        ]
    }

    /// Starts risk-streamer and waits until it is ready.
    pub async fn spawn(&self, transactional_id: &str, tick_ms: u64) -> Result<tk::ServiceProcess> {
        tk::ServiceProcess::spawn(BIN, &self.env(transactional_id, tick_ms)).await
    }

    /// Starts risk-streamer without waiting for it to be ready.
    pub fn start(&self, transactional_id: &str, tick_ms: u64) -> Result<tk::ServiceProcess> {
        tk::ServiceProcess::start(BIN, &self.env(transactional_id, tick_ms))
    }

    /// The Avro value of an assessment.
    pub async fn avro(&self, a: &Assessment) -> Result<Vec<u8>> {
        Ok(self.codec.encode(&self.input, &report(a)).await?)
    }

    /// The seed's JSON value of an assessment (`json.dumps` of its dict).
    pub fn seed_json(a: &Assessment) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "reportId": a.report_id,
            "organizationId": a.org,
            "timestamp": a.timestamp_ms,
            "reportType": "RISK_ASSESSMENT",
            "riskScore": a.score,
            "riskLevel": "high",
            "data": {"overall_score": a.score, "risk_level": "high"},
            "version": "1.0",
        }))
        .expect("JSON")
    }

    /// Produces Avro assessments in order, each with its timestamp.
    pub async fn produce(&self, assessments: &[Assessment]) -> Result<()> {
        let mut records = Vec::with_capacity(assessments.len());
        for a in assessments {
            records.push(outgoing(a, self.avro(a).await?));
        }
        tk::produce_records(&self.kafka, &self.input, &records).await
    }

    /// Produces raw values (e.g. the seed's JSON, or garbage) as given.
    pub async fn produce_raw(&self, records: &[tk::Outgoing]) -> Result<()> {
        tk::produce_records(&self.kafka, &self.input, records).await
    }

    /// Every committed alert, decoded, in partition-then-offset order.
    pub async fn committed_alerts(&self) -> Result<Vec<RiskAlert>> {
        let mut out = Vec::new();
        for r in tk::read_committed(&self.kafka, &self.alerts).await? {
            let payload = r.payload().context("alert without value")?;
            out.push(
                self.codec
                    .decode::<RiskAlert>(&self.alerts, payload)
                    .await?,
            );
        }
        Ok(out)
    }

    /// Per organisation, its committed transitions in order.
    pub async fn transitions(&self) -> Result<BTreeMap<String, Vec<Seen>>> {
        Ok(by_org(&self.committed_alerts().await?))
    }

    /// Waits until `check` holds for the committed transitions.
    pub async fn wait_transitions(
        &self,
        what: &str,
        check: impl Fn(&BTreeMap<String, Vec<Seen>>) -> bool,
    ) -> Result<BTreeMap<String, Vec<Seen>>> {
        let last = std::sync::Mutex::new(BTreeMap::new());
        let result = tk::eventually(tk::DEADLINE, || async {
            let t = self.transitions().await.ok()?;
            let done = check(&t);
            *last.lock().unwrap() = t.clone();
            done.then_some(t)
        })
        .await;
        result.with_context(|| format!("waiting for {what}; last seen {:?}", last.lock().unwrap()))
    }

    /// Waits until the group committed every input record (the end of each partition).
    pub async fn wait_all_committed(&self, group: &str) -> Result<()> {
        let ends =
            dora_kafka::topics::watermarks(&self.kafka, &self.input, Duration::from_secs(10))
                .await?;
        tk::eventually(tk::DEADLINE * 2, || async {
            for (p, _, high) in &ends {
                let c = tk::committed_offset(&self.kafka, group, &self.input, *p)
                    .await
                    .ok()?;
                if c.unwrap_or(0) < *high {
                    return None;
                }
            }
            Some(())
        })
        .await
        .with_context(|| format!("group {group} did not commit every input record"))
    }

    /// The dead letters written for the input topic.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        let topic = format!("{}-dlq", self.input);
        let mut out = Vec::new();
        for r in tk::read_all(&self.kafka, &topic).await? {
            out.push(
                self.codec
                    .decode::<DeadLetter>(&topic, r.payload().unwrap_or_default())
                    .await?,
            );
        }
        Ok(out)
    }
}

fn report(a: &Assessment) -> ComplianceReport {
    ComplianceReport {
        report_id: a.report_id.clone(),
        organization_id: a.org.clone(),
        timestamp: a.timestamp_ms,
        report_type: ReportType::RiskAssessment,
        risk_score: a.score,
        risk_level: None,
        data: json!({"overall_score": a.score}),
        version: "1.0".into(),
    }
}

/// A record of `a` with `value`, its timestamp and partition.
pub fn outgoing(a: &Assessment, value: Vec<u8>) -> tk::Outgoing {
    tk::Outgoing {
        key: a.org.clone(),
        value,
        timestamp_ms: Some(a.timestamp_ms),
        partition: a.partition,
    }
}

/// Per organisation, its transitions in order.
pub fn by_org(alerts: &[RiskAlert]) -> BTreeMap<String, Vec<Seen>> {
    let mut out: BTreeMap<String, Vec<Seen>> = BTreeMap::new();
    for a in alerts {
        out.entry(a.organization_id.clone())
            .or_default()
            .push(Seen {
                state: a.state.to_string(),
                window_end: a.window_end,
                samples: a.sample_count,
                average_micros: (a.average_risk_score * 1e6).round() as i64,
                top: a.top_report_ids.clone(),
            });
    }
    out
}

/// The states of `org`'s transitions.
pub fn states(t: &BTreeMap<String, Vec<Seen>>, org: &str) -> Vec<String> {
    t.get(org)
        .map(|s| s.iter().map(|x| x.state.clone()).collect())
        .unwrap_or_default()
}

/// RAISED / CLEARED as the alert's state names them.
pub const RAISED: &str = "RAISED";
/// See [`RAISED`].
pub const CLEARED: &str = "CLEARED";

/// The symbol of a state (for readable assertions).
pub fn state_name(s: RiskAlertState) -> String {
    s.to_string()
}

/// A metric of a running process.
pub async fn metric(p: &tk::ServiceProcess, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
    let (_, body) = p.admin_get("/metrics").await?;
    Ok(tk::metric_value(&body, name, labels).unwrap_or(0.0))
}

/// Now, epoch ms.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Scores of `org` every `step_ms` from `from` to `to` (exclusive).
pub fn steady(org: &str, from: i64, to: i64, step_ms: i64, score: f64) -> Vec<Assessment> {
    (0..)
        .map(|k| from + k * step_ms)
        .take_while(|t| *t < to)
        .map(|t| assessment(org, t, score))
        .collect()
}
