//! The loop itself: poll, gather, admit, process through the mode's handler,
//! dead-letter or retry, commit; rebalance-safe and drained on shutdown.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dora_telemetry::{Readiness, ServiceContext};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::Producer as _;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::context::{LoopContext, Shared, Tp};
use super::{
    BatchHandler, ConsumerSettings, DeadLetterEncoder, Handler, HandlerError, Record, Transform,
};
use crate::inspect::record_of;
use crate::producer::{
    Delivery, OutboundRecord, ProduceError, Producer, ProducerSettings, CONTENT_TYPE_HEADER,
};
use crate::{metrics, topics, KafkaError, KafkaSettings};

/// Where a newly assigned partition starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The group's committed offset (or `auto_offset_reset`). The default.
    Committed,
    /// The first record at or after this timestamp, epoch milliseconds (e.g.
    /// to rebuild a time window after a restart or rebalance).
    Timestamp(i64),
    /// The first record still in the log.
    Beginning,
    /// A given offset.
    Offset(i64),
}

/// Why the loop stopped other than by a requested shutdown.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// Building or subscribing the clients failed.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The transactional producer hit a fatal error (e.g. it was fenced by a
    /// newer instance with the same `transactional.id`).
    #[error("transactional producer failed: {0}")]
    Transaction(String),
}

type OnAssign = Arc<dyn Fn(&str, i32) -> StartAt + Send + Sync>;

/// The consume loop. Build it, choose topics, then run one mode until the
/// service's shutdown token is cancelled.
///
/// ```no_run
/// # use dora_kafka::consume::{ConsumeLoop, ConsumerSettings, Handler, HandlerError, Record};
/// # struct Archive;
/// # impl Handler for Archive {
/// #     async fn handle(&self, _r: &Record) -> Result<(), HandlerError> { Ok(()) }
/// # }
/// # async fn f<D: dora_kafka::consume::DeadLetterEncoder>(ctx: dora_telemetry::ServiceContext, codec: std::sync::Arc<D>) -> Result<(), Box<dyn std::error::Error>> {
/// let settings = ConsumerSettings { group_id: "audit-sink".into(), ..Default::default() };
/// ConsumeLoop::new(&Default::default(), &settings, &ctx, codec)
///     .topics(&["user-activities"])
///     .run(Archive)
///     .await?;
/// # Ok(()) }
/// ```
pub struct ConsumeLoop<D> {
    kafka: KafkaSettings,
    settings: ConsumerSettings,
    producer_settings: ProducerSettings,
    service: String,
    readiness: Readiness,
    shutdown: CancellationToken,
    dead_letters: Arc<D>,
    subscription: Vec<String>,
    on_assign: Option<OnAssign>,
}

impl<D: DeadLetterEncoder> ConsumeLoop<D> {
    /// A loop for `ctx`'s service; `dead_letters` encodes the dead letters it writes.
    pub fn new(
        kafka: &KafkaSettings,
        settings: &ConsumerSettings,
        ctx: &ServiceContext,
        dead_letters: Arc<D>,
    ) -> Self {
        Self {
            kafka: kafka.clone(),
            settings: settings.clone(),
            producer_settings: ProducerSettings::default(),
            service: ctx.name.to_string(),
            readiness: ctx.readiness.clone(),
            shutdown: ctx.shutdown.clone(),
            dead_letters,
            subscription: Vec::new(),
            on_assign: None,
        }
    }

    /// Subscribes to these topics.
    pub fn topics(mut self, topics: &[&str]) -> Self {
        self.subscription
            .extend(topics.iter().map(|t| t.to_string()));
        self
    }

    /// Subscribes to every topic matching `regex` (e.g. `^.*-dlq$`), including
    /// topics created later (found at the next metadata refresh).
    pub fn pattern(mut self, regex: &str) -> Self {
        let regex = if regex.starts_with('^') {
            regex.to_string()
        } else {
            format!("^{regex}")
        };
        self.subscription.push(regex);
        self
    }

    /// Settings of the loop's producer (dead letters, transactional outputs).
    pub fn producer_settings(mut self, settings: &ProducerSettings) -> Self {
        self.producer_settings = settings.clone();
        self
    }

