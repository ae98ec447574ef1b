//! Shared helpers of agent-gateway's integration tests: start the gateway as a
//! real process on its own topics, group and ports, and talk to it as an agent.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use std::sync::{Arc, Mutex};

use agent_gateway::auth::{self, TokenKey};
use agent_gateway::simulator::{self, AuthedClient};
use anyhow::{bail, Context, Result};
use dora_kafka::consume::{ConsumeLoop, ConsumerSettings, Handler, HandlerError, Record, StartAt};
use dora_kafka::KafkaSettings;
use dora_proto::agent::v1 as pb;
use dora_schema::{Codec, RegistrySettings};
use dora_service::ServiceContext;
use dora_testkit as tk;

/// The gateway binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_agent-gateway");

/// Topics, group and key one test's gateways share.
pub struct Scenario {
    /// `agent-events` stand-in.
    pub events_topic: String,
    /// `agent-health` stand-in.
    pub health_topic: String,
    /// Processor consumer group.
    pub group: String,
    /// Token signing key.
    pub key: TokenKey,
    /// Where the key lives (for the process).
    pub key_file: PathBuf,
    _dir: tempfile::TempDir,
    /// Extra environment for every gateway of the scenario.
    pub env: Vec<(&'static str, String)>,
    /// The broker the scenario's topics live on.
    pub kafka: KafkaSettings,
}

impl Scenario {
    /// Fresh topics (events with 3 partitions, compacted health, and the events DLQ)
    /// and a fresh key.
    pub async fn new() -> Result<Self> {
        Self::on(tk::kafka()).await
    }

    /// Like [`Scenario::new`], on the broker `kafka`.
    pub async fn on(kafka: KafkaSettings) -> Result<Self> {
        let events_topic = tk::unique("agent-events");
        let health_topic = tk::unique("agent-health");
        tk::create_topic(&kafka, &events_topic, 3).await?;
        tk::create_topic(&kafka, &format!("{events_topic}-dlq"), 1).await?;
        tk::create_topic_with(&kafka, &health_topic, 3, &[("cleanup.policy", "compact")]).await?;
        let dir = tempfile::tempdir()?;
        let key_file = dir.path().join("token-key");
        // A key is bytes: 32 random ones, the first never valid UTF-8, as
        // `head -c 32 /dev/urandom` makes them.
        let mut secret: [u8; 32] = rand::random();
        secret[0] = 0xff;
        std::fs::write(&key_file, secret)?;
        Ok(Self {
            events_topic,
            health_topic,
            group: tk::unique("agent-event-processor"),
            key: TokenKey::new(&secret)?,
            key_file,
            _dir: dir,
            env: Vec::new(),
            kafka,
        })
    }

    /// Starts a gateway replica (a transactional id of its own) and waits
    /// until it announced its gRPC address.
    pub async fn start(&self) -> Result<Gateway> {
        self.start_as(&tk::unique("agent-gateway-test")).await
    }

