//! The write path: an authorized, validated event takes room in the send
//! queue, is stamped and enqueued to the [`EventSink`] — in the order the
//! caller sent it — and a task of its own holds the room until the broker
//! answered. Only the waiting for acks runs concurrently; enqueueing never
//! does, so one agent's events reach the topic in the order it sent them.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use dora_proto::agent::v1 as pb;
use futures::future::BoxFuture;
use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;
use tonic::Status;

use crate::auth::Principal;
use crate::metrics;
use crate::queue::SendQueue;
use crate::validation::{EventDraft, Invalid};

/// The version the gateway stamps on every event, as the seed does.
pub const EVENT_VERSION: &str = "1.0.0";

/// An event ready to be produced: the draft plus what the gateway fills in.
#[derive(Debug, Clone, PartialEq)]
pub struct StampedEvent {
    /// `eventId`: a random UUID.
    pub event_id: String,
    /// `timestamp`: epoch ms at the gateway.
    pub timestamp: i64,
    /// `version`: [`EVENT_VERSION`].
    pub version: &'static str,
    /// The validated fields.
    pub draft: EventDraft,
}

impl StampedEvent {
    /// Stamps a draft now.
    pub fn stamp(draft: EventDraft) -> Self {
        Self {
            event_id: uuid::Uuid::new_v4().to_string(),
            timestamp: chrono::Utc::now().timestamp_millis(),
            version: EVENT_VERSION,
            draft,
        }
    }
}

/// Where the broker stored an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// Why an event could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The broker or registry is unavailable or timed out; the agent may retry.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The event cannot be encoded or was refused for good.
    #[error("rejected: {0}")]
    Rejected(String),
}

impl From<SinkError> for Status {
    fn from(e: SinkError) -> Self {
        match e {
            SinkError::Unavailable(m) => Status::unavailable(m),
            SinkError::Rejected(m) => Status::internal(m),
        }
    }
}

/// The broker's answer for an enqueued event.
pub type PendingDelivery = BoxFuture<'static, Result<Delivered, SinkError>>;

/// Produces agent events, keyed by agent id.
pub trait EventSink: Send + Sync + 'static {
    /// Enqueues `event` (events enqueued one after the other reach the topic
    /// in that order per key) and returns the broker's pending answer.
    fn enqueue(&self, event: StampedEvent) -> BoxFuture<'_, Result<PendingDelivery, SinkError>>;
}

/// Where a task completion names the organisation its result is about (the
/// field report-ingest turns into a report's `organizationId`).
pub const RESULT_ORGANIZATION_FIELD: &str = "metadata.result_summary.organization_id";

/// An agent's TASK_COMPLETED may name (in `result_summary.organization_id`)
/// only an organisation its credential names (token `orgs`, certificate `O`):
/// this is the trust boundary of the reports report-ingest derives from
/// agent-events, which only the gateway may write. PERMISSION_DENIED (or
/// INVALID_ARGUMENT for a non-string) naming the field; nothing is produced.
pub fn require_result_organization(caller: &Principal, draft: &EventDraft) -> Result<(), Status> {
    if draft.event_type != "TASK_COMPLETED" {
        return Ok(());
    }
    match draft.metadata.pointer("/result_summary/organization_id") {
        None | Some(serde_json::Value::Null) => Ok(()),
        Some(serde_json::Value::String(org)) => caller
            .require_org(RESULT_ORGANIZATION_FIELD, org)
            .inspect_err(|_| metrics::rejected("permission_denied")),
        Some(_) => {
            metrics::rejected("invalid_argument");
            Err(Status::invalid_argument(format!(
                "{RESULT_ORGANIZATION_FIELD}: must be a string"
            )))
        }
    }
}

/// An event that was enqueued; its ack is pending.
#[derive(Debug)]
pub struct Admitted {
    event_id: String,
    timestamp: i64,
    event_type: &'static str,
    ack: JoinHandle<Result<Delivered, SinkError>>,
}

