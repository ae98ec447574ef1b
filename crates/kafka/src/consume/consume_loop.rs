//! The loop's public face: [`ConsumeLoop`] (build it, choose topics and
//! options, run one mode until shutdown) and [`ConsumeError`], why it stopped.

use std::sync::Arc;
use std::time::Duration;

use dora_telemetry::{Readiness, ServiceContext};
use tokio_util::sync::CancellationToken;

use super::commits::Commits;
use super::conditions::{spawn_watchdog, Conditions};
use super::dead_letter::DeadLetterEncoder;
use super::driver::Driver;
use super::member::Member;
use super::membership::Membership;
use super::modes::{Batches, Each, Mode};
use super::rebuild::lookup_config;
use super::retries::Retries;
use super::starts::{OnAssign, StartAnswer, Starts};
use super::transaction::Transactions;
use super::transform::{Ticks, Transactional};
use super::{BatchHandler, ConsumerSettings, Handler, HandlerError, Transform};
use crate::blocking::off_worker;
use crate::producer::{Producer, ProducerSettings};
use crate::{KafkaError, KafkaSettings};

/// Why the loop stopped other than by a requested shutdown.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// Building or subscribing the clients failed, or the consumer hit a fatal error.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The transactional producer hit a fatal error (e.g. it was fenced by a
    /// newer instance with the same `transactional.id`).
    #[error("transactional producer failed: {0}")]
    Transaction(String),
    /// A producer of the service hit a fatal error (fenced, out of sequence):
    /// the service must be restarted.
    #[error("a producer of the service failed fatally: {0}")]
    Producer(String),
    /// The handler returned [`HandlerError::Fatal`].
    #[error("handler failed fatally: {0}")]
    Handler(HandlerError),
}

/// The consume loop. Build it, choose topics, then run one mode until the
/// service's shutdown token is cancelled. Its readiness conditions
/// (`consumer <group> assigned|connected|progress`) exist from [`new`](Self::new)
/// on; the service declares start-up done with `ServiceContext::started`.
///
/// ```no_run
/// # use dora_kafka::consume::{ConsumeLoop, ConsumerSettings, Handler, HandlerError, Record};
/// # struct Archive;
/// # impl Handler for Archive {
/// #     async fn handle(&self, _r: &Record) -> Result<(), HandlerError> { Ok(()) }
/// # }
/// # async fn f<D: dora_kafka::consume::DeadLetterEncoder>(ctx: dora_telemetry::ServiceContext, codec: std::sync::Arc<D>) -> Result<(), Box<dyn std::error::Error>> {
/// let settings = ConsumerSettings { group_id: "audit-sink".into(), ..Default::default() };
/// let archive = ConsumeLoop::new(&Default::default(), &settings, &ctx, codec).topics(&["user-activities"]);
/// ctx.started();
/// archive.run(Archive).await?;
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
    tick_every: Option<Duration>,
    until_end: bool,
    conditions: Conditions,
}

impl<D: DeadLetterEncoder> ConsumeLoop<D> {
    /// A loop for `ctx`'s service; `dead_letters` encodes the dead letters it
    /// writes. Registers the loop's readiness conditions (not ready until it
    /// joined its group).
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
            tick_every: None,
            until_end: false,
            conditions: Conditions::register(&ctx.readiness, &settings.group_id),
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

    /// Asks `f(topic, partition)` where each newly assigned partition starts.
    /// `f` returns a [`StartAt`](super::StartAt) or a future of one; while it
    /// is pending the partition stays paused (the others are consumed, so
    /// `max.poll.interval.ms` is never exceeded) and none of its records is
    /// processed before the answer took effect.
    pub fn on_assign<F, A>(mut self, f: F) -> Self
    where
        F: Fn(String, i32) -> A + Send + Sync + 'static,
        A: StartAnswer,
    {
        self.on_assign = Some(Arc::new(move |topic, partition| f(topic, partition).into_answer()));
        self
    }

    /// (Transactional mode.) Runs [`Transform::tick`] between batches every `period`.
    pub fn tick_every(mut self, period: Duration) -> Self {
        self.tick_every = Some(period);
        self
    }

    /// Captures each assigned partition's end (the last stable offset under
    /// read_committed) at assignment; once every assigned partition is
    /// processed up to it, the loop commits and returns `Ok(())`. For one-shot
    /// commands.
    pub fn until_end(mut self) -> Self {
        self.until_end = true;
        self
    }

