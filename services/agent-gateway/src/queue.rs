//! The bounded send queue: at most `capacity` events and `max_bytes` bytes
//! wait for a broker ack at once. A call that finds it full waits for room
//! until its deadline (or the configured wait when it has none) and otherwise
//! gets RESOURCE_EXHAUSTED. A taken [`Slot`] is held until the broker answered
//! for the event, whatever happens to the call meanwhile.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tonic::metadata::MetadataMap;
use tonic::Status;

/// Room for events in flight to the broker.
#[derive(Debug, Clone)]
pub struct SendQueue {
    events: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    capacity: usize,
    max_bytes: usize,
    default_wait: Duration,
}

/// A taken place in the queue; dropping it frees it.
#[derive(Debug)]
pub struct Slot {
    _event: OwnedSemaphorePermit,
    _bytes: OwnedSemaphorePermit,
}

impl SendQueue {
    /// A queue of `capacity` events and `max_bytes` bytes; calls without a
    /// deadline wait at most `default_wait` for room.
    pub fn new(capacity: usize, max_bytes: usize, default_wait: Duration) -> Self {
        let capacity = capacity.clamp(1, Semaphore::MAX_PERMITS);
        let max_bytes = max_bytes.clamp(1, u32::MAX as usize);
        Self {
            events: Arc::new(Semaphore::new(capacity)),
            bytes: Arc::new(Semaphore::new(max_bytes)),
            capacity,
            max_bytes,
            default_wait,
        }
    }

    /// Events in flight.
    pub fn in_flight(&self) -> usize {
        self.capacity - self.events.available_permits()
    }

    /// Bytes in flight.
    pub fn in_flight_bytes(&self) -> usize {
        self.max_bytes - self.bytes.available_permits()
    }

    /// Takes room for one event of `bytes` bytes, waiting until `deadline`
    /// (or the default wait from now). RESOURCE_EXHAUSTED when no room freed
    /// up in time, UNAVAILABLE when the queue was closed.
    pub async fn take(&self, bytes: usize, deadline: Option<Instant>) -> Result<Slot, Status> {
        let deadline = deadline.unwrap_or_else(|| Instant::now() + self.default_wait);
        // An event larger than the byte bound still fits alone.
        let bytes = bytes.clamp(1, self.max_bytes) as u32;
        let take = async {
            let event = self.events.clone().acquire_owned().await?;
            let bytes = self.bytes.clone().acquire_many_owned(bytes).await?;
            Ok::<_, tokio::sync::AcquireError>(Slot {
                _event: event,
                _bytes: bytes,
            })
        };
        match tokio::time::timeout_at(deadline, take).await {
            Ok(Ok(slot)) => Ok(slot),
            Ok(Err(_)) => Err(Status::unavailable("gateway is shutting down")),
            Err(_) => Err(Status::resource_exhausted(format!(
                "send queue full ({} events / {} bytes waiting for the broker); retry later",
                self.in_flight(),
                self.in_flight_bytes()
            ))),
        }
    }

    /// Stops handing out room; waiting and later calls get UNAVAILABLE.
    pub fn close(&self) {
        self.events.close();
        self.bytes.close();
    }
}

/// Most digits a `grpc-timeout` value may have (the gRPC HTTP/2 protocol).
const TIMEOUT_DIGITS: usize = 8;

/// When the call must be answered, from its `grpc-timeout` header
/// (`<1-8 digits><H|M|S|m|u|n>`), if the client set a valid one. Computed once
/// per call: every wait of the call (room in the queue, the broker's ack)
/// ends at this one instant.
pub fn call_deadline(md: &MetadataMap) -> Option<Instant> {
    let v = md.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > TIMEOUT_DIGITS {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let timeout = match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    };
    Instant::now().checked_add(timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_ms(ms: u64) -> Option<Instant> {
        Some(Instant::now() + Duration::from_millis(ms))
    }

    #[tokio::test]
    async fn full_queue_waits_then_gives_resource_exhausted() {
        let q = SendQueue::new(2, 1 << 20, Duration::from_millis(20));
        let a = q.take(10, None).await.unwrap();
        let _b = q.take(10, None).await.unwrap();
        assert_eq!(q.in_flight(), 2);
        assert_eq!(q.in_flight_bytes(), 20);
        let err = q.take(10, None).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        drop(a);
        assert!(q.take(10, in_ms(1)).await.is_ok());
    }

    #[tokio::test]
    async fn the_byte_bound_holds_whatever_the_event_count() {
        let q = SendQueue::new(100, 1_000, Duration::from_millis(20));
        let _big = q.take(900, None).await.unwrap();
        let err = q.take(200, None).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert_eq!(q.in_flight_bytes(), 900, "a refused take holds nothing");
        assert!(q.take(100, None).await.is_ok());
    }

    #[tokio::test]
    async fn a_waiting_call_gets_the_freed_slot_within_its_deadline() {
        let q = SendQueue::new(1, 1 << 20, Duration::from_secs(5));
        let held = q.take(1, None).await.unwrap();
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.take(1, in_ms(5_000)).await.map(|_| ()) });
        tokio::task::yield_now().await;
        drop(held);
        waiter.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn closed_queue_is_unavailable() {
        let q = SendQueue::new(1, 1 << 20, Duration::from_secs(5));
        q.close();
        assert_eq!(
            q.take(1, None).await.unwrap_err().code(),
            tonic::Code::Unavailable
        );
    }

    #[tokio::test(start_paused = true)]
    async fn grpc_timeout_header_is_parsed_into_one_deadline() {
        let mut md = MetadataMap::new();
        assert_eq!(call_deadline(&md), None);
        let now = Instant::now();
        md.insert("grpc-timeout", "250m".parse().unwrap());
        assert_eq!(call_deadline(&md), Some(now + Duration::from_millis(250)));
        md.insert("grpc-timeout", "3S".parse().unwrap());
        assert_eq!(call_deadline(&md), Some(now + Duration::from_secs(3)));
        for bad in ["x", "S", "123456789S", "-1S", "5X"] {
            md.insert("grpc-timeout", bad.parse().unwrap());
            assert_eq!(call_deadline(&md), None, "{bad}");
        }
    }

    #[test]
    fn the_largest_grpc_timeout_does_not_overflow() {
        // n * 3600 overflowed (a panic in debug builds) for large n.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut md = MetadataMap::new();
            md.insert("grpc-timeout", "99999999H".parse().unwrap());
            let deadline = call_deadline(&md).expect("a far deadline");
            assert!(deadline > Instant::now() + Duration::from_secs(3600 * 24 * 365));
            md.insert("grpc-timeout", "18446744073709551615H".parse().unwrap());
            assert_eq!(call_deadline(&md), None, "more than 8 digits");
        });
    }
}
