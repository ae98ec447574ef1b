//! The windows of every organisation of one input partition, driven by the
//! partition's event time: which records are late, which windows are due for
//! evaluation, the alert transitions that follows, the quiet-organisation
//! clear, and (`journal.rs`) the undo journal that rolls state back when a
//! transaction aborts.
//!
//! Event time: the partition's *watermark* is its newest record timestamp
//! minus the allowed lateness; every second up to it is *closed* (no record
//! for it is accepted any more: a later one is counted as late). Windows are
//! evaluated only at closed seconds, so whatever order records arrive in
//! within the lateness, every evaluation sees the same scores.

mod journal;

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use crate::alert::{decide, AlertState, Edge, Rules, Transition};
use crate::window::{second_of, OrgWindow, Score, WindowScalars};
use journal::Journal;

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

#[derive(Debug)]
struct Org {
    key: Arc<str>,
    /// Unique per organisation state in this partition (a forgotten and
    /// recreated organisation gets a new one): due entries name it.
    serial: u64,
    window: OrgWindow,
    alert: AlertState,
    /// Evaluations up to this second were decided before a rebuild.
    decided_through: i64,
    /// Wall clock of the last record (live or replayed), epoch ms.
    last_arrival_ms: i64,
    /// The second its live entry in the due queue is for.
    scheduled: Option<i64>,
    /// The journal generation that last saved its scalars.
    touched: u64,
}

/// An organisation's state apart from its window's buckets.
#[derive(Clone, Copy, Debug)]
struct OrgScalars {
    window: WindowScalars,
    alert: AlertState,
    decided_through: i64,
    last_arrival_ms: i64,
    scheduled: Option<i64>,
}

impl Org {
    fn scalars(&self) -> OrgScalars {
        OrgScalars {
            window: self.window.scalars(),
            alert: self.alert,
            decided_through: self.decided_through,
            last_arrival_ms: self.last_arrival_ms,
            scheduled: self.scheduled,
        }
    }

    fn set_scalars(&mut self, s: OrgScalars) {
        self.window.set_scalars(s.window);
        self.alert = s.alert;
        self.decided_through = s.decided_through;
        self.last_arrival_ms = s.last_arrival_ms;
        self.scheduled = s.scheduled;
    }
}

/// An evaluation waiting for its second to close: earliest second first,
/// then the oldest organisation state (stale entries are skipped).
#[derive(Debug)]
struct Due {
    second: i64,
    serial: u64,
    key: Arc<str>,
}

impl Due {
    fn new(second: i64, org: &Org) -> Self {
        Self {
            second,
            serial: org.serial,
            key: org.key.clone(),
        }
    }
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.second, self.serial) == (other.second, other.serial)
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    /// Reversed: the max-heap pops the earliest.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.second, other.serial).cmp(&(self.second, self.serial))
    }
}

/// The windows of one input partition.
#[derive(Debug)]
pub struct PartitionWindows {
    rules: Rules,
    orgs: HashMap<Arc<str>, Org>,
    newest_ms: Option<i64>,
    due: BinaryHeap<Due>,
    journal: Journal,
    serials: u64,
}

