//! `replay` and `park`: read the dead-letter topic, select the waiting
//! letters, refuse what may not be replayed, print the plan (and stop there
//! with `--dry-run`), then act through the platform's consume loop in
//! transactional mode — each letter's output, its resolution marker, its
//! audit event and the loop's progress in one Kafka transaction — and read
//! the topic back to report what happened.
//!
//! Resuming: the resolution markers are the progress. Running the same
//! command again selects only letters still waiting, and the loop's
//! `transactional.id` (one per dead-letter topic) aborts whatever a killed
//! run left open, so each letter is acted on exactly once.

use std::collections::{HashMap, HashSet};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Result};
use dora_kafka::consume::{ConsumeLoop, ConsumerSettings, HandlerError, Record, Transform};
use dora_kafka::OutboundRecord;
use dora_schema::Codec;
use dora_telemetry::ServiceContext;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Act, EXIT_INCOMPLETE};
use crate::letter::{Action, Letter, Position, RESOLUTION_HEADER, RESOLVES_HEADER};
use crate::outbound::{self, Actor};
use crate::selection::replayable;
use crate::snapshot::{dlq_topic_named, Snapshot};
use crate::Settings;

/// `replay`.
pub async fn replay(
    settings: &Settings,
    codec: Codec,
    act: &Act,
    rate: Option<f64>,
) -> Result<ExitCode> {
    if rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        bail!("--rate must be a positive number of records per second");
    }
    execute(
        settings,
        codec,
        act,
        Action::Replayed,
        rate,
        "replayed by an operator",
    )
    .await
}

/// `park`.
pub async fn park(settings: &Settings, codec: Codec, act: &Act, reason: &str) -> Result<ExitCode> {
    execute(settings, codec, act, Action::Parked, None, reason).await
}

async fn execute(
    settings: &Settings,
    codec: Codec,
    act: &Act,
    action: Action,
    rate: Option<f64>,
    reason: &str,
) -> Result<ExitCode> {
    let topic = dlq_topic_named(&act.topic);
    let kafka = &settings.common.kafka;
    let snapshot = Snapshot::read(kafka, &codec, &topic).await?;
    let filter = act.select.filter();
    let selected: Vec<Letter> = snapshot
        .waiting()
        .filter(|l| filter.matches(l))
        .cloned()
        .collect();
    if action == Action::Replayed {
        let refused: Vec<_> = selected
            .iter()
            .filter_map(|l| {
                replayable(l, &settings.dlq.replay_topics)
                    .err()
                    .map(|r| (l, r))
            })
            .collect();
        if !refused.is_empty() {
            for (letter, why) in &refused {
                eprintln!("{}: cannot replay: {why}", letter.position);
            }
            eprintln!(
                "dlq-replayer: nothing replayed: {} of the {} selected letters cannot be replayed; narrow the selection or park them",
                refused.len(),
                selected.len()
            );
            return Ok(ExitCode::from(EXIT_INCOMPLETE));
        }
    }
    print_plan(&topic, &selected, action, act.dry_run, act.json);
    if act.dry_run || selected.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let actor = Actor {
        name: operator_name(act)?,
        automatic: false,
    };
    let interrupted = run_loop(
        settings,
        codec.clone(),
        &topic,
        &selected,
        action,
        rate,
        reason,
        &actor,
    )
    .await?;
    report(
        settings,
        &codec,
        &topic,
        &selected,
        action,
        &actor,
        interrupted,
    )
    .await
}

fn operator_name(act: &Act) -> Result<String> {
    act.operator
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| anyhow::anyhow!("who acts is not known: pass --as <name> (no $USER)"))
}

fn print_plan(topic: &str, selected: &[Letter], action: Action, dry_run: bool, json: bool) {
    let verb = match (action, dry_run) {
        (Action::Replayed, true) => "would replay",
        (Action::Replayed, false) => "replaying",
        (Action::Parked, true) => "would park",
        (Action::Parked, false) => "parking",
    };
    for letter in selected {
        let target = match action {
            Action::Replayed => letter
                .dead_letter
                .as_ref()
                .map(|d| format!("{}/{}", d.original_topic, d.original_partition))
                .unwrap_or_default(),
            Action::Parked => outbound::parking_topic(topic),
        };
        if json {
            let line = serde_json::json!({
                "plan": verb, "position": letter.position.to_string(), "target": target,
                "errorType": letter.error_type(), "key": letter.original_key_text(),
            });
            println!("{line}");
        } else {
            println!(
                "{verb} {} -> {target}  [{}] key {}",
                letter.position,
                letter.error_type(),
                letter.original_key_text().unwrap_or_else(|| "-".into())
            );
        }
    }
    if !json {
        println!("{verb} {} letter(s) of {topic}", selected.len());
    }
}

