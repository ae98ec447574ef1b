//! Integration-test harness against the real local stack (`deploy/local/stack.sh up`).
//!
//! - addresses come from the environment `stack.sh env` prints, with the
//!   design's defaults, so a test run against another stack needs no code change;
//! - every test gets its own topics and groups ([`unique`]);
//! - conditions are awaited with deadlines ([`eventually`]), never fixed sleeps;
//! - a service binary runs as a real process ([`ServiceProcess`]) and is awaited
//!   on its `/readyz`;
//! - Kafka's own perf tools from the stack's jars ([`perf_tools`]), the
//!   baselines of the benchmarks;
//! - PostgreSQL: a database per test on the stack's server ([`TempDatabase`]),
//!   or a private server a test may stop and start ([`PrivatePostgres`]);
//! - Kafka: a private broker a test may restart ([`PrivateKafka`]).
//!
//! The harness observes topics with plain rdkafka clients built from the same
//! [`KafkaSettings`], independently of the runtime under test.

mod kafka;
pub mod perf_tools;
mod postgres;

pub use kafka::PrivateKafka;
pub use postgres::{PrivatePostgres, TempDatabase};

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dora_config::Secret;
use dora_kafka::topics::{provision, TopicSpec};
use dora_kafka::{KafkaSettings, SaslMechanism, SecurityProtocol};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::{Message, Offset, TopicPartitionList};

/// Default deadline for awaited conditions in integration tests.
pub const DEADLINE: Duration = Duration::from_secs(30);

fn env_or(var: &str, default: &str) -> String {
    std::env::var(var).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_string())
}

/// The repository root (where `Cargo.toml` of the workspace lives).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repo root")
}

/// The local stack's state folder (`DORA_STACK_DIR`, default `<repo>/.stack`).
pub fn stack_dir() -> PathBuf {
    std::env::var("DORA_STACK_DIR").map(PathBuf::from).unwrap_or_else(|_| repo_root().join(".stack"))
}

