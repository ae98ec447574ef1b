//! The service: the platform's consume loop over every dead-letter topic
//! (`dlq.pattern`, topics created later included) in transactional mode,
//! running the automatic retry ([`crate::automatic`]) and exporting the
//! per-topic gauges ([`crate::metrics`]).
//!
//! A newly assigned partition is first folded up to its last stable offset
//! with the read-only reader (while the loop holds it paused), then consumed
//! from there: every marker that ever committed is known before the service
//! acts on any letter of it. Records only feed the ledger (their
//! transactions commit the loop's offsets and nothing else); the loop's tick
//! replays or parks the due letters in a transaction of its own with one
//! marker per dead-letter partition and one audit event naming them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, Result};
use dora_kafka::consume::{ConsumeLoop, HandlerError, Record, StartAt, Transform};
use dora_kafka::inspect::ReadRequest;
use dora_kafka::OutboundRecord;
use dora_schema::Codec;
use dora_service::ServiceContext;

use crate::automatic::{plan_of, AutomaticRetry, Kept, PartitionLedger, Plan};
use crate::letter::{Entry, Letter};
use crate::outbound::{self, Actor, Resolved};
use crate::snapshot::read_entries;
use crate::{metrics, Settings};

/// The service's name as the actor of its replays and parkings.
pub const SERVICE_ACTOR: &str = "dlq-replayer";

/// Runs the service until shutdown.
pub async fn run(settings: Settings, ctx: ServiceContext) -> Result<()> {
    let codec = Codec::new(&settings.registry).context("registry settings")?;
    let service = Arc::new(Service {
        settings: settings.clone(),
        codec: codec.clone(),
        actor: Actor {
            name: SERVICE_ACTOR.into(),
            automatic: true,
        },
        state: Mutex::new(State::default()),
    });
    let rebuild = service.clone();
    let mut kafka = settings.common.kafka.clone();
    kafka
        .extra
        .entry("topic.metadata.refresh.interval.ms".into())
        .or_insert_with(|| settings.dlq.new_topic_check_ms.to_string());
    let lp = ConsumeLoop::new(&kafka, &settings.consumer, &ctx, Arc::new(codec))
        .pattern(&settings.dlq.pattern)
        .producer_settings(&settings.producer)
        .tick_every(Duration::from_millis(settings.dlq.tick_ms))
        .on_assign(move |topic, partition| {
            let service = rebuild.clone();
            async move { service.rebuild(topic, partition).await }
        });
    ctx.started();
    lp.run_transactional(service).await?;
    Ok(())
}

#[derive(Default)]
struct State {
    retry: AutomaticRetry,
    /// Partitions folded by `on_assign`, owned once `assigned` is called.
    folded: HashMap<(String, i32), PartitionLedger>,
    /// Topics whose gauges were published last.
    published: Vec<String>,
}

struct Service {
    settings: Settings,
    codec: Codec,
    actor: Actor,
    state: Mutex<State>,
}

impl Service {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn plan(&self, letter: &Letter) -> Plan {
        plan_of(letter, &self.settings.dlq, |p, n| {
            p.delay(n).as_millis() as u64
        })
    }

    /// Folds a newly assigned partition up to its last stable offset and
    /// starts the loop there; retried until it succeeds (registry or broker down).
    async fn rebuild(&self, topic: String, partition: i32) -> StartAt {
        let mut wait = Duration::from_millis(200);
        loop {
            match self.fold(&topic, partition).await {
                Ok((ledger, end)) => {
                    tracing::info!(
                        topic,
                        partition,
                        end,
                        waiting = ledger.waiting.len(),
                        "dead-letter partition folded"
                    );
                    self.lock().folded.insert((topic, partition), ledger);
                    return StartAt::Offset(end);
                }
                Err(e) => {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        topic,
                        partition,
                        "cannot fold the dead-letter partition yet; retrying"
                    );
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    async fn fold(&self, topic: &str, partition: i32) -> Result<(PartitionLedger, i64)> {
        let mut ledger = PartitionLedger::default();
        let ranges = read_entries(
            &self.settings.common.kafka,
            &self.codec,
            ReadRequest::whole(topic).partition(partition),
            |entry| match entry {
                Entry::Letter(letter) => {
                    let plan = self.plan(&letter);
                    ledger.letter(letter.position.offset, Kept::new(*letter, plan));
                }
                Entry::Resolutions(resolutions) => {
                    for r in &resolutions {
                        ledger.resolve(r);
                    }
                }
            },
        )
        .await?;
        let end = ranges.first().map_or(0, |r| r.end);
        Ok((ledger, end))
    }

    fn publish(&self, now_ms: i64) {
        let mut state = self.lock();
        let figures = state.retry.figures(now_ms);
        metrics::publish(&figures, &state.published);
        state.published = figures.into_keys().collect();
    }
}

impl Transform for Service {
    async fn transform(&self, record: &Record) -> Result<Vec<OutboundRecord>, HandlerError> {
        // Only a registry outage is an error here: retried, never dead-lettered.
        let entry = Entry::read(&self.codec, record)
            .await
            .map_err(|e| HandlerError::unavailable("RegistryUnavailable", e.to_string()))?;
        match entry {
            Entry::Letter(letter) => {
                let plan = self.plan(&letter);
                self.lock().retry.letter(*letter, plan);
            }
            Entry::Resolutions(resolutions) => {
                let mut state = self.lock();
                for r in &resolutions {
                    state.retry.resolution(r);
                }
            }
        }
        Ok(Vec::new())
    }

    async fn tick(&self, now_ms: i64) -> Result<Vec<OutboundRecord>, HandlerError> {
        self.publish(now_ms);
        let due = self
            .lock()
            .retry
            .due(now_ms, self.settings.dlq.max_per_tick);
        let (mut out, mut resolved) = (Vec::new(), Vec::new());
        for d in &due {
            let Some(record) =
                outbound::resolving_record(&d.letter, d.action, &self.actor, &d.reason)
            else {
                continue;
            };
            tracing::info!(letter = %d.letter.position, action = d.action.as_str(), reason = %d.reason, "automatic");
            out.push(record);
            resolved.push(Resolved {
                letter: &d.letter,
                action: d.action,
                reason: &d.reason,
            });
        }
        let closing = outbound::closing_records(
            &self.codec,
            &self.settings.dlq.audit_topic,
            &self.actor,
            &resolved,
        )
        .await
        .map_err(outbound::encode_failure)?;
        out.extend(closing);
        Ok(out)
    }

    async fn committed(&self) {
        let now = chrono::Utc::now().timestamp_millis();
        let done = self.lock().retry.committed(SERVICE_ACTOR, now);
        for (position, action) in done {
            metrics::automatic(&position.topic, action);
        }
    }

    async fn aborted(&self, _partitions: &[(String, i32)]) {
        self.lock().retry.aborted();
    }

    async fn assigned(&self, partitions: &[(String, i32)]) {
        let mut state = self.lock();
        for (topic, partition) in partitions {
            match state.folded.remove(&(topic.clone(), *partition)) {
                Some(ledger) => state.retry.own(topic, *partition, ledger),
                // Never act on a partition whose markers were not read first.
                None => tracing::error!(
                    topic,
                    partition,
                    "assigned without being folded; not retrying its letters"
                ),
            }
        }
    }

    async fn revoked(&self, partitions: &[(String, i32)]) {
        let mut state = self.lock();
        for (topic, partition) in partitions {
            state.folded.remove(&(topic.clone(), *partition));
            state.retry.release(topic, *partition);
        }
    }
}
