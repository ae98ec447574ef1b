//! The loop's readiness conditions on `/readyz` (assigned, connected,
//! progress, rebuilding), named after its group and unique in the process,
//! and the watchdog that reports a handler call running too long.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dora_telemetry::Readiness;

use super::membership::Membership;

/// A name no earlier loop or producer of this process took: `base`, or
/// `base#2`, `base#3`, ... for the next ones.
pub(crate) fn unique_name(base: &str) -> String {
    static TAKEN: Mutex<Option<HashMap<String, usize>>> = Mutex::new(None);
    let mut taken = TAKEN.lock().unwrap_or_else(|p| p.into_inner());
    let n = taken.get_or_insert_with(HashMap::new).entry(base.to_string()).or_insert(0);
    *n += 1;
    if *n == 1 {
        base.to_string()
    } else {
        format!("{base}#{n}")
    }
}

/// The conditions of one loop.
#[derive(Debug, Clone)]
pub(crate) struct Conditions {
    readiness: Readiness,
    name: String,
}

impl Conditions {
    /// Registers the loop's conditions: not ready until it joined its group.
    pub fn register(readiness: &Readiness, group: &str) -> Self {
        let conditions = Self {
            readiness: readiness.clone(),
            name: unique_name(&format!("consumer {group}")),
        };
        conditions.not_assigned("not yet joined the group");
        readiness.set_ready(&conditions.progress());
        readiness.set_ready(&conditions.connected());
        conditions
    }

    fn assigned(&self) -> String {
        format!("{} assigned", self.name)
    }

    fn progress(&self) -> String {
        format!("{} progress", self.name)
    }

    fn connected(&self) -> String {
        format!("{} connected", self.name)
    }

    fn rebuilding(&self) -> String {
        format!("{} rebuilding", self.name)
    }

    pub fn is_assigned(&self) {
        self.readiness.set_ready(&self.assigned());
    }

    pub fn not_assigned(&self, reason: impl Into<String>) {
        self.readiness.set_not_ready(&self.assigned(), reason);
    }

    pub fn is_connected(&self) {
        self.readiness.set_ready(&self.connected());
    }

    pub fn not_connected(&self, reason: impl Into<String>) {
        self.readiness.set_not_ready(&self.connected(), reason);
    }

    /// `reason` is why the loop makes no progress; `None` when it does.
    pub fn progress_is(&self, reason: Option<String>) {
        match reason {
            Some(r) => self.readiness.set_not_ready(&self.progress(), r),
            None => self.readiness.set_ready(&self.progress()),
        }
    }

    /// `waiting` partitions are still replaying up to their committed offset.
    pub fn rebuilding_is(&self, waiting: usize) {
        if waiting == 0 {
            self.readiness.set_ready(&self.rebuilding());
        } else {
            self.readiness.set_not_ready(
                &self.rebuilding(),
                format!("{waiting} partition(s) replaying up to their committed offset"),
            );
        }
    }
}

/// Reports `progress` not ready while one handler call has run longer than
/// `stuck_after`, or a partition keeps failing past the retry policy's count.
pub(crate) fn spawn_watchdog(
    membership: Arc<Membership>,
    stuck_after: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500).min(stuck_after));
        loop {
            tick.tick().await;
            let reason = match membership.busy_since() {
                Some(t) if t.elapsed() > stuck_after => {
                    Some(format!("a handler has run for {:?}", t.elapsed()))
                }
                _ => membership.stuck_reason(),
            };
            membership.conditions.progress_is(reason);
        }
    })
}