/// PLAINTEXT settings for the local broker (`DORA_KAFKA__BOOTSTRAP_SERVERS`).
pub fn kafka() -> KafkaSettings {
    KafkaSettings {
        bootstrap_servers: env_or("DORA_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        client_id: "dora-testkit".into(),
        ..Default::default()
    }
}

/// SASL_SSL settings for the local broker's SCRAM listener, with certificate
/// verification against the stack's CA.
pub fn kafka_sasl(mechanism: SaslMechanism) -> Result<KafkaSettings> {
    let password_file = PathBuf::from(env_or(
        "DORA_TEST_SASL_PASSWORD_FILE",
        &stack_dir().join("secrets/kafka-scram-password").to_string_lossy(),
    ));
    let password = std::fs::read_to_string(&password_file)
        .with_context(|| format!("reading SCRAM password from {}", password_file.display()))?;
    Ok(KafkaSettings {
        bootstrap_servers: env_or("DORA_TEST_SASL_BOOTSTRAP_SERVERS", "127.0.0.1:9093"),
        security_protocol: SecurityProtocol::SaslSsl,
        sasl_mechanism: mechanism,
        sasl_username: Some(env_or("DORA_TEST_SASL_USERNAME", "dora")),
        sasl_password: Some(Secret::from(password.trim_end().to_string())),
        ssl_ca_location: Some(PathBuf::from(env_or(
            "DORA_TEST_SSL_CA_LOCATION",
            &stack_dir().join("tls/ca.pem").to_string_lossy(),
        ))),
        client_id: "dora-testkit".into(),
        ..Default::default()
    })
}

/// The schema registry's Confluent-compatible base URL (`DORA_REGISTRY__URL`).
pub fn registry_url() -> String {
    env_or("DORA_REGISTRY__URL", "http://127.0.0.1:8081/apis/ccompat/v7")
}

/// PostgreSQL connection parameters of the local stack.
#[derive(Debug, Clone)]
pub struct Postgres {
    /// Host (`DORA_POSTGRES__HOST`).
    pub host: String,
    /// Port (`DORA_POSTGRES__PORT`).
    pub port: u16,
    /// User (`DORA_POSTGRES__USER`).
    pub user: String,
    /// Database (`DORA_POSTGRES__DATABASE`).
    pub database: String,
    /// Path of the password file (`DORA_POSTGRES__PASSWORD_FILE`).
    pub password_file: PathBuf,
}

/// The local stack's PostgreSQL.
pub fn postgres() -> Postgres {
    Postgres {
        host: env_or("DORA_POSTGRES__HOST", "127.0.0.1"),
        port: env_or("DORA_POSTGRES__PORT", "5432").parse().unwrap_or(5432),
        user: env_or("DORA_POSTGRES__USER", "dora"),
        database: env_or("DORA_POSTGRES__DATABASE", "dora"),
        password_file: PathBuf::from(env_or(
            "DORA_POSTGRES__PASSWORD_FILE",
            &stack_dir().join("secrets/postgres-password").to_string_lossy(),
        )),
    }
}

/// A name no other test uses: `<prefix>-<random>`.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Creates a topic (and waits until the broker reports it with a leader for every partition).
pub async fn create_topic(settings: &KafkaSettings, name: &str, partitions: i32) -> Result<()> {
    create_topic_with(settings, name, partitions, &[]).await
}

/// Creates a topic with topic-level configs, then waits until it is usable.
pub async fn create_topic_with(
    settings: &KafkaSettings,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<()> {
    let spec = TopicSpec {
        name: name.to_string(),
        partitions,
        configs: configs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    };
    provision(settings, &[spec], 1, Duration::from_secs(30)).await?;
    let consumer = base_consumer(settings, None)?;
    let topic = name.to_string();
    eventually(DEADLINE, || {
        let md = consumer.fetch_metadata(Some(&topic), Duration::from_secs(5)).ok();
        let ready = md.is_some_and(|md| {
            md.topics().iter().any(|t| {
                t.name() == topic
                    && t.error().is_none()
                    && t.partitions().len() == partitions as usize
                    && t.partitions().iter().all(|p| p.leader() >= 0)
            })
        });
        async move { ready.then_some(()) }
    })
    .await
    .with_context(|| format!("topic {name} did not become ready"))
}

/// Awaits `check` until it yields `Some`, polling every 100 ms, failing after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if start.elapsed() >= deadline {
            bail!("condition not met within {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The plain producer [`producer`] builds, nameable by tests of crates that
/// may not depend on rdkafka themselves.
pub type TestProducer = FutureProducer;

/// A plain producer for test input (acks=all, idempotent).
pub fn producer(settings: &KafkaSettings) -> Result<FutureProducer> {
    let mut cfg = settings.client_config()?;
    cfg.set("enable.idempotence", "true").set("acks", "all").set("message.timeout.ms", "30000");
    Ok(cfg.create()?)
}

/// Produces one record and waits for the broker's acknowledgement; returns (partition, offset).
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&[u8]>,
    value: &[u8],
    headers: &[(&str, &[u8])],
) -> Result<(i32, i64)> {
    let mut hs = OwnedHeaders::new();
    for (k, v) in headers {
        hs = hs.insert(Header { key: k, value: Some(*v) });
    }
    let mut record = FutureRecord::to(topic).payload(value).headers(hs);
    if let Some(k) = key {
        record = record.key(k);
    }
    let delivery = producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e)?;
    Ok((delivery.partition, delivery.offset))
}

/// Produces every `(key, value)` to `topic` with a plain producer, all in
/// flight at once, and waits for every acknowledgement.
pub async fn produce_all(settings: &KafkaSettings, topic: &str, records: &[(String, Vec<u8>)]) -> Result<()> {
    let records: Vec<Outgoing> = records
        .iter()
        .map(|(key, value)| Outgoing { key: key.clone(), value: value.clone(), timestamp_ms: None, partition: None })
        .collect();
    produce_records(settings, topic, &records).await
}

/// A record for [`produce_records`]: key, value, and optionally its own
/// timestamp (event time a test controls) and partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Key.
    pub key: String,
    /// Value bytes.
    pub value: Vec<u8>,
    /// Record timestamp, epoch ms; `None`: the time of sending.
    pub timestamp_ms: Option<i64>,
    /// Partition; `None`: by key.
    pub partition: Option<i32>,
}

