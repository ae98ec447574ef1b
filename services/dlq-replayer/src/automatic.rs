//! The service's automatic retry: which letters it replays by itself, when,
//! and when it gives up and parks them — a state machine over the ledger of
//! the dead-letter partitions this instance owns, free of Kafka so it is
//! tested alone ([`crate::service`] runs it on the consume loop).
//!
//! # Without blocking the others, exactly once
//!
//! Offsets of a partition are committed in order, so a letter that must wait
//! for its delay cannot be held in the loop: it would hold every letter
//! behind it. Nor can the loop's committed offset say what was done: letters
//! after a waiting one are done before it. So the loop only *reads*: every
//! letter goes into the ledger with its plan (hold, replay at a time, park
//! now) and the offset moves on. A timer ([`AutomaticRetry::due`]) picks the
//! letters whose time has come, whatever their offsets, and each one's
//! replay (or parking) commits in one transaction with the tick's resolution
//! markers and audit event naming it. What is done is therefore in the log itself: after a
//! crash or a rebalance, the new owner folds the partition up to its last
//! stable offset before acting ([`crate::service`]), sees every marker that
//! committed, and replays only letters that have none. Letters acted on in
//! the open transaction are in flight: not picked again until it commits
//! (then resolved) or aborts (then waiting again).
//!
//! Uber's alternative — one retry topic per delay tier — keeps a delay queue
//! in order, but needs a topic per delay, while this policy's delays are
//! configured per error type and grow with each replay.

use std::collections::{BTreeMap, HashSet};

use dora_kafka::RetryPolicy;

use crate::letter::{Action, Letter, Position, Resolution};
use crate::selection::{replayable, Refusal};
use crate::settings::DlqSettings;

/// What the service will do with a letter.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Nothing: a permanent error type (or one it may not replay); an operator decides.
    Hold(Hold),
    /// Replay it at this time, epoch ms.
    ReplayAt(i64),
    /// Park it: it reached the maximum of replays.
    Park(String),
}

/// Why the service holds a letter for an operator.
#[derive(Debug, Clone, PartialEq)]
pub enum Hold {
    /// Its error type is permanent (not in `dlq.transient`).
    Permanent,
    /// Transient, but it may not be replayed.
    Refused(Refusal),
}

/// The plan of `letter` under `settings` (`delay` gives the wait before
/// replay number `n`; the platform's retry policy with its jitter).
pub fn plan_of(
    letter: &Letter,
    settings: &DlqSettings,
    delay: impl Fn(&RetryPolicy, u32) -> u64,
) -> Plan {
    let Some(policy) = settings.transient_policy(letter.error_type()) else {
        return Plan::Hold(Hold::Permanent);
    };
    if let Err(why) = replayable(letter, &settings.replay_topics) {
        return Plan::Hold(Hold::Refused(why));
    }
    let replays = letter.replays();
    if replays >= policy.max_retries {
        return Plan::Park(format!(
            "{} failed again after {replays} automatic replays (dlq.transient maximum {})",
            letter.error_type(),
            policy.max_retries
        ));
    }
    let wait = delay(policy, replays);
    Plan::ReplayAt(letter.dead_lettered_at().saturating_add(wait as i64))
}

/// A letter the service keeps: when it was dead-lettered, its plan, and the
/// letter itself when the service will act on it.
#[derive(Debug, Clone)]
pub struct Kept {
    /// When it was dead-lettered, epoch ms.
    pub dead_lettered_at: i64,
    /// What will happen to it.
    pub plan: Plan,
    /// The letter, for a replay or parking (not kept for held letters).
    pub letter: Option<Box<Letter>>,
}

impl Kept {
    /// Keeps `letter` under `plan` (held letters without their bytes).
    pub fn new(letter: Letter, plan: Plan) -> Self {
        Self {
            dead_lettered_at: letter.dead_lettered_at(),
            letter: (!matches!(plan, Plan::Hold(_))).then(|| Box::new(letter)),
            plan,
        }
    }

    fn due_at(&self) -> Option<i64> {
        match self.plan {
            Plan::Hold(_) => None,
            Plan::ReplayAt(at) => Some(at),
            Plan::Park(_) => Some(i64::MIN),
        }
    }
}

/// One partition's letters and counts.
pub type PartitionLedger = crate::ledger::PartitionState<Kept>;

/// A letter whose time has come, with what to do.
#[derive(Debug, Clone)]
pub struct Due {
    /// The letter.
    pub letter: Letter,
    /// Replay or park.
    pub action: Action,
    /// Why (for the parked record and the audit event).
    pub reason: String,
}

/// Per-topic figures for the gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicFigures {
    /// Letters waiting.
    pub waiting: u64,
    /// Age of the oldest waiting letter, ms (0 when none waits).
    pub oldest_age_ms: i64,
    /// Letters replayed.
    pub replayed: u64,
    /// Letters parked.
    pub parked: u64,
}

