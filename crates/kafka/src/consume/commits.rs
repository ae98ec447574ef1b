//! Offset commits of the per-message and batch modes: the processed
//! positions, never ahead of work, batched by count and time. A commit is due
//! whenever a processed position is not committed yet and the interval
//! passed — so a commit that failed is made again even if the partition has
//! gone idle. Revoke and shutdown commit synchronously (see `context.rs`).
//!
//! A commit runs in the background, one at a time, as a synchronous commit
//! on the blocking pool: its outcome is then known (the committed positions,
//! `kafka_consumer_commits_total`). rdkafka's `CommitMode::Async` would not
//! tell: with the event API it reports no outcome of a manual asynchronous
//! commit (rust-rdkafka issue #856), so a failed commit would go unnoticed.

use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::dead_letter::DeadLetterEncoder;
use super::driver::Driver;
use super::membership::Membership;
use super::ConsumerSettings;

/// When the next commit is due.
#[derive(Debug)]
pub(crate) struct Commits {
    every_records: u64,
    interval: Duration,
    since_commit: u64,
    last_commit: Instant,
    in_flight: Option<JoinHandle<()>>,
}

impl Commits {
    pub fn new(settings: &ConsumerSettings) -> Self {
        Self {
            every_records: settings.commit_every_records.max(1),
            interval: Duration::from_millis(settings.commit_interval_ms.max(1)),
            since_commit: 0,
            last_commit: Instant::now(),
            in_flight: None,
        }
    }

    /// `n` more records were processed.
    pub fn processed(&mut self, n: u64) {
        self.since_commit += n;
    }

    fn in_flight(&self) -> bool {
        self.in_flight.as_ref().is_some_and(|c| !c.is_finished())
    }

    fn due(&self, membership: &Membership) -> bool {
        if membership.transactional || self.in_flight() {
            return false;
        }
        self.since_commit >= self.every_records
            || (self.last_commit.elapsed() >= self.interval
                && membership.uncommitted(None).count() > 0)
    }

    /// When the loop must wake to commit, if something is uncommitted (and
    /// no commit is under way).
    pub fn next_due(&self, membership: &Membership) -> Option<Instant> {
        (!membership.transactional && !self.in_flight() && membership.uncommitted(None).count() > 0)
            .then(|| self.last_commit + self.interval)
    }

    /// Waits for the commit under way, if any.
    pub async fn settled(&mut self) {
        if let Some(commit) = self.in_flight.take() {
            let _ = commit.await;
        }
    }
}

impl<D: DeadLetterEncoder> Driver<D> {
    /// Starts committing the processed positions in the background when a
    /// commit is due; a failed one leaves them uncommitted, so it is made
    /// again at the next interval.
    pub(crate) async fn commit_if_due(&mut self) {
        if !self.commits.due(&self.membership) {
            return;
        }
        if self.membership.uncommitted(None).count() > 0 {
            let member = self.member.clone();
            self.commits.in_flight = Some(tokio::spawn(async move { member.commit_processed().await }));
        }
        self.commits.since_commit = 0;
        self.commits.last_commit = Instant::now();
    }
}
