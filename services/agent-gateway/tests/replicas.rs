//! Two gateway replicas on the same topics and group: state written through
//! one is served by the other, and a restarted replica serves the same state
//! (every replica reads the compacted agent-health topic whole).

mod common;

use std::time::Duration;

use anyhow::Result;
use common::{await_agent, heartbeat, Scenario};
use dora_proto::agent::v1 as pb;
use dora_testkit as tk;

#[tokio::test]
async fn any_replica_answers_for_any_agent_and_state_survives_a_restart() -> Result<()> {
    let scenario = Scenario::new().await?;
    let a = scenario.start().await?;
    let mut b = scenario.start().await?;

    // Several agents, so their events land on partitions of both replicas' processors.
    let agents: Vec<String> = (0..6).map(|_| tk::unique("agent")).collect();
    for agent in &agents {
        let mut via_a = scenario.client(&a, agent).await?;
        via_a.heartbeat(heartbeat(agent)).await?;
        via_a
            .complete_task(pb::CompleteTaskRequest {
                agent_id: agent.clone(),
                agent_type: "GAP_ANALYZER".into(),
                task_id: format!("{agent}-t1"),
                result_json: "{}".into(),
            })
            .await?;
    }

    let mut via_b = scenario.reader(&b).await?;
    for agent in &agents {
        let h = await_agent(&mut via_b, agent, "tasks=1 via replica B", |h| {
            h.tasks_completed == 1
        })
        .await?;
        assert_eq!(h.status, pb::AgentStatus::Healthy as i32);
        assert_eq!(
            h.last_task_id.as_deref(),
            Some(format!("{agent}-t1").as_str())
        );
    }
    let listed = via_b
        .list_agents(pb::ListAgentsRequest {
            status: 0,
            agent_type: String::new(),
        })
        .await?
        .into_inner();
    for agent in &agents {
        assert!(
            listed.agents.iter().any(|h| &h.agent_id == agent),
            "{agent} missing from ListAgents on B"
        );
    }

    // Restart B: the new process rebuilds the same state from agent-health.
    let exit = b.process.terminate(Duration::from_secs(30)).await?;
    assert!(exit.success(), "replica B exit {exit}\n{}", b.process.log());
    b = scenario.start().await?;
    let mut via_new_b = scenario.reader(&b).await?;
    for agent in &agents {
        let h = via_new_b
            .get_agent(pb::GetAgentRequest {
                agent_id: agent.clone(),
            })
            .await?
            .into_inner();
        assert_eq!(h.tasks_completed, 1, "{agent} after restart: {h:?}");
        assert_eq!(
            h.status,
            pb::AgentStatus::Healthy as i32,
            "{agent} after restart: {h:?}"
        );
    }
    Ok(())
}
