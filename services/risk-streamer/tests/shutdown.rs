//! SIGTERM, risk-streamer as a real process against the real broker: the
//! transaction open when the signal arrives commits (its alerts are
//! committed, not aborted), the process exits 0, and a successor goes on
//! from the committed offsets without repeating an alert.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::*;
use dora_testkit as tk;

/// Two organisations flipping between high and low every 8 s of event time
/// (longer than the window), so alerts come all the time.
fn flapping(t0: i64, from: usize, to: usize) -> Vec<Assessment> {
    (from..to)
        .flat_map(|k| {
            let t = t0 + k as i64 * 50;
            let hot = (t - t0) / 8_000 % 2 == 0;
            [
                assessment("org-x", t, if hot { 0.95 } else { 0.05 }),
                assessment("org-y", t + 25, if hot { 0.05 } else { 0.95 }),
            ]
        })
        .collect()
}

#[tokio::test]
async fn sigterm_commits_the_open_transaction_and_exits_0() -> Result<()> {
    let h = Harness::new(1).await?;
    let tx = tk::unique("risk-streamer-tx");
    let mut p = h.spawn(&tx, 0).await?;
    let t0 = now_ms() - 600_000;
    let total = 2_400;
    // a stream in small pieces, the signal in the middle of it
    let producing = {
        let h = h.clone();
        tokio::spawn(async move {
            for piece in (0..total).step_by(300) {
                h.produce(&flapping(t0, piece, piece + 300)).await?;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            anyhow::Ok(())
        })
    };
    tk::eventually(tk::DEADLINE, || async {
        (metric(&p, "risk_streamer_alerts_total", &[("state", "RAISED")])
            .await
            .ok()?
            >= 5.0)
            .then_some(())
    })
    .await?;
    let status = p.terminate(Duration::from_secs(30)).await?;
    assert_eq!(status.code(), Some(0), "{}", p.log());
    producing.await??;
    let uncommitted = tk::read_all(&h.kafka, &h.alerts).await?;
    let committed = h.committed_alerts().await?;
    assert!(!committed.is_empty());
    assert_eq!(
        uncommitted.len(),
        committed.len(),
        "no alert was aborted: the open transaction committed"
    );
    // the successor goes on from there: every transition exactly once
    let mut p = h.spawn(&tx, 0).await?;
    h.wait_all_committed(&h.group).await?;
    let t = h.transitions().await?;
    for org in ["org-x", "org-y"] {
        let s = states(&t, org);
        assert!(s.len() > 6, "{org}: {s:?}");
        assert!(
            s.windows(2).all(|w| w[0] != w[1]),
            "{org} alternates, none twice: {s:?}"
        );
    }
    assert_eq!(p.terminate(Duration::from_secs(30)).await?.code(), Some(0));
    Ok(())
}