/// Produces `records` to `topic` with a plain idempotent producer, all in
/// flight at once (in order per partition), and waits for every acknowledgement.
pub async fn produce_records(settings: &KafkaSettings, topic: &str, records: &[Outgoing]) -> Result<()> {
    let producer = producer(settings)?;
    let mut pending = Vec::with_capacity(records.len());
    for r in records {
        let mut record = FutureRecord::to(topic).key(r.key.as_str()).payload(r.value.as_slice());
        if let Some(ts) = r.timestamp_ms {
            record = record.timestamp(ts);
        }
        if let Some(p) = r.partition {
            record = record.partition(p);
        }
        pending.push(producer.send_result(record).map_err(|(e, _)| e)?);
    }
    for delivery in pending {
        delivery.await?.map_err(|(e, _)| e)?;
    }
    Ok(())
}

/// A transaction a test leaves open on purpose (as a crashed or slow
/// producer would), holding records on a topic until it is committed or aborted.
pub struct OpenTransaction {
    producer: FutureProducer,
}

impl OpenTransaction {
    /// Begins a transaction and writes `records` to `topic` in it (acknowledged, not committed).
    pub async fn begin(settings: &KafkaSettings, topic: &str, records: &[Outgoing]) -> Result<Self> {
        let open = Self::prepare(settings).await?;
        open.write(topic, records).await?;
        Ok(open)
    }

    /// A transactional producer with its id registered and no transaction
    /// yet: [`OpenTransaction::write`] then opens one at the moment a test
    /// chooses, without the coordinator round trips of the set-up.
    pub async fn prepare(settings: &KafkaSettings) -> Result<Self> {
        let mut cfg = settings.client_config()?;
        cfg.set("transactional.id", unique("testkit-open-tx"));
        let producer: FutureProducer = cfg.create()?;
        let p = producer.clone();
        tokio::task::spawn_blocking(move || p.init_transactions(Duration::from_secs(30))).await??;
        Ok(Self { producer })
    }

    /// Begins the transaction and writes `records` to `topic` in it
    /// (acknowledged, not committed).
    pub async fn write(&self, topic: &str, records: &[Outgoing]) -> Result<()> {
        let p = self.producer.clone();
        tokio::task::spawn_blocking(move || p.begin_transaction()).await??;
        for r in records {
            let mut record = FutureRecord::to(topic).key(r.key.as_str()).payload(r.value.as_slice());
            if let Some(p) = r.partition {
                record = record.partition(p);
            }
            self.producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e)?;
        }
        Ok(())
    }

    /// Commits it.
    pub async fn commit(self) -> Result<()> {
        tokio::task::spawn_blocking(move || Ok(self.producer.commit_transaction(Duration::from_secs(30))?)).await?
    }

    /// Aborts it: its records are never read by a read_committed consumer.
    pub async fn abort(self) -> Result<()> {
        tokio::task::spawn_blocking(move || Ok(self.producer.abort_transaction(Duration::from_secs(30))?)).await?
    }
}

fn base_consumer(settings: &KafkaSettings, isolation: Option<&str>) -> Result<BaseConsumer> {
    let mut cfg = settings.client_config()?;
    cfg.set("group.id", unique("testkit-reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    if let Some(level) = isolation {
        cfg.set("isolation.level", level);
    }
    Ok(cfg.create()?)
}

/// One record as read back from a topic: plain data, so tests of crates that
/// may not depend on rdkafka can inspect keys, values and headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key bytes, if any.
    pub key: Option<Vec<u8>>,
    /// Value bytes, if any (a tombstone has none).
    pub payload: Option<Vec<u8>>,
    /// Headers in order: name and value (a header may have no value).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Record timestamp in epoch millis, if the broker reported one.
    pub timestamp: Option<i64>,
}

impl Record {
    fn from_message(m: &OwnedMessage) -> Self {
        use rdkafka::message::Headers;
        Self {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            headers: m
                .headers()
                .map(|hs| hs.iter().map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec))).collect())
                .unwrap_or_default(),
            timestamp: m.timestamp().to_millis(),
        }
    }

    /// The key bytes.
    pub fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }

    /// The value bytes.
    pub fn payload(&self) -> Option<&[u8]> {
        self.payload.as_deref()
    }

    /// The value of the first header named `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(k, _)| k == name).and_then(|(_, v)| v.as_deref())
    }
}

