//! Shared helpers of dlq-replayer's integration tests: a scenario of fresh
//! topics (a source topic standing in for a catalog topic, its dead-letter
//! and parking topics, an audit topic) with the settings file the service and
//! the commands read; running the commands as real processes; reading back
//! what they wrote; a downstream consumer that dead-letters poison records.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use dora_kafka::consume::{ConsumeLoop, ConsumerSettings, Handler, HandlerError, Record};
use dora_schema::{AuditEvent, Codec, DeadLetter, DeadLetterHeader, RegistrySettings};
use dora_telemetry::ServiceContext;
use dora_testkit as tk;
use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_dlq-replayer");

/// The schema codec on the local registry.
pub fn codec() -> Codec {
    Codec::new(&RegistrySettings {
        url: tk::registry_url(),
        ..Default::default()
    })
    .expect("codec")
}

/// What a command printed and how it exited.
#[derive(Debug)]
pub struct Output {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Output {
    /// The exit code (`None` when killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Standard output's lines parsed as JSON.
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// Fresh topics and the settings file of one test.
pub struct Scenario {
    /// The source topic (stands in for a catalog topic), 3 partitions.
    pub topic: String,
    /// Its dead-letter topic.
    pub dlq: String,
    /// Its parking lot.
    pub parked: String,
    /// The audit topic (stands in for user-activities).
    pub audit: String,
    /// The service's consumer group.
    pub group: String,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Scenario {
    /// Topics and settings; `extra` is appended to the settings file (e.g. `[[dlq.transient]]` tables).
    pub async fn new(extra: &str) -> Result<Self> {
        Self::with_dlq_partitions(extra, 1).await
    }

    /// Like [`Scenario::new`] with a dead-letter topic of `partitions` partitions.
    pub async fn with_dlq_partitions(extra: &str, partitions: i32) -> Result<Self> {
        let kafka = tk::kafka();
        let topic = tk::unique("agent-events");
        let dlq = format!("{topic}-dlq");
        let parked = format!("{dlq}-parked");
        let audit = tk::unique("user-activities");
        tk::create_topic(&kafka, &topic, 3).await?;
        tk::create_topic(&kafka, &dlq, partitions).await?;
        tk::create_topic(&kafka, &parked, 1).await?;
        tk::create_topic(&kafka, &audit, 1).await?;
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("dlq-replayer.toml");
        let group = tk::unique("dlq-replayer");
        std::fs::write(
            &config,
            format!(
                "[consumer]\ngroup_id = \"{group}\"\ntransactional_id = \"{group}-tx\"\nsession_timeout_ms = 6000\n\n\
                 [dlq]\npattern = \"^{topic}.*-dlq$\"\nreplay_topics = [\"{topic}\"]\naudit_topic = \"{audit}\"\ntick_ms = 200\nnew_topic_check_ms = 2000\n\n{extra}\n"
            ),
        )?;
        Ok(Self {
            topic,
            dlq,
            parked,
            audit,
            group,
            config,
            _dir: dir,
        })
    }

    /// The environment of the service and the commands.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DORA_CONFIG", self.config.display().to_string()),
            (
                "DORA_KAFKA__BOOTSTRAP_SERVERS",
                tk::kafka().bootstrap_servers,
            ),
            ("DORA_REGISTRY__URL", tk::registry_url()),
            ("DORA_TELEMETRY__LOG_FILTER", "warn".into()),
            ("DORA_TELEMETRY__LOG_FORMAT", "pretty".into()),
        ]
    }

    /// Runs a command to its end.
    pub async fn run(&self, args: &[&str]) -> Result<Output> {
        let (status, stdout, stderr) =
            tk::run_with_args(BIN, args, &self.env(), Duration::from_secs(120)).await?;
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }

    /// Starts a command without waiting for it (to signal it in the middle).
    pub fn start(&self, args: &[&str]) -> Result<tk::ServiceProcess> {
        tk::ServiceProcess::start_with_args(BIN, args, &self.env())
    }

    /// Starts the service and waits until it is ready.
    pub async fn service(&self) -> Result<tk::ServiceProcess> {
        tk::ServiceProcess::spawn(BIN, &self.env()).await
    }

