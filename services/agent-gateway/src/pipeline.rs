//! The Kafka side of the gateway, all through the runtime crate: the event
//! sink (agent-events producer), the health processor (group
//! `agent-event-processor` on agent-events -> agent-health), the health reader
//! (every replica reads agent-health whole into its [`AgentDirectory`]) and the
//! liveness check that turns silent agents UNHEALTHY.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dora_kafka::consume::{BatchHandler, Handler, HandlerError, Record};
use dora_kafka::{Delivery, ProduceError, Producer};
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::directory::AgentDirectory;
use crate::health::{self, AgentState, Transition};
use crate::intake::{Delivered, EventSink, PendingDelivery, SinkError, StampedEvent};
use crate::metrics;
use crate::wire::{agent_event, agent_health, agent_state, observation, status_name, WireError};
use dora_schema::{AgentEvent, AgentHealth, Codec};

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Produces agent events to the events topic, keyed by agent id, and resolves
/// once the broker acknowledged them.
pub struct KafkaEventSink {
    producer: Producer,
    codec: Codec,
    topic: String,
}

impl KafkaEventSink {
    /// A sink writing to `topic`.
    pub fn new(producer: Producer, codec: Codec, topic: impl Into<String>) -> Self {
        Self {
            producer,
            codec,
            topic: topic.into(),
        }
    }
}

fn sink_error(e: ProduceError) -> SinkError {
    if e.is_retryable() {
        SinkError::Unavailable(e.to_string())
    } else {
        SinkError::Rejected(e.to_string())
    }
}

impl EventSink for KafkaEventSink {
    fn enqueue(&self, event: StampedEvent) -> BoxFuture<'_, Result<PendingDelivery, SinkError>> {
        Box::pin(async move {
            let value = agent_event(&event);
            let delivery = self
                .producer
                .enqueue(&self.codec, &self.topic, Some(&value.agent_id), &value)
                .await
                .map_err(sink_error)?;
            let pending: PendingDelivery = Box::pin(async move {
                let d = delivery.await.map_err(sink_error)?;
                Ok(Delivered {
                    partition: d.partition,
                    offset: d.offset,
                })
            });
            Ok(pending)
        })
    }
}

/// Writes agent health records to the compacted health topic.
#[derive(Clone)]
pub struct HealthPublisher {
    producer: Producer,
    codec: Codec,
    topic: String,
    directory: AgentDirectory,
}

impl HealthPublisher {
    /// A publisher to `topic` that also updates this replica's `directory` at once.
    pub fn new(
        producer: Producer,
        codec: Codec,
        topic: impl Into<String>,
        directory: AgentDirectory,
    ) -> Self {
        Self {
            producer,
            codec,
            topic: topic.into(),
            directory,
        }
    }

    /// Produces `state` (awaiting the ack), then takes it into the directory.
    pub async fn publish(&self, state: AgentState) -> Result<(), HandlerError> {
        self.enqueue(&state).await?.await.map_err(produce_error)?;
        self.delivered(state);
        Ok(())
    }

    /// Enqueues `state`; the returned delivery resolves on the broker's ack.
    /// Call [`delivered`](Self::delivered) after it resolved successfully.
    pub async fn enqueue(&self, state: &AgentState) -> Result<Delivery, HandlerError> {
        let value = agent_health(state);
        self.producer
            .enqueue(&self.codec, &self.topic, Some(&value.agent_id), &value)
            .await
            .map_err(produce_error)
    }

    /// Takes an acknowledged `state` into this replica's directory.
    pub fn delivered(&self, state: AgentState) {
        metrics::health_published(status_name(state.status));
        self.directory.merge(state);
    }
}

fn produce_error(e: ProduceError) -> HandlerError {
    if e.is_retryable() {
        HandlerError::unavailable(e.error_type(), e.to_string())
    } else {
        HandlerError::rejected(e.error_type(), e.to_string())
    }
}