    /// Called for each newly assigned partition; its answer says where to start.
    pub fn on_assign(mut self, f: impl Fn(&str, i32) -> StartAt + Send + Sync + 'static) -> Self {
        self.on_assign = Some(Arc::new(f));
        self
    }

    /// Runs the per-message mode until shutdown.
    pub async fn run<H: Handler>(self, handler: H) -> Result<(), ConsumeError> {
        self.drive(Mode::<H, NoHandler, NoHandler>::Each(handler))
            .await
    }

    /// Runs the batch mode until shutdown.
    pub async fn run_batches<B: BatchHandler>(self, handler: B) -> Result<(), ConsumeError> {
        self.drive(Mode::<NoHandler, B, NoHandler>::Batches(handler))
            .await
    }

    /// Runs consume-transform-produce in Kafka transactions until shutdown.
    /// Needs `consumer.transactional_id`.
    pub async fn run_transactional<T: Transform>(self, transform: T) -> Result<(), ConsumeError> {
        self.drive(Mode::<NoHandler, NoHandler, T>::Transactional(transform))
            .await
    }

    async fn drive<H: Handler, B: BatchHandler, T: Transform>(
        self,
        mode: Mode<H, B, T>,
    ) -> Result<(), ConsumeError> {
        let transactional = matches!(mode, Mode::Transactional(_));
        // Not ready from the first moment, before any client exists.
        self.readiness.set_not_ready(
            &format!("consumer {} assigned", self.settings.group_id),
            "starting",
        );
        if self.subscription.is_empty() {
            return Err(KafkaError::Config("the consume loop has no topics".into()).into());
        }
        let producer = if transactional {
            let id = self
                .settings
                .transactional_id
                .clone()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    KafkaError::Config(
                        "consumer.transactional_id is required for the transactional mode".into(),
                    )
                })?;
            let (kafka, ps, service, readiness) = (
                self.kafka.clone(),
                self.producer_settings.clone(),
                self.service.clone(),
                self.readiness.clone(),
            );
            tokio::task::spawn_blocking(move || {
                Producer::transactional(
                    &kafka,
                    &ps,
                    &service,
                    &readiness,
                    &id,
                    Duration::from_secs(30),
                )
            })
            .await
            .map_err(|e| KafkaError::Admin(format!("producer task: {e}")))??
        } else {
            Producer::new(
                &self.kafka,
                &self.producer_settings,
                &self.service,
                &self.readiness,
            )?
        };
        let shared = Shared::new(
            &self.settings.group_id,
            self.readiness.clone(),
            self.settings.read_committed(),
            transactional,
        );
        // The loop's own conditions are registered: the boot sequence's
        // "starting" gate may open (see `ServiceContext::started`).
        self.readiness.set_ready(dora_telemetry::STARTING);
        let mut cfg = self.settings.client_config(&self.kafka)?;
        if self.kafka.client_id.is_empty() {
            cfg.set("client.id", &self.service);
        }
        let consumer: StreamConsumer<LoopContext> = cfg
            .create_with_context(LoopContext {
                shared: shared.clone(),
            })
            .map_err(KafkaError::Client)?;
        let subs: Vec<&str> = self.subscription.iter().map(String::as_str).collect();
        consumer.subscribe(&subs).map_err(KafkaError::Client)?;
        tracing::info!(group = %self.settings.group_id, topics = ?subs, "consume loop started");

        let watchdog = spawn_watchdog(
            shared.clone(),
            Duration::from_millis(self.settings.stuck_after_ms),
        );
        let mut core = Core {
            consumer: &consumer,
            shared: shared.clone(),
            settings: &self.settings,
            producer,
            dead_letters: self.dead_letters.clone(),
            service: self.service.clone(),
            on_assign: self.on_assign.clone(),
            retries: HashMap::new(),
            starts: HashMap::new(),
            since_commit: 0,
            last_commit: Instant::now(),
        };
        let result = core.run(&mode, &self.shutdown).await;
        // Drain: in-flight work finished (or was abandoned at the deadline) in `run`.
        shared.commit_sync(&consumer, None);
        watchdog.abort();
        match &result {
            Ok(()) => self
                .readiness
                .set_not_ready(&shared.assigned_condition(), "stopped"),
            Err(e) => {
                tracing::error!(error = %e, group = %self.settings.group_id, "consume loop failed");
                self.readiness
                    .set_not_ready(&shared.assigned_condition(), format!("failed: {e}"));
            }
        }
        consumer.unsubscribe();
        drop(core);
        drop(consumer);
        tracing::info!(group = %self.settings.group_id, "consume loop stopped");
        result
    }
}

