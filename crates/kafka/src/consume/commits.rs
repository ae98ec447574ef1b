//! Offset commits of the per-message and batch modes: the processed
//! positions, never ahead of work, batched by count and time. A commit is due
//! whenever a processed position is not committed yet and the interval
//! passed — so a commit that failed is made again even if the partition has
//! gone idle. Revoke and shutdown commit synchronously (see `context.rs`).

use std::time::{Duration, Instant};

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
}

impl Commits {
    pub fn new(settings: &ConsumerSettings) -> Self {
        Self {
            every_records: settings.commit_every_records.max(1),
            interval: Duration::from_millis(settings.commit_interval_ms.max(1)),
            since_commit: 0,
            last_commit: Instant::now(),
        }
    }

    /// `n` more records were processed.
    pub fn processed(&mut self, n: u64) {
        self.since_commit += n;
    }

    fn due(&self, membership: &Membership) -> bool {
        if membership.transactional {
            return false;
        }
        self.since_commit >= self.every_records
            || (self.last_commit.elapsed() >= self.interval
                && membership.uncommitted(None).count() > 0)
    }

    /// When the loop must wake to commit, if something is uncommitted.
    pub fn next_due(&self, membership: &Membership) -> Option<Instant> {
        (!membership.transactional && membership.uncommitted(None).count() > 0)
            .then(|| self.last_commit + self.interval)
    }
}

impl<D: DeadLetterEncoder> Driver<D> {
    /// Commits the processed positions asynchronously when a commit is due;
    /// the outcome arrives in the commit callback.
    pub(crate) async fn commit_if_due(&mut self) {
        if !self.commits.due(&self.membership) {
            return;
        }
        let tpl = self.membership.uncommitted(None);
        if tpl.count() > 0 {
            if let Err(e) = self.member.commit_async(tpl).await {
                tracing::warn!(error = %e, group = %self.membership.group, "offset commit failed; it is made again at the next interval");
            }
        }
        self.commits.since_commit = 0;
        self.commits.last_commit = Instant::now();
    }
}