fn to_handler_error(kind: &str, e: WireError) -> HandlerError {
    if e.retryable {
        HandlerError::unavailable(kind, e.message)
    } else {
        HandlerError::rejected(kind, e.message)
    }
}

/// The health processor: applies each agent event, in order, to the agent's
/// health and publishes the result.
///
/// Per batch, each agent's events are applied in order and only its latest
/// state is published (agent-health is a latest-state topic; under load this
/// turns thousands of heartbeats into one record per agent per batch), and the
/// acks are awaited together instead of one broker round trip per event.
pub struct HealthProcessor {
    codec: Codec,
    publisher: HealthPublisher,
    directory: AgentDirectory,
    /// Per agent, the (partition, offset) of the last event applied: when a
    /// batch fails part way and the loop replays its records one by one, events
    /// already applied are not applied twice.
    applied: Mutex<HashMap<String, (i32, i64)>>,
    /// How far behind the events this processor is (read by the liveness check).
    lag: ProcessorLag,
}

impl HealthProcessor {
    /// A processor over this replica's `directory` (the previous state of each
    /// agent) that reports how far behind it is to `lag`.
    pub fn new(
        codec: Codec,
        publisher: HealthPublisher,
        directory: AgentDirectory,
        lag: ProcessorLag,
    ) -> Self {
        Self {
            codec,
            publisher,
            directory,
            applied: Mutex::default(),
            lag,
        }
    }

    fn already_applied(&self, agent: &str, r: &Record) -> bool {
        let applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        applied
            .get(agent)
            .is_some_and(|(p, o)| *p == r.partition && r.offset <= *o)
    }

    fn mark_applied(&self, agent: &str, r: &Record) {
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        applied.insert(agent.to_string(), (r.partition, r.offset));
    }

    /// The event in `record`; `None` for a tombstone (it says nothing about health).
    async fn decode(&self, record: &Record) -> Result<Option<AgentEvent>, HandlerError> {
        let Some(payload) = record.payload.as_deref() else {
            return Ok(None);
        };
        let event: AgentEvent = self
            .codec
            .decode(&record.topic, payload)
            .await
            .map_err(|e| to_handler_error("UndecodableAgentEvent", e.into()))?;
        if event.agent_id.is_empty() {
            return Err(HandlerError::rejected(
                "InvalidAgentEvent",
                "agentId is empty",
            ));
        }
        Ok(Some(event))
    }

    /// The agent's next state after `event`, from `previous`; `None` when
    /// nothing changes (unknown types are logged and counted, as the seed does).
    fn next_state(previous: Option<&AgentState>, event: &AgentEvent) -> Option<AgentState> {
        match health::apply(previous, &observation(event), now_ms()) {
            Transition::Updated(next) => Some(next),
            Transition::Unchanged => None,
            Transition::UnknownEventType(t) => {
                tracing::warn!(event_type = %t, agent_id = %event.agent_id, "Unknown event type");
                metrics::unknown_event_type(&t);
                None
            }
        }
    }
}

impl BatchHandler for HealthProcessor {
    async fn handle_batch(&self, records: &[Record]) -> Result<(), HandlerError> {
        // Latest state per agent in this batch, and the order agents were first touched.
        let mut latest: HashMap<String, AgentState> = HashMap::new();
        let mut order: Vec<String> = Vec::new();
        let mut touched: Vec<(&Record, String)> = Vec::with_capacity(records.len());
        for r in records {
            let Some(event) = self.decode(r).await? else {
                continue;
            };
            if self.already_applied(&event.agent_id, r) {
                continue;
            }
            let previous = latest
                .get(&event.agent_id)
                .cloned()
                .or_else(|| self.directory.get(&event.agent_id));
            if let Some(next) = Self::next_state(previous.as_ref(), &event) {
                if !latest.contains_key(&event.agent_id) {
                    order.push(event.agent_id.clone());
                }
                latest.insert(event.agent_id.clone(), next);
            }
            touched.push((r, event.agent_id));
        }
        let mut deliveries = Vec::with_capacity(order.len());
        for agent in order {
            if let Some(state) = latest.remove(&agent) {
                let delivery = self.publisher.enqueue(&state).await?;
                deliveries.push((agent, state, delivery));
            }
        }
        let mut failed_agents: Vec<String> = Vec::new();
        let mut failure: Option<HandlerError> = None;
        for (agent, state, delivery) in deliveries {
            match delivery.await {
                Ok(_) => self.publisher.delivered(state),
                Err(e) => {
                    failed_agents.push(agent);
                    failure.get_or_insert(produce_error(e));
                }
            }
        }
        for (r, agent) in touched {
            if !failed_agents.contains(&agent) {
                self.mark_applied(&agent, r);
            }
        }
        if failure.is_none() {
            if let Some(newest) = records.iter().filter_map(|r| r.timestamp).max() {
                self.lag.observe(newest, now_ms());
            }
        }
        failure.map_or(Ok(()), Err)
    }