/// Reads every record of `topic` from the beginning up to its current high
/// watermarks (read_uncommitted). Partitions are read in order; records are
/// returned partition by partition.
pub async fn read_all(settings: &KafkaSettings, topic: &str) -> Result<Vec<Record>> {
    read_all_with(settings, topic, "read_uncommitted").await
}

/// Like [`read_all`] with `isolation.level=read_committed`: aborted and open
/// transactions are invisible.
pub async fn read_committed(settings: &KafkaSettings, topic: &str) -> Result<Vec<Record>> {
    read_all_with(settings, topic, "read_committed").await
}

/// The records of `topic` from `from` (each partition's first offset to read,
/// as [`end_offsets`] gave it earlier; a partition not in it from its start)
/// up to the current high watermarks, read_committed: what a downstream
/// consumer sees, without aborted records or transaction markers.
pub async fn read_committed_since(
    settings: &KafkaSettings,
    topic: &str,
    from: &std::collections::HashMap<i32, i64>,
) -> Result<Vec<Record>> {
    let (settings, topic, from) = (settings.clone(), topic.to_string(), from.clone());
    tokio::task::spawn_blocking(move || read_all_blocking(&settings, &topic, "read_committed", &from)).await?
}

/// Each partition's high watermark of `topic` (empty when it does not exist).
pub async fn end_offsets(settings: &KafkaSettings, topic: &str) -> Result<std::collections::HashMap<i32, i64>> {
    let consumer = base_consumer(settings, None)?;
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let md = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
        let mut ends = std::collections::HashMap::new();
        for t in md.topics().iter().filter(|t| t.name() == topic && t.error().is_none()) {
            for p in t.partitions() {
                ends.insert(p.id(), consumer.fetch_watermarks(&topic, p.id(), Duration::from_secs(10))?.1);
            }
        }
        Ok(ends)
    })
    .await?
}

async fn read_all_with(settings: &KafkaSettings, topic: &str, isolation: &str) -> Result<Vec<Record>> {
    let settings = settings.clone();
    let topic = topic.to_string();
    let isolation = isolation.to_string();
    tokio::task::spawn_blocking(move || read_all_blocking(&settings, &topic, &isolation, &Default::default())).await?
}

fn read_all_blocking(
    settings: &KafkaSettings,
    topic: &str,
    isolation: &str,
    from: &std::collections::HashMap<i32, i64>,
) -> Result<Vec<Record>> {
    let consumer = base_consumer(settings, Some(isolation))?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    let mut tpl = TopicPartitionList::new();
    let mut targets = Vec::new();
    for p in partitions {
        // The end to read to. With read_committed, aborted records and markers
        // never arrive, so the loop below also counts a partition done when the
        // consumer's position reaches this end; a transaction still open at the
        // deadline makes the read fail.
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        let start = from.get(&p).map_or(low, |f| (*f).max(low));
        if high > start {
            tpl.add_partition_offset(topic, p, Offset::Offset(start))?;
            targets.push((p, high));
        }
    }
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    consumer.assign(&tpl)?;
    let mut out: Vec<OwnedMessage> = Vec::new();
    let mut done: std::collections::HashMap<i32, bool> = targets.iter().map(|(p, _)| (*p, false)).collect();
    let start = Instant::now();
    while done.values().any(|d| !d) {
        if start.elapsed() > DEADLINE {
            bail!("reading {topic} to its high watermarks took longer than {DEADLINE:?}");
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let high = targets.iter().find(|(p, _)| *p == m.partition()).map(|(_, h)| *h).unwrap_or(0);
                if m.offset() + 1 >= high {
                    done.insert(m.partition(), true);
                }
                out.push(m.detach());
            }
            Some(Err(e)) => bail!("reading {topic}: {e}"),
            None => {
                // read_committed: aborted records and transaction markers are skipped,
                // so the position may reach the watermark without a message at it.
                for (p, high) in &targets {
                    let pos = consumer
                        .position()?
                        .find_partition(topic, *p)
                        .and_then(|e| e.offset().to_raw())
                        .unwrap_or(-1);
                    if pos >= *high {
                        done.insert(*p, true);
                    }
                }
            }
        }
    }
    out.sort_by_key(|m| (m.partition(), m.offset()));
    Ok(out.iter().map(Record::from_message).collect())
}

