//! The health processor: folds agent events into agent health in the
//! runtime's transactional mode (group `agent-event-processor`), so each
//! batch's agent-health records and its agent-events offsets commit in one
//! Kafka transaction — after a crash or a partition handover nothing is
//! folded twice and nothing is lost.
//!
//! A replica folds and judges only the agents of the agent-events partitions
//! it owns. Their states live in this processor (seeded from the view when a
//! partition is assigned, after the view read agent-health to its end) and
//! change only through transactions: an aborted one restores them. A batch
//! writes one record per agent it changed (the agent's last state), at its
//! end, in its transaction. Each state carries the position of the last
//! event folded into it, so an event handed over again is recognised and
//! skipped. The periodic tick judges
//! silence per owned partition by how far that partition is processed, and
//! writes UNHEALTHY records and retirement tombstones through the same
//! transactional producer.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use dora_kafka::consume::{HandlerError, Record, Transform};
use dora_kafka::OutboundRecord;
use dora_schema::{AgentEvent, Codec};

use crate::directory::AgentDirectory;
use crate::health::{self, AgentState, EventPosition, Transition};
use crate::metrics;
use crate::wire::{agent_health, observation, status_name, WireError};

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// When agents count as silent, and when they are forgotten.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    /// Silence after which an agent is UNHEALTHY, ms.
    pub allowed_silence_ms: i64,
    /// Silence after which an agent is retired (a tombstone), ms; `None`: never.
    pub retire_after_ms: Option<i64>,
    /// How stale "processed up to the end" may be (the runtime refreshes a
    /// partition's lag at its statistics interval), ms: a caught-up partition
    /// is judged as of `now - margin`.
    pub caught_up_margin_ms: i64,
}

/// The agents of one owned agent-events partition.
#[derive(Debug, Default)]
struct Owned {
    agents: HashMap<String, AgentState>,
    /// Agents retired since the assignment (their next event starts afresh,
    /// whatever the view still holds until it reads the tombstone).
    retired: HashSet<String>,
    /// Timestamp of the last record processed since the assignment.
    last_record_ms: Option<i64>,
}

/// What an open transaction changed, to undo it or publish it.
#[derive(Debug, Default)]
struct Open {
    /// The value each touched agent had before the transaction (first touch).
    before: HashMap<(i32, String), (Option<AgentState>, bool)>,
    /// `last_record_ms` of each touched partition before the transaction.
    clocks: HashMap<i32, Option<i64>>,
    /// States and retirements to show in the directory once committed.
    written: Vec<Result<AgentState, String>>,
    /// Agents whose state the batch's events changed: each gets one record,
    /// its last state, when the batch ends.
    changed: BTreeSet<(i32, String)>,
}

#[derive(Debug, Default)]
struct FoldState {
    owned: HashMap<i32, Owned>,
    open: Open,
}

impl FoldState {
    /// Remembers `agent`'s value before the open transaction changes it.
    fn touch(&mut self, partition: i32, agent: &str) {
        let key = (partition, agent.to_string());
        if self.open.before.contains_key(&key) {
            return;
        }
        let owned = self.owned.entry(partition).or_default();
        let before = (owned.agents.get(agent).cloned(), owned.retired.contains(agent));
        self.open.before.insert(key, before);
    }

    fn set_clock(&mut self, partition: i32, ms: Option<i64>) {
        let owned = self.owned.entry(partition).or_default();
        self.open.clocks.entry(partition).or_insert(owned.last_record_ms);
        owned.last_record_ms = ms.max(owned.last_record_ms);
    }

    fn rollback(&mut self) {
        let open = std::mem::take(&mut self.open);
        for ((partition, agent), (state, retired)) in open.before {
            let Some(owned) = self.owned.get_mut(&partition) else {
                continue;
            };
            match state {
                Some(s) => owned.agents.insert(agent.clone(), s),
                None => owned.agents.remove(&agent),
            };
            if retired {
                owned.retired.insert(agent);
            } else {
                owned.retired.remove(&agent);
            }
        }
        for (partition, clock) in open.clocks {
            if let Some(owned) = self.owned.get_mut(&partition) {
                owned.last_record_ms = clock;
            }
        }
    }
}

/// The health processor (see the module documentation).
pub struct HealthFold {
    codec: Codec,
    events_topic: String,
    health_topic: String,
    directory: AgentDirectory,
    liveness: Liveness,
    state: Mutex<FoldState>,
}

