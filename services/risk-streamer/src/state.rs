//! Everything risk-streamer keeps in memory, as pure logic the consume loop
//! drives: the windows of each assigned partition, the alert history read
//! back at assignment, and what the open transaction changed (so an abort
//! rolls it back and a commit makes it final).

use crate::alert::{Edge, Rules, Transition};
use crate::partition::{Admission, Mode, Observation, PartitionWindows};
use crate::restore::AlertHistory;
use std::collections::HashMap;

/// A topic partition.
pub type TopicPartition = (String, i32);

/// What the last committed transaction did (for the metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Committed {
    /// RAISED alerts committed.
    pub raised: u64,
    /// CLEARED alerts committed.
    pub cleared: u64,
    /// Late records left out.
    pub late: u64,
}

/// The state of one risk-streamer instance.
#[derive(Debug)]
pub struct RiskState {
    rules: Rules,
    partitions: HashMap<TopicPartition, PartitionWindows>,
    history: AlertHistory,
    /// What the history said about organisations with transitions in the
    /// open transaction: from their first transition on, their state is this
    /// instance's own (also if they are forgotten and come back within it).
    taken: Vec<(String, crate::partition::Hint)>,
    pending: Committed,
}

impl RiskState {
    /// Nothing assigned yet.
    pub fn new(rules: Rules) -> Self {
        Self {
            rules,
            partitions: HashMap::new(),
            history: AlertHistory::default(),
            taken: Vec::new(),
            pending: Committed::default(),
        }
    }

    /// The rules.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Takes the alert history read at an assignment; it answers for every
    /// organisation until this instance commits a transition of its own.
    pub fn install_history(&mut self, history: AlertHistory) {
        self.history = history;
    }

    /// Newly assigned partitions start empty (their state is rebuilt by replay).
    pub fn assign(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            self.partitions
                .insert(tp.clone(), PartitionWindows::new(self.rules));
        }
    }

    /// Partitions taken away: their state is dropped.
    pub fn revoke(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            self.partitions.remove(tp);
        }
    }

    fn windows(&mut self, tp: &TopicPartition) -> &mut PartitionWindows {
        let rules = self.rules;
        self.partitions
            .entry(tp.clone())
            .or_insert_with(|| PartitionWindows::new(rules))
    }

    /// Rebuilds state from a record processed before the restart or
    /// rebalance: no transition, nothing counted.
    pub fn replay(&mut self, tp: &TopicPartition, obs: &Observation<'_>, now_ms: i64) {
        let history = std::mem::take(&mut self.history);
        let windows = self.windows(tp);
        windows.offer(obs, Mode::Replay, now_ms, |org| history.hint(org));
        windows.evaluate(Mode::Replay, now_ms);
        self.history = history;
    }

    /// Processes a record: whether it was late, and the transitions it caused.
    pub fn process(
        &mut self,
        tp: &TopicPartition,
        obs: &Observation<'_>,
        now_ms: i64,
    ) -> (Admission, Vec<Transition>) {
        let history = std::mem::take(&mut self.history);
        let windows = self.windows(tp);
        let admission = windows.offer(obs, Mode::Live, now_ms, |org| history.hint(org));
        let transitions = windows.evaluate(Mode::Live, now_ms);
        self.history = history;
        if admission != Admission::Accepted {
            self.pending.late += 1;
        }
        self.note(&transitions);
        (admission, transitions)
    }

    /// The wall-clock check: clears quiet organisations of every partition.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Transition> {
        let mut keys: Vec<TopicPartition> = self.partitions.keys().cloned().collect();
        keys.sort();
        let mut out = Vec::new();
        for tp in keys {
            if let Some(w) = self.partitions.get_mut(&tp) {
                out.extend(w.clear_quiet(now_ms));
            }
        }
        self.note(&out);
        out
    }

    fn note(&mut self, transitions: &[Transition]) {
        for t in transitions {
            match t.edge {
                Edge::Raised => self.pending.raised += 1,
                Edge::Cleared => self.pending.cleared += 1,
            }
            if let Some(taken) = self.history.take(&t.organization_id) {
                self.taken.push(taken);
            }
        }
    }

    /// The open transaction committed: its changes are final.
    pub fn committed(&mut self) -> Committed {
        for w in self.partitions.values_mut() {
            w.commit();
        }
        self.taken.clear();
        std::mem::take(&mut self.pending)
    }

    /// The open transaction aborted: back to the state of the last commit.
    pub fn aborted(&mut self) {
        for w in self.partitions.values_mut() {
            w.roll_back();
        }
        for taken in self.taken.drain(..) {
            self.history.put_back(taken);
        }
        self.pending = Committed::default();
    }

    /// Organisations with state kept, over every partition.
    pub fn organizations(&self) -> usize {
        self.partitions.values().map(|w| w.organizations()).sum()
    }

    /// Approximate heap bytes of every window.
    pub fn heap_bytes(&self) -> usize {
        self.partitions.values().map(|w| w.heap_bytes()).sum()
    }
}