/// The automatic retry over the partitions this instance owns.
#[derive(Debug, Default)]
pub struct AutomaticRetry {
    partitions: BTreeMap<(String, i32), PartitionLedger>,
    in_flight: Vec<(Position, Action)>,
}

impl AutomaticRetry {
    /// Takes over a partition, folded up to its last stable offset.
    pub fn own(&mut self, topic: &str, partition: i32, ledger: PartitionLedger) {
        self.partitions
            .insert((topic.to_string(), partition), ledger);
    }

    /// Gives a partition up (revoked): nothing of it is acted on any more.
    pub fn release(&mut self, topic: &str, partition: i32) {
        self.partitions.remove(&(topic.to_string(), partition));
        self.in_flight
            .retain(|(p, _)| !(p.topic == topic && p.partition == partition));
    }

    /// Whether this instance owns the partition.
    pub fn owns(&self, topic: &str, partition: i32) -> bool {
        self.partitions
            .contains_key(&(topic.to_string(), partition))
    }

    /// A letter read from an owned partition.
    pub fn letter(&mut self, letter: Letter, plan: Plan) {
        let key = (letter.position.topic.clone(), letter.position.partition);
        if let Some(state) = self.partitions.get_mut(&key) {
            state.letter(letter.position.offset, Kept::new(letter, plan));
        }
    }

    /// A resolution marker read from an owned partition.
    pub fn resolution(&mut self, r: &Resolution) {
        if let Some(state) = self
            .partitions
            .get_mut(&(r.letter.topic.clone(), r.letter.partition))
        {
            state.resolve(r);
        }
    }

    /// Letters due at `now_ms` that are not in flight, at most `limit`, in
    /// due order; they are in flight from now until [`Self::committed`] or
    /// [`Self::aborted`].
    pub fn due(&mut self, now_ms: i64, limit: usize) -> Vec<Due> {
        let in_flight: HashSet<&Position> = self.in_flight.iter().map(|(p, _)| p).collect();
        let mut due: Vec<(i64, &Kept, Position)> = Vec::new();
        for ((topic, partition), state) in &self.partitions {
            for (offset, kept) in &state.waiting {
                let Some(at) = kept.due_at().filter(|at| *at <= now_ms) else {
                    continue;
                };
                let position = Position {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: *offset,
                };
                if !in_flight.contains(&position) {
                    due.push((at, kept, position));
                }
            }
        }
        due.sort_by_key(|(at, _, p)| (*at, p.clone()));
        let picked: Vec<Due> = due
            .into_iter()
            .take(limit)
            .filter_map(|(_, kept, _)| {
                let letter = kept.letter.as_deref()?.clone();
                let (action, reason) = match &kept.plan {
                    Plan::Park(why) => (Action::Parked, why.clone()),
                    _ => (
                        Action::Replayed,
                        format!(
                            "automatic replay {} of a transient {}",
                            letter.replays() + 1,
                            letter.error_type()
                        ),
                    ),
                };
                Some(Due {
                    letter,
                    action,
                    reason,
                })
            })
            .collect();
        self.in_flight
            .extend(picked.iter().map(|d| (d.letter.position.clone(), d.action)));
        picked
    }

    /// The open transaction committed: the letters in flight are resolved
    /// (and returned).
    pub fn committed(&mut self, by: &str, at_ms: i64) -> Vec<(Position, Action)> {
        let done = std::mem::take(&mut self.in_flight);
        for (position, action) in &done {
            let r = Resolution {
                letter: position.clone(),
                action: *action,
                by: by.to_string(),
                at: Some(at_ms),
            };
            self.resolution(&r);
        }
        done
    }

    /// The open transaction aborted: the letters in flight wait again.
    pub fn aborted(&mut self) {
        self.in_flight.clear();
    }