    /// Runs the per-message mode until shutdown.
    pub async fn run<H: Handler>(self, handler: H) -> Result<(), ConsumeError> {
        self.no_ticks()?;
        let producer = self.idempotent_producer()?;
        self.drive(Each(handler), producer, false).await
    }

    /// Runs the batch mode until shutdown.
    pub async fn run_batches<B: BatchHandler>(self, handler: B) -> Result<(), ConsumeError> {
        self.no_ticks()?;
        let producer = self.idempotent_producer()?;
        self.drive(Batches(handler), producer, false).await
    }

    /// Runs consume-transform-produce in Kafka transactions until shutdown.
    /// Needs `consumer.transactional_id`.
    pub async fn run_transactional<T: Transform>(self, transform: T) -> Result<(), ConsumeError> {
        let producer = self.transactional_producer().await?;
        let transactions = Transactions::new(
            &producer,
            Duration::from_millis(self.settings.transaction_call_timeout_ms),
            self.settings.retry,
        );
        let mode = Transactional {
            transform,
            transactions,
        };
        self.drive(mode, producer, true).await
    }

    fn no_ticks(&self) -> Result<(), ConsumeError> {
        match self.tick_every {
            Some(_) => Err(KafkaError::Config("tick_every needs the transactional mode".into()).into()),
            None => Ok(()),
        }
    }

    fn idempotent_producer(&self) -> Result<Producer, ConsumeError> {
        Ok(Producer::new(
            &self.kafka,
            &self.producer_settings,
            &self.service,
            &self.readiness,
        )?)
    }

    async fn transactional_producer(&self) -> Result<Producer, ConsumeError> {
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
        Ok(off_worker(move || {
            Producer::transactional(&kafka, &ps, &service, &readiness, &id, Duration::from_secs(30))
        })
        .await?)
    }

    async fn drive<M: Mode>(
        self,
        mode: M,
        producer: Producer,
        transactional: bool,
    ) -> Result<(), ConsumeError> {
        let result = self.run_mode(&mode, producer, transactional).await;
        match &result {
            Ok(()) => self.conditions.not_assigned("stopped"),
            Err(e) => {
                tracing::error!(error = %e, group = %self.settings.group_id, "consume loop failed");
                self.conditions.not_assigned(format!("failed: {e}"));
            }
        }
        tracing::info!(group = %self.settings.group_id, "consume loop stopped");
        result
    }

    async fn run_mode<M: Mode>(
        &self,
        mode: &M,
        producer: Producer,
        transactional: bool,
    ) -> Result<(), ConsumeError> {
        if self.subscription.is_empty() {
            return Err(KafkaError::Config("the consume loop has no topics".into()).into());
        }
        let membership = Arc::new(Membership::new(
            &self.settings.group_id,
            self.conditions.clone(),
            self.settings.read_committed(),
            transactional,
            self.on_assign.is_some() || self.until_end,
        ));
        let mut cfg = self.settings.client_config(&self.kafka)?;
        if self.kafka.client_id.is_empty() {
            cfg.set("client.id", &self.service);
        }
        let member = Member::create(&cfg, membership.clone())?;
        member.subscribe(self.subscription.clone()).await?;
        tracing::info!(group = %self.settings.group_id, topics = ?self.subscription, "consume loop started");
        let watchdog = spawn_watchdog(
            membership.clone(),
            Duration::from_millis(self.settings.stuck_after_ms),
        );
        // A shutdown ends the gather in progress at once.
        let interrupter = {
            let (shutdown, membership) = (self.shutdown.clone(), membership.clone());
            tokio::spawn(async move {
                shutdown.cancelled().await;
                membership.interrupt();
            })
        };
        let mut driver = Driver {
            member,
            membership,
            settings: self.settings.clone(),
            producer,
            dead_letters: self.dead_letters.clone(),
            service: self.service.clone(),
            shutdown: self.shutdown.clone(),
            retries: Retries::new(self.settings.retry),
            starts: Starts::new(
                self.on_assign.clone(),
                transactional,
                self.until_end,
                self.settings.auto_offset_reset == "latest",
                lookup_config(self.kafka.client_config()?, &self.settings.isolation_level),
            ),
            commits: Commits::new(&self.settings),
            ticks: self.tick_every.map(Ticks::new),
        };
        let result = driver.run(mode).await;
        driver.finish(mode).await;
        watchdog.abort();
        interrupter.abort();
        result
    }
}
