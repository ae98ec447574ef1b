//! The replica's view of `agent-health`: a [`TopicTail`] (assigned
//! partitions, no consumer group, read_committed) takes every record into the
//! [`AgentDirectory`] and publishes how far it has read. The processor asks
//! [`HealthView::caught_up`] before it folds a partition: the view has then
//! read every health record committed when it asked (the previous owner's
//! last transaction included), so no fold starts from an older state.

use std::collections::HashMap;
use std::time::Duration;

use dora_kafka::consume::Record;
use dora_kafka::tail::{Ends, TopicTail};
use dora_kafka::{KafkaError, KafkaSettings};
use dora_schema::{AgentHealth, Codec};
use dora_telemetry::Readiness;
use tokio::sync::watch;

use crate::directory::AgentDirectory;
use crate::wire::{agent_state, WireError};

/// Readiness condition that holds once this replica has read agent-health up
/// to its end as of start-up (until then GetAgent could miss agents).
pub const HEALTH_LOADED: &str = "agent-health-loaded";

/// Pause between attempts when the registry or a broker does not answer.
const RETRY: Duration = Duration::from_millis(500);

/// How far the view has read, and a way to look up the topic's ends.
#[derive(Clone)]
pub struct HealthView {
    positions: watch::Receiver<HashMap<i32, i64>>,
    ends: Ends,
}

impl HealthView {
    /// Starts reading `topic` into `directory`; the returned task runs for
    /// the life of the process unless the tail fails. Marks [`HEALTH_LOADED`]
    /// ready once the start-up end is reached.
    pub async fn open(
        kafka: &KafkaSettings,
        topic: &str,
        codec: Codec,
        directory: AgentDirectory,
        readiness: Readiness,
    ) -> Result<(Self, tokio::task::JoinHandle<Result<(), KafkaError>>), KafkaError> {
        let tail = TopicTail::open(kafka, topic).await?;
        let (tx, positions) = watch::channel(HashMap::new());
        let view = Self {
            positions,
            ends: tail.ends(),
        };
        let task = tokio::spawn(follow(tail, codec, directory, tx));
        let loaded = view.clone();
        tokio::spawn(async move {
            readiness.set_not_ready(HEALTH_LOADED, "reading agent-health");
            if loaded.caught_up().await {
                tracing::info!("agent-health loaded");
                readiness.set_ready(HEALTH_LOADED);
            }
        });
        Ok((view, task))
    }

    /// Waits until the view has read everything on the topic now (records of
    /// transactions still open: once they are settled). Broker errors of the
    /// end lookup are retried. False only when the view stopped.
    pub async fn caught_up(&self) -> bool {
        let ends = loop {
            match self.ends.now().await {
                Ok(ends) => break ends,
                Err(e) => {
                    tracing::warn!(error = %e, "looking up the ends of agent-health failed; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        };
        let mut rx = self.positions.clone();
        let reached = rx
            .wait_for(|read| {
                ends.iter()
                    .all(|end| end.reached_by(read.get(&end.partition).copied()))
            })
            .await
            .is_ok();
        reached
    }
}

/// Applies every batch of the tail to `directory`, then publishes the positions.
async fn follow(
    mut tail: TopicTail,
    codec: Codec,
    directory: AgentDirectory,
    positions: watch::Sender<HashMap<i32, i64>>,
) -> Result<(), KafkaError> {
    while let Some(batch) = tail.next().await {
        let batch = batch?;
        for record in &batch.records {
            take_in(&codec, &directory, record).await;
            // A long backlog always has a record ready: let the processor and
            // gRPC have the worker now and then.
            tokio::task::consume_budget().await;
        }
        positions.send_modify(|p| p.extend(batch.positions.iter().copied()));
    }
    Ok(())
}

/// Takes one agent-health record into the directory. A registry outage is
/// waited out (the record cannot be skipped); an unreadable record is
/// skipped with a warning (every replica reads it: it is not dead-lettered N times).
async fn take_in(codec: &Codec, directory: &AgentDirectory, record: &Record) {
    let Some(payload) = record.payload.as_deref() else {
        if let Some(agent) = record.key_str() {
            directory.remove(agent);
        }
        return;
    };
    loop {
        let decoded = codec.decode::<AgentHealth>(&record.topic, payload).await;
        match decoded.map_err(WireError::from).and_then(agent_state) {
            Ok(state) => {
                directory.merge(state);
                return;
            }
            Err(e) if e.retryable => {
                tracing::warn!(error = %e, "decoding agent-health: registry unavailable; retrying");
                tokio::time::sleep(RETRY).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, partition = record.partition, offset = record.offset, "skipping unreadable agent-health record");
                return;
            }
        }
    }
}
