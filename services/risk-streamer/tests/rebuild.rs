//! The rebuild as an operator sees it, risk-streamer as a real process: its
//! `/readyz` is not ready until every assigned partition is rebuilt, and the
//! alert history it rebuilds from waits for a transaction still open on the
//! alerts topic (a previous owner's last commit whose markers are on their
//! way) instead of reading around it.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::*;
use dora_schema::{RiskAlert, RiskAlertState};
use dora_testkit as tk;

#[tokio::test]
async fn not_ready_until_rebuilt_and_the_history_waits_for_an_open_transaction() -> Result<()> {
    let h = Harness::new(1).await?;
    let tx = tk::unique("risk-streamer-tx");
    let mut p = h.spawn(&tx, 0).await?;
    let t0 = now_ms() - 120_000;
    h.produce(&steady("org-a", t0, t0 + 4_000, 250, 0.9))
        .await?;
    h.wait_all_committed(&h.group).await?;
    let raised = h.committed_alerts().await?;
    assert_eq!(states(&by_org(&raised), "org-a"), [RAISED]);
    assert_eq!(p.terminate(Duration::from_secs(30)).await?.code(), Some(0));

    // the CLEARED of org-a's breach (as quiet: its window emptied), written
    // by "a previous owner" whose commit has not reached the alerts topic yet
    let newest = t0 + 3_750;
    let cleared = RiskAlert {
        state: RiskAlertState::Cleared,
        alert_id: "org-a/CLEARED/quiet".into(),
        window_start: (newest / 1000 + 1) * 1000,
        window_end: (newest / 1000 + 1) * 1000 + h.window_ms,
        sample_count: 0,
        average_risk_score: 0.0,
        peak_risk_score: None,
        top_report_ids: vec![],
        ..raised[0].clone()
    };
    let value = h.codec.encode(&h.alerts, &cleared).await?;
    let record = tk::Outgoing {
        key: "org-a".into(),
        value,
        timestamp_ms: None,
        partition: None,
    };
    let open = tk::OpenTransaction::begin(&h.kafka, &h.alerts, &[record]).await?;

    let mut p = h.start(&tx, 0)?;
    tk::eventually(tk::DEADLINE, || {
        let reading = p.log().contains("reading the alert history");
        async move { reading.then_some(()) }
    })
    .await?;
    let (status, body) = p.admin_get("/readyz").await?;
    assert_ne!(status, 200, "{body}");
    assert!(body.contains("rebuilding"), "{body}");
    assert!(
        !p.log().contains("alert history read"),
        "the read waits for the open transaction"
    );
    open.commit().await?;
    p.wait_ready(tk::DEADLINE).await?;

    // the history included the CLEARED: org-a's next breach is a new RAISED
    h.produce(&steady("org-a", t0 + 20_000, t0 + 24_000, 250, 0.95))
        .await?;
    h.wait_transitions("a new breach", |t| {
        states(t, "org-a") == [RAISED, CLEARED, RAISED]
    })
    .await?;
    assert_eq!(p.terminate(Duration::from_secs(30)).await?.code(), Some(0));
    Ok(())
}
