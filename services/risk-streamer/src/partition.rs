//! The windows of every organisation of one input partition, driven by the
//! partition's event time: which records are late, which windows are due for
//! evaluation, the alert transitions that follows, the quiet-organisation
//! clear, and the undo log that rolls state back when a transaction aborts.
//!
//! Event time: the partition's *watermark* is its newest record timestamp
//! minus the allowed lateness; every second up to it is *closed* (no record
//! for it is accepted any more: a later one is counted as late). Windows are
//! evaluated only at closed seconds, so whatever order records arrive in
//! within the lateness, every evaluation sees the same scores.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use crate::alert::{decide, AlertState, Edge, Rules, Transition};
use crate::window::{second_of, OrgWindow, Score};

/// What the service needs from one risk assessment.
#[derive(Clone, Copy, Debug)]
pub struct Observation<'a> {
    /// The assessed organisation.
    pub organization_id: &'a str,
    /// Event time: the record's timestamp, epoch ms.
    pub timestamp_ms: i64,
    /// The riskScore.
    pub score: Score,
    /// The report it came from.
    pub report_id: &'a str,
}

/// Whether a record produces alerts or only rebuilds state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Normal processing: transitions are returned.
    Live,
    /// Rebuilding after a restart or rebalance: windows and cursors move,
    /// the alert state stays as restored.
    Replay,
}

/// What became of one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Added to its organisation's window.
    Accepted,
    /// Its second is already closed: not added.
    Late {
        /// The last closed second, as epoch ms of its end.
        closed_until_ms: i64,
    },
}

/// What the alerts already committed say about an organisation (see
/// `restore.rs`): its alert state as of its last alert's second (a quiet
/// organisation's CLEARED may be ahead of the watermark), and the last second
/// its window was declared empty, up to which none of its records may count
/// again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hint {
    /// The state of its last committed alert.
    pub state: AlertState,
    /// The latest second of a committed CLEARED with an empty window.
    pub emptied_at: Option<i64>,
    /// The second of its last committed alert: evaluations up to it were
    /// decided already.
    pub decided_through: Option<i64>,
}

#[derive(Clone, Debug, PartialEq)]
struct Org {
    window: OrgWindow,
    alert: AlertState,
    /// Evaluations up to this second were decided before a rebuild.
    decided_through: i64,
    /// Wall clock of the last record (live or replayed), epoch ms.
    last_arrival_ms: i64,
    /// The second its entry in the due queue is for.
    scheduled: Option<i64>,
}

/// Changes since the last commit, to roll back on abort.
#[derive(Debug, Default)]
struct Undo {
    newest_ms: Option<Option<i64>>,
    orgs: HashMap<Arc<str>, Option<Org>>,
}

/// The windows of one input partition.
#[derive(Debug)]
pub struct PartitionWindows {
    rules: Rules,
    orgs: HashMap<Arc<str>, Org>,
    newest_ms: Option<i64>,
    /// (second, organisation) evaluations waiting for their second to close;
    /// stale entries (the organisation rescheduled) are skipped.
    due: BinaryHeap<Reverse<(i64, Arc<str>)>>,
    undo: Undo,
}

impl PartitionWindows {
    /// No organisation yet.
    pub fn new(rules: Rules) -> Self {
        Self {
            rules,
            orgs: HashMap::new(),
            newest_ms: None,
            due: BinaryHeap::new(),
            undo: Undo::default(),
        }
    }

    /// The last closed second (`i64::MIN` before the first record).
    pub fn closed(&self) -> i64 {
        self.newest_ms
            .map_or(i64::MIN, |t| second_of(t - self.rules.lateness_ms) - 1)
    }

    /// Organisations with state kept.
    pub fn organizations(&self) -> usize {
        self.orgs.len()
    }

    /// Approximate heap bytes of the windows.
    pub fn heap_bytes(&self) -> usize {
        self.orgs
            .iter()
            .map(|(k, o)| k.len() + std::mem::size_of::<Org>() + o.window.heap_bytes())
            .sum::<usize>()
            + self.due.capacity() * std::mem::size_of::<(i64, Arc<str>)>()
    }

