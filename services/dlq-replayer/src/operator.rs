//! An operator's order carried out: the waiting letters of a dead-letter
//! topic that match a filter are replayed (or parked) through the platform's
//! consume loop in transactional mode — each letter's output, one resolution
//! marker per dead-letter partition and one audit event naming the
//! transaction's letters, and the loop's progress in one Kafka transaction. What happened to each letter is known
//! from the transactions that committed; only when some letter is neither
//! resolved by this order nor seen resolved by someone else (a signal
//! stopped the run) is the topic read on from where the plan's read ended.
//!
//! Resuming: the resolution markers are the progress. Planning the same
//! order again selects only letters still waiting, and the loop's
//! `transactional.id` (one per dead-letter topic) aborts whatever a killed
//! run left open, so each letter is acted on exactly once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use dora_kafka::consume::{
    ConsumeLoop, ConsumerSettings, HandlerError, Record, StartAt, Transform,
};
use dora_kafka::OutboundRecord;
use dora_schema::Codec;
use dora_telemetry::ServiceContext;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::letter::{Action, Letter, Position, Resolution, RESOLUTION_HEADER};
use crate::outbound::{self, Actor, Resolved};
use crate::selection::{replayable, Filter, Refusal};
use crate::snapshot::Snapshot;
use crate::Settings;

/// What an order would act on.
pub struct Plan {
    /// The topic as read when planning.
    pub snapshot: Snapshot,
    /// The waiting letters that match, in offset order per partition
    /// (shared with the snapshot).
    pub selected: Vec<Arc<Letter>>,
    /// Selected letters a replay may not touch, and why (always empty for parking).
    pub refused: Vec<(Position, Refusal)>,
}

/// Reads `topic` and selects the waiting letters matching `filter`.
pub async fn plan(
    settings: &Settings,
    codec: &Codec,
    topic: &str,
    filter: &Filter,
    action: Action,
) -> Result<Plan> {
    let snapshot = Snapshot::read(&settings.common.kafka, codec, topic).await?;
    let selected: Vec<Arc<Letter>> = snapshot
        .waiting()
        .filter(|l| filter.matches(l))
        .cloned()
        .collect();
    let refused = match action {
        Action::Replayed => selected
            .iter()
            .filter_map(|l| {
                replayable(l, &settings.dlq.replay_topics)
                    .err()
                    .map(|r| (l.position.clone(), r))
            })
            .collect(),
        Action::Parked => Vec::new(),
    };
    Ok(Plan {
        snapshot,
        selected,
        refused,
    })
}

/// How an order is carried out.
#[derive(Debug, Clone)]
pub struct Order {
    /// Replay or park.
    pub action: Action,
    /// At most this many letters per second.
    pub rate: Option<f64>,
    /// Why (on the parked records and in the audit events).
    pub reason: String,
    /// Who.
    pub actor: Actor,
}

/// What happened to the selected letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Resolved by this order.
    pub done: usize,
    /// Resolved by someone else meanwhile.
    pub by_others: usize,
    /// Still waiting (the run stopped before them).
    pub waiting: usize,
    /// A signal stopped the run.
    pub interrupted: bool,
}

/// Carries `order` out on `plan`'s selected letters (none refused) and reads
/// the topic on to report what happened.
pub async fn carry_out(
    settings: &Settings,
    codec: &Codec,
    mut plan: Plan,
    order: &Order,
) -> Result<Outcome> {
    anyhow::ensure!(plan.refused.is_empty(), "the plan has refused letters");
    // Shared with the loop's transform, not copied.
    let selected = Arc::new(std::mem::take(&mut plan.selected));
    let (interrupted, progress) = if selected.is_empty() {
        (false, Progress::default())
    } else {
        run_loop(settings, codec, &plan, &selected, order).await?
    };
    if let Some(outcome) = progress.outcome(&selected, interrupted) {
        return Ok(outcome);
    }
    plan.snapshot.read_on(&settings.common.kafka, codec).await?;
    let mut outcome = Outcome {
        done: 0,
        by_others: 0,
        waiting: 0,
        interrupted,
    };
    for letter in selected.iter() {
        match plan.snapshot.ledger.resolution(&letter.position) {
            Some(r) if r.action == order.action && r.by == order.actor.name => outcome.done += 1,
            Some(_) => outcome.by_others += 1,
            None => outcome.waiting += 1,
        }
    }
    Ok(outcome)
}

/// Letters per transaction of an order without `--rate`: large transactions
/// spread the commit (and the audit event) over many letters.
pub const UNRATED_TRANSACTION_LETTERS: usize = 1000;