    /// Figures per topic owned.
    pub fn figures(&self, now_ms: i64) -> BTreeMap<String, TopicFigures> {
        let mut out: BTreeMap<String, TopicFigures> = BTreeMap::new();
        for ((topic, _), state) in &self.partitions {
            let f = out.entry(topic.clone()).or_default();
            f.waiting += state.waiting.len() as u64;
            f.replayed += state.replayed;
            f.parked += state.parked;
            if let Some(oldest) = state.waiting.values().map(|k| k.dead_lettered_at).min() {
                f.oldest_age_ms = f.oldest_age_ms.max(now_ms.saturating_sub(oldest).max(0));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::letter::fixtures::{dead_letter, letter};
    use crate::letter::REPLAY_COUNT_HEADER;
    use crate::settings::TransientError;
    use dora_schema::DeadLetterHeader;

    fn settings() -> DlqSettings {
        DlqSettings {
            replay_topics: vec!["agent-events".into()],
            transient: vec![TransientError {
                error_type: "RegistryUnavailable".into(),
                retry: RetryPolicy {
                    base_delay_ms: 1000,
                    max_delay_ms: 8000,
                    max_retries: 3,
                },
            }],
            ..Default::default()
        }
    }

    fn no_jitter(p: &RetryPolicy, n: u32) -> u64 {
        p.delay_without_jitter(n).as_millis() as u64
    }

    fn replayed(times: u32) -> Letter {
        let mut d = dead_letter();
        if times > 0 {
            d.original_headers.push(DeadLetterHeader {
                key: REPLAY_COUNT_HEADER.into(),
                value: Some(times.to_string().into_bytes()),
            });
        }
        letter(i64::from(times), d)
    }

    #[test]
    fn transient_letters_wait_their_backoff_then_park_at_the_maximum() {
        let s = settings();
        // dead-lettered at 2000; delays 1 s, 2 s, 4 s; the 4th failure is parked.
        assert_eq!(plan_of(&replayed(0), &s, no_jitter), Plan::ReplayAt(3000));
        assert_eq!(plan_of(&replayed(1), &s, no_jitter), Plan::ReplayAt(4000));
        assert_eq!(plan_of(&replayed(2), &s, no_jitter), Plan::ReplayAt(6000));
        assert!(
            matches!(plan_of(&replayed(3), &s, no_jitter), Plan::Park(why) if why.contains("3 automatic replays"))
        );
    }

    #[test]
    fn permanent_and_unreplayable_letters_are_held() {
        let s = settings();
        let mut d = dead_letter();
        d.error_type = "InvalidJson".into();
        assert_eq!(
            plan_of(&letter(0, d), &s, no_jitter),
            Plan::Hold(Hold::Permanent)
        );
        let mut d = dead_letter();
        d.original_topic = "elsewhere".into();
        assert!(matches!(
            plan_of(&letter(0, d), &s, no_jitter),
            Plan::Hold(Hold::Refused(_))
        ));
    }

    #[test]
    fn due_letters_are_picked_once_until_their_transaction_ends() {
        let s = settings();
        let mut a = AutomaticRetry::default();
        a.own("agent-events-dlq", 0, PartitionLedger::default());
        for times in 0..4 {
            let l = replayed(times);
            let plan = plan_of(&l, &s, no_jitter);
            a.letter(l, plan);
        }
        let mut held = dead_letter();
        held.error_type = "InvalidJson".into();
        a.letter(letter(9, held), Plan::Hold(Hold::Permanent));

        // At 3500: the park (due at once) and the first replay; not the later ones.
        let due = a.due(3500, 10);
        let picked: Vec<(i64, Action)> = due
            .iter()
            .map(|d| (d.letter.position.offset, d.action))
            .collect();
        assert_eq!(picked, [(3, Action::Parked), (0, Action::Replayed)]);
        assert!(a.due(3500, 10).is_empty(), "in flight: not picked twice");
        a.aborted();
        assert_eq!(a.due(3500, 10).len(), 2, "aborted: picked again");
        assert_eq!(a.committed("dlq-replayer", 3600).len(), 2);
        assert!(a.due(3500, 10).is_empty(), "committed: resolved");
        let f = a.figures(10_000)["agent-events-dlq"];
        assert_eq!((f.waiting, f.replayed, f.parked), (3, 1, 1));
        assert_eq!(f.oldest_age_ms, 8000);

        // Later, the rest in due order; the permanent letter never.
        let later: Vec<i64> = a
            .due(1_000_000, 10)
            .iter()
            .map(|d| d.letter.position.offset)
            .collect();
        assert_eq!(later, [1, 2]);
        // Our own markers read back later change nothing.
        let _ = a.committed("dlq-replayer", 7000);
        a.resolution(&Resolution {
            letter: Position {
                topic: "agent-events-dlq".into(),
                partition: 0,
                offset: 1,
            },
            action: Action::Replayed,
            by: "dlq-replayer".into(),
            at: None,
        });
        let f = a.figures(10_000)["agent-events-dlq"];
        assert_eq!((f.waiting, f.replayed, f.parked), (1, 3, 1));
    }

    #[test]
    fn a_released_partition_is_never_acted_on() {
        let s = settings();
        let mut a = AutomaticRetry::default();
        a.own("agent-events-dlq", 0, PartitionLedger::default());
        let l = replayed(3);
        let plan = plan_of(&l, &s, no_jitter);
        a.letter(l, plan);
        a.release("agent-events-dlq", 0);
        assert!(a.due(i64::MAX, 10).is_empty());
        assert!(!a.owns("agent-events-dlq", 0));
        // A letter of a partition not owned is ignored.
        a.letter(replayed(3), Plan::Park("x".into()));
        assert!(a.due(i64::MAX, 10).is_empty());
    }
}
