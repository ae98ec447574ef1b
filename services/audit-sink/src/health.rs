//! Is the database there? Every database call reports success or failure;
//! a probe asks while nothing else does. `/readyz` turns not ready once the
//! database has failed for longer than `db_unavailable_after_ms`, and ready
//! again with the first success.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dora_telemetry::Readiness;
use tokio_util::sync::CancellationToken;

use crate::db::Pool;
use crate::metrics;

/// The readiness condition this module owns.
pub const CONDITION: &str = "postgres reachable";

/// Shared record of the database's recent answers.
#[derive(Clone)]
pub struct DbHealth {
    inner: Arc<Inner>,
}

struct Inner {
    readiness: Readiness,
    unavailable_after: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    failing_since: Option<Instant>,
    last_error: String,
    last_success: Option<Instant>,
}

impl DbHealth {
    /// Registers the condition (ready: the database answered at start-up).
    pub fn new(readiness: &Readiness, unavailable_after: Duration) -> Self {
        readiness.set_ready(CONDITION);
        metrics::database_up(true);
        Self {
            inner: Arc::new(Inner {
                readiness: readiness.clone(),
                unavailable_after,
                state: Mutex::new(State { last_success: Some(Instant::now()), ..Default::default() }),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The database answered.
    pub fn success(&self) {
        let was_failing = {
            let mut s = self.state();
            s.last_success = Some(Instant::now());
            s.failing_since.take().is_some()
        };
        if was_failing {
            tracing::info!("database reachable again");
            metrics::database_up(true);
            self.inner.readiness.set_ready(CONDITION);
        }
    }

    /// A call failed for a reason that is not the record's.
    pub fn failure(&self, error: &str) {
        let mut s = self.state();
        if s.failing_since.is_none() {
            tracing::warn!(error, "database call failed; retrying with backoff");
            s.failing_since = Some(Instant::now());
            metrics::database_up(false);
        }
        s.last_error = error.to_string();
        drop(s);
        self.evaluate();
    }

    /// Flips readiness when the failure has lasted long enough.
    fn evaluate(&self) {
        let s = self.state();
        if let Some(since) = s.failing_since {
            let down = since.elapsed();
            if down >= self.inner.unavailable_after {
                let reason = format!("database unreachable for {}s: {}", down.as_secs(), s.last_error);
                drop(s);
                self.inner.readiness.set_not_ready(CONDITION, reason);
            }
        }
    }

    /// True when no call succeeded within `interval`.
    fn quiet_for(&self, interval: Duration) -> bool {
        let s = self.state();
        s.failing_since.is_some() || s.last_success.is_none_or(|t| t.elapsed() >= interval)
    }

    /// Probes the database every `interval` while no other call succeeded and
    /// refreshes the age gauge, until `shutdown`.
    pub fn spawn_probe(
        &self,
        pool: Pool,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let health = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval.min(Duration::from_secs(1)));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if health.quiet_for(interval) {
                    health.probe(&pool, interval).await;
                }
                health.evaluate();
                metrics::refresh_age(chrono::Utc::now().timestamp_millis());
            }
        })
    }

    async fn probe(&self, pool: &Pool, timeout: Duration) {
        let started = Instant::now();
        let answer = tokio::time::timeout(timeout.max(Duration::from_secs(1)), async {
            let client = pool.get().await.map_err(|e| e.to_string())?;
            client.simple_query("SELECT 1").await.map_err(|e| e.to_string())?;
            Ok::<(), String>(())
        })
        .await;
        metrics::db_seconds("probe", started.elapsed().as_secs_f64());
        match answer {
            Ok(Ok(())) => self.success(),
            Ok(Err(e)) => self.failure(&e),
            Err(_) => self.failure("probe timed out"),
        }
    }
}
