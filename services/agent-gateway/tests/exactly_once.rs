//! Item 3, the health fold exactly once against the real stack: the
//! processor's agent-health records and its agent-events offsets commit in
//! one Kafka transaction, and a partition is folded only on a view read to
//! its end. A processor SIGKILLed mid-stream and restarted, or a partition
//! moved to a second replica mid-stream, still counts every TASK_COMPLETED
//! exactly once, and no agent's count ever goes back or past the truth.

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
    tk::eventually(Duration::from_secs(90), || async {
        (tasks_done(scenario, gw, agents).await.ok()? == total).then_some(())
    })
    .await
    .with_context(|| format!("{total} tasks not shown; log:\n{}", gw.process.log()))?;
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
    tk::eventually(tk::DEADLINE, || async {
        let (_, text) = b.process.admin_get("/metrics").await.ok()?;
        let topic = scenario.events_topic.as_str();
        tk::metric_value(&text, "kafka_messages_processed_total", &[("topic", topic)])
            .filter(|n| *n > 0.0)
    })
        .await
        .context("the second replica never processed an event: no partition moved")?;
    assert_exact(&scenario, &a, &agents, 2 * half as i64).await?;
    assert_exact(&scenario, &b, &agents, 2 * half as i64).await
}