    #[tracing::instrument(name = "agent_event", skip_all, fields(topic = %record.topic, partition = record.partition, offset = record.offset, key = record.key_str().unwrap_or("")))]
    async fn handle_one(&self, record: &Record) -> Result<(), HandlerError> {
        let Some(event) = self.decode(record).await? else {
            return Ok(());
        };
        if self.already_applied(&event.agent_id, record) {
            return Ok(());
        }
        if let Some(next) = Self::next_state(self.directory.get(&event.agent_id).as_ref(), &event) {
            self.publisher.publish(next).await?;
        }
        self.mark_applied(&event.agent_id, record);
        Ok(())
    }
}

/// Readiness condition that holds once this replica has read agent-health up
/// to where it was at start-up (until then GetAgent could miss agents).
pub const HEALTH_LOADED: &str = "agent-health-loaded";

/// Tracks the reader's progress towards the high watermarks it started with.
#[derive(Debug)]
pub struct CatchUp {
    /// Partition -> offset of the last record present at start-up.
    pending: Mutex<HashMap<i32, i64>>,
    readiness: dora_telemetry::Readiness,
    loaded: tokio::sync::watch::Sender<bool>,
}

impl CatchUp {
    /// Waits for the given `(partition, low, high)` watermarks; ready at once when empty.
    pub fn new(watermarks: &[(i32, i64, i64)], readiness: dora_telemetry::Readiness) -> Self {
        let pending: HashMap<i32, i64> = watermarks
            .iter()
            .filter(|(_, low, high)| high > low)
            .map(|(p, _, high)| (*p, high - 1))
            .collect();
        let c = Self {
            pending: Mutex::new(pending),
            readiness,
            loaded: tokio::sync::watch::Sender::new(false),
        };
        c.update(|_| {});
        c
    }

    fn update(&self, f: impl FnOnce(&mut HashMap<i32, i64>)) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let before = pending.len();
        f(&mut pending);
        if pending.is_empty() {
            if before > 0 {
                tracing::info!("agent-health loaded");
            }
            self.readiness.set_ready(HEALTH_LOADED);
            self.loaded.send_replace(true);
        } else {
            self.readiness.set_not_ready(
                HEALTH_LOADED,
                format!("reading agent-health: {} partitions to go", pending.len()),
            );
        }
    }

    /// Resolves once agent-health was read up to its start-up watermarks (or
    /// waiting was given up). The processor and the liveness check start only
    /// then: applying an event to, or judging the silence of, an agent whose
    /// latest record has not been read yet would publish a state built on an
    /// old one (a task count starting over, a spurious UNHEALTHY).
    pub async fn loaded(&self) {
        let mut rx = self.loaded.subscribe();
        // The sender lives in `self`, so waiting cannot fail.
        let _ = rx.wait_for(|loaded| *loaded).await;
    }

    /// Notes that the reader saw `offset` of `partition`.
    pub fn saw(&self, partition: i32, offset: i64) {
        let done = {
            let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.get(&partition).is_some_and(|last| offset >= *last)
        };
        if done {
            self.update(|p| {
                p.remove(&partition);
            });
        }
    }

    /// Gives up waiting (e.g. the last records were compacted away): ready now.
    pub fn give_up(&self) {
        let left = self.pending.lock().unwrap_or_else(|p| p.into_inner()).len();
        if left > 0 {
            tracing::warn!(
                partitions = left,
                "agent-health not fully read in time; serving what was read"
            );
        }
        self.update(HashMap::clear);
    }
}