/// Runs the consume loop over the topic, each partition from its first
/// selected letter up to the end it had at assignment (`until_end`), or until
/// a signal stops it; whether a signal did, and what the loop saw committed.
async fn run_loop(
    settings: &Settings,
    codec: &Codec,
    plan: &Plan,
    selected: &Arc<Vec<Arc<Letter>>>,
    order: &Order,
) -> Result<(bool, Progress)> {
    let ctx = ServiceContext::new("dlq-replayer");
    let interrupted = CancellationToken::new();
    let (stop, signalled) = (ctx.shutdown.clone(), interrupted.clone());
    let signals = tokio::spawn(async move {
        dora_telemetry::shutdown_signal().await;
        signalled.cancel();
        stop.cancel();
    });
    let topic = plan.snapshot.topic.as_str();
    // Each partition starts at its first selected letter (or its end).
    let mut starts: HashMap<i32, i64> = plan
        .snapshot
        .ranges
        .iter()
        .map(|r| (r.partition, r.end))
        .collect();
    for letter in selected.iter() {
        let start = starts.entry(letter.position.partition).or_insert(i64::MAX);
        *start = (*start).min(letter.position.offset);
    }
    let consumer = command_consumer(&settings.consumer, topic, order.rate);
    let operator = Arc::new(Operator {
        codec: codec.clone(),
        audit_topic: settings.dlq.audit_topic.clone(),
        order: order.clone(),
        topic: topic.to_string(),
        index: selected
            .iter()
            .enumerate()
            .map(|(i, l)| (slot_of(l), i))
            .collect(),
        letters: selected.clone(),
        state: Mutex::new(Progress::default()),
        pace: order.rate.map(|r| Mutex::new(Pace::new(r))),
    });
    let result = ConsumeLoop::new(
        &settings.common.kafka,
        &consumer,
        &ctx,
        Arc::new(codec.clone()),
    )
    .topics(&[topic])
    .producer_settings(&settings.producer)
    .on_assign(move |_, partition| match starts.get(&partition) {
        Some(offset) => StartAt::Offset(*offset),
        None => StartAt::Committed,
    })
    .until_end()
    .run_transactional(operator.clone())
    .await;
    signals.abort();
    result?;
    let progress = std::mem::take(&mut *operator.lock());
    Ok((interrupted.is_cancelled(), progress))
}

/// The loop settings of a command on `topic`: a `transactional.id` of its
/// own per dead-letter topic (a second command on the same topic fences the
/// first, and a rerun aborts what a killed run left open); a fresh group
/// (the markers, not a group's offsets, say what is done, so no earlier
/// run's offsets can skip a letter); about one second of work per
/// transaction at a limited rate, [`UNRATED_TRANSACTION_LETTERS`] records
/// otherwise.
fn command_consumer(
    service: &ConsumerSettings,
    topic: &str,
    rate: Option<f64>,
) -> ConsumerSettings {
    let id = format!("{}-cli-{topic}", service.group_id);
    let batch = rate.map_or(UNRATED_TRANSACTION_LETTERS, |r| {
        (r.ceil() as usize).clamp(1, 100)
    });
    ConsumerSettings {
        group_id: format!("{id}-{}", uuid::Uuid::new_v4().simple()),
        auto_offset_reset: "earliest".into(),
        transactional_id: Some(id),
        fetch_min_bytes: 1,
        max_batch_wait_ms: 100,
        max_batch_records: batch,
        ..service.clone()
    }
}

/// Spaces records `1/rate` seconds apart on an absolute schedule (so the
/// average holds whatever a transaction commit costs).
struct Pace {
    every: Duration,
    next: Option<Instant>,
}

impl Pace {
    fn new(rate: f64) -> Self {
        Self {
            every: Duration::from_secs_f64(1.0 / rate),
            next: None,
        }
    }

    /// When the next record may go, and the schedule moved on.
    fn slot(&mut self) -> Instant {
        let now = Instant::now();
        let at = self.next.map_or(now, |n| n.max(now - self.every));
        self.next = Some(at + self.every);
        at
    }
}

/// A letter's place on the order's dead-letter topic: partition and offset.
type Slot = (i32, i64);

fn slot_of(letter: &Letter) -> Slot {
    (letter.position.partition, letter.position.offset)
}

#[derive(Default)]
struct Progress {
    /// Letters resolved by a marker the loop read (by anyone).
    resolved: HashSet<Slot>,
    /// Letters this order resolved in transactions that committed.
    done: HashSet<Slot>,
    /// The open transaction's letters (indexes into the operator's letters).
    open: Vec<usize>,
}