    /// `list --json` of this scenario's dead-letter topic.
    pub async fn list(&self) -> Result<Value> {
        let out = self
            .run(&["list", "--topic", &self.topic, "--json"])
            .await?;
        anyhow::ensure!(out.code() == Some(0), "list failed: {out:?}");
        out.json_lines()
            .into_iter()
            .next()
            .with_context(|| format!("list printed no JSON: {out:?}"))
    }

    /// Writes dead letters to the dead-letter topic, as the consume loop
    /// does (Avro, keyed by the original key); returns their offsets.
    pub async fn write_letters(&self, letters: &[DeadLetter]) -> Result<Vec<i64>> {
        let codec = codec();
        let producer = tk::producer(&tk::kafka())?;
        let mut offsets = Vec::new();
        for d in letters {
            let value = codec.encode(&self.dlq, d).await?;
            let (_, offset) = tk::produce(
                &producer,
                &self.dlq,
                d.original_key.as_deref(),
                &value,
                &[("content-type", b"application/vnd.confluent.avro")],
            )
            .await?;
            offsets.push(offset);
        }
        Ok(offsets)
    }

    /// Committed records of the source topic that are replays, by the
    /// position they were replayed from.
    pub async fn replays(&self) -> Result<Vec<tk::Record>> {
        Ok(tk::read_committed(&tk::kafka(), &self.topic)
            .await?
            .into_iter()
            .filter(|r| r.header("dora-replay-of").is_some())
            .collect())
    }

    /// How often each dead-letter position was replayed (committed records).
    pub async fn replay_counts(&self) -> Result<BTreeMap<String, usize>> {
        let mut counts = BTreeMap::new();
        for r in self.replays().await? {
            let of = String::from_utf8_lossy(r.header("dora-replay-of").unwrap_or_default())
                .into_owned();
            *counts.entry(of).or_default() += 1;
        }
        Ok(counts)
    }

    /// How many committed resolution marker records the dead-letter topic holds.
    pub async fn marker_records(&self) -> Result<usize> {
        Ok(tk::read_committed(&tk::kafka(), &self.dlq)
            .await?
            .iter()
            .filter(|r| r.header("dora-dlq-resolution").is_some())
            .count())
    }

    /// What the committed resolution markers of the dead-letter topic say,
    /// per letter named (a marker names `topic/partition/offset,offset,...`):
    /// (action, letter position). A letter marked twice appears twice.
    pub async fn markers(&self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for r in tk::read_committed(&tk::kafka(), &self.dlq).await? {
            let (Some(action), Some(letters)) =
                (r.header("dora-dlq-resolution"), r.header("dora-dlq-letter"))
            else {
                continue;
            };
            let action = String::from_utf8_lossy(action).into_owned();
            let letters = String::from_utf8_lossy(letters);
            let (head, offsets) = letters.rsplit_once('/').expect("topic/partition/offsets");
            for offset in offsets.split(',') {
                out.push((action.clone(), format!("{head}/{offset}")));
            }
        }
        Ok(out)
    }

    /// Committed audit events.
    pub async fn audit_events(&self) -> Result<Vec<AuditEvent>> {
        let codec = codec();
        let mut out = Vec::new();
        for r in tk::read_committed(&tk::kafka(), &self.audit).await? {
            out.push(
                codec
                    .decode(&self.audit, r.payload().unwrap_or_default())
                    .await?,
            );
        }
        Ok(out)
    }