/// The number of records currently in `topic` (sum over partitions of high
/// minus low watermark); 0 when the topic does not exist.
pub async fn record_count(settings: &KafkaSettings, topic: &str) -> Result<i64> {
    let consumer = base_consumer(settings, None)?;
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let md = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
        let mut total = 0;
        for t in md.topics().iter().filter(|t| t.name() == topic && t.error().is_none()) {
            for p in t.partitions() {
                let (low, high) = consumer.fetch_watermarks(&topic, p.id(), Duration::from_secs(10))?;
                total += high - low;
            }
        }
        Ok(total)
    })
    .await?
}

/// The names of the cluster's consumer groups.
pub async fn group_names(settings: &KafkaSettings) -> Result<Vec<String>> {
    let consumer = base_consumer(settings, None)?;
    tokio::task::spawn_blocking(move || {
        let groups = consumer.fetch_group_list(None, Duration::from_secs(10))?;
        Ok(groups.groups().iter().map(|g| g.name().to_string()).collect())
    })
    .await?
}

/// The committed offset of `group` on `topic`/`partition`, if any.
pub async fn committed_offset(settings: &KafkaSettings, group: &str, topic: &str, partition: i32) -> Result<Option<i64>> {
    let mut cfg = settings.client_config()?;
    cfg.set("group.id", group).set("enable.auto.commit", "false");
    let consumer: BaseConsumer = cfg.create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
        Ok(committed.find_partition(&topic, partition).and_then(|e| e.offset().to_raw()).filter(|o| *o >= 0))
    })
    .await?
}

/// Sets the committed offset of `group` on `topic`/`partition` (e.g. to
/// rewind a stopped group and make its consumer read records again). The
/// group must have no active member.
pub async fn commit_offset(settings: &KafkaSettings, group: &str, topic: &str, partition: i32, offset: i64) -> Result<()> {
    let mut cfg = settings.client_config()?;
    cfg.set("group.id", group).set("enable.auto.commit", "false");
    let consumer: BaseConsumer = cfg.create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    tokio::task::spawn_blocking(move || {
        consumer.commit(&tpl, rdkafka::consumer::CommitMode::Sync)?;
        Ok(())
    })
    .await?
}

/// A service binary running as a real process. Killed (SIGKILL) when dropped.
///
/// The harness never picks ports: the process binds its admin server (and any
/// other listener) on port 0 and announces the addresses it got in a file the
/// harness names (`DORA_ADMIN__ANNOUNCE_PATH`, see
/// `dora_telemetry::ServiceContext::announce`).
pub struct ServiceProcess {
    child: Option<Child>,
    /// Where the process's stdout and stderr go.
    pub log_path: PathBuf,
    /// Where the process announces its bound listeners.
    announce_path: PathBuf,
}

impl ServiceProcess {
    /// Starts `binary` with `env` (plus its admin server on port 0 and the local
    /// stack's Kafka and registry addresses unless `env` sets them) and waits
    /// until its `/readyz` answers 200.
    pub async fn spawn(binary: impl AsRef<Path>, env: &[(&str, String)]) -> Result<Self> {
        let mut process = Self::start(binary, env)?;
        if let Err(e) = process.wait_ready(DEADLINE * 2).await {
            let log = process.log();
            bail!("{e:#}\n--- process log ---\n{log}");
        }
        Ok(process)
    }

    /// Starts `binary` without waiting for readiness.
    pub fn start(binary: impl AsRef<Path>, env: &[(&str, String)]) -> Result<Self> {
        Self::start_with_args(binary, &[], env)
    }

