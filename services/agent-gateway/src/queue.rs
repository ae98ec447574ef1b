//! The bounded send queue: at most `capacity` events wait for a broker ack at
//! once. A call that finds it full waits for a slot within its deadline (or the
//! configured wait when it has none) and otherwise gets RESOURCE_EXHAUSTED.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::metadata::MetadataMap;
use tonic::Status;

/// Slots for events in flight to the broker.
#[derive(Debug, Clone)]
pub struct SendQueue {
    slots: Arc<Semaphore>,
    capacity: usize,
    default_wait: Duration,
}

/// A taken slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl SendQueue {
    /// A queue of `capacity` slots; calls without a deadline wait at most `default_wait`.
    pub fn new(capacity: usize, default_wait: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(capacity.max(1))),
            capacity: capacity.max(1),
            default_wait,
        }
    }

    /// Slots in use.
    pub fn in_flight(&self) -> usize {
        self.capacity - self.slots.available_permits()
    }

    /// Takes `n` slots, waiting at most `wait` (or the default). RESOURCE_EXHAUSTED
    /// when none freed up in time, UNAVAILABLE when the queue was closed.
    pub async fn take(&self, n: u32, wait: Option<Duration>) -> Result<Slot, Status> {
        let wait = wait.unwrap_or(self.default_wait);
        let n = n.min(self.capacity as u32).max(1);
        match tokio::time::timeout(wait, self.slots.clone().acquire_many_owned(n)).await {
            Ok(Ok(permit)) => Ok(Slot { _permit: permit }),
            Ok(Err(_)) => Err(Status::unavailable("gateway is shutting down")),
            Err(_) => Err(Status::resource_exhausted(format!(
                "send queue full ({} events waiting for the broker); retry later",
                self.capacity
            ))),
        }
    }

    /// Stops handing out slots; waiting and later calls get UNAVAILABLE.
    pub fn close(&self) {
        self.slots.close();
    }
}

/// The time left of the call, from the `grpc-timeout` header
/// (`<digits><H|M|S|m|u|n>`), if the client set one.
pub fn call_deadline(md: &MetadataMap) -> Option<Duration> {
    let v = md.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn full_queue_waits_then_gives_resource_exhausted() {
        let q = SendQueue::new(2, Duration::from_millis(20));
        let a = q.take(1, None).await.unwrap();
        let _b = q.take(1, None).await.unwrap();
        assert_eq!(q.in_flight(), 2);
        let err = q.take(1, None).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        drop(a);
        assert!(q.take(1, Some(Duration::from_millis(1))).await.is_ok());
    }

    #[tokio::test]
    async fn a_waiting_call_gets_the_freed_slot_within_its_deadline() {
        let q = SendQueue::new(1, Duration::from_secs(5));
        let held = q.take(1, None).await.unwrap();
        let q2 = q.clone();
        let waiter =
            tokio::spawn(async move { q2.take(1, Some(Duration::from_secs(5))).await.map(|_| ()) });
        tokio::task::yield_now().await;
        drop(held);
        waiter.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn closed_queue_is_unavailable() {
        let q = SendQueue::new(1, Duration::from_secs(5));
        q.close();
        assert_eq!(
            q.take(1, None).await.unwrap_err().code(),
            tonic::Code::Unavailable
        );
    }

    #[test]
    fn grpc_timeout_header_is_parsed() {
        let mut md = MetadataMap::new();
        assert_eq!(call_deadline(&md), None);
        md.insert("grpc-timeout", "250m".parse().unwrap());
        assert_eq!(call_deadline(&md), Some(Duration::from_millis(250)));
        md.insert("grpc-timeout", "3S".parse().unwrap());
        assert_eq!(call_deadline(&md), Some(Duration::from_secs(3)));
        md.insert("grpc-timeout", "x".parse().unwrap());
        assert_eq!(call_deadline(&md), None);
    }
}
