//! The undo journal of one partition's windows: every change since the last
//! commit, as the operation that reverses it, so an aborted transaction
//! rolls the windows back without copying any window up front. An
//! organisation's small state is saved once per transaction (on its first
//! change); bucket changes and removals move the old values into the journal.

use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;

use super::{Due, Org, OrgScalars};
use crate::window::Bucket;

/// One reversible change.
#[derive(Debug)]
enum Undo {
    /// The organisation was created: remove it.
    Created(Arc<str>),
    /// The organisation was forgotten: put it back.
    Removed(Box<Org>),
    /// Its scalars before its first change in this transaction.
    Scalars(Arc<str>, OrgScalars),
    /// A score was added at a second; the bucket before (`None`: new).
    Added(Arc<str>, i64, Option<Bucket>),
    /// A bucket left the window.
    Evicted(Arc<str>, Bucket),
    /// The window was emptied; its buckets.
    Cleared(Arc<str>, VecDeque<Bucket>),
}

/// The changes since the last commit.
#[derive(Debug, Default)]
pub(super) struct Journal {
    ops: Vec<Undo>,
    newest_ms: Option<Option<i64>>,
    /// Transactions committed or rolled back so far: an organisation whose
    /// `touched` is older has not been saved in this one yet.
    generation: u64,
    /// Off while replaying (state the loop never rolls back).
    pub recording: bool,
}

impl Journal {
    /// An empty journal, recording.
    pub fn new() -> Self {
        Self {
            generation: 1,
            recording: true,
            ..Self::default()
        }
    }

    /// Saves the partition's newest timestamp before its first change.
    pub fn newest(&mut self, newest_ms: Option<i64>) {
        if self.recording && self.newest_ms.is_none() {
            self.newest_ms = Some(newest_ms);
        }
    }

    /// Saves `org`'s scalars before its first change in this transaction.
    pub fn touch(&mut self, org: &mut Org) {
        if self.recording && org.touched != self.generation {
            org.touched = self.generation;
            self.ops.push(Undo::Scalars(org.key.clone(), org.scalars()));
        }
    }

    /// `key` was created (in this transaction).
    pub fn created(&mut self, org: &mut Org) {
        if self.recording {
            org.touched = self.generation;
            self.ops.push(Undo::Created(org.key.clone()));
        }
    }

    /// `org` was forgotten.
    pub fn removed(&mut self, org: Org) {
        if self.recording {
            self.ops.push(Undo::Removed(Box::new(org)));
        }
    }

    /// A score was added to `key`'s bucket at `second`, which was `before`.
    pub fn added(&mut self, key: &Arc<str>, second: i64, before: Option<Bucket>) {
        if self.recording {
            self.ops.push(Undo::Added(key.clone(), second, before));
        }
    }

    /// `bucket` left `key`'s window.
    pub fn evicted(&mut self, key: &Arc<str>, bucket: Bucket) {
        if self.recording {
            self.ops.push(Undo::Evicted(key.clone(), bucket));
        }
    }

    /// `key`'s window was emptied of `buckets`.
    pub fn cleared(&mut self, key: &Arc<str>, buckets: VecDeque<Bucket>) {
        if self.recording {
            self.ops.push(Undo::Cleared(key.clone(), buckets));
        }
    }

    /// The changes are final.
    pub fn commit(&mut self) {
        self.ops.clear();
        self.newest_ms = None;
        self.generation += 1;
    }

    /// Reverses every change since the last commit, newest first; returns
    /// the partition's newest timestamp as it was, if it changed.
    pub fn roll_back(
        &mut self,
        orgs: &mut HashMap<Arc<str>, Org>,
        due: &mut BinaryHeap<Due>,
    ) -> Option<Option<i64>> {
        while let Some(op) = self.ops.pop() {
            match op {
                Undo::Created(key) => {
                    orgs.remove(&key);
                }
                Undo::Removed(org) => {
                    orgs.insert(org.key.clone(), *org);
                }
                Undo::Scalars(key, s) => {
                    if let Some(org) = orgs.get_mut(&key) {
                        org.set_scalars(s);
                        if let Some(second) = s.scheduled {
                            due.push(Due::new(second, org));
                        }
                    }
                }
                Undo::Added(key, second, before) => {
                    if let Some(org) = orgs.get_mut(&key) {
                        org.window.undo_add(second, before);
                    }
                }
                Undo::Evicted(key, bucket) => {
                    if let Some(org) = orgs.get_mut(&key) {
                        org.window.undo_evict(bucket);
                    }
                }
                Undo::Cleared(key, buckets) => {
                    if let Some(org) = orgs.get_mut(&key) {
                        org.window.restore(buckets);
                    }
                }
            }
        }
        self.generation += 1;
        self.newest_ms.take()
    }
}