    /// Starts a replica with extra environment `extra` (after the scenario's).
    pub async fn start_with(&self, extra: &[(&'static str, String)]) -> Result<Gateway> {
        let mut env: Vec<(&str, String)> = vec![
            ("DORA_GATEWAY__GRPC_LISTEN", "127.0.0.1:0".to_string()),
            (
                "DORA_GATEWAY__TOKEN_KEY_FILE",
                self.key_file.display().to_string(),
            ),
            ("DORA_GATEWAY__EVENTS_TOPIC", self.events_topic.clone()),
            ("DORA_GATEWAY__HEALTH_TOPIC", self.health_topic.clone()),
            ("DORA_CONSUMER__GROUP_ID", self.group.clone()),
            (
                "DORA_KAFKA__BOOTSTRAP_SERVERS",
                self.kafka.bootstrap_servers.clone(),
            ),
        ];
        env.extend(self.env.iter().cloned());
        env.extend(extra.iter().cloned());
        let mut process = tk::ServiceProcess::spawn(BIN, &env).await?;
        let grpc = process.wait_announced("grpc", tk::DEADLINE).await?;
        Ok(Gateway {
            process,
            url: format!("http://{grpc}"),
        })
    }

    /// A client authenticated as `agent_id`.
    pub async fn client(&self, gw: &Gateway, agent_id: &str) -> Result<AuthedClient> {
        let token = auth::agent_token(&self.key, agent_id, Duration::from_secs(600))?;
        self.client_with(gw, &token).await
    }

    /// A client with the reader role (reads every agent's health).
    pub async fn reader(&self, gw: &Gateway) -> Result<AuthedClient> {
        let token = auth::reader_token(&self.key, "operator", Duration::from_secs(600))?;
        self.client_with(gw, &token).await
    }

    /// A client presenting `token`.
    pub async fn client_with(&self, gw: &Gateway, token: &str) -> Result<AuthedClient> {
        let channel = simulator::connect(&gw.url)
            .await
            .context("connecting to the gateway")?;
        simulator::client_with_token(channel, token)
    }

    /// Every committed record of the health topic, in offset order per
    /// partition: `(agent, value)`, `None` for a tombstone.
    pub async fn health_records(&self) -> Result<Vec<(String, Option<dora_schema::AgentHealth>)>> {
        let codec = codec()?;
        let mut out = Vec::new();
        for r in tk::read_committed(&self.kafka, &self.health_topic).await? {
            let agent = String::from_utf8_lossy(r.key().unwrap_or_default()).to_string();
            let value = match r.payload() {
                Some(p) => Some(codec.decode(&self.health_topic, p).await?),
                None => None,
            };
            out.push((agent, value));
        }
        Ok(out)
    }

    /// Makes the scenario's replicas use 10 s transactions (librdkafka's
    /// default is 60 s): a replica killed mid-transaction holds its
    /// partitions' next owner back until the broker aborts what it left open.
    pub fn short_transactions(&mut self) -> Result<()> {
        let file = self._dir.path().join("short-transactions.toml");
        std::fs::write(
            &file,
            "[kafka.extra]\n\"transaction.timeout.ms\" = \"10000\"\n",
        )?;
        self.env.push(("DORA_CONFIG", file.display().to_string()));
        self.env
            .push(("DORA_PRODUCER__DELIVERY_TIMEOUT_MS", "10000".to_string()));
        Ok(())
    }

    /// Writes `count` TASK_COMPLETED events of each of `agents` straight to
    /// the events topic (as the gateway writes them), agent by agent interleaved.
    pub async fn task_events(&self, agents: &[String], count: usize) -> Result<()> {
        let codec = codec()?;
        let mut records = Vec::with_capacity(agents.len() * count);
        let now = chrono::Utc::now().timestamp_millis();
        for n in 0..count {
            for agent in agents {
                let event = dora_schema::AgentEvent {
                    event_id: uuid::Uuid::new_v4().to_string(),
                    agent_id: agent.clone(),
                    timestamp: now,
                    event_type: dora_schema::EventType::TaskCompleted,
                    agent_type: "GAP_ANALYZER".into(),
                    status: dora_schema::AgentStatus::Healthy,
                    version: "1.0.0".into(),
                    message: None,
                    metadata: serde_json::json!({}),
                    task_id: Some(format!("task-{n}")),
                };
                records.push((agent.clone(), codec.encode(&self.events_topic, &event).await?));
            }
        }
        tk::produce_all(&self.kafka, &self.events_topic, &records).await
    }

    /// Starts a replica whose processor uses `transactional_id` (a restart
    /// with the same id fences and aborts what its predecessor left open).
    pub async fn start_as(&self, transactional_id: &str) -> Result<Gateway> {
        self.start_with(&[("DORA_CONSUMER__TRANSACTIONAL_ID", transactional_id.to_string())])
            .await
    }

    /// Records on the events topic.
    pub async fn events(&self) -> Result<i64> {
        tk::record_count(&self.kafka, &self.events_topic).await
    }
}

/// A running gateway replica.
pub struct Gateway {
    /// The process.
    pub process: tk::ServiceProcess,
    /// gRPC URL.
    pub url: String,
}

/// A heartbeat for `agent` with resource usage.
pub fn heartbeat(agent: &str) -> pb::HeartbeatRequest {
    pb::HeartbeatRequest {
        agent_id: agent.into(),
        agent_type: "GAP_ANALYZER".into(),
        resource_usage: Some(pb::ResourceUsage {
            cpu_percent: Some(42.5),
            memory_mb: Some(512.0),
            ..Default::default()
        }),
    }
}

/// A streamed HEARTBEAT event for `agent`.
pub fn stream_event(agent: &str) -> pb::PublishEventRequest {
    pb::PublishEventRequest {
        agent_id: agent.into(),
        event_type: pb::EventType::Heartbeat as i32,
        agent_type: "GAP_ANALYZER".into(),
        status: pb::AgentStatus::Healthy as i32,
        metadata_json: "{}".into(),
        ..Default::default()
    }
}

/// Polls GetAgent on `client` until `pred` holds (deadline [`tk::DEADLINE`]),
/// returning that answer; the error shows the last answer seen.
pub async fn await_agent(
    client: &mut AuthedClient,
    agent: &str,
    what: &str,
    pred: impl Fn(&pb::AgentHealth) -> bool,
) -> Result<pb::AgentHealth> {
    await_agent_within(client, agent, what, tk::DEADLINE, pred).await
}

/// Like [`await_agent`] with an explicit deadline.
pub async fn await_agent_within(
    client: &mut AuthedClient,
    agent: &str,
    what: &str,
    deadline: Duration,
    pred: impl Fn(&pb::AgentHealth) -> bool,
) -> Result<pb::AgentHealth> {
    let start = Instant::now();
    loop {
        let last = match client
            .get_agent(pb::GetAgentRequest {
                agent_id: agent.to_string(),
            })
            .await
        {
            Ok(r) if pred(r.get_ref()) => return Ok(r.into_inner()),
            Ok(r) => Ok(r.into_inner()),
            Err(s) => Err(s),
        };
        if start.elapsed() > deadline {
            bail!("{agent}: {what} not reached within {deadline:?}; last answer {last:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A codec on the local stack's registry.
pub fn codec() -> Result<Codec> {
    Ok(Codec::new(&RegistrySettings {
        url: tk::registry_url(),
        ..Default::default()
    })?)
}

struct Collect(Arc<Mutex<Vec<Record>>>);

impl Handler for Collect {
    async fn handle(&self, record: &Record) -> std::result::Result<(), HandlerError> {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Consumers are at-least-once (the loop may hand a record over again
        // around its start-up seek); the topic's content is what counts.
        if !seen
            .iter()
            .any(|r| r.partition == record.partition && r.offset == record.offset)
        {
            seen.push(record.clone());
        }
        Ok(())
    }
}

/// Reads `topic` from the beginning (through the runtime's consume loop, on a
/// group of its own) until it has seen `at_least` records; returns them in
/// arrival order (partition order is kept).
pub async fn read_records(topic: &str, at_least: usize) -> Result<Vec<Record>> {
    read_records_on(&tk::kafka(), topic, at_least).await
}

/// [`read_records`] on the broker `kafka`.
pub async fn read_records_on(
    kafka: &KafkaSettings,
    topic: &str,
    at_least: usize,
) -> Result<Vec<Record>> {
    let ctx = ServiceContext::new("agent-gateway-test-reader");
    let settings = ConsumerSettings {
        group_id: tk::unique("test-reader"),
        max_batch_wait_ms: 50,
        ..Default::default()
    };
    let seen: Arc<Mutex<Vec<Record>>> = Arc::default();
    let run = ConsumeLoop::new(kafka, &settings, &ctx, Arc::new(codec()?))
        .topics(&[topic])
        .on_assign(|_, _| StartAt::Beginning)
        .run(Collect(seen.clone()));
    let task = tokio::spawn(run);
    let counted = tk::eventually(tk::DEADLINE, || {
        let n = seen.lock().unwrap_or_else(|p| p.into_inner()).len();
        async move { (n >= at_least).then_some(n) }
    })
    .await;
    ctx.shutdown.cancel();
    task.await??;
    counted.with_context(|| format!("fewer than {at_least} records on {topic}"))?;
    let records = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(records)
}
