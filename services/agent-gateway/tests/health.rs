//! Agent health end to end, with the gateway as a real process on the real
//! stack: heartbeat, task completion and error drive GetAgent through HEALTHY,
//! tasks=1 and DEGRADED and WatchAgents streams those changes in order; an
//! agent that stops heartbeating turns UNHEALTHY; a seed-shaped JSON heartbeat
//! written straight to the topic counts like one sent through the gateway;
//! an agent silent past the retirement limit is retired with a tombstone; a
//! replica folds nothing before its view read a long agent-health backlog to
//! its end.

mod common;

use std::time::Instant;

use anyhow::{bail, Result};
use common::{await_agent, heartbeat, Scenario};
use dora_proto::agent::v1 as pb;
use dora_testkit as tk;

const HEALTHY: i32 = pb::AgentStatus::Healthy as i32;
const DEGRADED: i32 = pb::AgentStatus::Degraded as i32;
const UNHEALTHY: i32 = pb::AgentStatus::Unhealthy as i32;

#[tokio::test]
async fn heartbeat_task_and_error_drive_health_and_watchers_see_them_in_order() -> Result<()> {
    let scenario = Scenario::new().await?;
    let gw = scenario.start().await?;
    let agent = tk::unique("agent");
    let mut client = scenario.client(&gw, &agent).await?;

    // A watcher (any authenticated caller) on this agent's type.
    let mut watcher = scenario.reader(&gw).await?;
    let mut watch = watcher
        .watch_agents(pb::WatchAgentsRequest {
            status: 0,
            agent_type: "GAP_ANALYZER".into(),
        })
        .await?
        .into_inner();

    let hb = client.heartbeat(heartbeat(&agent)).await?.into_inner();
    assert!(
        uuid::Uuid::parse_str(&hb.event_id).is_ok(),
        "the gateway fills eventId"
    );
    let h = await_agent(&mut client, &agent, "HEALTHY", |a| a.status == HEALTHY).await?;
    assert_eq!(h.tasks_completed, 0);
    assert!(
        h.last_heartbeat >= hb.timestamp,
        "last heartbeat {} < event {}",
        h.last_heartbeat,
        hb.timestamp
    );
    let usage: serde_json::Value = serde_json::from_str(&h.resource_usage_json)?;
    assert_eq!(
        usage,
        serde_json::json!({"cpu_percent": 42.5, "memory_mb": 512.0})
    );

    client
        .complete_task(pb::CompleteTaskRequest {
            agent_id: agent.clone(),
            agent_type: "GAP_ANALYZER".into(),
            task_id: "task-1".into(),
            result_json: r#"{"gap_assessment":{"gaps_found":3}}"#.into(),
        })
        .await?;
    let h = await_agent(&mut client, &agent, "tasks=1", |a| a.tasks_completed == 1).await?;
    assert_eq!(h.status, HEALTHY);
    assert_eq!(h.last_task_id.as_deref(), Some("task-1"));

    client
        .report_error(pb::ReportErrorRequest {
            agent_id: agent.clone(),
            agent_type: "GAP_ANALYZER".into(),
            message: "model endpoint timed out".into(),
            details_json: r#"{"retryable":true}"#.into(),
            task_id: None,
        })
        .await?;
    let h = await_agent(&mut client, &agent, "DEGRADED", |a| a.status == DEGRADED).await?;
    assert_eq!(h.last_error.as_deref(), Some("model endpoint timed out"));
    assert_eq!(h.tasks_completed, 1, "an error keeps the task count");

    // The watcher saw HEALTHY (tasks 0), then tasks=1, then DEGRADED, in that order.
    let mut seen: Vec<pb::AgentHealth> = Vec::new();
    let deadline = Instant::now() + tk::DEADLINE;
    while !seen.iter().any(|a| a.status == DEGRADED) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, watch.message()).await {
            Ok(Ok(Some(a))) if a.agent_id == agent => seen.push(a),
            Ok(Ok(Some(_))) => {}
            other => bail!("watch ended or timed out before DEGRADED: {other:?}; seen {seen:?}"),
        }
    }
    let first_healthy = seen
        .iter()
        .position(|a| a.status == HEALTHY && a.tasks_completed == 0);
    let first_task = seen
        .iter()
        .position(|a| a.tasks_completed == 1 && a.status == HEALTHY);
    let first_degraded = seen.iter().position(|a| a.status == DEGRADED);
    assert!(
        matches!((first_healthy, first_task, first_degraded), (Some(a), Some(b), Some(c)) if a < b && b < c),
        "watch order: {seen:?}"
    );
    let updated: Vec<i64> = seen.iter().map(|a| a.updated_at).collect();
    assert!(
        updated.windows(2).all(|w| w[0] <= w[1]),
        "changes out of order: {updated:?}"
    );

    // The three events are on the topic: Confluent-framed Avro, key agentId,
    // in order, with the ids and timestamps the gateway answered with.
    assert_eq!(scenario.events().await?, 3);
    let records = common::read_records(&scenario.events_topic, 3).await?;
    let codec = common::codec()?;
    let mut events = Vec::new();
    for r in &records {
        assert_eq!(r.key_str(), Some(agent.as_str()), "key is the agent id");
        assert_eq!(
            r.payload().first(),
            Some(&dora_schema::MAGIC_BYTE),
            "Confluent-framed Avro"
        );
        events.push(
            codec
                .decode::<dora_schema::AgentEvent>(&scenario.events_topic, r.payload())
                .await?,
        );
    }
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["HEARTBEAT", "TASK_COMPLETED", "ERROR"]);
    assert_eq!(events[0].event_id, hb.event_id);
    assert_eq!(events[0].timestamp, hb.timestamp);
    assert!(events
        .iter()
        .all(|e| e.version == "1.0.0" && e.agent_id == agent));
    assert_eq!(
        events[0].metadata,
        serde_json::json!({"resource_usage": {"cpu_percent": 42.5, "memory_mb": 512.0}})
    );
    assert_eq!(events[1].task_id.as_deref(), Some("task-1"));
    assert_eq!(
        events[1].metadata,
        serde_json::json!({"result_summary": {"gap_assessment": {"gaps_found": 3}}})
    );
    assert_eq!(
        events[2].message.as_deref(),
        Some("model endpoint timed out")
    );
    Ok(())
}

