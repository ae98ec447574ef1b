//! The state of dead-letter topics, folded from their records in order: which
//! letters are still waiting and how many were replayed or parked. A letter
//! is resolved by the marker naming it, written in the same transaction as
//! its replay or parking (one marker names all of a transaction's letters of
//! a partition; markers before 2026-11-27 name one letter each, and both are
//! read alike), so folding a topic's committed records gives its exact state.

use std::collections::{BTreeMap, HashMap};

use crate::letter::{Action, Position, Resolution};

/// The state of one partition of a dead-letter topic.
#[derive(Debug)]
pub struct PartitionState<T> {
    /// Letters not resolved yet, by offset.
    pub waiting: BTreeMap<i64, T>,
    /// Resolved letters, by offset.
    pub resolved: HashMap<i64, Resolution>,
    /// Letters replayed (letters named by the markers seen).
    pub replayed: u64,
    /// Letters parked.
    pub parked: u64,
}

impl<T> Default for PartitionState<T> {
    fn default() -> Self {
        Self {
            waiting: BTreeMap::new(),
            resolved: HashMap::new(),
            replayed: 0,
            parked: 0,
        }
    }
}

impl<T> PartitionState<T> {
    /// A letter at `offset`; waiting unless a marker already resolved it.
    pub fn letter(&mut self, offset: i64, letter: T) {
        if !self.resolved.contains_key(&offset) {
            self.waiting.insert(offset, letter);
        }
    }

    /// A resolution marker of this partition: its letter stops waiting.
    /// Returns the letter when it was waiting (`None` for a second marker of
    /// the same letter, or one whose letter is no longer in the log).
    pub fn resolve(&mut self, resolution: &Resolution) -> Option<T> {
        let offset = resolution.letter.offset;
        if self.resolved.contains_key(&offset) {
            return None;
        }
        self.resolved.insert(offset, resolution.clone());
        match resolution.action {
            Action::Replayed => self.replayed += 1,
            Action::Parked => self.parked += 1,
        }
        self.waiting.remove(&offset)
    }
}

/// Every partition's state, for letters kept as `T` (a whole letter for the
/// commands, a summary for the service).
#[derive(Debug)]
pub struct Ledger<T> {
    partitions: BTreeMap<(String, i32), PartitionState<T>>,
}

impl<T> Default for Ledger<T> {
    fn default() -> Self {
        Self {
            partitions: BTreeMap::new(),
        }
    }
}

/// Counts of one dead-letter topic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Letters waiting.
    pub waiting: u64,
    /// Letters replayed.
    pub replayed: u64,
    /// Letters parked.
    pub parked: u64,
}

impl<T> Ledger<T> {
    /// A letter at `position`; waiting unless a marker already resolved it.
    pub fn letter(&mut self, position: &Position, letter: T) {
        self.state_mut(&position.topic, position.partition)
            .letter(position.offset, letter);
    }

    /// A resolution marker: its letter stops waiting. Returns the letter when
    /// it was waiting (`None` for a second marker of the same letter, or one
    /// whose letter is no longer in the log).
    pub fn resolve(&mut self, resolution: &Resolution) -> Option<T> {
        let p = &resolution.letter;
        self.state_mut(&p.topic, p.partition).resolve(resolution)
    }

    /// Whether the letter at `position` is still waiting.
    pub fn is_waiting(&self, position: &Position) -> bool {
        self.partitions
            .get(&(position.topic.clone(), position.partition))
            .is_some_and(|s| s.waiting.contains_key(&position.offset))
    }

    /// The resolution of the letter at `position`, if it was resolved.
    pub fn resolution(&self, position: &Position) -> Option<&Resolution> {
        self.partitions
            .get(&(position.topic.clone(), position.partition))
            .and_then(|s| s.resolved.get(&position.offset))
    }

