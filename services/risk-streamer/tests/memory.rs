//! Bounded memory per organisation, risk-streamer as a real process against
//! the real broker: an organisation sending a hundred assessments a second
//! is kept in exactly as many bytes as one sending one a second over the same
//! event time (per-second buckets, not every sample), as the service's own
//! `risk_streamer_window_bytes` gauge reports.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::*;
use dora_testkit as tk;

/// A longer window than the other tests, so the windows hold many seconds.
const WINDOW: i64 = 20_000;
const LATENESS: i64 = 1_000;
const TICK_MS: u64 = 50;

/// `per_second` assessments a second of one organisation over 2 windows of
/// event time (scores low: no alert), report ids of one length.
fn input(t0: i64, per_second: i64) -> Vec<Assessment> {
    let step = 1000 / per_second;
    (0..2 * WINDOW / step)
        .map(|k| {
            let t = t0 + k * step;
            let mut a = assessment("org-memory", t, 0.2 + 0.001 * (k % 100) as f64);
            a.report_id = format!("r-{k:08}");
            a
        })
        .collect()
}

/// Runs one instance over `records`; the window bytes it reports once
/// everything is committed and two ticks agree.
async fn window_bytes(records: &[Assessment]) -> Result<f64> {
    let h = Harness::new(1).await?.with_window(WINDOW, LATENESS);
    let mut p = h.spawn(&tk::unique("risk-streamer-tx"), TICK_MS).await?;
    h.produce(records).await?;
    h.wait_all_committed(&h.group).await?;
    // every tick after the last commit reports the final figure; two reads a
    // poll (100 ms, two ticks) apart that agree are past it
    let previous = std::cell::Cell::new(-1.0);
    let bytes = tk::eventually(tk::DEADLINE, || {
        let (p, previous) = (&p, &previous);
        async move {
            let now = metric(p, "risk_streamer_window_bytes", &[]).await.ok()?;
            let before = previous.replace(now);
            (now > 0.0 && now == before).then_some(now)
        }
    })
    .await?;
    assert_eq!(metric(&p, "risk_streamer_organizations", &[]).await?, 1.0);
    assert_eq!(p.terminate(Duration::from_secs(30)).await?.code(), Some(0));
    Ok(bytes)
}

#[tokio::test]
async fn memory_per_organisation_does_not_grow_with_its_rate() -> Result<()> {
    let t0 = now_ms() - 300_000;
    let sparse = input(t0, 1);
    let dense = input(t0, 100);
    assert_eq!(dense.len(), 100 * sparse.len());
    let (sparse_bytes, dense_bytes) = tokio::try_join!(window_bytes(&sparse), window_bytes(&dense))?;
    eprintln!("window bytes: {sparse_bytes} at 1/s, {dense_bytes} at 100/s");
    assert_eq!(
        dense_bytes, sparse_bytes,
        "100 assessments a second take the memory of one a second ({} vs {} records)",
        dense.len(),
        sparse.len()
    );
    Ok(())
}
