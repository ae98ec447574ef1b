//! The one way the runtime makes librdkafka calls that block — polls (which
//! run the rebalance callbacks and their synchronous commit), seeks, commits,
//! offset lookups, transaction calls, flush: on tokio's blocking pool, never
//! on an async worker, where a slow broker would stall every task of that
//! worker (Quickwit polls its consumer in `spawn_blocking` for the same reason).

/// Runs `call` on tokio's blocking thread pool and returns what it returned.
pub(crate) async fn off_worker<T, F>(call: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match tokio::task::spawn_blocking(call).await {
        Ok(value) => value,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // Only when the runtime shuts down, which drops the caller as well.
            Err(e) => panic!("blocking librdkafka call cancelled: {e}"),
        },
    }
}
