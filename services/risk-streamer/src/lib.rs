//! risk-streamer: risk-assessments -> a sliding window of each organisation's
//! riskScores in event time -> edge-triggered alerts on risk-alerts, exactly
//! once.
//!
//! The seed's `RealTimeRiskProcessor` alerted on every message above the
//! threshold, used arrival order, committed after every message, skipped
//! failures by committing them and lost its windows on restart. Here:
//!
//! - **Window** ([`window`]): per organisation, the average riskScore over
//!   the last `window` (default 5 minutes, the seed's) of *event time* — the
//!   Kafka record's timestamp — on a one-second grid: per-second buckets, so
//!   memory per organisation is bounded by the window length in seconds,
//!   whatever the rate. Scores are fixed-point, so sums are exact and do not
//!   depend on the order they were added in.
//! - **Event time** ([`partition`]): a partition's watermark is its newest
//!   record's timestamp minus the allowed lateness (default 30 s). A window
//!   is evaluated at a second only once the watermark has passed it, and a
//!   record for a second already passed is *late*: counted
//!   (`risk_streamer_late_records_total`), logged, left out. So within the
//!   lateness, the order records arrive in changes nothing. Alerts come about
//!   `lateness` after the event time they describe.
//! - **Edge-triggered with hysteresis** ([`alert`]): RAISED when the average
//!   goes strictly above the threshold (0.8), CLEARED when it falls strictly
//!   below threshold minus margin (0.05) or the window empties — one record
//!   per transition, never one per assessment, and no flapping in between.
//!   A raised organisation that receives nothing for window + lateness of
//!   wall-clock time is cleared by the loop's tick even when its whole
//!   partition is quiet (the watermark stands still then); its window is
//!   evaluated ahead of the watermark exactly as the watermark would, change
//!   by change, until it clears.
//! - **DORA clock**: a RAISED carries when the breach was detected and the
//!   latest time an initial notification would be due if it were classified
//!   as a major ICT-related incident (RTS (EU) 2025/301 Art. 5: 4 h after
//!   classification, at most 24 h after becoming aware): a hint for the
//!   people who classify, not a classification.
//!
//! # Exactly once
//!
//! Alerts and the input offsets they follow from are committed in one Kafka
//! transaction by the runtime's transactional consume loop; a tick's CLEARED
//! alerts in a transaction of their own. What remains is to start again,
//! after a crash or a rebalance, in exactly the state the committed output
//! reflects. That state has two parts:
//!
//! 1. **The windows** are rebuilt from the input itself: the loop seeks back
//!    to the first record at or after `T - (window + lateness + 2 s)`, where
//!    `T` is the timestamp of the last committed record, and hands every
//!    record up to the committed offset to `Transform::replay`, which fills
//!    windows and moves the watermark but decides nothing. Every record that
//!    can still be in a window later, and every record that decided whether
//!    one of those was late, is in that span, so the windows, the watermark
//!    and the late/not-late verdicts equal the uninterrupted run's.
//! 2. **The alert state** (raised or not, per organisation) cannot come from
//!    a bounded replay: with hysteresis it depends on how the average got
//!    where it is (an average of 0.78 is raised or not depending on the
//!    past), and a tick's CLEARED has no input at all. It is read back from
//!    what was committed: at every assignment, before the first replayed
//!    record, the whole alerts topic is read `read_committed` up to its high
//!    watermark, waiting for transactions still open then (a previous owner's
//!    last commit markers may be on their way) — see [`restore`]. Per
//!    organisation, its last alert gives the state and the second up to
//!    which evaluations were decided; a CLEARED with an empty window also
//!    says up to which second its records no longer count. An organisation
//!    created by replay takes these over; one that changes state afterwards
//!    stops consulting them (and takes them back if that transaction aborts).
//!
//! Transaction aborts roll the windows back to the last commit (an undo log
//! of the organisations touched since then); the loop hands the same records
//! again. A RAISED that committed is therefore never repeated after a
//! rebuild, a tick's CLEARED never re-emitted, and no transition is lost:
//! `partition/tests/rebuild.rs` checks this against random inputs crashed at
//! random points, and `tests/exactly_once.rs` against the real broker.
//!
//! Precondition, stated rather than hidden: records arrive within the
//! allowed lateness of their timestamp (producer clocks and delivery delays
//! within 30 s). A record that arrives later than that after its
//! organisation was cleared for being quiet may be judged late by one
//! instance and not by its successor.
//!
//! The alerts topic is read whole at each assignment (organisations of one
//! input partition may be anywhere in it, as producers may partition keys
//! differently); alerts are rare, so this stays small.

pub mod alert;
pub mod bench;
pub mod metrics;
pub mod partition;
pub mod restore;
pub mod settings;
pub mod state;
pub mod streamer;
pub mod window;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use dora_kafka::consume::{ConsumeLoop, StartAt};
use dora_schema::{Codec, RiskAlert};
use dora_service::ServiceContext;

pub use settings::{RiskSettings, Settings};

/// Runs risk-streamer until shutdown is requested.
pub async fn run(settings: Settings, ctx: ServiceContext) -> anyhow::Result<()> {
    let codec = Codec::new(&settings.registry).context("schema registry settings")?;
    // Registered before anything is consumed, so no transaction waits for the registry.
    if let Err(e) = codec.register::<RiskAlert>(&settings.risk.alerts_topic).await {
        tracing::warn!(error = %e, "RiskAlert not registered yet; the first alert will try again");
    }
    let (consume, streamer) = consume_loop(&settings, codec, &ctx)?;
    ctx.started();
    consume.run_transactional(streamer).await?;
    Ok(())
}

/// The service's consume loop and transform, as [`run`] starts them (the
/// benchmark runs the same): risk-assessments in, rebuilt on every
/// assignment, ticked for quiet organisations.
pub fn consume_loop(
    settings: &Settings,
    codec: Codec,
    ctx: &ServiceContext,
) -> anyhow::Result<(ConsumeLoop<Codec>, Arc<streamer::RiskStreamer>)> {
    let risk = &settings.risk;
    let rules = risk.rules().map_err(anyhow::Error::msg)?;
    let streamer = streamer::RiskStreamer::new(
        codec.clone(),
        settings.common.kafka.clone(),
        risk.clone(),
        settings.consumer.retry,
    )?;
    let span = Duration::from_millis(u64::try_from(rules.rebuild_span_ms()).unwrap_or(u64::MAX));
    let consume = ConsumeLoop::new(&settings.common.kafka, &settings.consumer, ctx, Arc::new(codec))
        .topics(&[risk.assessments_topic.as_str()])
        .producer_settings(&settings.producer)
        .on_assign(move |_, _| StartAt::Rebuild { span })
        .tick_every(risk.tick());
    Ok((consume, streamer))
}
