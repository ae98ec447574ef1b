//! The agent health state machine as pure logic: how one agent event, or the
//! absence of heartbeats, changes an agent's health. No I/O here; the
//! processor feeds events in and publishes what comes out.

use serde_json::Value;

/// Health of one agent as the platform sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthStatus {
    /// Heartbeating and not reporting errors.
    Healthy,
    /// Reported an error since its last heartbeat.
    Degraded,
    /// No heartbeat within the allowed silence.
    Unhealthy,
}

/// Where an event sits on `agent-events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventPosition {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

impl EventPosition {
    /// True when an event at `event` was already folded into a state that
    /// applied everything up to `self`: same partition, not after it.
    pub fn covers(&self, event: EventPosition) -> bool {
        self.partition == event.partition && event.offset <= self.offset
    }
}

/// One agent's derived health: the value of the `agent-health` topic.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentState {
    /// The agent.
    pub agent_id: String,
    /// Its kind, from its latest event.
    pub agent_type: String,
    /// Current health.
    pub status: HealthStatus,
    /// Latest event timestamp of any kind, epoch ms.
    pub last_seen: i64,
    /// Latest heartbeat timestamp, epoch ms.
    pub last_heartbeat: Option<i64>,
    /// `metadata.resource_usage` of the latest heartbeat that carried one.
    pub resource_usage: Option<Value>,
    /// TASK_COMPLETED events counted.
    pub tasks_completed: u64,
    /// Task id of the latest task event.
    pub last_task_id: Option<String>,
    /// Message of the latest ERROR.
    pub last_error: Option<String>,
    /// When this state was computed, epoch ms.
    pub updated_at: i64,
    /// The latest event folded into this state (`None`: not known, a record
    /// written before positions were recorded). Its partition's owner judges
    /// the agent's liveness.
    pub applied: Option<EventPosition>,
}

impl AgentState {
    /// Ordering of two records about the same agent: the one based on the newer
    /// event wins, then the one computed later. A stale "went silent" record
    /// written after a fresher heartbeat therefore never wins.
    pub fn precedence(&self) -> (i64, i64) {
        (self.last_seen, self.updated_at)
    }

    /// True when `other` says the same thing apart from when it was computed
    /// and from which event.
    pub fn same_content(&self, other: &AgentState) -> bool {
        AgentState {
            updated_at: 0,
            applied: None,
            ..self.clone()
        } == AgentState {
            updated_at: 0,
            applied: None,
            ..other.clone()
        }
    }
}

/// What the state machine needs from an agent event (Avro or legacy JSON alike).
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// `agentId`.
    pub agent_id: &'a str,
    /// `agentType`.
    pub agent_type: &'a str,
    /// `eventType` as written by the producer.
    pub event_type: &'a str,
    /// `timestamp`, epoch ms.
    pub timestamp: i64,
    /// `message`.
    pub message: Option<&'a str>,
    /// `metadata`.
    pub metadata: &'a Value,
    /// `taskId`.
    pub task_id: Option<&'a str>,
}

/// The result of applying one event.
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "nearly every value is the state variant; boxing it would allocate for each"
)]
pub enum Transition {
    /// The agent's new state (publish it).
    Updated(AgentState),
    /// A known event type that changes nothing worth publishing.
    Unchanged,
    /// An event type the state machine does not know: log and count it, as the
    /// seed does; never dead-letter it.
    UnknownEventType(String),
}

