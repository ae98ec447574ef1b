//! How a delivery report reaches the code that enqueued the record: one
//! record's own channel ([`Delivery`](super::Delivery)), or a slot of a
//! [`DeliveryGroup`], whose records are awaited together with one wake-up
//! for all of them instead of a channel, a boxed future and a wake-up per
//! record (the gRPC bulk path enqueues thousands of records per second per
//! call). librdkafka calls [`ProducerContext::delivery`] on the producer's
//! polling thread; nothing here blocks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::message::Message as _;
use rdkafka::producer::{DeliveryResult, ProducerContext as RdProducerContext};
use tokio::sync::{oneshot, Notify};

use super::{OutboundRecord, Producer, ProducerContext};
use crate::metrics;
use crate::producer::{Delivered, ProduceError};

/// What librdkafka reported for one record.
pub(super) type Outcome = Result<Delivered, RdKafkaError>;

/// Where a record's delivery report goes (librdkafka's per-message opaque).
pub(crate) enum Completion {
    /// The channel of one [`Delivery`](super::Delivery).
    One(oneshot::Sender<Outcome>),
    /// A slot of a group.
    Group(Arc<GroupState>, usize),
}

impl RdProducerContext for ProducerContext {
    type DeliveryOpaque = Box<Completion>;

    fn delivery(&self, result: &DeliveryResult<'_>, completion: Box<Completion>) {
        let outcome = match result {
            Ok(m) => Ok(Delivered {
                partition: m.partition(),
                offset: m.offset(),
            }),
            Err((e, _)) => Err(e.clone()),
        };
        match *completion {
            // The receiver may be gone (the caller stopped waiting): nothing to tell.
            Completion::One(tx) => drop(tx.send(outcome)),
            Completion::Group(group, slot) => group.complete(slot, outcome),
        }
    }
}

/// The records of a group and what became of them.
pub(crate) struct GroupState {
    slots: Mutex<Vec<Slot>>,
    /// Records enqueued and not yet reported.
    outstanding: AtomicUsize,
    /// Signalled when `outstanding` drops to zero.
    done: Notify,
}

struct Slot {
    topic: String,
    enqueued: Instant,
    /// The report and how long the record took, once librdkafka gave it.
    outcome: Option<(Outcome, Duration)>,
}

impl GroupState {
    fn complete(&self, slot: usize, outcome: Outcome) {
        {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = slots.get_mut(slot) {
                s.outcome = Some((outcome, s.enqueued.elapsed()));
            }
        }
        if self.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Stores a permit when nobody waits yet: no wake-up is lost.
            self.done.notify_one();
        }
    }
}

/// Records enqueued through one producer whose acknowledgements are awaited
/// together: [`acknowledged`](Self::acknowledged) resolves once the brokers
/// acknowledged (or refused) every one, with each record's outcome in the
/// order they were enqueued. For a caller that enqueues many records and
/// needs them all before it answers (a bulk gRPC call); the records are
/// batched by librdkafka exactly as records enqueued one by one.
#[must_use = "a group must be awaited to know its records are durable"]
pub struct DeliveryGroup {
    producer: Producer,
    state: Arc<GroupState>,
}

impl Producer {
    /// An empty group of records enqueued through this producer.
    pub fn group(&self) -> DeliveryGroup {
        DeliveryGroup {
            producer: self.clone(),
            state: Arc::new(GroupState {
                slots: Mutex::new(Vec::new()),
                outstanding: AtomicUsize::new(0),
                done: Notify::new(),
            }),
        }
    }
}

impl DeliveryGroup {
    /// Enqueues `record` (as [`Producer::enqueue_raw`] does: its headers,
    /// waiting while librdkafka's queue is full); returns its index in the
    /// group. A record that could not be enqueued is not in the group.
    pub async fn enqueue_raw(&mut self, record: OutboundRecord) -> Result<usize, ProduceError> {
        let slot = {
            let mut slots = self.state.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.push(Slot {
                topic: record.topic.clone(),
                enqueued: Instant::now(),
                outcome: None,
            });
            slots.len() - 1
        };
        // Counted before librdkafka has it: its report may come before `hand_over` returns.
        self.state.outstanding.fetch_add(1, Ordering::AcqRel);
        let completion = Completion::Group(self.state.clone(), slot);
        match self.producer.hand_over_with(&record, completion).await {
            Ok(()) => Ok(slot),
            Err(e) => {
                self.state.outstanding.fetch_sub(1, Ordering::AcqRel);
                // Nothing else refers to the last slot: librdkafka never had it.
                self.state
                    .slots
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .pop();
                Err(e)
            }
        }
    }

    /// Records in the group.
    pub fn len(&self) -> usize {
        self.state
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// True when nothing was enqueued in the group.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each record's outcome, in the order enqueued, once every one has its
    /// broker's answer (or failed: delivery timeout, refusal, fatal error).
    pub async fn acknowledged(self) -> Vec<Result<Delivered, ProduceError>> {
        while self.state.outstanding.load(Ordering::Acquire) > 0 {
            self.state.done.notified().await;
        }
        let slots =
            std::mem::take(&mut *self.state.slots.lock().unwrap_or_else(|p| p.into_inner()));
        // The topics' metrics looked up once per topic, not once per record.
        let mut sent: Vec<(String, prometheus::IntCounter, prometheus::Histogram)> = Vec::new();
        let mut results = Vec::with_capacity(slots.len());
        for s in slots {
            let result = match s.outcome {
                Some((Ok(d), took)) => {
                    let i = match sent.iter().position(|(t, ..)| *t == s.topic) {
                        Some(i) => i,
                        None => {
                            let counter = metrics::MESSAGES_SENT.with_label_values(&[&s.topic]);
                            let histogram = metrics::SEND_DURATION.with_label_values(&[&s.topic]);
                            sent.push((s.topic.clone(), counter, histogram));
                            sent.len() - 1
                        }
                    };
                    sent[i].1.inc();
                    sent[i].2.observe(took.as_secs_f64());
                    Ok(d)
                }
                Some((Err(e), _)) => Err(self.producer.delivery_error(&s.topic, e)),
                // Unreachable: every record is reported before the count reaches zero.
                None => Err(ProduceError::Delivery {
                    topic: s.topic.clone(),
                    source: RdKafkaError::Canceled,
                }),
            };
            if let Err(e) = &result {
                metrics::PRODUCER_ERRORS
                    .with_label_values(&[s.topic.as_str(), &e.error_type()])
                    .inc();
            }
            results.push(result);
        }
        results
    }
}
