//! SIGTERM under load: gRPC calls in flight when the signal arrives complete
//! (answered OK after it), later calls are refused without anything written,
//! every answered report is on its topic and nothing else is, and the process
//! exits 0.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{ensure, Result};
use common::Scenario;
use dora_testkit as tk;
use report_ingest::client;

#[tokio::test]
async fn sigterm_completes_in_flight_calls_and_exits_zero() -> Result<()> {
    let scenario = Scenario::new().await?;
    let mut ingest = scenario.start(&tk::unique("report-ingest")).await?;
    let signalled = Arc::new(AtomicBool::new(false));
    let mut callers = Vec::new();
    for n in 0..16 {
        let mut c = scenario.client(&mut ingest, "load", &["org-a"]).await?;
        let signalled = signalled.clone();
        callers.push(tokio::spawn(async move {
            // (report ids answered, answered OK after the signal)
            let (mut ids, mut after) = (Vec::new(), 0u32);
            for i in 0..10_000 {
                let req = client::gap_request("org-a", r#"{"gaps": []}"#, &format!("req-{n}-{i}"));
                let sent_after_signal = signalled.load(Ordering::SeqCst);
                match c.submit_gap_assessment(req).await {
                    Ok(r) => {
                        ids.push(r.into_inner().report_id);
                        if signalled.load(Ordering::SeqCst) && !sent_after_signal {
                            after += 1;
                        }
                    }
                    Err(_) => break,
                }
            }
            (ids, after)
        }));
    }
    tk::eventually(tk::DEADLINE, || async {
        scenario
            .reports()
            .await
            .ok()
            .filter(|r| r.len() >= 100)
            .map(|_| ())
    })
    .await?;
    signalled.store(true, Ordering::SeqCst);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(ingest.process.pid().unwrap_or_default() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let status = ingest.process.wait_exit(tk::DEADLINE).await?;
    ensure!(status.success(), "exit {status}\n{}", ingest.process.log());

    let (mut answered, mut completed_after_signal) = (Vec::new(), 0);
    for c in callers {
        let (ids, after) = c.await?;
        answered.extend(ids);
        completed_after_signal += after;
    }
    ensure!(
        completed_after_signal > 0,
        "no call was in flight when SIGTERM arrived"
    );
    let mut on_topic: Vec<String> = scenario
        .reports()
        .await?
        .into_iter()
        .map(|(_, r)| r.report_id)
        .collect();
    on_topic.sort();
    answered.sort();
    ensure!(
        on_topic == answered,
        "{} answered, {} on the topic",
        answered.len(),
        on_topic.len()
    );
    ensure!(scenario.audit_events().await?.len() == answered.len());
    Ok(())
}
