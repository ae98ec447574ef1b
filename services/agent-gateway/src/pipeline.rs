//! The event sink: agent events go to `agent-events` through the runtime's
//! producer, keyed by agent id (the health processor is `fold.rs`, the
//! agent-health view `view.rs`).

use dora_kafka::{ProduceError, Producer};
use dora_schema::Codec;
use futures::future::BoxFuture;

use crate::intake::{Delivered, EventSink, PendingDelivery, SinkError, StampedEvent};
use crate::wire::agent_event;

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