/// Applies one event to the agent's previous state (`None`: first sighting).
///
/// - `HEARTBEAT` -> HEALTHY, last heartbeat, resource usage;
/// - `TASK_COMPLETED` -> tasks completed + 1, last task;
/// - `ERROR` -> DEGRADED, last error;
/// - `TASK_STARTED`, `TASK_FAILED` -> last task, last seen;
/// - anything else -> [`Transition::UnknownEventType`].
pub fn apply(previous: Option<&AgentState>, event: &Observation<'_>, now_ms: i64) -> Transition {
    let mut next = previous.cloned().unwrap_or_else(|| AgentState {
        agent_id: event.agent_id.to_string(),
        agent_type: event.agent_type.to_string(),
        status: HealthStatus::Healthy,
        last_seen: event.timestamp,
        last_heartbeat: None,
        resource_usage: None,
        tasks_completed: 0,
        last_task_id: None,
        last_error: None,
        updated_at: now_ms,
        applied: None,
    });
    match event.event_type {
        "HEARTBEAT" => {
            next.status = HealthStatus::Healthy;
            next.last_heartbeat = Some(
                next.last_heartbeat
                    .map_or(event.timestamp, |h| h.max(event.timestamp)),
            );
            if let Some(usage) = event
                .metadata
                .get("resource_usage")
                .filter(|u| !u.is_null())
            {
                next.resource_usage = Some(usage.clone());
            }
        }
        "TASK_COMPLETED" => {
            next.tasks_completed += 1;
            next.last_task_id = event.task_id.map(str::to_string);
        }
        "ERROR" => {
            next.status = HealthStatus::Degraded;
            next.last_error = Some(
                event
                    .message
                    .unwrap_or("error reported without a message")
                    .to_string(),
            );
        }
        "TASK_STARTED" | "TASK_FAILED" => {
            if let Some(task) = event.task_id {
                next.last_task_id = Some(task.to_string());
            }
        }
        other => return Transition::UnknownEventType(other.to_string()),
    }
    if !event.agent_type.is_empty() {
        next.agent_type = event.agent_type.to_string();
    }
    next.last_seen = next.last_seen.max(event.timestamp);
    next.updated_at = later_than(previous, now_ms);
    match previous {
        Some(p) if p.same_content(&next) => Transition::Unchanged,
        _ => Transition::Updated(next),
    }
}

/// `now_ms`, or just after `previous`'s computation time if that is later:
/// one agent's records are written by one replica at a time, and the next
/// owner's clock may be behind the last one's; a later state must still take
/// precedence (see [`AgentState::precedence`]).
fn later_than(previous: Option<&AgentState>, now_ms: i64) -> i64 {
    previous.map_or(now_ms, |p| now_ms.max(p.updated_at + 1))
}

/// True when the agent gave no sign of life (no event of any kind) for
/// longer than `retire_after_ms` as of `now_ms`: it is retired (a tombstone
/// replaces its record).
pub fn retirable(state: &AgentState, now_ms: i64, retire_after_ms: i64) -> bool {
    let last = state.last_heartbeat.map_or(state.last_seen, |h| h.max(state.last_seen));
    now_ms - last > retire_after_ms
}

