//! Exactly one report per agent assessment, across a crash and rebalances:
//! while agents keep completing tasks, a second replica joins (rebalance), the
//! first is SIGKILLed mid-stream and restarted with its transactional id
//! (crash, rebalance, its open transaction aborted). Read back with
//! read_committed once the group has committed every event: each qualifying
//! TASK_COMPLETED event has exactly one report (and one audit event), none is
//! missing, none is there twice, and heartbeats made none.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Result};
use common::{heartbeat, task_completed, Scenario};
use dora_testkit as tk;
use report_ingest::assessment::derived_report_id;
use serde_json::json;

/// What the input task produced: event ids that must yield a report, and the
/// end offset of each partition.
#[derive(Default)]
struct Produced {
    assessments: Vec<String>,
    ends: HashMap<i32, i64>,
    total: usize,
}

/// Produces a steady stream of agent events until `stop`: two of three are
/// task completions with an assessment, the third a heartbeat.
fn stream_events(
    scenario: Arc<Scenario>,
    stop: Arc<AtomicBool>,
    produced: Arc<Mutex<Produced>>,
) -> tokio::task::JoinHandle<Result<()>> {
    tokio::spawn(async move {
        let producer = tk::producer(&tk::kafka())?;
        let mut i = 0u64;
        while !stop.load(Ordering::SeqCst) && i < 20_000 {
            let agent = format!("agent-{}", i % 6);
            let (event, reports) = match i % 3 {
                0 => (heartbeat(&agent, "RISK_ASSESSOR"), false),
                1 => (
                    task_completed(
                        &agent,
                        "RISK_ASSESSOR",
                        &format!("org-{}", i % 5),
                        json!({"overall_score": 0.5, "risk_level": "MEDIUM", "n": i}),
                    ),
                    true,
                ),
                _ => (
                    task_completed(
                        &agent,
                        "GAP_ANALYZER",
                        &format!("org-{}", i % 5),
                        json!({"gaps": [{"article": "Art. 9", "status": "partial"}], "n": i}),
                    ),
                    true,
                ),
            };
            let (partition, offset) = scenario.send_event(&producer, &event).await?;
            {
                let mut p = produced.lock().unwrap_or_else(|e| e.into_inner());
                if reports {
                    p.assessments.push(event.event_id.clone());
                }
                let end = p.ends.entry(partition).or_insert(0);
                *end = (*end).max(offset + 1);
                p.total += 1;
            }
            i += 1;
            if i.is_multiple_of(10) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    })
}

async fn committed_reports(scenario: &Scenario) -> Result<usize> {
    let mut n = 0;
    for t in [&scenario.gap_topic, &scenario.risk_topic] {
        n += tk::read_committed(&tk::kafka(), t).await?.len();
    }
    Ok(n)
}

/// Waits until more reports than `than` are committed; returns the count.
async fn progress_beyond(scenario: &Scenario, than: usize) -> Result<usize> {
    tk::eventually(tk::DEADLINE * 2, || async move {
        committed_reports(scenario).await.ok().filter(|n| *n > than)
    })
    .await
}

#[tokio::test]
async fn each_assessment_yields_exactly_one_report_across_a_crash_and_rebalances() -> Result<()> {
    let scenario = Arc::new(Scenario::new().await?);
    let stop = Arc::new(AtomicBool::new(false));
    let produced = Arc::new(Mutex::new(Produced::default()));
    let input = stream_events(scenario.clone(), stop.clone(), produced.clone());

    let txn_a = tk::unique("report-ingest-a");
    let mut a = scenario.start(&txn_a).await?;
    let seen = progress_beyond(&scenario, 0).await?;
    // A second replica: the group rebalances while events keep coming.
    let mut b = scenario.start(&tk::unique("report-ingest-b")).await?;
    let seen = progress_beyond(&scenario, seen).await?;

    // Crash mid-stream: no drain, an open transaction left behind.
    let produced_at_kill = produced.lock().unwrap_or_else(|e| e.into_inner()).total;
    a.process.kill().await?;
    let mut a = scenario.start(&txn_a).await?;
    progress_beyond(&scenario, seen).await?;
    stop.store(true, Ordering::SeqCst);
    input.await??;

    let (expected, ends, total) = {
        let p = produced.lock().unwrap_or_else(|e| e.into_inner());
        (p.assessments.clone(), p.ends.clone(), p.total)
    };
    ensure!(
        total > produced_at_kill,
        "the input stream ended before the crash: not mid-stream"
    );
    // Every event processed and its offset committed: nothing more can come.
    tk::eventually(tk::DEADLINE * 2, || {
        let (scenario, ends) = (scenario.clone(), ends.clone());
        async move {
            scenario
                .committed_up_to(&ends)
                .await
                .ok()
                .filter(|done| *done)
        }
    })
    .await?;

    let reports = scenario.reports().await?;
    let mut by_id: BTreeMap<String, usize> = BTreeMap::new();
    for (key, report) in &reports {
        ensure!(
            key == &report.organization_id,
            "key {key} is not the organisation of {}",
            report.report_id
        );
        *by_id.entry(report.report_id.clone()).or_default() += 1;
    }
    let want: HashSet<String> = expected
        .iter()
        .map(|e| derived_report_id(e).to_string())
        .collect();
    let missing: Vec<&String> = want.iter().filter(|id| !by_id.contains_key(*id)).collect();
    let twice: Vec<(&String, &usize)> = by_id.iter().filter(|(_, n)| **n > 1).collect();
    let foreign: Vec<&String> = by_id.keys().filter(|id| !want.contains(*id)).collect();
    ensure!(
        missing.is_empty(),
        "{} of {} reports missing, e.g. {:?}",
        missing.len(),
        want.len(),
        &missing[..missing.len().min(3)]
    );
    ensure!(
        twice.is_empty(),
        "{} reports committed more than once, e.g. {:?}",
        twice.len(),
        &twice[..twice.len().min(3)]
    );
    ensure!(
        foreign.is_empty(),
        "reports no assessment asked for: {foreign:?}"
    );
    ensure!(
        reports.len() == want.len(),
        "{} reports for {} assessments",
        reports.len(),
        want.len()
    );

    let audits = scenario.audit_events().await?;
    let mut audited: HashMap<&str, usize> = HashMap::new();
    for e in &audits {
        ensure!(
            e.action.starts_with("DERIVE_"),
            "unexpected audit action {}",
            e.action
        );
        *audited.entry(e.resource.as_str()).or_default() += 1;
    }
    ensure!(
        audits.len() == want.len() && want.iter().all(|id| audited.get(id.as_str()) == Some(&1)),
        "{} audit events for {} reports",
        audits.len(),
        want.len()
    );

    for replica in [&mut a, &mut b] {
        let status = replica.process.terminate(tk::DEADLINE).await?;
        ensure!(status.success(), "exit {status}\n{}", replica.process.log());
    }
    Ok(())
}
