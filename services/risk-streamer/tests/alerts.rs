//! Edge-triggered alerts in event time, risk-streamer as a real process
//! against the real broker and registry: one RAISED and one CLEARED per
//! breach, no flapping within the margin, arrival order within the lateness
//! changes nothing, a late record is counted and changes nothing, and a quiet
//! organisation's alert clears after window + lateness of silence.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::*;
use dora_testkit as tk;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn by_time(mut a: Vec<Assessment>) -> Vec<Assessment> {
    a.sort_by_key(|x| x.timestamp_ms);
    a
}

#[tokio::test]
async fn a_sustained_breach_raises_once_and_clears_once_and_hovering_never_flaps() -> Result<()> {
    let h = Harness::new(1).await?;
    let mut p = h.spawn(&tk::unique("risk-streamer-tx"), 0).await?;
    let t0 = now_ms() - 120_000;
    let mut input = steady("org-breach", t0, t0 + 10_000, 250, 0.9);
    input.extend(steady("org-breach", t0 + 10_000, t0 + 20_000, 250, 0.3));
    // raised, then between the clear level (0.75) and the threshold: stays raised
    input.extend(steady("org-hover", t0, t0 + 3_000, 250, 0.95));
    let hover = [0.78, 0.80, 0.76, 0.79, 0.77];
    input.extend(
        (0..68).map(|k| assessment("org-hover", t0 + 3_000 + k * 250, hover[k as usize % 5])),
    );
    // never above the threshold: never raised
    input.extend((0..80).map(|k| assessment("org-calm", t0 + k * 250, hover[k as usize % 5])));
    // moves the watermark past every window
    input.extend(steady("org-clock", t0 + 20_000, t0 + 22_000, 500, 0.1));
    let records = input.len();
    h.produce(&by_time(input)).await?;
    h.wait_all_committed(&h.group).await?;
    let t = h
        .wait_transitions("the breach and its end", |t| {
            states(t, "org-breach") == [RAISED, CLEARED]
        })
        .await?;
    assert_eq!(
        states(&t, "org-hover"),
        [RAISED],
        "no flapping within the margin"
    );
    assert!(states(&t, "org-calm").is_empty());
    assert!(states(&t, "org-clock").is_empty());
    let raised = &t["org-breach"][0];
    assert_eq!(
        raised.window_end,
        (t0 / 1000 + 1) * 1000,
        "raised at the first second"
    );
    assert!(t["org-breach"][1].samples > 0, "cleared by the average");
    // one alert per transition, not one per message
    assert_eq!(
        h.committed_alerts().await?.len(),
        3,
        "of {records} assessments"
    );
    assert_eq!(
        metric(&p, "risk_streamer_alerts_total", &[("state", "RAISED")]).await?,
        2.0
    );
    assert_eq!(
        metric(&p, "risk_streamer_alerts_total", &[("state", "CLEARED")]).await?,
        1.0
    );
    assert_eq!(p.terminate(Duration::from_secs(30)).await?.code(), Some(0));
    Ok(())
}

/// Four organisations over 40 s of event time with phases of high and low
/// risk, in timestamp order.
fn phases(rng: &mut StdRng, t0: i64) -> Vec<Assessment> {
    let mut out = Vec::new();
    for (k, org) in ["org-a", "org-b", "org-c", "org-d"].iter().enumerate() {
        let mut t = t0 + k as i64 * 37;
        while t < t0 + 40_000 {
            let hot = ((t - t0) / 7_000 + k as i64) % 2 == 0;
            let score = if hot {
                rng.random_range(0.75..1.0)
            } else {
                rng.random_range(0.0..0.8)
            };
            let mut a = assessment(org, t, (score * 100.0f64).round() / 100.0);
            a.report_id = format!("{org}-{}", out.len());
            out.push(a);
            t += rng.random_range(100..400);
        }
    }
    by_time(out)
}