/// Authorizes, takes room (waiting at most until `deadline`, or the queue's
/// default wait), stamps and enqueues one event. Cancelling this future is
/// safe: either nothing was enqueued, or the event's ack task holds its room.
pub async fn admit(
    sink: &dyn EventSink,
    queue: &SendQueue,
    caller: &Principal,
    draft: Result<EventDraft, Invalid>,
    deadline: Option<Instant>,
) -> Result<Admitted, Status> {
    let draft = draft.inspect_err(|_| metrics::rejected("invalid_argument"))?;
    caller
        .require_self("agent_id", &draft.agent_id)
        .inspect_err(|_| metrics::rejected("permission_denied"))?;
    require_result_organization(caller, &draft)?;
    let slot = queue
        .take(draft.size_bytes(), deadline)
        .await
        .inspect_err(|_| metrics::rejected("resource_exhausted"))?;
    let event = StampedEvent::stamp(draft);
    let (event_id, timestamp, event_type) = (
        event.event_id.clone(),
        event.timestamp,
        event.draft.event_type,
    );
    let enqueue = sink.enqueue(event);
    let delivery = match deadline {
        Some(d) => tokio::time::timeout_at(d, enqueue).await.map_err(|_| {
            Status::deadline_exceeded("no room in the producer within the call's deadline")
        })?,
        None => enqueue.await,
    }
    .inspect_err(|_| metrics::rejected("unavailable"))?;
    // No await between the enqueue and this spawn: the room is released only
    // when the broker answered, even if the call is gone by then.
    let ack = tokio::spawn(async move {
        let result = delivery.await;
        drop(slot);
        result
    });
    Ok(Admitted {
        event_id,
        timestamp,
        event_type,
        ack,
    })
}

impl Admitted {
    /// Waits for the broker's answer (until `deadline`, the same instant the
    /// call's queue wait ended at).
    pub async fn acknowledged(
        mut self,
        deadline: Option<Instant>,
    ) -> Result<pb::PublishEventResponse, Status> {
        let answer = match deadline {
            Some(d) => tokio::time::timeout_at(d, &mut self.ack).await.map_err(|_| {
                Status::deadline_exceeded("broker did not acknowledge within the call's deadline")
            })?,
            None => (&mut self.ack).await,
        };
        self.response(answer)
    }

    /// The broker's answer once it came (no deadline); polling again after
    /// `Pending` is safe, so a stream can keep it between polls without
    /// boxing a future per event.
    pub fn poll_acknowledged(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<pb::PublishEventResponse, Status>> {
        let answer = ready!(Pin::new(&mut self.ack).poll(cx));
        Poll::Ready(self.response(answer))
    }

    fn response(
        &mut self,
        answer: Result<Result<Delivered, SinkError>, JoinError>,
    ) -> Result<pb::PublishEventResponse, Status> {
        let delivered = answer
            .map_err(|e| Status::internal(format!("delivery task failed: {e}")))?
            .inspect_err(|_| metrics::rejected("unavailable"))?;
        metrics::accepted(self.event_type);
        Ok(pb::PublishEventResponse {
            event_id: std::mem::take(&mut self.event_id),
            timestamp: self.timestamp,
            partition: delivered.partition,
            offset: delivered.offset,
        })
    }

    /// An admitted event whose broker answer is `delivery` once it resolves
    /// (unit tests of what waits for answers).
    #[cfg(test)]
    pub(crate) fn answered_by(
        delivery: impl std::future::Future<Output = Result<Delivered, SinkError>> + Send + 'static,
    ) -> Self {
        Self {
            event_id: "test-event".into(),
            timestamp: 0,
            event_type: "HEARTBEAT",
            ack: tokio::spawn(delivery),
        }
    }
}

/// A sink that keeps events in memory (tests and the in-memory mode).
#[derive(Debug, Default)]
pub struct CountingSink {
    /// Everything enqueued, in order.
    pub events: std::sync::Mutex<Vec<StampedEvent>>,
    next_offset: AtomicU64,
}

impl EventSink for CountingSink {
    fn enqueue(&self, event: StampedEvent) -> BoxFuture<'_, Result<PendingDelivery, SinkError>> {
        Box::pin(async move {
            self.events
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(event);
            let offset = self.next_offset.fetch_add(1, Ordering::SeqCst) as i64;
            let delivered: PendingDelivery = Box::pin(async move {
                Ok(Delivered {
                    partition: 0,
                    offset,
                })
            });
            Ok(delivered)
        })
    }
}

/// A shared [`EventSink`].
pub type SharedSink = Arc<dyn EventSink>;