    /// The letters the committed audit events name (`topic/partition/offset`,
    /// one entry per naming, so a letter named twice appears twice).
    pub async fn audited_letters(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for event in self.audit_events().await? {
            let d = &event.details;
            let records = d["records"].as_array().cloned().unwrap_or_default();
            assert_eq!(d["count"].as_u64(), Some(records.len() as u64), "{d}");
            for r in records {
                out.push(format!(
                    "{}/{}/{}",
                    d["dlqTopic"].as_str().unwrap_or_default(),
                    r["dlqPartition"],
                    r["dlqOffset"]
                ));
            }
        }
        Ok(out)
    }
}

/// A dead letter of `topic` as the consume loop writes it.
pub fn dead_letter(
    topic: &str,
    partition: i32,
    offset: i64,
    key: &str,
    error_type: &str,
) -> DeadLetter {
    DeadLetter {
        original_topic: topic.to_string(),
        original_partition: partition,
        original_offset: offset,
        original_key: Some(key.as_bytes().to_vec()),
        original_message: format!("{{\"id\":\"{key}-{offset}\"}}").into_bytes(),
        original_headers: vec![DeadLetterHeader {
            key: "producer".into(),
            value: Some(b"agent-gateway".to_vec()),
        }],
        original_timestamp: Some(chrono::Utc::now().timestamp_millis()),
        error_message: format!("{error_type} at {offset}"),
        error_type: error_type.to_string(),
        retry_count: 0,
        processing_attempts: 1,
        timestamp: chrono::Utc::now().timestamp_millis(),
        failed_by: "report-ingest/report-ingest".into(),
    }
}

/// What a downstream consumer processed.
#[derive(Debug, Clone)]
pub struct Processed {
    /// Where it was read.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Value.
    pub payload: Vec<u8>,
    /// Headers.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// A consumer of the source topic (the platform's consume loop) that rejects
/// poison records (value containing `poison`, error type `PoisonPill`)
/// until the cause is fixed, and flaky ones (`flaky`, error type `Flaky`) always.
pub struct Downstream {
    /// Records processed, in order.
    pub processed: Arc<Mutex<Vec<Processed>>>,
    fixed: Arc<AtomicBool>,
    ctx: ServiceContext,
    task: tokio::task::JoinHandle<()>,
    /// Its consumer group.
    pub group: String,
}

struct Poisonable {
    processed: Arc<Mutex<Vec<Processed>>>,
    fixed: Arc<AtomicBool>,
}

impl Handler for Poisonable {
    async fn handle(&self, r: &Record) -> Result<(), HandlerError> {
        let has = |word: &[u8]| r.payload().windows(word.len()).any(|w| w == word);
        if has(b"poison") && !self.fixed.load(Ordering::SeqCst) {
            return Err(HandlerError::rejected(
                "PoisonPill",
                "poison pill: the handler cannot process it yet",
            ));
        }
        if has(b"flaky") {
            return Err(HandlerError::rejected(
                "Flaky",
                "a downstream dependency refused it",
            ));
        }
        self.processed.lock().unwrap().push(Processed {
            partition: r.partition,
            offset: r.offset,
            payload: r.payload().to_vec(),
            headers: r
                .headers
                .iter()
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect(),
        });
        Ok(())
    }
}

impl Downstream {
    /// Starts consuming the scenario's source topic.
    pub fn start(scenario: &Scenario) -> Self {
        let processed = Arc::new(Mutex::new(Vec::new()));
        let fixed = Arc::new(AtomicBool::new(false));
        let group = tk::unique("downstream");
        let settings = ConsumerSettings {
            group_id: group.clone(),
            fetch_min_bytes: 1,
            max_batch_wait_ms: 50,
            commit_interval_ms: 200,
            ..Default::default()
        };
        let ctx = ServiceContext::new("downstream");
        let lp = ConsumeLoop::new(&tk::kafka(), &settings, &ctx, Arc::new(codec()))
            .topics(&[&scenario.topic]);
        let handler = Poisonable {
            processed: processed.clone(),
            fixed: fixed.clone(),
        };
        let task = tokio::spawn(async move {
            if let Err(e) = lp.run(handler).await {
                eprintln!("downstream consumer failed: {e}");
            }
        });
        Self {
            processed,
            fixed,
            ctx,
            task,
            group,
        }
    }

    /// The cause is fixed: poison records are processed from now on.
    pub fn fix(&self) {
        self.fixed.store(true, Ordering::SeqCst);
    }

    /// Records processed whose value is `payload`.
    pub fn processed_with(&self, payload: &[u8]) -> Vec<Processed> {
        self.processed
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.payload == payload)
            .cloned()
            .collect()
    }

    /// Stops the consumer.
    pub async fn stop(self) {
        self.ctx.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// A dead letter exactly as the seed's `DeadLetterQueueHandler.send_to_dlq`
/// writes it (`json.dumps` of its dict), with its key (`message['id']`).
pub fn seed_letter(topic: &str, id: &str) -> (String, Vec<u8>) {
    let value = format!(
        "{{\"originalTopic\": \"{topic}\", \"originalMessage\": {{\"id\": \"{id}\", \"agent_id\": \"py-agent\", \"status\": \"healthy\"}}, \
         \"errorMessage\": \"Expecting value: line 1 column 1 (char 0)\", \"errorType\": \"JSONDecodeError\", \"retryCount\": 2, \
         \"timestamp\": 1795000000000, \"processingAttempts\": 3}}"
    );
    (id.to_string(), value.into_bytes())
}
