//! The replica's in-memory copy of the compacted `agent-health` topic: answers
//! GetAgent and ListAgents and feeds WatchAgents. Every replica reads the whole
//! topic, so any replica answers for any agent and state survives restarts.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio::sync::broadcast;

use crate::health::{AgentState, HealthStatus};

/// Which agents a list or watch wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentFilter {
    /// Only this status.
    pub status: Option<HealthStatus>,
    /// Only this agent type.
    pub agent_type: Option<String>,
}

impl AgentFilter {
    /// True when `s` passes the filter.
    pub fn matches(&self, s: &AgentState) -> bool {
        self.status.is_none_or(|st| st == s.status)
            && self.agent_type.as_ref().is_none_or(|t| *t == s.agent_type)
    }
}

/// One change of the directory, in the order they were applied.
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "nearly every value is the state variant; boxing it would allocate for each"
)]
pub enum Change {
    /// An agent's state changed (or it appeared).
    Updated(AgentState),
    /// An agent was retired (a tombstone on agent-health).
    Retired(String),
}

/// Latest health per agent, plus a feed of changes.
#[derive(Debug, Clone)]
pub struct AgentDirectory {
    agents: Arc<RwLock<HashMap<String, AgentState>>>,
    changes: broadcast::Sender<Change>,
}

impl Default for AgentDirectory {
    fn default() -> Self {
        Self::new(4_096)
    }
}

impl AgentDirectory {
    /// An empty directory whose change feed buffers `feed_capacity` changes per slow watcher.
    pub fn new(feed_capacity: usize) -> Self {
        Self {
            agents: Arc::default(),
            changes: broadcast::channel(feed_capacity.max(1)).0,
        }
    }

    /// Takes in a record unless the directory already holds one that takes
    /// precedence (see [`AgentState::precedence`]). Returns true, and tells the
    /// watchers, when what the directory says about the agent changed.
    pub fn merge(&self, state: AgentState) -> bool {
        let mut agents = self.agents.write().unwrap_or_else(|p| p.into_inner());
        let changed = match agents.get(&state.agent_id) {
            Some(current) if current.precedence() > state.precedence() => return false,
            Some(current) => !current.same_content(&state),
            None => true,
        };
        agents.insert(state.agent_id.clone(), state.clone());
        // Sent under the lock so watchers see changes in the order they were applied.
        if changed {
            let _ = self.changes.send(Change::Updated(state));
        }
        changed
    }

    /// Forgets an agent (a tombstone in the compacted topic) and tells the watchers.
    pub fn remove(&self, agent_id: &str) {
        let mut agents = self.agents.write().unwrap_or_else(|p| p.into_inner());
        if agents.remove(agent_id).is_some() {
            let _ = self.changes.send(Change::Retired(agent_id.to_string()));
        }
    }

    /// One agent's health.
    pub fn get(&self, agent_id: &str) -> Option<AgentState> {
        self.agents
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(agent_id)
            .cloned()
    }

    /// Every matching agent, ordered by agent id.
    pub fn list(&self, filter: &AgentFilter) -> Vec<AgentState> {
        let agents = self.agents.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<AgentState> = agents
            .values()
            .filter(|s| filter.matches(s))
            .cloned()
            .collect();
        out.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        out
    }

    /// A consistent snapshot of matching agents and a receiver of every change after it.
    pub fn watch(&self, filter: &AgentFilter) -> (Vec<AgentState>, broadcast::Receiver<Change>) {
        self.watch_with(|agents| {
            let mut snapshot: Vec<AgentState> = agents
                .values()
                .filter(|s| filter.matches(s))
                .cloned()
                .collect();
            snapshot.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
            snapshot
        })
    }

    /// What `read` makes of the agents, and a receiver of every change after
    /// that moment (both taken under one lock).
    pub fn watch_with<T>(
        &self,
        read: impl FnOnce(&HashMap<String, AgentState>) -> T,
    ) -> (T, broadcast::Receiver<Change>) {
        // Holding the write lock orders the subscription exactly between changes.
        let agents = self.agents.write().unwrap_or_else(|p| p.into_inner());
        let rx = self.changes.subscribe();
        (read(&agents), rx)
    }

    /// Agents that are not UNHEALTHY (candidates for the silence check).
    pub fn live(&self) -> Vec<AgentState> {
        let agents = self.agents.read().unwrap_or_else(|p| p.into_inner());
        agents
            .values()
            .filter(|s| s.status != HealthStatus::Unhealthy)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(id: &str, status: HealthStatus, last_seen: i64, updated_at: i64) -> AgentState {
        AgentState {
            agent_id: id.into(),
            agent_type: "GAP_ANALYZER".into(),
            status,
            last_seen,
            last_heartbeat: Some(last_seen),
            resource_usage: None,
            tasks_completed: 0,
            last_task_id: None,
            last_error: None,
            updated_at,
            applied: None,
        }
    }

    #[test]
    fn newer_records_win_and_stale_ones_are_ignored() {
        let d = AgentDirectory::default();
        assert!(d.merge(state("a", HealthStatus::Healthy, 10, 10)));
        assert!(
            !d.merge(state("a", HealthStatus::Unhealthy, 5, 50)),
            "based on older events"
        );
        assert_eq!(d.get("a").unwrap().status, HealthStatus::Healthy);
        assert!(d.merge(state("a", HealthStatus::Unhealthy, 10, 40)));
        assert!(
            !d.merge(state("a", HealthStatus::Unhealthy, 10, 41)),
            "same content: no change"
        );
        assert_eq!(d.get("a").unwrap().status, HealthStatus::Unhealthy);
    }

    #[test]
    fn list_filters_by_status_and_type() {
        let d = AgentDirectory::default();
        d.merge(state("b", HealthStatus::Healthy, 1, 1));
        d.merge(state("a", HealthStatus::Degraded, 1, 1));
        let mut c = state("c", HealthStatus::Healthy, 1, 1);
        c.agent_type = "RISK_ASSESSOR".into();
        d.merge(c);
        let ids = |f: AgentFilter| {
            d.list(&f)
                .into_iter()
                .map(|s| s.agent_id)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(AgentFilter::default()), ["a", "b", "c"]);
        assert_eq!(
            ids(AgentFilter {
                status: Some(HealthStatus::Healthy),
                agent_type: None
            }),
            ["b", "c"]
        );
        assert_eq!(
            ids(AgentFilter {
                status: Some(HealthStatus::Healthy),
                agent_type: Some("GAP_ANALYZER".into())
            }),
            ["b"]
        );
    }

    #[tokio::test]
    async fn watchers_get_a_snapshot_then_changes_in_order() {
        let d = AgentDirectory::default();
        d.merge(state("a", HealthStatus::Healthy, 1, 1));
        let (snap, mut rx) = d.watch(&AgentFilter::default());
        assert_eq!(snap.len(), 1);
        d.merge(state("a", HealthStatus::Degraded, 2, 2));
        d.merge(state("a", HealthStatus::Healthy, 3, 3));
        d.remove("a");
        let status = |c: Change| match c {
            Change::Updated(s) => s.status,
            other => panic!("{other:?}"),
        };
        assert_eq!(status(rx.recv().await.unwrap()), HealthStatus::Degraded);
        assert_eq!(status(rx.recv().await.unwrap()), HealthStatus::Healthy);
        assert_eq!(rx.recv().await.unwrap(), Change::Retired("a".into()));
    }
}
