//! Item 3, the health fold exactly once against the real stack: the
//! processor's agent-health records and its agent-events offsets commit in
//! one Kafka transaction, and a partition is folded only on a view read to
//! its end. A processor SIGKILLed mid-stream and restarted, or a partition
//! moved to a second replica mid-stream (also while the new owner's view of
//! agent-health lags behind the old owner's last records), still counts every
//! TASK_COMPLETED exactly once, and no agent's count ever goes back or past
//! the truth.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use common::{Gateway, Scenario};
use dora_proto::agent::v1 as pb;
use dora_testkit as tk;

/// Sum of tasksCompleted over `agents`, as `gw` answers.
async fn tasks_done(scenario: &Scenario, gw: &Gateway, agents: &[String]) -> Result<i64> {
    let mut client = scenario.reader(gw).await?;
    let mut sum = 0;
    for agent in agents {
        match client
            .get_agent(pb::GetAgentRequest {
                agent_id: agent.clone(),
            })
            .await
        {
            Ok(r) => sum += r.into_inner().tasks_completed as i64,
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => return Err(s.into()),
        }
    }
    Ok(sum)
}

/// Waits until `gw` shows `count` tasks for every agent, then checks every
/// committed agent-health record: per agent the counts never decrease and
/// never exceed `count`, and the last one is `count`.
async fn assert_exact(scenario: &Scenario, gw: &Gateway, agents: &[String], count: i64) -> Result<()> {
    let total = count * agents.len() as i64;
    let shown = tk::eventually(Duration::from_secs(90), || async {
        (tasks_done(scenario, gw, agents).await.ok()? == total).then_some(())
    })
    .await;
    if shown.is_err() {
        let last = tasks_done(scenario, gw, agents).await;
        bail!("{total} tasks not shown (last answer: {last:?}); log:\n{}", gw.process.log());
    }
    let mut last: HashMap<String, i64> = HashMap::new();
    for (agent, value) in scenario.health_records().await? {
        let Some(v) = value else { continue };
        let before = last.get(&agent).copied().unwrap_or(0);
        if v.tasks_completed < before || v.tasks_completed > count {
            bail!("{agent}: a record with {} tasks after one with {before} (true count {count})", v.tasks_completed);
        }
        last.insert(agent, v.tasks_completed);
    }
    for agent in agents {
        assert_eq!(last.get(agent), Some(&count), "{agent}'s last record");
    }
    Ok(())
}

/// Waits until `gw` shows some but not all of `total` tasks.
async fn wait_mid_stream(scenario: &Scenario, gw: &Gateway, agents: &[String], total: i64) -> Result<i64> {
    let seen = tk::eventually(tk::DEADLINE, || async {
        let n = tasks_done(scenario, gw, agents).await.ok()?;
        (n > 0).then_some(n)
    })
    .await?;
    if seen >= total {
        bail!("all {total} tasks were folded before the test could interrupt the fold; raise the count");
    }
    Ok(seen)
}

#[tokio::test]
async fn a_processor_sigkilled_mid_stream_counts_every_task_exactly_once() -> Result<()> {
    let mut scenario = Scenario::new().await?;
    scenario.short_transactions()?;
    // The killed member leaves the group when its session expires (default 45 s).
    scenario
        .env
        .push(("DORA_CONSUMER__SESSION_TIMEOUT_MS", "6000".to_string()));
    let agents: Vec<String> = (0..6).map(|i| tk::unique(&format!("worker-{i}"))).collect();
    let count = 3_000;
    scenario.task_events(&agents, count).await?;
    let id = tk::unique("gateway-killed");
    let mut first = scenario.start_as(&id).await?;
    let seen = wait_mid_stream(&scenario, &first, &agents, count as i64 * 6).await?;
    first.process.kill().await?;
    eprintln!("killed after {seen} of {} tasks were shown", count * 6);
    let second = scenario.start_as(&id).await?;
    assert_exact(&scenario, &second, &agents, count as i64).await
}

