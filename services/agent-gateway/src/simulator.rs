//! The agent simulator: N simulated agents of several types, each on its own
//! `StreamEvents` stream, sending heartbeats with resource usage, task starts
//! and completions whose results carry gap or risk assessments, and the odd
//! error, at a configured total rate for a configured duration. It measures
//! acknowledged events, rejections and ack latency.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dora_proto::agent::v1 as pb;
use dora_proto::agent::v1::agent_gateway_client::AgentGatewayClient;
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::auth::TokenKey;

/// The agent types the simulator plays, in turn.
pub const AGENT_TYPES: &[&str] = &[
    "GAP_ANALYZER",
    "RISK_ASSESSOR",
    "COMPLIANCE_MONITOR",
    "INCIDENT_REPORTER",
];

/// The organisations simulated assessments are about; the first
/// `high_risk` of them are assessed with sustained risk above 0.8 (so
/// risk-streamer has something to alert on), the others below 0.75.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organizations {
    /// Organisation ids.
    pub names: Vec<String>,
    /// How many of `names` (from the first) are high-risk.
    pub high_risk: usize,
}

impl Default for Organizations {
    /// `org-0` .. `org-6`, of which `org-0` and `org-1` are high-risk.
    fn default() -> Self {
        Self {
            names: (0..7).map(|i| format!("org-{i}")).collect(),
            high_risk: 2,
        }
    }
}

impl Organizations {
    /// The organisation of an agent's `task`-th task, and whether it is high-risk.
    fn pick(&self, agent_id: &str, task: u64) -> (&str, bool) {
        let seed = agent_id
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        let i = (seed.wrapping_add(task) % self.names.len().max(1) as u64) as usize;
        match self.names.get(i) {
            Some(name) => (name, i < self.high_risk),
            None => ("org-0", false),
        }
    }
}

/// The result of a completed task: an assessment in the shape report-ingest
/// reads (`organization_id` + `assessment`, the seed's snake_case keys; see
/// services/report-ingest/src/derive.rs); other agent types report a summary.
fn task_result(
    agent_id: &str,
    agent_type: &str,
    task: u64,
    rng: &mut impl Rng,
    orgs: &Organizations,
) -> serde_json::Value {
    let (org, high_risk) = orgs.pick(agent_id, task);
    match agent_type {
        "RISK_ASSESSOR" => {
            let score: f64 = if high_risk {
                rng.random_range(0.82..0.98)
            } else {
                rng.random_range(0.05..0.75)
            };
            let level = match score {
                s if s > 0.9 => "CRITICAL",
                s if s > 0.8 => "HIGH",
                s if s > 0.5 => "MEDIUM",
                _ => "LOW",
            };
            let third_party = (score * 100.0).round() / 100.0;
            serde_json::json!({"organization_id": org, "assessment": {
                "overall_score": score, "risk_level": level,
                "factors": {"third_party": third_party, "ict_incidents": rng.random_range(0.0..1.0f64)}}})
        }
        "GAP_ANALYZER" => {
            let article = |rng: &mut _| format!("Art. {}", Rng::random_range(rng, 5..=45));
            serde_json::json!({"organization_id": org, "assessment": {
                "framework": "DORA", "gaps_found": 2,
                "gaps": [{"article": article(rng), "status": "partial"}, {"article": article(rng), "status": "missing"}]}})
        }
        _ => serde_json::json!({"checks_run": rng.random_range(1..50), "organization_id": org}),
    }
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimulationPlan {
    /// gRPC address of the gateway, e.g. `http://127.0.0.1:50051`.
    pub gateway: String,
    /// Number of agents (one stream each).
    pub agents: usize,
    /// Agent ids are `<prefix>-<n>`.
    pub agent_prefix: String,
    /// Total events per second over all agents; 0 = as fast as acks allow.
    pub rate: f64,
    /// How long to send.
    pub duration: Duration,
    /// Events a stream may have waiting for acks.
    pub window: usize,
    /// Fraction of task completions followed by an error report.
    pub error_ratio: f64,
    /// The organisations assessments are about.
    pub organizations: Organizations,
}

/// What happened.
#[derive(Debug)]
pub struct SimulationReport {
    /// Events acknowledged by the gateway (the broker had them).
    pub acked: u64,
    /// Events rejected, by gRPC code name.
    pub rejected: BTreeMap<String, u64>,
    /// Streams that failed as a whole, with the reason.
    pub stream_failures: Vec<String>,
    /// Ack latency in microseconds.
    pub latency_us: Histogram<u64>,
    /// Wall time from first send to last ack.
    pub elapsed: Duration,
    /// Acknowledged events per agent id, in id order.
    pub per_agent: BTreeMap<String, u64>,
}

impl SimulationReport {
    /// Acknowledged events per second.
    pub fn rate(&self) -> f64 {
        self.acked as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A latency percentile in milliseconds.
    pub fn latency_ms(&self, percentile: f64) -> f64 {
        self.latency_us.value_at_quantile(percentile / 100.0) as f64 / 1_000.0
    }

    /// Human-readable summary.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "acknowledged events: {}\nrate: {:.0} events/s over {:.1} s\nlatency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}\n",
            self.acked,
            self.rate(),
            self.elapsed.as_secs_f64(),
            self.latency_ms(50.0),
            self.latency_ms(90.0),
            self.latency_ms(99.0),
            self.latency_us.max() as f64 / 1_000.0,
        );
        if self.rejected.is_empty() {
            s.push_str("errors: none\n");
        } else {
            for (code, n) in &self.rejected {
                s.push_str(&format!("errors: {n} x {code}\n"));
            }
        }
        for f in &self.stream_failures {
            s.push_str(&format!("stream failed: {f}\n"));
        }
        s
    }
}