    /// Takes one record: late, or added to its organisation's window
    /// (created from `hint` when new). Call [`evaluate`](Self::evaluate) after.
    pub fn offer(
        &mut self,
        obs: &Observation<'_>,
        now_ms: i64,
        hint: impl FnOnce(&str) -> Option<Hint>,
    ) -> Admission {
        let second = second_of(obs.timestamp_ms);
        let closed = self.closed();
        let (cursor, fresh) = match self.orgs.get(obs.organization_id) {
            Some(org) => (org.window.cursor(), None),
            None => {
                let hint = hint(obs.organization_id).unwrap_or_default();
                (closed.max(hint.emptied_at.unwrap_or(i64::MIN)), Some(hint))
            }
        };
        if second <= closed || second <= cursor {
            return Admission::Late {
                closed_until_ms: (closed.max(cursor) + 1) * 1000,
            };
        }
        self.save_newest();
        let key = self.touch(obs.organization_id);
        let hint = fresh.unwrap_or_default();
        let org = self.orgs.entry(key.clone()).or_insert_with(|| Org {
            window: OrgWindow::new(cursor),
            alert: hint.state,
            decided_through: hint.decided_through.unwrap_or(i64::MIN),
            last_arrival_ms: now_ms,
            scheduled: None,
        });
        org.window.add(second, obs.score, obs.report_id);
        org.last_arrival_ms = now_ms;
        self.reschedule(&key, false);
        self.newest_ms = Some(
            self.newest_ms
                .map_or(obs.timestamp_ms, |n| n.max(obs.timestamp_ms)),
        );
        Admission::Accepted
    }

    /// Evaluates every window due at a closed second, in (second,
    /// organisation) order; in [`Mode::Live`] returns the transitions.
    pub fn evaluate(&mut self, mode: Mode, now_ms: i64) -> Vec<Transition> {
        let closed = self.closed();
        let mut out = Vec::new();
        while let Some(Reverse((second, _))) = self.due.peek() {
            if *second > closed {
                break;
            }
            let Some(Reverse((second, key))) = self.due.pop() else {
                break;
            };
            if self
                .orgs
                .get(&key)
                .is_none_or(|o| o.scheduled != Some(second))
            {
                continue;
            }
            self.touch(&key);
            let rules = self.rules;
            let org = self.orgs.get_mut(&key).expect("checked above");
            org.window.advance_to(second, rules.window_secs);
            if mode == Mode::Live {
                if let Some(t) = transition(&key, org, &rules, now_ms) {
                    out.push(t);
                }
            }
            if org.window.is_empty() && org.alert == AlertState::Clear {
                self.orgs.remove(&key);
            } else {
                self.reschedule(&key, true);
            }
        }
        out
    }

    /// Clears every raised organisation that received no assessment for
    /// window + lateness of wall clock, without waiting for the partition's
    /// watermark (which stands still when the whole partition is quiet): its
    /// window is evaluated ahead of the watermark, change by change exactly
    /// as the watermark would, until it clears (at the latest when its newest
    /// score has aged out and the window is empty). Its records up to that
    /// second are late from then on. Then forgets organisations with nothing
    /// left to evaluate.
    pub fn clear_quiet(&mut self, now_ms: i64) -> Vec<Transition> {
        let quiet_after = self.rules.quiet_after_ms();
        let mut quiet: Vec<Arc<str>> = self
            .orgs
            .iter()
            .filter(|(_, o)| {
                matches!(o.alert, AlertState::Raised { .. })
                    && now_ms - o.last_arrival_ms >= quiet_after
            })
            .map(|(k, _)| k.clone())
            .collect();
        quiet.sort();
        let mut out = Vec::with_capacity(quiet.len());
        for key in quiet {
            self.touch(&key);
            let rules = self.rules;
            let org = self.orgs.get_mut(&key).expect("listed above");
            while matches!(org.alert, AlertState::Raised { .. }) {
                match org.window.next_change(rules.window_secs) {
                    Some(second) => org.window.advance_to(second, rules.window_secs),
                    // Raised with no score kept (restored so): empty from the next second.
                    None => org.window.clear_to(org.window.cursor() + 1),
                }
                out.extend(transition(&key, org, &rules, now_ms));
            }
            self.reschedule(&key, true);
        }
        self.forget_idle();
        out
    }