impl PartitionWindows {
    /// No organisation yet.
    pub fn new(rules: Rules) -> Self {
        Self {
            rules,
            orgs: HashMap::new(),
            newest_ms: None,
            due: BinaryHeap::new(),
            journal: Journal::new(),
            serials: 0,
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
            .map(|(k, o)| k.len() + 16 + std::mem::size_of::<Org>() + o.window.heap_bytes())
            .sum::<usize>()
            + self.due.capacity() * std::mem::size_of::<Due>()
    }

    /// Takes one record: late, or added to its organisation's window
    /// (created from `hint` when new). Call [`evaluate`](Self::evaluate)
    /// after. In [`Mode::Replay`] nothing is journaled (replayed state is
    /// final at once).
    pub fn offer(
        &mut self,
        obs: &Observation<'_>,
        mode: Mode,
        now_ms: i64,
        hint: impl FnOnce(&str) -> Option<Hint>,
    ) -> Admission {
        self.journal.recording = mode == Mode::Live;
        let second = second_of(obs.timestamp_ms);
        let closed = self.closed();
        let late = |cursor: i64| Admission::Late {
            closed_until_ms: (closed.max(cursor) + 1) * 1000,
        };
        let window_secs = self.rules.window_secs;
        if let Some(org) = self.orgs.get_mut(obs.organization_id) {
            if second <= closed || second <= org.window.cursor() {
                return late(org.window.cursor());
            }
            self.journal.newest(self.newest_ms);
            self.journal.touch(org);
            let before = org.window.add(second, obs.score, obs.report_id);
            self.journal.added(&org.key, second, before);
            org.last_arrival_ms = now_ms;
            reschedule(org, &mut self.due, window_secs, false);
        } else {
            let hint = hint(obs.organization_id).unwrap_or_default();
            let cursor = closed.max(hint.emptied_at.unwrap_or(i64::MIN));
            if second <= cursor {
                return late(cursor);
            }
            self.journal.newest(self.newest_ms);
            self.serials += 1;
            let mut org = Org {
                key: Arc::from(obs.organization_id),
                serial: self.serials,
                window: OrgWindow::new(cursor),
                alert: hint.state,
                decided_through: hint.decided_through.unwrap_or(i64::MIN),
                last_arrival_ms: now_ms,
                scheduled: None,
                touched: 0,
            };
            self.journal.created(&mut org);
            org.window.add(second, obs.score, obs.report_id);
            reschedule(&mut org, &mut self.due, window_secs, false);
            self.orgs.insert(org.key.clone(), org);
        }
        self.newest_ms = Some(self.newest_ms.map_or(obs.timestamp_ms, |n| n.max(obs.timestamp_ms)));
        Admission::Accepted
    }

    /// Evaluates every window due at a closed second; in [`Mode::Live`]
    /// returns the transitions, ordered by (second, organisation).
    pub fn evaluate(&mut self, mode: Mode, now_ms: i64) -> Vec<Transition> {
        self.journal.recording = mode == Mode::Live;
        let closed = self.closed();
        let rules = self.rules;
        let mut out = Vec::new();
        while self.due.peek().is_some_and(|d| d.second <= closed) {
            let Some(due) = self.due.pop() else { break };
            let Some(org) = self.orgs.get_mut(&due.key) else {
                continue;
            };
            if org.serial != due.serial || org.scheduled != Some(due.second) {
                continue;
            }
            self.journal.touch(org);
            let journal = &mut self.journal;
            org.window.advance_to(due.second, rules.window_secs, |b| journal.evicted(&org.key, b));
            if mode == Mode::Live {
                out.extend(transition(org, &rules, now_ms));
            }
            if org.window.is_empty() && org.alert == AlertState::Clear {
                if let Some(org) = self.orgs.remove(&due.key) {
                    self.journal.removed(org);
                }
            } else {
                reschedule(org, &mut self.due, rules.window_secs, true);
            }
        }
        out.sort_by(|a, b| (a.second, &a.organization_id).cmp(&(b.second, &b.organization_id)));
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
        self.journal.recording = true;
        let quiet_after = self.rules.quiet_after_ms();
        let mut quiet: Vec<Arc<str>> = self
            .orgs
            .values()
            .filter(|o| {
                matches!(o.alert, AlertState::Raised { .. })
                    && now_ms - o.last_arrival_ms >= quiet_after
            })
            .map(|o| o.key.clone())
            .collect();
        quiet.sort();
        let rules = self.rules;
        let mut out = Vec::with_capacity(quiet.len());
        for key in quiet {
            let Some(org) = self.orgs.get_mut(&key) else {
                continue;
            };
            self.journal.touch(org);
            while matches!(org.alert, AlertState::Raised { .. }) {
                match org.window.next_change(rules.window_secs) {
                    Some(second) => {
                        let journal = &mut self.journal;
                        org.window.advance_to(second, rules.window_secs, |b| journal.evicted(&key, b));
                    }
                    // Raised with no score kept (restored so): empty from the next second.
                    None => {
                        let emptied = org.window.clear_to(org.window.cursor() + 1);
                        self.journal.cleared(&key, emptied);
                    }
                }
                out.extend(transition(org, &rules, now_ms));
            }
            reschedule(org, &mut self.due, rules.window_secs, true);
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
            .values()
            .filter(|o| {
                o.window.is_empty() && o.alert == AlertState::Clear && o.window.cursor() <= closed
            })
            .map(|o| o.key.clone())
            .collect();
        for key in idle {
            if let Some(org) = self.orgs.remove(&key) {
                self.journal.removed(org);
            }
        }
    }

    /// The state changes since the last commit are final.
    pub fn commit(&mut self) {
        self.journal.commit();
    }

    /// Restores the state of the last commit.
    pub fn roll_back(&mut self) {
        if let Some(newest) = self.journal.roll_back(&mut self.orgs, &mut self.due) {
            self.newest_ms = newest;
        }
    }
}

/// Queues the organisation's next change (again, when an evaluation
/// consumed its entry).
fn reschedule(org: &mut Org, due: &mut BinaryHeap<Due>, window_secs: i64, consumed: bool) {
    let next = org.window.next_change(window_secs);
    if next != org.scheduled || consumed {
        org.scheduled = next;
        if let Some(second) = next {
            due.push(Due::new(second, org));
        }
    }
}

/// Applies the hysteresis to the organisation's window at its cursor (unless
/// that evaluation was decided before a rebuild).
fn transition(org: &mut Org, rules: &Rules, now_ms: i64) -> Option<Transition> {
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
        organization_id: org.key.clone(),
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