    /// Starts `binary` with command-line `args` (e.g. a one-shot subcommand to
    /// kill in the middle) without waiting for readiness.
    pub fn start_with_args(binary: impl AsRef<Path>, args: &[&str], env: &[(&str, String)]) -> Result<Self> {
        let binary = binary.as_ref();
        let base = logs_dir()?.join(format!(
            "{}-{}",
            binary.file_name().and_then(|n| n.to_str()).unwrap_or("service"),
            uuid::Uuid::new_v4().simple()
        ));
        let log_path = base.with_extension("log");
        let announce_path = base.with_extension("addresses");
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = Command::new(binary);
        cmd.args(args)
            .env("DORA_ADMIN__LISTEN", "127.0.0.1:0")
            .env("DORA_ADMIN__ANNOUNCE_PATH", &announce_path)
            .env("DORA_KAFKA__BOOTSTRAP_SERVERS", kafka().bootstrap_servers)
            .env("DORA_REGISTRY__URL", registry_url())
            .env("DORA_TELEMETRY__LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().with_context(|| format!("spawning {}", binary.display()))?;
        Ok(Self { child: Some(child), log_path, announce_path })
    }

    /// The address the process announced for `listener` (`admin`, `grpc`, ...), if it did yet.
    pub fn announced(&self, listener: &str) -> Option<SocketAddr> {
        let text = std::fs::read_to_string(&self.announce_path).unwrap_or_default();
        dora_telemetry::read_announcements(&text).into_iter().rev().find(|(n, _)| n == listener).map(|(_, a)| a)
    }

    /// Waits until the process announced `listener`, failing early if it exits.
    pub async fn wait_announced(&mut self, listener: &str, deadline: Duration) -> Result<SocketAddr> {
        let start = Instant::now();
        loop {
            if let Some(addr) = self.announced(listener) {
                return Ok(addr);
            }
            if let Some(status) = self.try_wait()? {
                bail!("process exited before announcing its {listener} address: {status}");
            }
            if start.elapsed() > deadline {
                bail!("no {listener} address announced within {deadline:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The admin server's address (`/metrics`, `/healthz`, `/readyz`), once announced.
    pub fn admin(&self) -> Result<SocketAddr> {
        self.announced("admin").context("the process has not announced its admin address")
    }

    /// Waits until `/readyz` answers 200, failing early if the process exits.
    pub async fn wait_ready(&mut self, deadline: Duration) -> Result<()> {
        let start = Instant::now();
        let admin = self.wait_announced("admin", deadline).await?;
        let url = format!("http://{admin}/readyz");
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        loop {
            if let Some(status) = self.try_wait()? {
                bail!("process exited before it was ready: {status}");
            }
            if let Ok(resp) = client.get(&url).send().await {
                if resp.status().is_success() {
                    return Ok(());
                }
            }
            if start.elapsed() > deadline {
                bail!("{url} not ready within {deadline:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// GETs a path of the admin server and returns (status, body).
    pub async fn admin_get(&self, path: &str) -> Result<(u16, String)> {
        let resp = reqwest::get(format!("http://{}{path}", self.admin()?)).await?;
        Ok((resp.status().as_u16(), resp.text().await?))
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Non-blocking exit check.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => Ok(c.try_wait()?),
            None => bail!("process already reaped"),
        }
    }

    /// Sends SIGTERM and waits up to `deadline` for the exit status.
    pub async fn terminate(&mut self, deadline: Duration) -> Result<ExitStatus> {
        self.signal(nix::sys::signal::Signal::SIGTERM)?;
        self.wait_exit(deadline).await
    }

    /// Sends SIGKILL and reaps the process (a crash, for at-least-once tests).
    pub async fn kill(&mut self) -> Result<ExitStatus> {
        self.signal(nix::sys::signal::Signal::SIGKILL)?;
        self.wait_exit(DEADLINE).await
    }

    /// Waits up to `deadline` for the process to exit by itself.
    pub async fn wait_exit(&mut self, deadline: Duration) -> Result<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if start.elapsed() > deadline {
                bail!("process did not exit within {deadline:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn signal(&self, signal: nix::sys::signal::Signal) -> Result<()> {
        let pid = self.pid().context("process already reaped")?;
        let pid = i32::try_from(pid).context("pid out of range")?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)?;
        Ok(())
    }

    /// Everything the process printed so far.
    pub fn log(&self) -> String {
        // Lossy: a client library's debug line with stray bytes must not hide the whole log.
        std::fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }
}

/// How long a service process's log is kept after the run that wrote it.
const LOG_RETENTION: Duration = Duration::from_secs(6 * 3600);

/// Where service processes log: `<temp>/dora-test-logs`, created on first
/// use, when logs older than [`LOG_RETENTION`] are removed (a failing run's
/// logs stay for a look; repeated runs do not fill the disk).
fn logs_dir() -> Result<PathBuf> {
    static PRUNED: std::sync::Once = std::sync::Once::new();
    let dir = std::env::temp_dir().join("dora-test-logs");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    PRUNED.call_once(|| prune_older_than(&dir, LOG_RETENTION));
    Ok(dir)
}

/// Removes the files of `dir` last modified more than `age` ago.
fn prune_older_than(dir: &Path, age: Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|elapsed| elapsed > age);
        if old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.announce_path);
        if std::env::var_os("TEST_LOG").is_some() {
            eprintln!("--- {} ---\n{}", self.log_path.display(), self.log());
        }
    }
}

/// Runs `binary` to completion with `env` and returns (exit status, stdout, stderr),
/// failing if it runs longer than `deadline`.
pub async fn run_to_exit(
    binary: impl AsRef<Path>,
    env: &[(&str, String)],
    deadline: Duration,
) -> Result<(ExitStatus, String, String)> {
    run_with_args(binary, &[], env, deadline).await
}

/// Like [`run_to_exit`], with command-line `args` (e.g. a subcommand).
pub async fn run_with_args(
    binary: impl AsRef<Path>,
    args: &[&str],
    env: &[(&str, String)],
    deadline: Duration,
) -> Result<(ExitStatus, String, String)> {
    let mut cmd = tokio::process::Command::new(binary.as_ref());
    cmd.args(args)
        .env("DORA_ADMIN__LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn()?;
    let out = tokio::time::timeout(deadline, child.wait_with_output())
        .await
        .with_context(|| format!("{} did not exit within {deadline:?}", binary.as_ref().display()))??;
    Ok((out.status, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned()))
}

/// Parses one metric's value from a Prometheus text exposition, matching every
/// `label="value"` pair given.
pub fn metric_value(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    exposition.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = match series.split_once('{') {
            Some((m, r)) => (m, r),
            None => (series, ""),
        };
        if metric != name {
            return None;
        }
        let all = labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        if all {
            value.parse().ok()
        } else {
            None
        }
    })
}

/// A JSON value helper re-exported for tests that build seed-shaped payloads.
pub use serde_json::json;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_removes_only_the_logs_older_than_the_retention() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let (old, fresh) = (dir.path().join("old.log"), dir.path().join("fresh.log"));
        std::fs::File::create(&old)?.set_modified(std::time::SystemTime::now() - Duration::from_secs(7 * 3600))?;
        std::fs::File::create(&fresh)?;
        prune_older_than(dir.path(), LOG_RETENTION);
        assert!(!old.exists(), "a log older than the retention was kept");
        assert!(fresh.exists(), "a fresh log was removed");
        Ok(())
    }

    #[test]
    fn unique_names_differ() {
        assert_ne!(unique("t"), unique("t"));
        assert!(unique("orders").starts_with("orders-"));
    }

    #[test]
    fn metric_value_matches_labels() {
        let text = "# HELP x y\nkafka_messages_sent_total{topic=\"a\"} 3\nkafka_messages_sent_total{topic=\"b\"} 5\nup 1\n";
        assert_eq!(metric_value(text, "kafka_messages_sent_total", &[("topic", "b")]), Some(5.0));
        assert_eq!(metric_value(text, "up", &[]), Some(1.0));
        assert_eq!(metric_value(text, "kafka_messages_sent_total", &[("topic", "c")]), None);
    }

    #[tokio::test]
    async fn eventually_gives_up_after_the_deadline() {
        let err = eventually(Duration::from_millis(250), || async { None::<()> }).await.unwrap_err();
        assert!(err.to_string().contains("not met"));
        let mut n = 0;
        let v = eventually(Duration::from_secs(5), || {
            n += 1;
            let hit = n >= 3;
            async move { hit.then_some(n) }
        })
        .await
        .unwrap();
        assert_eq!(v, 3);
    }
}