/// The health reader: takes every agent-health record into the directory.
pub struct HealthReader {
    codec: Codec,
    directory: AgentDirectory,
    catch_up: Arc<CatchUp>,
}

impl HealthReader {
    /// A reader filling `directory`, reporting its start-up progress to `catch_up`.
    pub fn new(codec: Codec, directory: AgentDirectory, catch_up: Arc<CatchUp>) -> Self {
        Self {
            codec,
            directory,
            catch_up,
        }
    }
}

impl Handler for HealthReader {
    async fn handle(&self, record: &Record) -> Result<(), HandlerError> {
        // While it reads a long backlog the consumer always has a record ready,
        // so nothing else would make this loop yield: give the worker back to
        // the processor, the liveness check and gRPC every so often.
        tokio::task::consume_budget().await;
        let result = self.take_in(record).await;
        if result.is_ok() {
            self.catch_up.saw(record.partition, record.offset);
        }
        result
    }
}

impl HealthReader {
    async fn take_in(&self, record: &Record) -> Result<(), HandlerError> {
        let Some(payload) = record.payload.as_deref() else {
            if let Some(agent) = record.key_str() {
                self.directory.remove(agent);
            }
            return Ok(());
        };
        let decoded = self
            .codec
            .decode::<AgentHealth>(&record.topic, payload)
            .await;
        match decoded.map_err(WireError::from).and_then(agent_state) {
            Ok(state) => {
                self.directory.merge(state);
                Ok(())
            }
            Err(e) if e.retryable => Err(HandlerError::unavailable("HealthDecoding", e.message)),
            Err(e) => {
                // Every replica reads this topic; one bad record is skipped, not
                // dead-lettered N times.
                tracing::warn!(error = %e, partition = record.partition, offset = record.offset, "skipping unreadable agent-health record");
                Ok(())
            }
        }
    }
}

/// How far behind the wall clock the health processor is: the age of the
/// newest record in its latest applied batch. Agent events still waiting in
/// the processor's backlog have not reached the directory yet, so the liveness
/// check judges silence on the clock the processor has caught up to, never on
/// the wall clock alone: an agent whose heartbeats are merely unprocessed is
/// not declared silent.
#[derive(Debug, Clone, Default)]
pub struct ProcessorLag(Arc<AtomicI64>);

impl ProcessorLag {
    /// Notes a batch whose newest record was written at `newest_ms`.
    pub fn observe(&self, newest_ms: i64, now_ms: i64) {
        self.0.store((now_ms - newest_ms).max(0), Ordering::Relaxed);
    }

    /// Current lag, ms.
    pub fn ms(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }

    /// The time up to which agent events are known to be applied.
    pub fn clock(&self, now_ms: i64) -> i64 {
        now_ms - self.ms()
    }
}

/// The agents of `directory` silent for longer than `allowed_silence_ms` as
/// of `clock_ms` (the processor's clock, see [`ProcessorLag`]), as the
/// UNHEALTHY records to publish, computed at `now_ms`.
pub fn silent_agents(
    directory: &AgentDirectory,
    clock_ms: i64,
    now_ms: i64,
    allowed_silence_ms: i64,
) -> Vec<AgentState> {
    directory
        .live()
        .iter()
        .filter_map(|state| health::expire(state, clock_ms, allowed_silence_ms))
        .map(|silent| AgentState {
            updated_at: now_ms,
            ..silent
        })
        .collect()
}