#[tokio::test]
async fn an_agent_that_stops_heartbeating_turns_unhealthy() -> Result<()> {
    let mut scenario = Scenario::new().await?;
    // Heartbeats expected every second; UNHEALTHY after 2 missed intervals.
    scenario.env = vec![
        ("DORA_GATEWAY__HEARTBEAT_INTERVAL_MS", "1000".into()),
        ("DORA_GATEWAY__UNHEALTHY_AFTER_INTERVALS", "2".into()),
        ("DORA_GATEWAY__LIVENESS_CHECK_MS", "100".into()),
    ];
    let gw = scenario.start().await?;
    let agent = tk::unique("agent");
    let mut client = scenario.client(&gw, &agent).await?;

    let hb = client.heartbeat(heartbeat(&agent)).await?.into_inner();
    let healthy = await_agent(&mut client, &agent, "HEALTHY", |a| a.status == HEALTHY).await?;
    let unhealthy =
        await_agent(&mut client, &agent, "UNHEALTHY", |a| a.status == UNHEALTHY).await?;
    assert_eq!(
        unhealthy.last_heartbeat, healthy.last_heartbeat,
        "no heartbeat came in between"
    );
    assert!(
        unhealthy.updated_at - hb.timestamp > 2_000,
        "turned UNHEALTHY after {} ms, before 2 x 1000 ms of silence",
        unhealthy.updated_at - hb.timestamp
    );

    // A heartbeat brings it back.
    client.heartbeat(heartbeat(&agent)).await?;
    await_agent(&mut client, &agent, "HEALTHY again", |a| {
        a.status == HEALTHY
    })
    .await?;
    Ok(())
}

/// Item 5: an agent silent past `retire_after_ms` is retired — a tombstone
/// on agent-health, and GetAgent no longer knows it; a later heartbeat
/// brings it back afresh.
#[tokio::test]
async fn an_agent_silent_past_the_retirement_limit_is_retired_with_a_tombstone() -> Result<()> {
    let mut scenario = Scenario::new().await?;
    scenario.env = vec![
        ("DORA_GATEWAY__HEARTBEAT_INTERVAL_MS", "500".into()),
        ("DORA_GATEWAY__UNHEALTHY_AFTER_INTERVALS", "2".into()),
        ("DORA_GATEWAY__RETIRE_AFTER_MS", "3000".into()),
        ("DORA_GATEWAY__LIVENESS_CHECK_MS", "100".into()),
    ];
    let gw = scenario.start().await?;
    let agent = tk::unique("agent");
    let mut client = scenario.client(&gw, &agent).await?;
    client.heartbeat(heartbeat(&agent)).await?;
    await_agent(&mut client, &agent, "UNHEALTHY", |a| a.status == UNHEALTHY).await?;
    tk::eventually(tk::DEADLINE, || {
        let mut c = client.clone();
        let agent = agent.clone();
        async move {
            let r = c.get_agent(pb::GetAgentRequest { agent_id: agent }).await;
            matches!(r, Err(s) if s.code() == tonic::Code::NotFound).then_some(())
        }
    })
    .await?;
    let records = scenario.health_records().await?;
    let mine: Vec<bool> = records
        .iter()
        .filter(|(k, _)| *k == agent)
        .map(|(_, v)| v.is_none())
        .collect();
    assert_eq!(mine.last(), Some(&true), "the agent's last record is a tombstone: {mine:?}");
    assert_eq!(mine.iter().filter(|t| **t).count(), 1, "one tombstone");
    client.heartbeat(heartbeat(&agent)).await?;
    await_agent(&mut client, &agent, "HEALTHY again", |a| a.status == HEALTHY).await?;
    Ok(())
}