fn spawn_watchdog(shared: Arc<Shared>, stuck_after: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500).min(stuck_after));
        loop {
            tick.tick().await;
            let reason = {
                let state = shared.lock();
                match state.busy_since {
                    Some(t) if t.elapsed() > stuck_after => {
                        Some(format!("a handler has run for {:?}", t.elapsed()))
                    }
                    _ => state.stuck.values().next().cloned(),
                }
            };
            match reason {
                Some(r) => shared
                    .readiness
                    .set_not_ready(&shared.progress_condition(), r),
                None => shared.readiness.set_ready(&shared.progress_condition()),
            }
        }
    })
}

/// A handler type for the modes not chosen.
struct NoHandler;

impl Handler for NoHandler {
    async fn handle(&self, _: &Record) -> Result<(), HandlerError> {
        Ok(())
    }
}

impl BatchHandler for NoHandler {
    async fn handle_batch(&self, _: &[Record]) -> Result<(), HandlerError> {
        Ok(())
    }
    async fn handle_one(&self, _: &Record) -> Result<(), HandlerError> {
        Ok(())
    }
}

impl Transform for NoHandler {
    async fn transform(&self, _: &Record) -> Result<Vec<OutboundRecord>, HandlerError> {
        Ok(Vec::new())
    }
}

enum Mode<H, B, T> {
    Each(H),
    Batches(B),
    Transactional(T),
}

impl<H, B, T> Mode<H, B, T> {
    fn batching(&self) -> bool {
        !matches!(self, Mode::Each(_))
    }
}

/// A partition waiting out a retry backoff, rewound to `offset`.
struct RetryState {
    offset: i64,
    attempts: u32,
    /// `Some` while paused; `None` once resumed and waiting for `offset` again.
    resume_at: Option<Instant>,
    /// The record at `offset` came back and is being retried; records after it flow again.
    released: bool,
}

impl RetryState {
    /// True when a record at `offset` must wait.
    fn holds(&self, offset: i64) -> bool {
        self.resume_at.is_some() || (!self.released && offset != self.offset)
    }
}

/// A newly assigned partition the `on_assign` callback moved.
struct StartState {
    target: Offset,
    seeked: bool,
    mismatches: u32,
}

struct Core<'c, D> {
    consumer: &'c StreamConsumer<LoopContext>,
    shared: Arc<Shared>,
    settings: &'c ConsumerSettings,
    producer: Producer,
    dead_letters: Arc<D>,
    service: String,
    on_assign: Option<OnAssign>,
    retries: HashMap<Tp, RetryState>,
    starts: HashMap<Tp, StartState>,
    since_commit: u64,
    last_commit: Instant,
}

const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

fn tp_list(tp: &Tp, offset: Offset) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    let _ = tpl.add_partition_offset(&tp.0, tp.1, offset);
    tpl
}

fn record_span(record: &Record) -> tracing::Span {
    let span = tracing::info_span!(
        "kafka.process",
        otel.kind = "consumer",
        topic = %record.topic,
        partition = record.partition,
        offset = record.offset,
        key = record.key_str().unwrap_or_default(),
    );
    dora_telemetry::propagation::set_parent(
        &span,
        record.header_str(dora_telemetry::propagation::TRACEPARENT),
        record.header_str(dora_telemetry::propagation::TRACESTATE),
    );
    span
}