/// Every `period`, marks agents silent for longer than `allowed_silence_ms`
/// UNHEALTHY, until `shutdown`.
pub async fn check_liveness(
    directory: AgentDirectory,
    publisher: HealthPublisher,
    lag: ProcessorLag,
    period: Duration,
    allowed_silence_ms: i64,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = now_ms();
        for silent in silent_agents(&directory, lag.clock(now), now, allowed_silence_ms) {
            tracing::info!(agent_id = %silent.agent_id, last_heartbeat = ?silent.last_heartbeat, processor_lag_ms = lag.ms(), "agent went silent: UNHEALTHY");
            if let Err(e) = publisher.publish(silent).await {
                tracing::warn!(error = %e.message(), "could not publish UNHEALTHY; will retry");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catch_up_is_ready_when_every_partition_reached_its_start_watermark() {
        let r = dora_telemetry::Readiness::new();
        let c = CatchUp::new(&[(0, 0, 3), (1, 5, 5), (2, 0, 1)], r.clone());
        assert!(!r.is_ready(), "{}", r.report());
        c.saw(0, 1);
        c.saw(2, 0);
        assert!(!r.is_ready());
        c.saw(0, 2);
        assert!(r.is_ready(), "{}", r.report());
        assert!(CatchUp::new(&[(0, 4, 4)], dora_telemetry::Readiness::new())
            .readiness
            .is_ready());
    }

    #[tokio::test]
    async fn loaded_resolves_once_caught_up_or_given_up() {
        let c = CatchUp::new(&[(0, 0, 2)], dora_telemetry::Readiness::new());
        let early = tokio::time::timeout(Duration::from_millis(20), c.loaded()).await;
        assert!(early.is_err(), "not loaded before offset 1 was seen");
        c.saw(0, 1);
        tokio::time::timeout(Duration::from_secs(1), c.loaded())
            .await
            .expect("loaded");
        let g = CatchUp::new(&[(0, 0, 2)], dora_telemetry::Readiness::new());
        g.give_up();
        tokio::time::timeout(Duration::from_secs(1), g.loaded())
            .await
            .expect("loaded after giving up");
        let empty = CatchUp::new(&[], dora_telemetry::Readiness::new());
        tokio::time::timeout(Duration::from_secs(1), empty.loaded())
            .await
            .expect("nothing to read");
    }

    fn heartbeating(agent: &str, last_heartbeat: i64) -> AgentState {
        AgentState {
            agent_id: agent.into(),
            agent_type: "GAP_ANALYZER".into(),
            status: health::HealthStatus::Healthy,
            last_seen: last_heartbeat,
            last_heartbeat: Some(last_heartbeat),
            resource_usage: None,
            tasks_completed: 0,
            last_task_id: None,
            last_error: None,
            updated_at: last_heartbeat,
        }
    }

    #[test]
    fn an_agent_whose_heartbeats_wait_in_the_processor_backlog_is_not_silent() {
        let d = AgentDirectory::default();
        // Heartbeated at 0; it kept heartbeating, but the processor is 40 s
        // behind (replaying a backlog), so the directory only knows the one at 0.
        d.merge(heartbeating("busy", 0));
        let now = 60_000;
        let lag = ProcessorLag::default();
        lag.observe(now - 40_000, now);
        assert!(silent_agents(&d, lag.clock(now), now, 30_000).is_empty());
        // Caught up, and still nothing newer than 0: now it is silent.
        lag.observe(now, now);
        let silent = silent_agents(&d, lag.clock(now), now, 30_000);
        assert_eq!(silent.len(), 1);
        assert_eq!(silent[0].status, health::HealthStatus::Unhealthy);
        assert_eq!(silent[0].updated_at, now);
    }

    #[test]
    fn giving_up_makes_ready() {
        let r = dora_telemetry::Readiness::new();
        let c = CatchUp::new(&[(0, 0, 3)], r.clone());
        c.give_up();
        assert!(r.is_ready());
    }
}