impl Progress {
    /// What happened to `selected`, when the loop saw it all: each letter
    /// resolved by this order or (before it came to it) by someone else.
    /// `None` when some letter is neither (a signal stopped the run): then
    /// only reading the topic on tells.
    fn outcome(&self, selected: &[Arc<Letter>], interrupted: bool) -> Option<Outcome> {
        let done = selected
            .iter()
            .filter(|l| self.done.contains(&slot_of(l)))
            .count();
        let by_others = selected
            .iter()
            .map(|l| slot_of(l))
            .filter(|s| !self.done.contains(s) && self.resolved.contains(s))
            .count();
        (done + by_others == selected.len()).then_some(Outcome {
            done,
            by_others,
            waiting: 0,
            interrupted,
        })
    }
}

/// The transform of a command: the selected letters become their outputs;
/// everything else is passed over.
struct Operator {
    codec: Codec,
    audit_topic: String,
    order: Order,
    /// The dead-letter topic.
    topic: String,
    /// The selected letters.
    letters: Arc<Vec<Arc<Letter>>>,
    /// Where each selected letter is in `letters`.
    index: HashMap<Slot, usize>,
    state: Mutex<Progress>,
    pace: Option<Mutex<Pace>>,
}

impl Operator {
    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Transform for Operator {
    async fn transform(&self, record: &Record) -> Result<Vec<OutboundRecord>, HandlerError> {
        if record.header(RESOLUTION_HEADER).is_some() {
            if let Some(resolutions) = Resolution::of_marker(record) {
                self.lock().resolved.extend(
                    resolutions
                        .iter()
                        .filter(|r| r.letter.topic == self.topic)
                        .map(|r| (r.letter.partition, r.letter.offset)),
                );
            }
            return Ok(Vec::new());
        }
        let slot = (record.partition, record.offset);
        let Some(&i) = self.index.get(&slot).filter(|_| record.topic == self.topic) else {
            return Ok(Vec::new());
        };
        if self.lock().resolved.contains(&slot) {
            // Someone else resolved it since the plan was made.
            return Ok(Vec::new());
        }
        if let Some(pace) = &self.pace {
            let at = pace.lock().unwrap_or_else(|p| p.into_inner()).slot();
            tokio::time::sleep_until(at).await;
        }
        let o = &self.order;
        let Some(output) =
            outbound::resolving_record(&self.letters[i], o.action, &o.actor, &o.reason)
        else {
            return Ok(Vec::new());
        };
        self.lock().open.push(i);
        Ok(vec![output])
    }

    /// The transaction's resolution markers (one per dead-letter partition)
    /// and audit event, naming every letter it resolves.
    async fn batch_end(&self) -> Result<Vec<OutboundRecord>, HandlerError> {
        let open = self.lock().open.clone();
        let o = &self.order;
        let resolved: Vec<Resolved<'_>> = open
            .iter()
            .map(|&i| Resolved {
                letter: &self.letters[i],
                action: o.action,
                reason: &o.reason,
            })
            .collect();
        outbound::closing_records(&self.codec, &self.audit_topic, &o.actor, &resolved)
            .await
            .map_err(outbound::encode_failure)
    }

    async fn committed(&self) {
        let mut progress = self.lock();
        let open = std::mem::take(&mut progress.open);
        let letters = &self.letters;
        progress
            .done
            .extend(open.into_iter().map(|i| slot_of(&letters[i])));
    }

    async fn aborted(&self, _partitions: &[(String, i32)]) {
        self.lock().open.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::letter::fixtures::{dead_letter, letter};

    #[test]
    fn the_outcome_is_known_without_reading_back_only_when_every_letter_was_seen() {
        let selected: Vec<Arc<Letter>> =
            (0..3).map(|o| Arc::new(letter(o, dead_letter()))).collect();
        let mut p = Progress::default();
        p.done.insert(slot_of(&selected[0]));
        p.resolved.insert(slot_of(&selected[1]));
        assert!(
            p.outcome(&selected, true).is_none(),
            "one letter not reached"
        );
        // Resolved by someone else, then (seen after the plan) ours too: ours counts.
        p.resolved.insert(slot_of(&selected[0]));
        p.done.insert(slot_of(&selected[2]));
        assert_eq!(
            p.outcome(&selected, false),
            Some(Outcome {
                done: 2,
                by_others: 1,
                waiting: 0,
                interrupted: false
            })
        );
    }
}
