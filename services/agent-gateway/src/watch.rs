//! One WatchAgents call: the matching agents, then every change that concerns
//! the watcher — an agent entering the filter, changing within it, leaving it
//! (sent once, with the state that no longer matches) or being retired. A
//! watcher too slow for the change feed is brought up to date from a fresh
//! snapshot, never sent a change older than one it already got.

use std::collections::{HashMap, HashSet};

use dora_proto::agent::v1 as pb;
use tokio::sync::{broadcast, mpsc};
use tonic::Status;

use crate::api::to_proto;
use crate::directory::{AgentDirectory, AgentFilter, Change};
use crate::health::AgentState;

/// A watcher's position: what it was told matches.
pub struct Watch {
    directory: AgentDirectory,
    filter: AgentFilter,
    /// Agents the watcher was last told match the filter.
    in_view: HashSet<String>,
}

type Sink = mpsc::Sender<Result<pb::AgentHealth, Status>>;

fn retired(agent_id: String) -> pb::AgentHealth {
    pb::AgentHealth {
        agent_id,
        retired: true,
        ..Default::default()
    }
}

impl Watch {
    /// A watch of `directory` through `filter`.
    pub fn new(directory: AgentDirectory, filter: AgentFilter) -> Self {
        Self {
            directory,
            filter,
            in_view: HashSet::new(),
        }
    }

    /// Sends the snapshot, then the changes, to `tx` until it closes or the feed ends.
    pub async fn run(mut self, tx: &Sink) {
        let (snapshot, mut changes) = self.directory.watch(&self.filter);
        for s in snapshot {
            self.in_view.insert(s.agent_id.clone());
            if tx.send(Ok(to_proto(&s))).await.is_err() {
                return;
            }
        }
        loop {
            let out = match changes.recv().await {
                Ok(change) => self.follow(change).into_iter().collect(),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "watcher lagged; catching up from a snapshot");
                    let (out, fresh) = self.catch_up();
                    changes = fresh;
                    out
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            for message in out {
                if tx.send(Ok(message)).await.is_err() {
                    return;
                }
            }
        }
    }

    /// What the watcher is told about one change, if anything.
    fn follow(&mut self, change: Change) -> Option<pb::AgentHealth> {
        match change {
            Change::Updated(s) if self.filter.matches(&s) => {
                self.in_view.insert(s.agent_id.clone());
                Some(to_proto(&s))
            }
            // It left the filter: say so once, with the state that no longer matches.
            Change::Updated(s) => self.in_view.remove(&s.agent_id).then(|| to_proto(&s)),
            Change::Retired(id) => self.in_view.remove(&id).then(|| retired(id)),
        }
    }

    /// After missing changes: the current state of every matching agent and of
    /// every agent that left the view meanwhile, and a receiver of the changes
    /// after that moment (dropping the old one, with its older changes).
    fn catch_up(&mut self) -> (Vec<pb::AgentHealth>, broadcast::Receiver<Change>) {
        let filter = self.filter.clone();
        let in_view = std::mem::take(&mut self.in_view);
        let ((out, now_in_view), fresh) = self.directory.watch_with(|agents| {
            let matching: HashMap<&String, &AgentState> =
                agents.iter().filter(|(_, s)| filter.matches(s)).collect();
            let mut out: Vec<pb::AgentHealth> = Vec::new();
            for id in in_view.iter().filter(|id| !matching.contains_key(id)) {
                out.push(agents.get(id).map_or_else(|| retired(id.clone()), to_proto));
            }
            let mut now: Vec<&AgentState> = matching.values().copied().collect();
            now.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
            out.extend(now.iter().map(|s| to_proto(s)));
            let ids: HashSet<String> = matching.keys().map(|k| (*k).clone()).collect();
            (out, ids)
        });
        self.in_view = now_in_view;
        (out, fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::HealthStatus;

    fn state(id: &str, status: HealthStatus, t: i64) -> AgentState {
        AgentState {
            agent_id: id.into(),
            agent_type: "GAP_ANALYZER".into(),
            status,
            last_seen: t,
            last_heartbeat: Some(t),
            resource_usage: None,
            tasks_completed: 0,
            last_task_id: None,
            last_error: None,
            updated_at: t,
            applied: None,
        }
    }

    fn healthy_only() -> AgentFilter {
        AgentFilter {
            status: Some(HealthStatus::Healthy),
            agent_type: None,
        }
    }

    async fn next(rx: &mut mpsc::Receiver<Result<pb::AgentHealth, Status>>) -> pb::AgentHealth {
        tokio::time::timeout(std::time::Duration::from_secs(1), rx.recv())
            .await
            .expect("a message")
            .expect("open")
            .expect("ok")
    }

    #[tokio::test]
    async fn a_watcher_of_healthy_agents_learns_when_one_leaves_and_when_one_is_retired() {
        let d = AgentDirectory::default();
        d.merge(state("a", HealthStatus::Healthy, 1));
        let (tx, mut rx) = mpsc::channel(16);
        let watch = Watch::new(d.clone(), healthy_only());
        tokio::spawn(async move { watch.run(&tx).await });
        assert_eq!(next(&mut rx).await.agent_id, "a");
        d.merge(state("b", HealthStatus::Degraded, 2)); // never in view: nothing
        d.merge(state("a", HealthStatus::Degraded, 3));
        let left = next(&mut rx).await;
        assert_eq!(
            (left.agent_id.as_str(), left.status),
            ("a", pb::AgentStatus::Degraded as i32)
        );
        d.merge(state("a", HealthStatus::Unhealthy, 4)); // already out of view: nothing
        d.merge(state("a", HealthStatus::Healthy, 5));
        assert_eq!(next(&mut rx).await.status, pb::AgentStatus::Healthy as i32);
        d.remove("a");
        let gone = next(&mut rx).await;
        assert!(gone.retired && gone.agent_id == "a", "{gone:?}");
        assert!(rx.try_recv().is_err(), "nothing about b");
    }

    #[tokio::test]
    async fn a_lagging_watcher_catches_up_without_older_changes() {
        let d = AgentDirectory::new(2);
        d.merge(state("a", HealthStatus::Healthy, 1));
        d.merge(state("c", HealthStatus::Healthy, 1));
        let mut w = Watch::new(d.clone(), healthy_only());
        let (_, mut changes) = d.watch(&w.filter);
        w.in_view.extend(["a".to_string(), "c".to_string()]);
        // Five changes through a feed of two: the watcher lags.
        for t in 2..6 {
            d.merge(state("a", HealthStatus::Healthy, t));
        }
        d.merge(state("c", HealthStatus::Degraded, 6));
        assert!(matches!(
            changes.recv().await,
            Err(broadcast::error::RecvError::Lagged(_))
        ));
        let (out, mut fresh) = w.catch_up();
        let got: Vec<(&str, i64, i32)> = out
            .iter()
            .map(|h| (h.agent_id.as_str(), h.last_seen, h.status))
            .collect();
        assert_eq!(
            got,
            [
                ("c", 6, pb::AgentStatus::Degraded as i32),
                ("a", 5, pb::AgentStatus::Healthy as i32)
            ]
        );
        assert!(
            fresh.try_recv().is_err(),
            "the fresh feed starts after the snapshot"
        );
    }
}