    /// Forgets clear organisations with no score kept and nothing ahead of
    /// the watermark (a new record would recreate them identically).
    fn forget_idle(&mut self) {
        let closed = self.closed();
        let idle: Vec<Arc<str>> = self
            .orgs
            .iter()
            .filter(|(_, o)| {
                o.window.is_empty() && o.alert == AlertState::Clear && o.window.cursor() <= closed
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in idle {
            self.touch(&key);
            self.orgs.remove(&key);
        }
    }

    /// The state changes since the last commit are final.
    pub fn commit(&mut self) {
        self.undo = Undo::default();
    }

    /// Restores the state of the last commit.
    pub fn roll_back(&mut self) {
        let undo = std::mem::take(&mut self.undo);
        if let Some(newest) = undo.newest_ms {
            self.newest_ms = newest;
        }
        for (key, saved) in undo.orgs {
            match saved {
                Some(org) => {
                    let scheduled = org.scheduled;
                    self.orgs.insert(key.clone(), org);
                    if let Some(second) = scheduled {
                        self.due.push(Reverse((second, key)));
                    }
                }
                None => {
                    self.orgs.remove(&key);
                }
            }
        }
    }

    fn save_newest(&mut self) {
        if self.undo.newest_ms.is_none() {
            self.undo.newest_ms = Some(self.newest_ms);
        }
    }

    /// Records the organisation's state before its first change since the
    /// last commit; returns its shared key.
    fn touch(&mut self, organization_id: &str) -> Arc<str> {
        let key = self
            .orgs
            .get_key_value(organization_id)
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| Arc::from(organization_id));
        if !self.undo.orgs.contains_key(organization_id) {
            let saved = self.orgs.get(organization_id).cloned();
            self.undo.orgs.insert(key.clone(), saved);
        }
        key
    }

    /// Queues the organisation's next change (again, after an evaluation
    /// consumed its entry).
    fn reschedule(&mut self, key: &Arc<str>, consumed: bool) {
        let window_secs = self.rules.window_secs;
        let Some(org) = self.orgs.get_mut(key) else {
            return;
        };
        let next = org.window.next_change(window_secs);
        if next != org.scheduled || consumed {
            org.scheduled = next;
            if let Some(second) = next {
                self.due.push(Reverse((second, key.clone())));
            }
        }
    }
}

/// Applies the hysteresis to the organisation's window at its cursor (unless
/// that evaluation was decided before a rebuild).
fn transition(key: &Arc<str>, org: &mut Org, rules: &Rules, now_ms: i64) -> Option<Transition> {
    if org.window.cursor() <= org.decided_through {
        return None;
    }
    let totals = org.window.totals();
    let edge = decide(org.alert, totals, rules)?;
    let detected_at = match (edge, org.alert) {
        (Edge::Raised, _) => Some(now_ms),
        (Edge::Cleared, AlertState::Raised { detected_at }) => detected_at,
        (Edge::Cleared, AlertState::Clear) => None,
    };
    org.alert = match edge {
        Edge::Raised => AlertState::Raised { detected_at },
        Edge::Cleared => AlertState::Clear,
    };
    Some(Transition {
        organization_id: key.clone(),
        edge,
        second: org.window.cursor(),
        window_secs: rules.window_secs,
        totals,
        peak: org.window.peak(),
        top_reports: org.window.top_reports(rules.top_reports),
        detected_at,
    })
}

#[cfg(test)]
mod tests;