#[tokio::test]
async fn partitions_moved_to_a_second_replica_mid_stream_count_every_task_exactly_once() -> Result<()> {
    let scenario = Scenario::new().await?;
    let agents: Vec<String> = (0..9).map(|i| tk::unique(&format!("mover-{i}"))).collect();
    let half = 1_500;
    scenario.task_events(&agents, half).await?;
    let a = scenario.start().await?;
    wait_mid_stream(&scenario, &a, &agents, half as i64 * 9).await?;
    // B joins: the group gives it some of A's partitions while A is folding.
    let b = scenario.start().await?;
    scenario.task_events(&agents, half).await?;
    tk::eventually(tk::DEADLINE, || async { (processed(&scenario, &b).await > 0.0).then_some(()) })
        .await
        .context("the second replica never processed an event: no partition moved")?;
    assert_exact(&scenario, &a, &agents, 2 * half as i64).await?;
    assert_exact(&scenario, &b, &agents, 2 * half as i64).await
}

/// `name{group}` of replica `gw`'s processor group, 0 when not yet exposed.
async fn group_metric(scenario: &Scenario, gw: &Gateway, name: &str, labels: &[(&str, &str)]) -> f64 {
    let Ok((_, text)) = gw.process.admin_get("/metrics").await else {
        return 0.0;
    };
    let mut all = vec![("group", scenario.group.as_str())];
    all.extend_from_slice(labels);
    tk::metric_value(&text, name, &all).unwrap_or(0.0)
}

/// Events of the scenario's topic that replica `gw` processed.
async fn processed(scenario: &Scenario, gw: &Gateway) -> f64 {
    let Ok((_, text)) = gw.process.admin_get("/metrics").await else {
        return 0.0;
    };
    let topic = scenario.events_topic.as_str();
    tk::metric_value(&text, "kafka_messages_processed_total", &[("topic", topic)]).unwrap_or(0.0)
}

/// The handover half of item 3 when the new owner's view lags: two replicas
/// fold, then a transaction left open on every agent-health partition (as a
/// previous owner's last one can be) holds B's read_committed view back while
/// A folds on; A stops and B takes its partitions over with a view that has
/// not read A's latest records. B must not fold onto the older states its
/// view holds (counts would go back, then end short); it starts on them once
/// its view has read agent-health to its end.
#[tokio::test]
async fn a_new_owner_whose_view_lags_at_the_takeover_counts_every_task_exactly_once() -> Result<()> {
    let scenario = Scenario::new().await?;
    let agents: Vec<String> = (0..9).map(|i| tk::unique(&format!("taker-{i}"))).collect();
    let (first, second) = (1_000, 2_000);
    scenario.task_events(&agents, first).await?;
    let holder = tk::OpenTransaction::prepare(&scenario.kafka).await?;
    let mut a = scenario.start().await?;
    let b = scenario.start().await?;
    let assigned = || async {
        group_metric(&scenario, &b, "kafka_consumer_rebalances_total", &[("kind", "assign")]).await
    };
    tk::eventually(tk::DEADLINE, || async { (assigned().await > 0.0).then_some(()) })
        .await
        .context("the second replica never joined the group")?;
    // From here on, neither view reads anything new: the records A writes
    // wait behind the open transaction.
    let held: Vec<tk::Outgoing> = (0..3)
        .map(|partition| tk::Outgoing {
            key: tk::unique("holder"),
            value: b"held back".to_vec(),
            timestamp_ms: None,
            partition: Some(partition),
        })
        .collect();
    holder.write(&scenario.health_topic, &held).await?;
    let before = processed(&scenario, &a).await;
    scenario.task_events(&agents, second).await?;
    tk::eventually(tk::DEADLINE, || async { (processed(&scenario, &a).await >= before + 500.0).then_some(()) })
        .await
        .context("the first replica folded nothing after the transaction opened")?;
    let joined = assigned().await;
    a.process.terminate(tk::DEADLINE).await?;
    tk::eventually(tk::DEADLINE, || async { (assigned().await > joined).then_some(()) })
        .await
        .context("the second replica never took the first one's partitions over")?;
    // B owns A's partitions while its view lags; the lag lasts a few seconds.
    tokio::time::sleep(Duration::from_secs(3)).await;
    holder.abort().await?;
    assert_exact(&scenario, &b, &agents, (first + second) as i64).await
}
