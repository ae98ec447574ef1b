//! Two gateway replicas on the same topics and group: state written through
//! one is served by the other, and a restarted replica serves the same state
//! (every replica reads the compacted agent-health topic whole); the events
//! topic's partitions are shared by both replicas' processors, and handed
//! over to the other when one stops.

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

    // Several agents (whether both processors take part is checked below).
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

/// Records of `topic` this replica's loops processed (its `/metrics`).
async fn processed(gw: &common::Gateway, topic: &str) -> Result<f64> {
    let (_, body) = gw.process.admin_get("/metrics").await?;
    Ok(
        tk::metric_value(&body, "kafka_messages_processed_total", &[("topic", topic)])
            .unwrap_or(0.0),
    )
}

#[tokio::test]
async fn the_event_partitions_are_shared_by_both_processors_and_handed_over_when_one_stops(
) -> Result<()> {
    let scenario = Scenario::new().await?;
    let mut a = scenario.start().await?;
    let b = scenario.start().await?;
    // Agents until their events cover every partition of the events topic.
    let mut agents: Vec<String> = Vec::new();
    let mut partitions = std::collections::HashSet::new();
    while partitions.len() < 3 {
        anyhow::ensure!(agents.len() < 200, "events never covered 3 partitions");
        let agent = tk::unique("agent");
        let ack = scenario
            .client(&a, &agent)
            .await?
            .heartbeat(heartbeat(&agent))
            .await?;
        partitions.insert(ack.into_inner().partition);
        agents.push(agent);
    }
    // Both processors take part: each processes events of its own partitions
    // (heartbeats keep coming until both did, however long the group takes to settle).
    let topic = scenario.events_topic.clone();
    tk::eventually(tk::DEADLINE, || {
        let (a, b, agents, scenario, topic) = (&a, &b, &agents, &scenario, &topic);
        async move {
            for agent in agents {
                let mut c = scenario.client(a, agent).await.ok()?;
                c.heartbeat(heartbeat(agent)).await.ok()?;
            }
            let (pa, pb) = (
                processed(a, topic).await.ok()?,
                processed(b, topic).await.ok()?,
            );
            (pa > 0.0 && pb > 0.0).then_some(())
        }
    })
    .await
    .map_err(|e| e.context("both replicas' processors never processed events"))?;

    // A stops: B's processor takes over A's partitions, and every agent's
    // next event is applied (by B, the only processor left).
    let exit = a.process.terminate(Duration::from_secs(30)).await?;
    assert!(exit.success(), "replica A exit {exit}\n{}", a.process.log());
    let before = processed(&b, &topic).await?;
    let mut via_b = scenario.reader(&b).await?;
    for agent in &agents {
        scenario
            .client(&b, agent)
            .await?
            .complete_task(pb::CompleteTaskRequest {
                agent_id: agent.clone(),
                agent_type: "GAP_ANALYZER".into(),
                task_id: format!("{agent}-after-handover"),
                result_json: "{}".into(),
            })
            .await?;
    }
    for agent in &agents {
        await_agent(
            &mut via_b,
            agent,
            "the task completed after the handover",
            |h| h.last_task_id.as_deref() == Some(format!("{agent}-after-handover").as_str()),
        )
        .await?;
    }
    let after = processed(&b, &topic).await?;
    assert!(
        after - before >= agents.len() as f64,
        "B processed {} events after A stopped; {} were sent",
        after - before,
        agents.len()
    );
    Ok(())
}