/// Connects to the gateway.
pub async fn connect(gateway: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(gateway.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?)
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Debug, Clone)]
pub struct BearerToken(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// A gateway client that authenticates with a bearer token.
pub type AuthedClient =
    AgentGatewayClient<tonic::service::interceptor::InterceptedService<Channel, BearerToken>>;

/// A client whose calls carry `token` as bearer.
pub fn client_with_token(channel: Channel, token: &str) -> anyhow::Result<AuthedClient> {
    let value: MetadataValue<_> = format!("Bearer {token}").parse()?;
    Ok(AgentGatewayClient::with_interceptor(
        channel,
        BearerToken(value),
    ))
}

/// The `n`-th event of an agent's script: mostly heartbeats with resource
/// usage; every 5th a task start, every 5th+1 its completion carrying a gap or
/// risk assessment; some completions followed by an error.
pub fn scripted_event(
    agent_id: &str,
    agent_type: &str,
    n: u64,
    rng: &mut impl Rng,
    error_ratio: f64,
) -> pb::PublishEventRequest {
    scripted_event_for(
        agent_id,
        agent_type,
        n,
        rng,
        error_ratio,
        &Organizations::default(),
    )
}

/// [`scripted_event`] with assessments about `orgs`.
pub fn scripted_event_for(
    agent_id: &str,
    agent_type: &str,
    n: u64,
    rng: &mut impl Rng,
    error_ratio: f64,
    orgs: &Organizations,
) -> pb::PublishEventRequest {
    let task_id = format!("{agent_id}-task-{}", n / 5);
    let base = pb::PublishEventRequest {
        agent_id: agent_id.to_string(),
        agent_type: agent_type.to_string(),
        status: pb::AgentStatus::Healthy as i32,
        ..Default::default()
    };
    match n % 5 {
        1 => pb::PublishEventRequest {
            event_type: pb::EventType::TaskStarted as i32,
            task_id: Some(task_id),
            metadata_json: "{}".into(),
            ..base
        },
        2 => {
            let result = task_result(agent_id, agent_type, n / 5, rng, orgs);
            pb::PublishEventRequest {
                event_type: pb::EventType::TaskCompleted as i32,
                task_id: Some(task_id),
                metadata_json: serde_json::json!({ "result_summary": result }).to_string(),
                ..base
            }
        }
        3 if rng.random_bool(error_ratio.clamp(0.0, 1.0)) => pb::PublishEventRequest {
            event_type: pb::EventType::Error as i32,
            status: pb::AgentStatus::Degraded as i32,
            message: Some("upstream model endpoint timed out".into()),
            metadata_json: serde_json::json!({"details": {"retryable": true}}).to_string(),
            ..base
        },
        _ => pb::PublishEventRequest {
            event_type: pb::EventType::Heartbeat as i32,
            metadata_json: serde_json::json!({"resource_usage": {
                "cpu_percent": (rng.random_range(5.0..95.0f64) * 10.0).round() / 10.0,
                "memory_mb": rng.random_range(128..4096),
            }})
            .to_string(),
            ..base
        },
    }
}

struct Shared {
    latency_us: Histogram<u64>,
    acked: u64,
    rejected: BTreeMap<String, u64>,
    failures: Vec<String>,
    per_agent: BTreeMap<String, u64>,
}

/// Runs the plan with tokens signed by `key`; `progress` is called with the
/// number of acks so far (for a progress bar).
pub async fn run(
    plan: &SimulationPlan,
    key: &TokenKey,
    progress: impl Fn(u64) + Send + Sync + 'static,
) -> anyhow::Result<SimulationReport> {
    let channel = connect(&plan.gateway).await?;
    let shared = Arc::new(Mutex::new(Shared {
        latency_us: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        acked: 0,
        rejected: BTreeMap::new(),
        failures: Vec::new(),
        per_agent: BTreeMap::new(),
    }));
    let progress = Arc::new(progress);
    let per_agent_rate = if plan.rate > 0.0 {
        plan.rate / plan.agents.max(1) as f64
    } else {
        0.0
    };
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, agent_id) in agent_ids(plan).into_iter().enumerate() {
        let agent_type = AGENT_TYPES[i % AGENT_TYPES.len()];
        // Every simulated agent may assess every organisation of the plan.
        let token = crate::auth::agent_token_for(
            key,
            &agent_id,
            &plan.organizations.names,
            Duration::from_secs(3600),
        )?;
        let client = client_with_token(channel.clone(), &token)?;
        let shared = shared.clone();
        let progress = progress.clone();
        let plan = plan.clone();
        tasks.push(tokio::spawn(async move {
            let result = agent(
                client,
                &plan,
                &agent_id,
                agent_type,
                per_agent_rate,
                shared.clone(),
                progress,
            )
            .await;
            if let Err(e) = result {
                shared
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .failures
                    .push(format!("{agent_id}: {e:#}"));
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = start.elapsed();
    let shared = Arc::try_unwrap(shared).map_err(|_| anyhow::anyhow!("agents still running"))?;
    let s = shared.into_inner().unwrap_or_else(|p| p.into_inner());
    Ok(SimulationReport {
        acked: s.acked,
        rejected: s.rejected,
        stream_failures: s.failures,
        latency_us: s.latency_us,
        elapsed,
        per_agent: s.per_agent,
    })
}

async fn agent(
    mut client: AuthedClient,
    plan: &SimulationPlan,
    agent_id: &str,
    agent_type: &'static str,
    rate: f64,
    shared: Arc<Mutex<Shared>>,
    progress: Arc<impl Fn(u64) + Send + Sync + 'static>,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel::<pb::PublishEventRequest>(plan.window.max(1));
    let sent_at: Arc<Mutex<VecDeque<Instant>>> = Arc::default();
    let window = Arc::new(tokio::sync::Semaphore::new(plan.window.max(1)));
    let sender = {
        let sent_at = sent_at.clone();
        let window = window.clone();
        let plan = plan.clone();
        let agent_id = agent_id.to_string();
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::from_os_rng();
            let start = Instant::now();
            let mut n: u64 = 0;
            let tick = if rate > 0.0 {
                Duration::from_secs_f64((1.0 / rate).max(0.001))
            } else {
                Duration::ZERO
            };
            while start.elapsed() < plan.duration {
                let due = if rate > 0.0 {
                    (start.elapsed().as_secs_f64() * rate) as u64 + 1
                } else {
                    n + 1
                };
                while n < due {
                    let Ok(permit) = window.clone().acquire_owned().await else {
                        return;
                    };
                    permit.forget();
                    let ev = scripted_event_for(
                        &agent_id,
                        agent_type,
                        n,
                        &mut rng,
                        plan.error_ratio,
                        &plan.organizations,
                    );
                    sent_at
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push_back(Instant::now());
                    if tx.send(ev).await.is_err() {
                        return;
                    }
                    n += 1;
                }
                if rate > 0.0 {
                    tokio::time::sleep(tick).await;
                }
            }
        })
    };
    let mut acks = client
        .stream_events(ReceiverStream::new(rx))
        .await?
        .into_inner();
    while let Some(ack) = acks.message().await? {
        let sent = sent_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        window.add_permits(1);
        let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
        if ack.accepted.is_some() {
            if let Some(t) = sent {
                let us = t.elapsed().as_micros().clamp(1, 60_000_000) as u64;
                s.latency_us.saturating_record(us);
            }
            s.acked += 1;
            *s.per_agent.entry(agent_id.to_string()).or_default() += 1;
        } else {
            let code = format!("{:?}", tonic::Code::from(ack.error_code));
            *s.rejected.entry(code).or_default() += 1;
        }
        let acked = s.acked;
        drop(s);
        progress(acked);
    }
    sender.await?;
    Ok(())
}

/// The ids of the agents `plan` drives, in order.
pub fn agent_ids(plan: &SimulationPlan) -> Vec<String> {
    (0..plan.agents)
        .map(|i| format!("{}-{i}", plan.agent_prefix))
        .collect()
}

/// Those of `agents` that `plan` drove (exact ids: prefix `sim` must not pick
/// up `sim-1-0`, nor `sim-agent-0..7` pick up `sim-agent-11` of a larger run),
/// in the plan's order.
pub fn driven_by(plan: &SimulationPlan, agents: Vec<pb::AgentHealth>) -> Vec<pb::AgentHealth> {
    let mut by_id: BTreeMap<String, pb::AgentHealth> = agents
        .into_iter()
        .map(|a| (a.agent_id.clone(), a))
        .collect();
    agent_ids(plan)
        .iter()
        .filter_map(|id| by_id.remove(id))
        .collect()
}

/// Renders the health of `agents` as a table.
pub fn health_table(agents: &[pb::AgentHealth]) -> String {
    let mut out = format!(
        "{:<24} {:<20} {:<10} {:>6} {:<28} {}\n",
        "AGENT", "TYPE", "STATUS", "TASKS", "LAST TASK", "LAST ERROR"
    );
    for a in agents {
        let status = pb::AgentStatus::try_from(a.status)
            .map(|s| s.as_str_name())
            .unwrap_or("?");
        out.push_str(&format!(
            "{:<24} {:<20} {:<10} {:>6} {:<28} {}\n",
            a.agent_id,
            a.agent_type,
            status,
            a.tasks_completed,
            a.last_task_id.as_deref().unwrap_or("-"),
            a.last_error.as_deref().unwrap_or("-")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::{publish_request, Limits};

    #[test]
    fn every_scripted_event_is_valid() {
        let mut rng = rand::rng();
        for (i, t) in AGENT_TYPES.iter().enumerate() {
            for n in 0..50 {
                let ev = scripted_event(&format!("sim-{i}"), t, n, &mut rng, 1.0);
                publish_request(&ev, &Limits::default())
                    .unwrap_or_else(|e| panic!("event {n} of {t}: {e}"));
            }
        }
    }

    #[test]
    fn the_health_table_shows_exactly_the_agents_of_the_run() {
        let plan = SimulationPlan {
            gateway: String::new(),
            agents: 8,
            agent_prefix: "sim-agent".into(),
            rate: 0.0,
            duration: Duration::ZERO,
            window: 1,
            error_ratio: 0.0,
            organizations: Organizations::default(),
        };
        let listed = [
            "sim-agent-11",
            "sim-agent-3",
            "sim-agent-0",
            "sim-agent-9",
            "other-1",
        ]
        .map(|id| pb::AgentHealth {
            agent_id: id.into(),
            ..Default::default()
        });
        let ids: Vec<String> = driven_by(&plan, listed.to_vec())
            .into_iter()
            .map(|a| a.agent_id)
            .collect();
        assert_eq!(ids, ["sim-agent-0", "sim-agent-3"]);
    }

    #[test]
    fn assessments_carry_organisations_and_high_risk_ones_stay_above_0_8() {
        let mut rng = rand::rng();
        let orgs = Organizations {
            names: vec!["hot".into(), "calm".into()],
            high_risk: 1,
        };
        let mut seen = std::collections::BTreeMap::new();
        for agent in 0..4 {
            for n in (2..200).step_by(5) {
                let ev = scripted_event_for(
                    &format!("sim-{agent}"),
                    "RISK_ASSESSOR",
                    n,
                    &mut rng,
                    0.0,
                    &orgs,
                );
                let md: serde_json::Value = serde_json::from_str(&ev.metadata_json).unwrap();
                let r = &md["result_summary"];
                let score = r["assessment"]["overall_score"].as_f64().unwrap();
                let org = r["organization_id"].as_str().unwrap().to_string();
                assert!(
                    if org == "hot" {
                        score > 0.8
                    } else {
                        score < 0.8
                    },
                    "{org}: {score}"
                );
                *seen.entry(org).or_insert(0) += 1;
            }
        }
        assert_eq!(seen.len(), 2, "{seen:?}");
        let gap = scripted_event_for("g", "GAP_ANALYZER", 2, &mut rng, 0.0, &orgs);
        let md: serde_json::Value = serde_json::from_str(&gap.metadata_json).unwrap();
        assert!(md["result_summary"]["assessment"]["gaps"][0]["article"]
            .as_str()
            .unwrap()
            .starts_with("Art. "));
    }

    #[test]
    fn the_script_mixes_heartbeats_tasks_and_errors() {
        let mut rng = rand::rng();
        let types: Vec<i32> = (0..10)
            .map(|n| scripted_event("a", "RISK_ASSESSOR", n, &mut rng, 1.0).event_type)
            .collect();
        assert!(types.contains(&(pb::EventType::Heartbeat as i32)));
        assert!(types.contains(&(pb::EventType::TaskStarted as i32)));
        assert!(types.contains(&(pb::EventType::TaskCompleted as i32)));
        assert!(types.contains(&(pb::EventType::Error as i32)));
    }
}