/// The agent's state when, as of `clock_ms` (the time up to which its
/// events are known to be applied), it has been silent too long: UNHEALTHY
/// when no heartbeat (or, never having heartbeated, no event) arrived within
/// `allowed_silence_ms`; computed at `now_ms`. `None` when nothing changes.
pub fn expire(
    state: &AgentState,
    clock_ms: i64,
    now_ms: i64,
    allowed_silence_ms: i64,
) -> Option<AgentState> {
    if state.status == HealthStatus::Unhealthy {
        return None;
    }
    let last_sign_of_life = state.last_heartbeat.unwrap_or(state.last_seen);
    if clock_ms - last_sign_of_life <= allowed_silence_ms {
        return None;
    }
    Some(AgentState {
        status: HealthStatus::Unhealthy,
        updated_at: later_than(Some(state), now_ms),
        ..state.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obs<'a>(event_type: &'a str, ts: i64, metadata: &'a Value) -> Observation<'a> {
        Observation {
            agent_id: "agent-1",
            agent_type: "GAP_ANALYZER",
            event_type,
            timestamp: ts,
            message: None,
            metadata,
            task_id: None,
        }
    }

    fn updated(t: Transition) -> AgentState {
        match t {
            Transition::Updated(s) => s,
            other => panic!("expected an update, got {other:?}"),
        }
    }

    #[test]
    fn heartbeat_makes_healthy_with_last_seen_and_resource_usage() {
        let md = json!({"resource_usage": {"cpu": 12, "memory_mb": 256.5}});
        let s = updated(apply(None, &obs("HEARTBEAT", 1_000, &md), 1_001));
        assert_eq!(s.status, HealthStatus::Healthy);
        assert_eq!(s.last_seen, 1_000);
        assert_eq!(s.last_heartbeat, Some(1_000));
        assert_eq!(
            s.resource_usage,
            Some(json!({"cpu": 12, "memory_mb": 256.5}))
        );
        assert_eq!(s.agent_type, "GAP_ANALYZER");
        assert_eq!(s.updated_at, 1_001);
    }

    #[test]
    fn task_completion_counts_and_remembers_the_task() {
        let empty = json!({});
        let s0 = updated(apply(None, &obs("HEARTBEAT", 1_000, &empty), 1_000));
        let mut ev = obs("TASK_COMPLETED", 2_000, &empty);
        ev.task_id = Some("task-7");
        let s1 = updated(apply(Some(&s0), &ev, 2_000));
        assert_eq!(s1.tasks_completed, 1);
        assert_eq!(s1.last_task_id.as_deref(), Some("task-7"));
        assert_eq!(s1.status, HealthStatus::Healthy);
        assert_eq!(s1.last_heartbeat, Some(1_000), "a task is not a heartbeat");
        ev.task_id = Some("task-8");
        let s2 = updated(apply(Some(&s1), &ev, 2_100));
        assert_eq!(s2.tasks_completed, 2);
        assert_eq!(s2.last_task_id.as_deref(), Some("task-8"));
    }

    #[test]
    fn error_degrades_and_a_heartbeat_recovers() {
        let empty = json!({});
        let s0 = updated(apply(None, &obs("HEARTBEAT", 1_000, &empty), 1_000));
        let mut ev = obs("ERROR", 2_000, &empty);
        ev.message = Some("model endpoint timed out");
        let s1 = updated(apply(Some(&s0), &ev, 2_000));
        assert_eq!(s1.status, HealthStatus::Degraded);
        assert_eq!(s1.last_error.as_deref(), Some("model endpoint timed out"));
        let s2 = updated(apply(Some(&s1), &obs("HEARTBEAT", 3_000, &empty), 3_000));
        assert_eq!(s2.status, HealthStatus::Healthy);
        assert_eq!(
            s2.last_error.as_deref(),
            Some("model endpoint timed out"),
            "history is kept"
        );
    }

    #[test]
    fn unknown_event_type_is_reported_not_applied() {
        let empty = json!({});
        let t = apply(None, &obs("REBOOTING", 1_000, &empty), 1_000);
        assert_eq!(t, Transition::UnknownEventType("REBOOTING".into()));
    }

    #[test]
    fn silence_beyond_the_allowance_turns_unhealthy_once() {
        let empty = json!({});
        let s = updated(apply(None, &obs("HEARTBEAT", 1_000, &empty), 1_000));
        assert_eq!(
            expire(&s, 31_000, 31_000, 30_000),
            None,
            "exactly at the limit is still fine"
        );
        let u = expire(&s, 31_001, 31_001, 30_000).expect("silent too long");
        assert_eq!(u.status, HealthStatus::Unhealthy);
        assert_eq!(u.last_heartbeat, Some(1_000));
        assert!(u.precedence() > s.precedence());
        assert_eq!(expire(&u, 99_000, 99_000, 30_000), None, "already unhealthy");
        let back = updated(apply(Some(&u), &obs("HEARTBEAT", 40_000, &empty), 40_000));
        assert_eq!(back.status, HealthStatus::Healthy);
        assert!(back.precedence() > u.precedence());
    }

    #[test]
    fn a_stale_silence_verdict_loses_to_a_fresher_heartbeat() {
        let empty = json!({});
        let s = updated(apply(None, &obs("HEARTBEAT", 1_000, &empty), 1_000));
        let fresh = updated(apply(Some(&s), &obs("HEARTBEAT", 50_000, &empty), 50_000));
        // Another replica decided from `s` (it had not seen `fresh` yet) a bit later.
        let stale = expire(&s, 50_500, 50_500, 30_000).unwrap();
        assert!(fresh.precedence() > stale.precedence());
    }

    #[test]
    fn repeated_identical_heartbeat_content_is_still_an_update_of_last_seen() {
        let empty = json!({});
        let s = updated(apply(None, &obs("HEARTBEAT", 1_000, &empty), 1_000));
        assert!(matches!(
            apply(Some(&s), &obs("HEARTBEAT", 1_000, &empty), 1_500),
            Transition::Unchanged
        ));
        assert!(matches!(
            apply(Some(&s), &obs("HEARTBEAT", 2_000, &empty), 2_000),
            Transition::Updated(_)
        ));
    }
}