impl<D: DeadLetterEncoder> Core<'_, D> {
    async fn run<H: Handler, B: BatchHandler, T: Transform>(
        &mut self,
        mode: &Mode<H, B, T>,
        shutdown: &CancellationToken,
    ) -> Result<(), ConsumeError> {
        let max_records = if mode.batching() {
            self.settings.max_batch_records.max(1)
        } else {
            1
        };
        let max_wait = Duration::from_millis(self.settings.max_batch_wait_ms);
        let deadline_after = Duration::from_millis(self.settings.shutdown_deadline_ms);
        while !shutdown.is_cancelled() {
            self.resume_due();
            self.start_new_assignments();
            let wake = self.next_wakeup();
            let first = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(wake.into()) => None,
                m = self.consumer.recv() => Some(m.map(|m| record_of(&m))),
            };
            let mut batch = match first {
                None => {
                    self.maybe_commit();
                    continue;
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "consume error");
                    metrics::CONSUMER_ERRORS
                        .with_label_values(&["", "KafkaError"])
                        .inc();
                    continue;
                }
                Some(Ok(r)) => vec![r],
            };
            if batch.len() < max_records {
                let until = tokio::time::Instant::now() + max_wait;
                while batch.len() < max_records {
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep_until(until) => break,
                        m = self.consumer.recv() => match m {
                            Ok(m) => batch.push(record_of(&m)),
                            Err(e) => tracing::warn!(error = %e, "consume error"),
                        },
                    }
                }
            }
            let batch = self.admit(batch);
            if batch.is_empty() {
                continue;
            }
            let work = self.process(mode, batch);
            let stopped = async {
                shutdown.cancelled().await;
                tokio::time::sleep(deadline_after).await;
            };
            tokio::select! {
                r = work => r?,
                _ = stopped => {
                    tracing::warn!(deadline = ?deadline_after, "shutdown deadline passed with work in flight; it will be redelivered");
                    break;
                }
            }
            self.maybe_commit();
        }
        Ok(())
    }

    async fn process<H: Handler, B: BatchHandler, T: Transform>(
        &mut self,
        mode: &Mode<H, B, T>,
        batch: Vec<Record>,
    ) -> Result<(), ConsumeError> {
        match mode {
            Mode::Each(h) => {
                for r in &batch {
                    if self.blocked(r) {
                        continue;
                    }
                    let span = record_span(r);
                    self.process_one(r, h.handle(r), span).await;
                }
                Ok(())
            }
            Mode::Batches(b) => {
                self.process_batch(b, &batch).await;
                Ok(())
            }
            Mode::Transactional(t) => self.process_transaction(t, &batch).await,
        }
    }

    /// True when `r`'s partition is waiting out a retry of an earlier record.
    fn blocked(&self, r: &Record) -> bool {
        self.retries
            .get(&(r.topic.clone(), r.partition))
            .is_some_and(|s| s.holds(r.offset))
    }

    /// Keeps the records the loop may process now: from assigned partitions,
    /// not paused for a retry, at the position an `on_assign` seek asked for.
    fn admit(&mut self, batch: Vec<Record>) -> Vec<Record> {
        // An assignment that happened during the polls above applies first.
        self.start_new_assignments();
        let assigned = self.shared.lock().assigned.clone();
        let mut out = Vec::with_capacity(batch.len());
        let mut dropped: HashSet<Tp> = HashSet::new();
        for r in batch {
            let tp = (r.topic.clone(), r.partition);
            if !assigned.contains(&tp) || dropped.contains(&tp) {
                continue;
            }
            if let Some(s) = self.retries.get_mut(&tp) {
                if !s.holds(r.offset) {
                    s.released = true;
                } else {
                    tracing::debug!(topic = %tp.0, partition = tp.1, offset = r.offset, waiting_for = s.offset, "dropped while retrying");
                    continue;
                }
            }
            if let Some(s) = self.starts.get_mut(&tp) {
                if !s.seeked {
                    continue;
                }
                match s.target {
                    Offset::Offset(t) if r.offset != t && s.mismatches < 3 => {
                        // A record fetched before the seek took effect: seek again.
                        s.mismatches += 1;
                        let ok = self
                            .consumer
                            .seek(&tp.0, tp.1, s.target, KAFKA_TIMEOUT)
                            .is_ok();
                        tracing::debug!(topic = %tp.0, partition = tp.1, offset = r.offset, target = t, ok, "re-seeking");
                        dropped.insert(tp);
                        continue;
                    }
                    _ => {
                        self.starts.remove(&tp);
                    }
                }
            }
            out.push(r);
        }
        let mut state = self.shared.lock();
        for r in &out {
            if let Some(p) = state.positions.get_mut(&(r.topic.clone(), r.partition)) {
                p.polled = Some(p.polled.map_or(r.offset + 1, |x| x.max(r.offset + 1)));
            }
        }
        out
    }

    fn next_wakeup(&self) -> Instant {
        let now = Instant::now();
        let mut wake = now + Duration::from_millis(self.settings.commit_interval_ms.max(10));
        if self.since_commit > 0 {
            wake = wake
                .min(self.last_commit + Duration::from_millis(self.settings.commit_interval_ms));
        }
        for s in self.retries.values() {
            if let Some(t) = s.resume_at {
                wake = wake.min(t);
            }
        }
        if self.starts.values().any(|s| !s.seeked) {
            wake = wake.min(now + Duration::from_millis(100));
        }
        wake.max(now)
    }

    /// Resolves where newly assigned partitions start, and (re)tries their seeks.
    fn start_new_assignments(&mut self) {
        let new = std::mem::take(&mut self.shared.lock().newly_assigned);
        // A reassigned partition starts over: forget retries of the old assignment.
        for tp in &new {
            if self.retries.remove(tp).is_some() {
                let _ = self.consumer.resume(&tp_list(tp, Offset::Invalid));
            }
            self.starts.remove(tp);
        }
        if let Some(f) = &self.on_assign {
            for tp in new {
                let target = match f(&tp.0, tp.1) {
                    StartAt::Committed => continue,
                    StartAt::Beginning => Offset::Beginning,
                    StartAt::Offset(o) => Offset::Offset(o),
                    StartAt::Timestamp(ms) => {
                        let mut q = TopicPartitionList::new();
                        let _ = q.add_partition_offset(&tp.0, tp.1, Offset::Offset(ms));
                        match self.consumer.offsets_for_times(q, KAFKA_TIMEOUT) {
                            Ok(r) => r
                                .find_partition(&tp.0, tp.1)
                                .map(|e| e.offset())
                                .unwrap_or(Offset::End),
                            Err(e) => {
                                tracing::warn!(error = %e, topic = %tp.0, partition = tp.1, "offsets_for_times failed; starting at the committed offset");
                                continue;
                            }
                        }
                    }
                };
                self.starts.insert(
                    tp,
                    StartState {
                        target,
                        seeked: false,
                        mismatches: 0,
                    },
                );
            }
        }
        for (tp, s) in self.starts.iter_mut().filter(|(_, s)| !s.seeked) {
            match self.consumer.seek(&tp.0, tp.1, s.target, KAFKA_TIMEOUT) {
                Ok(()) => {
                    tracing::info!(topic = %tp.0, partition = tp.1, target = ?s.target, "partition moved by on_assign");
                    s.seeked = true;
                }
                Err(e) => {
                    tracing::debug!(error = %e, topic = %tp.0, partition = tp.1, "seek not possible yet")
                }
            }
        }
    }

    fn resume_due(&mut self) {
        let now = Instant::now();
        for (tp, s) in self.retries.iter_mut() {
            if s.resume_at.is_some_and(|t| t <= now) {
                if let Err(e) =
                    self.consumer
                        .seek(&tp.0, tp.1, Offset::Offset(s.offset), KAFKA_TIMEOUT)
                {
                    tracing::warn!(error = %e, topic = %tp.0, partition = tp.1, "seek for retry failed; trying again");
                    s.resume_at = Some(now + Duration::from_millis(200));
                    continue;
                }
                if let Err(e) = self.consumer.resume(&tp_list(tp, Offset::Invalid)) {
                    tracing::warn!(error = %e, topic = %tp.0, partition = tp.1, "resume failed; trying again");
                    s.resume_at = Some(now + Duration::from_millis(200));
                    continue;
                }
                tracing::debug!(topic = %tp.0, partition = tp.1, offset = s.offset, "partition resumed for a retry");
                s.resume_at = None;
            }
        }
    }

    /// Pauses `tp`, to be rewound to `offset` and retried after a backoff.
    fn retry(&mut self, tp: Tp, offset: i64, error: &HandlerError) {
        metrics::CONSUMER_ERRORS
            .with_label_values(&[tp.0.as_str(), error.error_type()])
            .inc();
        let state = self.retries.entry(tp.clone()).or_insert(RetryState {
            offset,
            attempts: 0,
            resume_at: None,
            released: false,
        });
        if state.offset != offset {
            *state = RetryState {
                offset,
                attempts: 0,
                resume_at: None,
                released: false,
            };
        }
        let delay = self.settings.retry.delay(state.attempts);
        state.attempts += 1;
        state.resume_at = Some(Instant::now() + delay);
        state.released = false;
        let attempts = state.attempts;
        if let Err(e) = self.consumer.pause(&tp_list(&tp, Offset::Invalid)) {
            tracing::warn!(error = %e, "pause failed");
        }
        tracing::warn!(topic = %tp.0, partition = tp.1, offset, attempts, ?delay, error = %error, "retryable failure; partition paused");
        if attempts > self.settings.retry.max_retries {
            let reason = format!(
                "{}/{} stuck at offset {offset} after {attempts} attempts: {error}",
                tp.0, tp.1
            );
            self.shared.lock().stuck.insert(tp, reason);
        }
    }

    /// The retries already spent on `r` (0 unless it failed retryably before).
    fn retries_of(&self, r: &Record) -> u32 {
        self.retries
            .get(&(r.topic.clone(), r.partition))
            .filter(|s| s.offset == r.offset)
            .map_or(0, |s| s.attempts)
    }

    fn mark_done(&mut self, r: &Record) {
        let tp = (r.topic.clone(), r.partition);
        if self.retries.get(&tp).is_some_and(|s| s.offset <= r.offset) {
            self.retries.remove(&tp);
        }
        let mut state = self.shared.lock();
        state.stuck.remove(&tp);
        if let Some(p) = state.positions.get_mut(&tp) {
            p.processed = Some(r.offset + 1);
        }
        drop(state);
        self.since_commit += 1;
    }

    fn maybe_commit(&mut self) {
        if self.shared.transactional || self.since_commit == 0 {
            return;
        }
        let due = self.since_commit >= self.settings.commit_every_records
            || self.last_commit.elapsed()
                >= Duration::from_millis(self.settings.commit_interval_ms);
        if !due {
            return;
        }
        let tpl = self.shared.commit_list(None, false);
        if tpl.count() > 0 {
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
                tracing::warn!(error = %e, "offset commit failed");
            }
        }
        self.since_commit = 0;
        self.last_commit = Instant::now();
    }

    fn set_busy(&self, busy: bool) {
        self.shared.lock().busy_since = busy.then(Instant::now);
    }

    /// Runs one handler call and applies the error policy.
    async fn process_one<F>(&mut self, r: &Record, work: F, span: tracing::Span)
    where
        F: std::future::Future<Output = Result<(), HandlerError>>,
    {
        self.set_busy(true);
        let started = Instant::now();
        let result = work.instrument(span.clone()).await;
        self.set_busy(false);
        metrics::PROCESSING_DURATION
            .with_label_values(&[r.topic.as_str()])
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => {
                metrics::MESSAGES_PROCESSED
                    .with_label_values(&[r.topic.as_str()])
                    .inc();
                self.mark_done(r);
            }
            Err(e) if e.is_retryable() => self.retry((r.topic.clone(), r.partition), r.offset, &e),
            Err(e) => {
                metrics::CONSUMER_ERRORS
                    .with_label_values(&[r.topic.as_str(), e.error_type()])
                    .inc();
                let sent = async {
                    let delivery = self.dead_letter(r, &e).await?;
                    delivery.await
                }
                .instrument(span)
                .await;
                match sent {
                    Ok(_) => {
                        metrics::DLQ_WRITES
                            .with_label_values(&[r.topic.as_str()])
                            .inc();
                        tracing::warn!(topic = %r.topic, partition = r.partition, offset = r.offset, error = %e, "dead-lettered");
                        self.mark_done(r);
                    }
                    Err(pe) => {
                        let err = HandlerError::Retryable {
                            error_type: "DeadLetterWrite".into(),
                            message: pe.to_string(),
                        };
                        self.retry((r.topic.clone(), r.partition), r.offset, &err);
                    }
                }
            }
        }
    }

    /// Encodes `r`'s dead letter and enqueues it on `<topic>-dlq` (with the original key).
    async fn dead_letter(&self, r: &Record, e: &HandlerError) -> Result<Delivery, ProduceError> {
        let dlq = topics::dlq_topic(&r.topic);
        let payload = self
            .dead_letters
            .encode_dead_letter(&dlq, r, e, self.retries_of(r), &self.service)
            .await
            .map_err(|(message, retryable)| ProduceError::Encode { message, retryable })?;
        let mut out = OutboundRecord::new(dlq, None, payload)
            .with_header(CONTENT_TYPE_HEADER, crate::producer::AVRO_CONTENT_TYPE);
        out.key = r.key.clone();
        self.producer.enqueue_raw(out).await
    }

    async fn process_batch<B: BatchHandler>(&mut self, b: &B, batch: &[Record]) {
        let topic = batch[0].topic.clone();
        let span = tracing::info_span!("kafka.process_batch", otel.kind = "consumer", topic = %topic, records = batch.len());
        self.set_busy(true);
        let started = Instant::now();
        let result = b.handle_batch(batch).instrument(span).await;
        self.set_busy(false);
        metrics::PROCESSING_DURATION
            .with_label_values(&[topic.as_str()])
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => {
                for r in batch {
                    metrics::MESSAGES_PROCESSED
                        .with_label_values(&[r.topic.as_str()])
                        .inc();
                    self.mark_done(r);
                }
            }
            Err(e) => {
                metrics::CONSUMER_ERRORS
                    .with_label_values(&[topic.as_str(), e.error_type()])
                    .inc();
                tracing::warn!(error = %e, records = batch.len(), "batch failed; processing its records one by one");
                for r in batch {
                    if self.blocked(r) {
                        continue;
                    }
                    let span = record_span(r);
                    self.process_one(r, b.handle_one(r), span).await;
                }
            }
        }
    }

    async fn process_transaction<T: Transform>(
        &mut self,
        t: &T,
        batch: &[Record],
    ) -> Result<(), ConsumeError> {
        if let Some(reason) = self.producer.fatal_error() {
            return Err(ConsumeError::Transaction(reason));
        }
        let producer = self.producer.inner.clone();
        producer
            .begin_transaction()
            .map_err(|e| ConsumeError::Transaction(e.to_string()))?;
        let mut firsts: Vec<(Tp, i64)> = Vec::new();
        let mut positions: HashMap<Tp, i64> = HashMap::new();
        let mut deliveries = Vec::new();
        let mut failure: Option<(Tp, HandlerError)> = None;
        let mut processed: Vec<&Record> = Vec::new();
        for r in batch {
            if self.blocked(r) {
                continue;
            }
            let tp = (r.topic.clone(), r.partition);
            if !firsts.iter().any(|(x, _)| x == &tp) {
                firsts.push((tp.clone(), r.offset));
            }
            let span = record_span(r);
            self.set_busy(true);
            let started = Instant::now();
            let result = t.transform(r).instrument(span.clone()).await;
            self.set_busy(false);
            metrics::PROCESSING_DURATION
                .with_label_values(&[r.topic.as_str()])
                .observe(started.elapsed().as_secs_f64());
            let outputs = match result {
                Ok(outputs) => outputs,
                Err(e) if e.is_retryable() => {
                    failure = Some((tp, e));
                    break;
                }
                Err(e) => {
                    metrics::CONSUMER_ERRORS
                        .with_label_values(&[r.topic.as_str(), e.error_type()])
                        .inc();
                    match self.dead_letter(r, &e).instrument(span.clone()).await {
                        Ok(d) => deliveries.push((d, Some(r.topic.clone()))),
                        Err(pe) => {
                            failure = Some((
                                tp,
                                HandlerError::unavailable("DeadLetterWrite", pe.to_string()),
                            ));
                            break;
                        }
                    }
                    positions.insert(tp, r.offset + 1);
                    continue;
                }
            };
            for out in outputs {
                match self
                    .producer
                    .enqueue_raw(out)
                    .instrument(span.clone())
                    .await
                {
                    Ok(d) => deliveries.push((d, None)),
                    Err(pe) => {
                        failure = Some((
                            tp.clone(),
                            HandlerError::unavailable("Produce", pe.to_string()),
                        ));
                        break;
                    }
                }
            }
            if failure.is_some() {
                break;
            }
            positions.insert(tp, r.offset + 1);
            processed.push(r);
        }
        if failure.is_none() {
            for (d, dlq_of) in deliveries {
                match d.await {
                    Ok(_) => {
                        if let Some(topic) = dlq_of {
                            metrics::DLQ_WRITES
                                .with_label_values(&[topic.as_str()])
                                .inc();
                        }
                    }
                    Err(ProduceError::Fatal(reason)) => {
                        return Err(ConsumeError::Transaction(reason))
                    }
                    Err(pe) if failure.is_none() => {
                        let tp = firsts[0].0.clone();
                        failure = Some((tp, HandlerError::unavailable("Produce", pe.to_string())));
                    }
                    Err(_) => {}
                }
            }
        }
        if failure.is_none() && !positions.is_empty() {
            if let Err(e) = t.before_commit().await {
                failure = Some((firsts[0].0.clone(), e));
            }
        }
        if failure.is_none() && !positions.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for (tp, o) in &positions {
                let _ = tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(*o));
            }
            let gm = self.consumer.group_metadata().ok_or_else(|| {
                ConsumeError::Transaction("consumer has no group metadata".into())
            })?;
            let committed = producer
                .send_offsets_to_transaction(&tpl, &gm, KAFKA_TIMEOUT)
                .and_then(|()| producer.commit_transaction(KAFKA_TIMEOUT));
            match committed {
                Ok(()) => {
                    tracing::debug!(records = processed.len(), offsets = ?positions, "transaction committed");
                    for r in processed {
                        metrics::MESSAGES_PROCESSED
                            .with_label_values(&[r.topic.as_str()])
                            .inc();
                    }
                    for (tp, o) in &positions {
                        self.retries.remove(tp);
                        let mut state = self.shared.lock();
                        state.stuck.remove(tp);
                        if let Some(p) = state.positions.get_mut(tp) {
                            p.processed = Some(*o);
                            p.committed = Some(*o);
                        }
                    }
                    return Ok(());
                }
                Err(e) => {
                    if let rdkafka::error::KafkaError::Transaction(te) = &e {
                        if te.is_fatal() || !te.is_retriable() && !te.txn_requires_abort() {
                            return Err(ConsumeError::Transaction(e.to_string()));
                        }
                    }
                    failure = Some((
                        firsts[0].0.clone(),
                        HandlerError::unavailable("Transaction", e.to_string()),
                    ));
                }
            }
        }
        match failure {
            None => {
                // Nothing to commit (every record was skipped): close the empty transaction.
                producer
                    .commit_transaction(KAFKA_TIMEOUT)
                    .map_err(|e| ConsumeError::Transaction(e.to_string()))
            }
            Some((failed_tp, e)) => {
                if let Some(reason) = self.producer.fatal_error() {
                    return Err(ConsumeError::Transaction(reason));
                }
                producer
                    .abort_transaction(KAFKA_TIMEOUT)
                    .map_err(|e| ConsumeError::Transaction(e.to_string()))?;
                tracing::warn!(error = %e, "transaction aborted; its records will be processed again");
                // Everything the aborted transaction covered is processed again.
                let failed = firsts.iter().find(|(tp, _)| tp == &failed_tp).cloned();
                for (tp, offset) in firsts.iter().filter(|(tp, _)| tp != &failed_tp) {
                    self.retry(tp.clone(), *offset, &e);
                }
                if let Some((tp, offset)) = failed {
                    self.retry(tp, offset, &e);
                }
                Ok(())
            }
        }
    }
}