#[tokio::test]
async fn a_seed_json_heartbeat_written_straight_to_the_topic_shows_in_get_agent() -> Result<()> {
    let scenario = Scenario::new().await?;
    let gw = scenario.start().await?;
    let agent = tk::unique("python-agent");

    // Exactly what the seed's AgentEventProducer.send_heartbeat builds and
    // kafka-python's json.dumps serialises (", " and ": " separators, None -> null).
    let now = chrono::Utc::now().timestamp_millis();
    let value = format!(
        "{{\"eventId\": \"{}\", \"agentId\": \"{agent}\", \"timestamp\": {now}, \"eventType\": \"HEARTBEAT\", \
         \"agentType\": \"RISK_ASSESSOR\", \"status\": \"HEALTHY\", \"version\": \"1.0.0\", \"message\": null, \
         \"metadata\": {{\"resource_usage\": {{\"cpu\": 12.5, \"memory\": 1024}}}}, \"taskId\": null}}",
        uuid::Uuid::new_v4()
    );
    let producer = tk::producer(&tk::kafka())?;
    tk::produce(
        &producer,
        &scenario.events_topic,
        Some(agent.as_bytes()),
        value.as_bytes(),
        &[],
    )
    .await?;

    let mut client = scenario.reader(&gw).await?;
    let h = await_agent(&mut client, &agent, "HEALTHY from legacy JSON", |a| {
        a.status == HEALTHY
    })
    .await?;
    assert_eq!(h.agent_type, "RISK_ASSESSOR");
    assert_eq!(h.last_heartbeat, now);
    let usage: serde_json::Value = serde_json::from_str(&h.resource_usage_json)?;
    assert_eq!(usage, serde_json::json!({"cpu": 12.5, "memory": 1024}));

    // Nothing was dead-lettered.
    assert_eq!(
        tk::record_count(&tk::kafka(), &format!("{}-dlq", scenario.events_topic)).await?,
        0
    );
    Ok(())
}

/// Item 3: a replica folds nothing onto a view that has not read
/// agent-health to its end. A long backlog ends with an agent's record of
/// 60 completed tasks; one more TASK_COMPLETED, sent as soon as the replica
/// listens, must give 61 — never 1 (a fold onto the partly read view).
#[tokio::test]
async fn a_replica_folds_only_onto_a_view_read_to_its_end() -> Result<()> {
    use futures::StreamExt;
    let scenario = Scenario::new().await?;
    let codec = common::codec()?;
    let producer = tk::producer(&tk::kafka())?;
    let old = chrono::Utc::now().timestamp_millis() - 3_600_000;
    let veteran = tk::unique("veteran");
    let state = |agent: String, n: i64, tasks: u64| agent_gateway::health::AgentState {
        agent_id: agent,
        agent_type: "GAP_ANALYZER".into(),
        status: agent_gateway::health::HealthStatus::Healthy,
        last_seen: old + n,
        last_heartbeat: Some(old + n),
        resource_usage: None,
        tasks_completed: tasks,
        last_task_id: None,
        last_error: None,
        updated_at: old + n,
        applied: None,
    };
    let mut payloads = Vec::new();
    for n in 0..60_000i64 {
        let s = if n % 1_000 == 999 {
            state(veteran.clone(), n, (n / 1_000 + 1) as u64)
        } else {
            state(format!("old-agent-{}", n % 2_000), n, n as u64)
        };
        let value = agent_gateway::wire::agent_health(&s);
        let bytes = codec.encode(&scenario.health_topic, &value).await?;
        payloads.push((value.agent_id, bytes));
    }
    let sent: Vec<Result<(i32, i64)>> = futures::stream::iter(payloads.iter())
        .map(|(key, value)| {
            tk::produce(&producer, &scenario.health_topic, Some(key.as_bytes()), value, &[])
        })
        .buffer_unordered(2_000)
        .collect()
        .await;
    sent.into_iter().collect::<Result<Vec<_>>>()?;

    let gw = scenario.start().await?;
    let mut client = scenario.client(&gw, &veteran).await?;
    client
        .publish_event(pb::PublishEventRequest {
            agent_id: veteran.clone(),
            event_type: pb::EventType::TaskCompleted as i32,
            agent_type: "GAP_ANALYZER".into(),
            status: pb::AgentStatus::Healthy as i32,
            task_id: Some("task-61".into()),
            metadata_json: "{}".into(),
            ..Default::default()
        })
        .await?;
    let h = await_agent(&mut client, &veteran, "61 tasks", |a| a.tasks_completed >= 61).await?;
    assert_eq!(h.tasks_completed, 61);
    let written: Vec<i64> = scenario
        .health_records()
        .await?
        .into_iter()
        .filter(|(agent, v)| *agent == veteran && v.as_ref().is_some_and(|v| v.last_event_offset.is_some()))
        .map(|(_, v)| v.map_or(0, |v| v.tasks_completed))
        .collect();
    // The fold's record, and perhaps an UNHEALTHY one (its last heartbeat
    // is an hour old): each carries the 61 tasks.
    assert!(
        !written.is_empty() && written.iter().all(|t| *t == 61),
        "the gateway's records for the agent: {written:?}"
    );
    Ok(())
}
