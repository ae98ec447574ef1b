//! Two gateway replicas on the same topics and group: state written through
//! one is served by the other, and a restarted replica serves the same state
//! (every replica reads the compacted agent-health topic whole); the events
//! topic's partitions are shared by both replicas' processors, and handed
//! over to the other when one stops; silent agents are judged once, by the
//! owner of their partition, and a killed replica's live agents are not
//! declared UNHEALTHY by the survivor.

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

/// Items 2 and 5 of issue 9: liveness is judged per partition by the replica
/// that processes it, and written through the processor's transactions.
/// With two replicas, each silent agent gets exactly one UNHEALTHY record;
/// when one replica is SIGKILLed, the survivor does not declare the dead
/// one's agents UNHEALTHY while they keep heartbeating — not before the
/// group hands it their partitions, and not after.
#[tokio::test]
async fn liveness_is_judged_once_per_agent_by_its_partitions_owner_and_survives_a_killed_replica(
) -> Result<()> {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};
    const UNHEALTHY: i32 = pb::AgentStatus::Unhealthy as i32;

    let mut scenario = Scenario::new().await?;
    scenario.short_transactions()?;
    scenario.env.extend([
        ("DORA_GATEWAY__HEARTBEAT_INTERVAL_MS", "1000".to_string()),
        ("DORA_GATEWAY__UNHEALTHY_AFTER_INTERVALS", "3".to_string()),
        ("DORA_GATEWAY__LIVENESS_CHECK_MS", "200".to_string()),
        ("DORA_CONSUMER__SESSION_TIMEOUT_MS", "6000".to_string()),
    ]);
    let mut a = scenario.start().await?;
    let b = scenario.start().await?;

    // Lively and quiet agents, each set on every partition; all write through B.
    let (mut lively, mut quiet) = (Vec::new(), Vec::new());
    let (mut lively_parts, mut quiet_parts) = (HashSet::new(), HashSet::new());
    let mut clients = Vec::new();
    while lively_parts.len() < 3 || quiet_parts.len() < 3 {
        anyhow::ensure!(clients.len() < 200, "agents never covered 3 partitions");
        let agent = tk::unique("agent");
        let mut client = scenario.client(&b, &agent).await?;
        let p = client.heartbeat(heartbeat(&agent)).await?.into_inner().partition;
        if lively_parts.insert(p) || quiet_parts.contains(&p) {
            lively.push(agent.clone());
        } else {
            quiet_parts.insert(p);
            quiet.push(agent.clone());
        }
        clients.push((agent, client));
    }
    let silenced: Arc<Mutex<HashSet<String>>> = Arc::default();
    let heartbeats = {
        let silenced = silenced.clone();
        tokio::spawn(async move {
            loop {
                for (agent, client) in clients.iter_mut() {
                    if !silenced.lock().unwrap().contains(agent) {
                        let _ = client.heartbeat(heartbeat(agent)).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    let topic = scenario.events_topic.clone();
    tk::eventually(tk::DEADLINE, || async {
        let (pa, pb) = (processed(&a, &topic).await.ok()?, processed(&b, &topic).await.ok()?);
        (pa > 0.0 && pb > 0.0).then_some(())
    })
    .await
    .map_err(|e| e.context("both replicas' processors never processed events"))?;

    // Both alive: the quiet agents go silent and turn UNHEALTHY, once each.
    silenced.lock().unwrap().extend(quiet.iter().cloned());
    for gw in [&a, &b] {
        let mut reader = scenario.reader(gw).await?;
        for agent in &quiet {
            await_agent(&mut reader, agent, "UNHEALTHY", |h| h.status == UNHEALTHY).await?;
        }
    }
    // Several liveness periods for a second verdict to show up, if any.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let unhealthy_records = |records: &[(String, Option<dora_schema::AgentHealth>)], agent: &str| {
        records
            .iter()
            .filter(|(k, v)| {
                k == agent
                    && v.as_ref()
                        .is_some_and(|v| v.status == dora_schema::AgentStatus::Unhealthy)
            })
            .count()
    };
    let records = scenario.health_records().await?;
    for agent in &quiet {
        assert_eq!(unhealthy_records(&records, agent), 1, "UNHEALTHY records of {agent}");
    }

    // A is killed; the lively agents keep heartbeating (through B). Wait
    // until B shows a heartbeat sent after A's session expired for each of
    // them: B took over A's partitions and folded their backlog.
    a.process.kill().await?;
    let killed_at = chrono::Utc::now().timestamp_millis();
    let mut via_b = scenario.reader(&b).await?;
    for agent in &lively {
        common::await_agent_within(&mut via_b, agent, "a heartbeat after the takeover", Duration::from_secs(90), |h| {
            h.last_heartbeat > killed_at + 6_000
        })
        .await?;
    }
    // One allowed silence more of heartbeats under B alone.
    tokio::time::sleep(Duration::from_secs(3)).await;
    heartbeats.abort();
    let records = scenario.health_records().await?;
    for agent in &lively {
        assert_eq!(unhealthy_records(&records, agent), 0, "{agent} heartbeat throughout, yet UNHEALTHY");
    }
    for agent in &quiet {
        assert_eq!(unhealthy_records(&records, agent), 1, "UNHEALTHY records of {agent} after the takeover");
    }
    Ok(())
}
