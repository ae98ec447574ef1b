//! SIGTERM under load: gRPC calls in flight when the signal arrives, unary
//! and SubmitAssessments (25 submissions each) alike, complete (answered OK
//! after it, every submission of a bulk call accepted), later calls are
//! refused without anything written, every answered report is on its topic
//! and nothing else is, and the process exits 0.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{ensure, Result};
use common::Scenario;
use dora_proto::report::v1 as pb;
use dora_testkit as tk;
use report_ingest::client;

/// One SubmitAssessments call of 25 gap assessments; the report ids, if
/// every submission was accepted.
async fn submit_bulk(
    c: &mut client::ReportClient,
    caller: u32,
    call: u32,
) -> Result<Vec<String>, tonic::Status> {
    let submissions = (0..25)
        .map(|k| pb::Submission {
            assessment: Some(pb::submission::Assessment::Gap(client::gap_request(
                "org-a",
                r#"{"gaps": []}"#,
                &format!("bulk-{caller}-{call}-{k}"),
            ))),
        })
        .collect();
    let results = c
        .submit_assessments(pb::SubmitAssessmentsRequest { submissions })
        .await?
        .into_inner()
        .results;
    results
        .into_iter()
        .map(|r| match r.outcome {
            Some(pb::submission_result::Outcome::Report(r)) => Ok(r.report_id),
            other => Err(tonic::Status::internal(format!("{other:?}"))),
        })
        .collect()
}

#[tokio::test]
async fn sigterm_completes_in_flight_calls_and_exits_zero() -> Result<()> {
    let scenario = Scenario::new().await?;
    let mut ingest = scenario.start(&tk::unique("report-ingest")).await?;
    let signalled = Arc::new(AtomicBool::new(false));
    let mut callers = Vec::new();
    for n in 0..16 {
        let mut c = scenario.client(&mut ingest, "load", &["org-a"]).await?;
        let signalled = signalled.clone();
        // Odd callers submit 25 assessments per SubmitAssessments call.
        let bulk = n % 2 == 1;
        callers.push(tokio::spawn(async move {
            // (report ids answered, calls answered OK after the signal, bulk?)
            let (mut ids, mut after) = (Vec::new(), 0u32);
            for i in 0..10_000 {
                let sent_after_signal = signalled.load(Ordering::SeqCst);
                let answered = if bulk {
                    submit_bulk(&mut c, n, i).await
                } else {
                    let req =
                        client::gap_request("org-a", r#"{"gaps": []}"#, &format!("req-{n}-{i}"));
                    c.submit_gap_assessment(req)
                        .await
                        .map(|r| vec![r.into_inner().report_id])
                };
                match answered {
                    Ok(answered) => {
                        ids.extend(answered);
                        if signalled.load(Ordering::SeqCst) && !sent_after_signal {
                            after += 1;
                        }
                    }
                    Err(_) => break,
                }
            }
            (ids, after, bulk)
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

    let (mut answered, mut completed_after_signal) = (Vec::new(), [0, 0]);
    for c in callers {
        let (ids, after, bulk) = c.await?;
        answered.extend(ids);
        completed_after_signal[usize::from(bulk)] += after;
    }
    ensure!(
        completed_after_signal.iter().all(|n| *n > 0),
        "no call of a kind (unary, bulk) was in flight when SIGTERM arrived: {completed_after_signal:?}"
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
