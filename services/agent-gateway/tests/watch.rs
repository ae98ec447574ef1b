//! WatchAgents against the real gateway: a watcher of HEALTHY agents is told
//! when one of them becomes DEGRADED (the change that takes it out of the
//! filter), not only about agents that are HEALTHY.

mod common;

use std::time::Instant;

use anyhow::{bail, Result};
use common::{heartbeat, Scenario};
use dora_proto::agent::v1 as pb;
use dora_testkit as tk;

#[tokio::test]
async fn a_watcher_of_healthy_agents_learns_when_one_becomes_degraded() -> Result<()> {
    let scenario = Scenario::new().await?;
    let gw = scenario.start().await?;
    let agent = tk::unique("agent");
    let mut client = scenario.client(&gw, &agent).await?;
    let mut watch = scenario
        .reader(&gw)
        .await?
        .watch_agents(pb::WatchAgentsRequest {
            status: pb::AgentStatus::Healthy as i32,
            agent_type: String::new(),
        })
        .await?
        .into_inner();

    client.heartbeat(heartbeat(&agent)).await?;
    let mut seen: Vec<pb::AgentHealth> = Vec::new();
    let deadline = Instant::now() + tk::DEADLINE;
    let mut errored = false;
    while !seen
        .iter()
        .any(|h| h.status == pb::AgentStatus::Degraded as i32)
    {
        if !errored
            && seen
                .iter()
                .any(|h| h.status == pb::AgentStatus::Healthy as i32)
        {
            client
                .report_error(pb::ReportErrorRequest {
                    agent_id: agent.clone(),
                    agent_type: "GAP_ANALYZER".into(),
                    message: "disk full".into(),
                    details_json: "{}".into(),
                    task_id: None,
                })
                .await?;
            errored = true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, watch.message()).await {
            Ok(Ok(Some(h))) if h.agent_id == agent => seen.push(h),
            Ok(Ok(Some(_))) => {}
            other => {
                bail!("no DEGRADED for {agent} (errored: {errored}): {other:?}; seen {seen:?}")
            }
        }
    }
    let degraded = seen.last().expect("seen");
    assert_eq!(degraded.last_error.as_deref(), Some("disk full"));
    Ok(())
}