    /// The state of a partition.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionState<T>> {
        self.partitions.get(&(topic.to_string(), partition))
    }

    /// The state of a partition, created empty on first use.
    pub fn state_mut(&mut self, topic: &str, partition: i32) -> &mut PartitionState<T> {
        self.partitions
            .entry((topic.to_string(), partition))
            .or_default()
    }

    /// Forgets a partition (revoked from this instance).
    pub fn forget(&mut self, topic: &str, partition: i32) -> Option<PartitionState<T>> {
        self.partitions.remove(&(topic.to_string(), partition))
    }

    /// The topics known, sorted.
    pub fn topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self.partitions.keys().map(|(t, _)| t.clone()).collect();
        topics.dedup();
        topics
    }

    /// Waiting letters of `topic`, partition by partition in offset order.
    pub fn waiting<'a>(&'a self, topic: &'a str) -> impl Iterator<Item = (Position, &'a T)> + 'a {
        self.partitions
            .iter()
            .filter(move |((t, _), _)| t == topic)
            .flat_map(|((t, p), s)| {
                s.waiting.iter().map(move |(o, l)| {
                    (
                        Position {
                            topic: t.clone(),
                            partition: *p,
                            offset: *o,
                        },
                        l,
                    )
                })
            })
    }

    /// Counts of `topic` over the partitions known.
    pub fn counts(&self, topic: &str) -> Counts {
        self.partitions
            .iter()
            .filter(|((t, _), _)| t == topic)
            .fold(Counts::default(), |c, (_, s)| Counts {
                waiting: c.waiting + s.waiting.len() as u64,
                replayed: c.replayed + s.replayed,
                parked: c.parked + s.parked,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::letter::{RESOLUTION_HEADER, RESOLVED_BY_HEADER, RESOLVES_HEADER};
    use dora_kafka::consume::{Record, RecordHeader};

    fn pos(partition: i32, offset: i64) -> Position {
        Position {
            topic: "t-dlq".into(),
            partition,
            offset,
        }
    }

    fn marker(letter: Position, action: Action) -> Resolution {
        Resolution {
            letter,
            action,
            by: "op".into(),
            at: None,
        }
    }

    #[test]
    fn a_marker_resolves_its_letter_once() {
        let mut l = Ledger::default();
        l.letter(&pos(0, 0), "a");
        l.letter(&pos(0, 1), "b");
        l.letter(&pos(1, 0), "c");
        assert_eq!(
            l.counts("t-dlq"),
            Counts {
                waiting: 3,
                replayed: 0,
                parked: 0
            }
        );
        assert_eq!(l.resolve(&marker(pos(0, 1), Action::Replayed)), Some("b"));
        assert_eq!(
            l.resolve(&marker(pos(0, 1), Action::Parked)),
            None,
            "second marker"
        );
        assert_eq!(l.resolve(&marker(pos(1, 0), Action::Parked)), Some("c"));
        assert_eq!(
            l.counts("t-dlq"),
            Counts {
                waiting: 1,
                replayed: 1,
                parked: 1
            }
        );
        assert!(l.is_waiting(&pos(0, 0)));
        assert!(!l.is_waiting(&pos(0, 1)));
        assert_eq!(
            l.resolution(&pos(0, 1)).map(|r| r.action),
            Some(Action::Replayed)
        );
        let waiting: Vec<_> = l.waiting("t-dlq").map(|(p, v)| (p.offset, *v)).collect();
        assert_eq!(waiting, [(0, "a")]);
    }

    fn marker_record(partition: i32, offset: i64, letters: &str) -> Record {
        let header = |k: &str, v: &str| RecordHeader {
            key: k.into(),
            value: Some(v.as_bytes().to_vec()),
        };
        Record {
            topic: "t-dlq".into(),
            partition,
            offset,
            key: None,
            payload: Some(Vec::new()),
            headers: vec![
                header(RESOLUTION_HEADER, "replayed"),
                header(RESOLVES_HEADER, letters),
                header(RESOLVED_BY_HEADER, "op"),
            ],
            timestamp: Some(5),
        }
    }

    #[test]
    fn a_multi_letter_marker_resolves_exactly_its_letters_and_an_old_one_its_letter() {
        let mut l = Ledger::default();
        for offset in 0..6 {
            l.letter(&pos(0, offset), offset);
        }
        let multi = Resolution::of_marker(&marker_record(0, 6, "t-dlq/0/1,3,4")).unwrap();
        assert_eq!(multi.len(), 3);
        assert!(multi.iter().all(|r| r.by == "op" && r.at == Some(5)));
        let resolved: Vec<_> = multi.iter().filter_map(|r| l.resolve(r)).collect();
        assert_eq!(resolved, [1, 3, 4]);
        // A marker as written before 2026-11-27: one letter.
        let old = Resolution::of_marker(&marker_record(0, 7, "t-dlq/0/5")).unwrap();
        assert_eq!(old.len(), 1);
        assert_eq!(l.resolve(&old[0]), Some(5));
        let waiting: Vec<_> = l.waiting("t-dlq").map(|(p, _)| p.offset).collect();
        assert_eq!(waiting, [0, 2]);
        assert_eq!(l.counts("t-dlq").replayed, 4);
        for malformed in ["t-dlq/0/1,x", "t-dlq/0/", "t-dlq/1", "/0/1", "t-dlq/a/1"] {
            assert_eq!(Resolution::of_marker(&marker_record(0, 8, malformed)), None);
        }
    }

    #[test]
    fn a_marker_seen_before_its_letter_still_resolves_it() {
        // Markers of another partition may be read before the letter.
        let mut l = Ledger::default();
        assert_eq!(l.resolve(&marker(pos(1, 5), Action::Parked)), None);
        l.letter(&pos(1, 5), "late");
        assert!(!l.is_waiting(&pos(1, 5)));
        assert_eq!(l.counts("t-dlq").parked, 1);
        assert_eq!(l.counts("other"), Counts::default());
    }
}