/// Runs the consume loop over the topic until every selected letter was
/// handed to the transform (or a signal stopped it); true when a signal did.
#[allow(clippy::too_many_arguments)]
async fn run_loop(
    settings: &Settings,
    codec: Codec,
    topic: &str,
    selected: &[Letter],
    action: Action,
    rate: Option<f64>,
    reason: &str,
    actor: &Actor,
) -> Result<bool> {
    let ctx = ServiceContext::new("dlq-replayer");
    let interrupted = CancellationToken::new();
    let (stop, signalled) = (ctx.shutdown.clone(), interrupted.clone());
    let signals = tokio::spawn(async move {
        dora_telemetry::shutdown_signal().await;
        signalled.cancel();
        stop.cancel();
    });
    let consumer = command_consumer(&settings.consumer, topic, rate);
    let operator = Operator {
        codec: codec.clone(),
        audit_topic: settings.dlq.audit_topic.clone(),
        actor: actor.clone(),
        action,
        reason: reason.to_string(),
        letters: selected
            .iter()
            .map(|l| (l.position.clone(), l.clone()))
            .collect(),
        state: Mutex::new(Progress::default()),
        pace: rate.map(|r| Mutex::new(Pace::new(r))),
        done: ctx.shutdown.clone(),
    };
    let result = ConsumeLoop::new(&settings.common.kafka, &consumer, &ctx, Arc::new(codec))
        .topics(&[topic])
        .producer_settings(&settings.producer)
        .run_transactional(operator)
        .await;
    signals.abort();
    result?;
    Ok(interrupted.is_cancelled())
}

/// The loop settings of a command on `topic`: a `transactional.id` of its
/// own per dead-letter topic (a second command on the same topic fences the
/// first, and a rerun aborts what a killed run left open); a fresh group that
/// reads the topic from its start (the markers, not the group's offsets, say
/// what is done); about one second of work per transaction at a limited rate.
fn command_consumer(
    service: &ConsumerSettings,
    topic: &str,
    rate: Option<f64>,
) -> ConsumerSettings {
    let id = format!("{}-cli-{topic}", service.group_id);
    let batch = rate.map_or(100, |r| (r.ceil() as usize).clamp(1, 100));
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

#[derive(Default)]
struct Progress {
    /// Letters resolved by a marker the loop read (by anyone).
    resolved: HashSet<Position>,
    /// Letters handed to the transform.
    handed: HashSet<Position>,
}

/// The transform of a command: the selected letters become their outputs;
/// everything else is passed over.
struct Operator {
    codec: Codec,
    audit_topic: String,
    actor: Actor,
    action: Action,
    reason: String,
    letters: HashMap<Position, Letter>,
    state: Mutex<Progress>,
    pace: Option<Mutex<Pace>>,
    done: CancellationToken,
}

impl Operator {
    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Transform for Operator {
    async fn transform(&self, record: &Record) -> Result<Vec<OutboundRecord>, HandlerError> {
        if record.header(RESOLUTION_HEADER).is_some() {
            if let Some(p) = record.header_str(RESOLVES_HEADER).and_then(Position::parse) {
                self.lock().resolved.insert(p);
            }
            return Ok(Vec::new());
        }
        let position = Position::of(record);
        let Some(letter) = self.letters.get(&position) else {
            return Ok(Vec::new());
        };
        if self.lock().resolved.contains(&position) {
            // Someone else resolved it since the plan was made.
            self.note_handed(position);
            return Ok(Vec::new());
        }
        if let Some(pace) = &self.pace {
            let at = pace.lock().unwrap_or_else(|p| p.into_inner()).slot();
            tokio::time::sleep_until(at).await;
        }
        let outputs = outbound::resolution(
            &self.codec,
            &self.audit_topic,
            letter,
            self.action,
            &self.actor,
            &self.reason,
        )
        .await
        .map_err(|e| HandlerError::unavailable("AuditEncode", e.to_string()))?;
        self.note_handed(position);
        Ok(outputs)
    }
}

impl Operator {
    /// Every selected letter was handed over: let the loop commit and stop.
    fn note_handed(&self, position: Position) {
        let mut state = self.lock();
        state.handed.insert(position);
        if state.handed.len() == self.letters.len() {
            self.done.cancel();
        }
    }
}

/// Reads the topic back and says what happened to each selected letter.
async fn report(
    settings: &Settings,
    codec: &Codec,
    topic: &str,
    selected: &[Letter],
    action: Action,
    actor: &Actor,
    interrupted: bool,
) -> Result<ExitCode> {
    let after = Snapshot::read(&settings.common.kafka, codec, topic).await?;
    let (mut ours, mut others, mut waiting) = (0, 0, 0);
    for letter in selected {
        match after.ledger.resolution(&letter.position) {
            Some(r) if r.action == action && r.by == actor.name => ours += 1,
            Some(_) => others += 1,
            None => waiting += 1,
        }
    }
    println!(
        "{} {ours} of {} letter(s); {others} resolved by someone else meanwhile; {waiting} still waiting",
        action.as_str(),
        selected.len()
    );
    if waiting == 0 {
        return Ok(ExitCode::SUCCESS);
    }
    if interrupted {
        println!("stopped on request: run the same command again to resume");
        return Ok(ExitCode::SUCCESS);
    }
    println!("not finished: run the same command again to resume");
    Ok(ExitCode::from(EXIT_INCOMPLETE))
}