impl HealthFold {
    /// A processor of `events_topic` writing `health_topic`; `directory` is
    /// the replica's view (read when a partition is assigned, updated with
    /// every committed change).
    pub fn new(
        codec: Codec,
        events_topic: &str,
        health_topic: &str,
        directory: AgentDirectory,
        liveness: Liveness,
    ) -> Self {
        Self {
            codec,
            events_topic: events_topic.to_string(),
            health_topic: health_topic.to_string(),
            directory,
            liveness,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, FoldState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The event in `record`; `None` for a tombstone (it says nothing about health).
    async fn decode(&self, record: &Record) -> Result<Option<AgentEvent>, HandlerError> {
        let Some(payload) = record.payload.as_deref() else {
            return Ok(None);
        };
        let event: AgentEvent = self
            .codec
            .decode(&record.topic, payload)
            .await
            .map_err(|e| wire_error("UndecodableAgentEvent", e.into()))?;
        if event.agent_id.is_empty() {
            return Err(HandlerError::rejected("InvalidAgentEvent", "agentId is empty"));
        }
        Ok(Some(event))
    }

    /// Folds `event` at `at` into the owned state; the new state, if it changed.
    fn fold(&self, event: &AgentEvent, at: EventPosition, timestamp: Option<i64>) -> Option<AgentState> {
        let mut st = self.state();
        st.set_clock(at.partition, timestamp);
        let agent = event.agent_id.as_str();
        let owned = st.owned.entry(at.partition).or_default();
        let previous = match owned.agents.get(agent) {
            Some(s) => Some(s.clone()),
            None if owned.retired.contains(agent) => None,
            None => self.directory.get(agent),
        };
        if previous.as_ref().and_then(|p| p.applied).is_some_and(|a| a.covers(at)) {
            tracing::debug!(agent_id = agent, partition = at.partition, offset = at.offset, "event already folded; skipped");
            return None;
        }
        let mut next = match health::apply(previous.as_ref(), &observation(event), now_ms()) {
            Transition::Updated(next) => next,
            Transition::Unchanged => return None,
            Transition::UnknownEventType(t) => {
                tracing::warn!(event_type = %t, agent_id = agent, "Unknown event type");
                metrics::unknown_event_type(&t);
                return None;
            }
        };
        next.applied = Some(at);
        st.touch(at.partition, agent);
        let owned = st.owned.entry(at.partition).or_default();
        owned.retired.remove(agent);
        owned.agents.insert(agent.to_string(), next.clone());
        st.open.written.push(Ok(next.clone()));
        st.open.changed.insert((at.partition, agent.to_string()));
        Some(next)
    }

    /// The time up to which `partition`'s events are applied: now (less the
    /// margin) when it is processed to its end, else the timestamp of its last
    /// processed record; `None` when not known yet.
    fn clock(&self, partition: i32, last_record_ms: Option<i64>, now: i64) -> Option<i64> {
        match dora_kafka::metrics::consumer_lag(&self.events_topic, partition)? {
            0 => Some(now - self.liveness.caught_up_margin_ms),
            _ => last_record_ms,
        }
    }

    /// The owned agents silent too long as of their partition's clock: the
    /// UNHEALTHY states and the agents to retire, already applied to the state.
    fn judge(&self, now: i64) -> (Vec<AgentState>, Vec<String>) {
        let mut st = self.state();
        let mut unhealthy = Vec::new();
        let mut retire = Vec::new();
        let partitions: Vec<(i32, Option<i64>)> = st
            .owned
            .iter()
            .map(|(p, o)| (*p, o.last_record_ms))
            .collect();
        for (partition, last) in partitions {
            let Some(clock) = self.clock(partition, last, now) else {
                continue;
            };
            let mine: Vec<AgentState> = st.owned[&partition].agents.values().cloned().collect();
            for state in mine {
                let agent = state.agent_id.clone();
                let retirable = self
                    .liveness
                    .retire_after_ms
                    .is_some_and(|after| health::retirable(&state, clock, after));
                if retirable {
                    st.touch(partition, &agent);
                    let owned = st.owned.entry(partition).or_default();
                    owned.agents.remove(&agent);
                    owned.retired.insert(agent.clone());
                    st.open.written.push(Err(agent.clone()));
                    retire.push(agent);
                } else if let Some(u) = health::expire(&state, clock, now, self.liveness.allowed_silence_ms) {
                    tracing::info!(agent_id = %agent, last_heartbeat = ?u.last_heartbeat, partition, clock_ms = clock, "agent went silent: UNHEALTHY");
                    st.touch(partition, &agent);
                    st.owned.entry(partition).or_default().agents.insert(agent, u.clone());
                    st.open.written.push(Ok(u.clone()));
                    unhealthy.push(u);
                }
            }
        }
        (unhealthy, retire)
    }

    async fn record_of(&self, state: &AgentState) -> Result<OutboundRecord, HandlerError> {
        let value = agent_health(state);
        OutboundRecord::avro(&self.codec, &self.health_topic, Some(&value.agent_id), &value)
            .await
            .map_err(|e| wire_error("HealthEncoding", e.into()))
    }

    /// The last state of each agent changed since the previous call (the
    /// batch's records), in (partition, agent) order.
    fn changed_states(&self) -> Vec<AgentState> {
        let mut st = self.state();
        let changed = std::mem::take(&mut st.open.changed);
        changed
            .into_iter()
            .filter_map(|(partition, agent)| st.owned.get(&partition)?.agents.get(&agent).cloned())
            .collect()
    }

    fn is_events(&self, topic: &str) -> bool {
        topic == self.events_topic
    }
}

fn wire_error(kind: &str, e: WireError) -> HandlerError {
    if e.retryable {
        HandlerError::unavailable(kind, e.message)
    } else {
        HandlerError::rejected(kind, e.message)
    }
}

impl Transform for HealthFold {
    #[tracing::instrument(name = "agent_event", skip_all, fields(partition = record.partition, offset = record.offset))]
    async fn transform(&self, record: &Record) -> Result<Vec<OutboundRecord>, HandlerError> {
        let Some(event) = self.decode(record).await? else {
            return Ok(Vec::new());
        };
        let at = EventPosition {
            partition: record.partition,
            offset: record.offset,
        };
        // Written once per agent when the batch ends (`batch_end`), in the
        // same transaction as this event's offset.
        self.fold(&event, at, record.timestamp);
        Ok(Vec::new())
    }

    /// One record per agent the batch changed: its last state, which carries
    /// the position of the last event folded into it.
    async fn batch_end(&self) -> Result<Vec<OutboundRecord>, HandlerError> {
        let states = self.changed_states();
        let mut out = Vec::with_capacity(states.len());
        for state in &states {
            out.push(self.record_of(state).await?);
        }
        Ok(out)
    }

    async fn tick(&self, now_ms: i64) -> Result<Vec<OutboundRecord>, HandlerError> {
        let (unhealthy, retired) = self.judge(now_ms);
        let mut out = Vec::with_capacity(unhealthy.len() + retired.len());
        for state in &unhealthy {
            out.push(self.record_of(state).await?);
        }
        for agent in &retired {
            tracing::info!(agent_id = %agent, "agent silent past the retirement limit: retired");
            out.push(OutboundRecord::tombstone(&self.health_topic, agent));
        }
        Ok(out)
    }

    async fn committed(&self) {
        let written = {
            let mut st = self.state();
            st.open.before.clear();
            st.open.clocks.clear();
            std::mem::take(&mut st.open.written)
        };
        for change in written {
            match change {
                Ok(state) => {
                    metrics::health_published(status_name(state.status));
                    self.directory.merge(state);
                }
                Err(agent) => {
                    metrics::health_published("RETIRED");
                    self.directory.remove(&agent);
                }
            }
        }
    }

    async fn aborted(&self, _partitions: &[(String, i32)]) {
        self.state().rollback();
    }

    async fn assigned(&self, partitions: &[(String, i32)]) {
        // The loop calls this after the start position's answer, i.e. after
        // the view read agent-health to its end: it holds the last state the
        // previous owner committed for each of these partitions' agents.
        let all = self.directory.list(&Default::default());
        let mut st = self.state();
        for (topic, partition) in partitions {
            if !self.is_events(topic) {
                continue;
            }
            let agents = all
                .iter()
                .filter(|s| s.applied.is_some_and(|a| a.partition == *partition))
                .map(|s| (s.agent_id.clone(), s.clone()))
                .collect();
            st.owned.insert(
                *partition,
                Owned {
                    agents,
                    ..Default::default()
                },
            );
        }
    }

    async fn revoked(&self, partitions: &[(String, i32)]) {
        let mut st = self.state();
        for (topic, partition) in partitions {
            if self.is_events(topic) {
                st.owned.remove(partition);
                st.open.before.retain(|(p, _), _| p != partition);
                st.open.changed.retain(|(p, _)| p != partition);
                st.open.clocks.remove(partition);
            }
        }
    }
}

#[cfg(test)]
mod tests;