#[tokio::test]
async fn the_same_records_shuffled_within_the_lateness_give_the_same_alerts_and_a_late_record_is_counted_and_left_out(
) -> Result<()> {
    let (ordered, shuffled) = (Harness::new(1).await?, Harness::new(1).await?);
    let mut rng = StdRng::seed_from_u64(2026);
    let t0 = now_ms() - 300_000;
    let input = phases(&mut rng, t0);
    // arrival order: each record may overtake those up to 900 ms older (lateness 1 s)
    let mut keyed: Vec<(i64, Assessment)> = input
        .iter()
        .map(|a| (a.timestamp_ms + rng.random_range(0..900), a.clone()))
        .collect();
    keyed.sort_by_key(|(k, _)| *k);
    let mut arrival: Vec<Assessment> = keyed.into_iter().map(|(_, a)| a).collect();
    assert_ne!(
        arrival.iter().map(|a| a.timestamp_ms).collect::<Vec<_>>(),
        input.iter().map(|a| a.timestamp_ms).collect::<Vec<_>>(),
        "the order differs"
    );
    // one record later than the lateness, with a score that would raise on its own
    let at = arrival.len() / 2;
    let newest = arrival[..at]
        .iter()
        .map(|a| a.timestamp_ms)
        .max()
        .unwrap_or(t0);
    let mut late = assessment("org-late", newest - LATENESS_MS - 2_000, 1.0);
    late.report_id = "the-late-one".into();
    arrival.insert(at, late);

    let mut a = ordered.spawn(&tk::unique("risk-streamer-tx"), 0).await?;
    let mut b = shuffled.spawn(&tk::unique("risk-streamer-tx"), 0).await?;
    ordered.produce(&input).await?;
    shuffled.produce(&arrival).await?;
    ordered.wait_all_committed(&ordered.group).await?;
    shuffled.wait_all_committed(&shuffled.group).await?;
    let expected = ordered.wait_transitions("alerts", |t| t.len() == 4).await?;
    assert!(
        expected.values().all(|s| s.len() >= 2),
        "each organisation raises and clears: {expected:?}"
    );
    let got = shuffled
        .wait_transitions("the same alerts", |t| t == &expected)
        .await?;
    assert!(!got.contains_key("org-late"));
    assert_eq!(
        metric(&b, "risk_streamer_late_records_total", &[]).await?,
        1.0
    );
    assert_eq!(
        metric(&a, "risk_streamer_late_records_total", &[]).await?,
        0.0
    );
    assert!(
        b.log().contains("late risk assessment"),
        "the late record is logged"
    );
    assert_eq!(a.terminate(Duration::from_secs(30)).await?.code(), Some(0));
    assert_eq!(b.terminate(Duration::from_secs(30)).await?.code(), Some(0));
    Ok(())
}

#[tokio::test]
async fn a_quiet_organisations_alert_clears_after_window_and_lateness_of_silence() -> Result<()> {
    let h = Harness::new(1).await?;
    let mut p = h.spawn(&tk::unique("risk-streamer-tx"), 100).await?;
    let sent_at = now_ms();
    let input = steady("org-quiet", sent_at, sent_at + 2_500, 250, 0.95);
    let newest = input.last().map(|a| a.timestamp_ms).unwrap_or(sent_at);
    h.produce(&input).await?;
    let t = h
        .wait_transitions("the quiet organisation cleared", |t| {
            states(t, "org-quiet") == [RAISED, CLEARED]
        })
        .await?;
    let cleared = h
        .committed_alerts()
        .await?
        .into_iter()
        .find(|a| a.state.to_string() == CLEARED)
        .expect("listed above");
    assert!(
        cleared.timestamp >= sent_at + WINDOW_MS + LATENESS_MS,
        "not before window + lateness of silence: sent {sent_at}, cleared {}",
        cleared.timestamp
    );
    assert_eq!(cleared.sample_count, 0, "its window emptied");
    assert_eq!(
        cleared.window_end,
        (newest / 1000 + WINDOW_MS / 1000 + 1) * 1000
    );
    assert_eq!(t["org-quiet"][1].samples, 0);
    let raised = h
        .committed_alerts()
        .await?
        .into_iter()
        .find(|a| a.state.to_string() == RAISED)
        .unwrap();
    assert_eq!(
        cleared.detected_at, raised.detected_at,
        "the CLEARED names its breach"
    );
    assert_eq!(
        raised.initial_notification_due_by,
        raised.detected_at.map(|d| d + 24 * 3_600_000)
    );
    assert_eq!(p.terminate(Duration::from_secs(30)).await?.code(), Some(0));
    Ok(())
}
