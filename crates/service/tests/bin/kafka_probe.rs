//! A real consumer process for the crash, SIGTERM and transactional tests: it
//! runs the consume loop through the service boot sequence and appends
//! `partition offset payload` for every processed record to a file.

use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dora_kafka::consume::DeadLetterEncoder;
use dora_kafka::{
    ConsumeLoop, ConsumerSettings, Handler, HandlerError, OutboundRecord, Record, Transform,
};
use dora_service::{CommonSettings, ServiceContext, ServiceSettings};
use serde::{Deserialize, Serialize};

/// What the probe does (section `probe`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct ProbeSettings {
    /// Input topic.
    topic: String,
    /// `each` or `transactional`.
    mode: String,
    /// File receiving one line per processed record.
    output_path: String,
    /// Output topic of the transactional mode.
    output_topic: String,
    /// After producing the first transaction's outputs and before committing
    /// it, create `<output_path>.holding` and wait forever (to be SIGKILLed).
    hang_before_commit: bool,
    /// Simulated work per record, milliseconds.
    work_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct Settings {
    #[serde(flatten)]
    common: CommonSettings,
    consumer: ConsumerSettings,
    probe: ProbeSettings,
}

impl ServiceSettings for Settings {
    fn common(&self) -> &CommonSettings {
        &self.common
    }
}

/// Dead letters are not part of the probe's scenarios; refuse them loudly.
struct NoLetters;

impl DeadLetterEncoder for NoLetters {
    async fn encode_dead_letter(
        &self,
        _: &str,
        _: &Record,
        _: &HandlerError,
        _: u32,
        _: &str,
    ) -> Result<Vec<u8>, (String, bool)> {
        Err(("the probe writes no dead letters".into(), false))
    }
}

struct Probe {
    out: Mutex<std::fs::File>,
    work: Duration,
    output_topic: String,
    holding_marker: Option<std::path::PathBuf>,
}

impl Probe {
    fn log(&self, r: &Record) -> Result<(), HandlerError> {
        let line = format!(
            "{} {} {}\n",
            r.partition,
            r.offset,
            String::from_utf8_lossy(r.payload())
        );
        // One write(2) per record: it survives a SIGKILL right after.
        self.out
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_all(line.as_bytes())
            .map_err(HandlerError::retryable)
    }
}

impl Handler for Probe {
    #[tracing::instrument(skip_all, fields(topic = %r.topic, partition = r.partition, offset = r.offset, key = r.key_str()))]
    async fn handle(&self, r: &Record) -> Result<(), HandlerError> {
        if !self.work.is_zero() {
            tokio::time::sleep(self.work).await;
        }
        self.log(r)
    }
}

impl Transform for Probe {
    #[tracing::instrument(skip_all, fields(topic = %r.topic, partition = r.partition, offset = r.offset, key = r.key_str()))]
    async fn transform(&self, r: &Record) -> Result<Vec<OutboundRecord>, HandlerError> {
        self.log(r)?;
        Ok(vec![OutboundRecord::new(
            &self.output_topic,
            r.key_str(),
            r.payload().to_vec(),
        )])
    }

    async fn before_commit(&self) -> Result<(), HandlerError> {
        if let Some(marker) = &self.holding_marker {
            eprintln!("probe: outputs produced; holding the transaction open");
            std::fs::write(marker, b"holding").map_err(HandlerError::retryable)?;
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

async fn run(settings: Settings, ctx: ServiceContext) -> anyhow::Result<()> {
    let p = &settings.probe;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p.output_path)?;
    let probe = Arc::new(Probe {
        out: Mutex::new(out),
        work: Duration::from_millis(p.work_ms),
        output_topic: p.output_topic.clone(),
        holding_marker: p
            .hang_before_commit
            .then(|| format!("{}.holding", p.output_path).into()),
    });
    let lp = ConsumeLoop::new(
        &settings.common.kafka,
        &settings.consumer,
        &ctx,
        Arc::new(NoLetters),
    )
    .topics(&[&p.topic]);
    ctx.started();
    match p.mode.as_str() {
        "transactional" => lp.run_transactional(probe).await?,
        _ => lp.run(probe).await?,
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    dora_service::main::<Settings, _, _>("kafka-probe", run).await
}
