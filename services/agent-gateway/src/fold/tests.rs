//! The fold's state rules without a broker: replays skipped, aborts undone,
//! each replica judging only the partitions it owns.

use super::*;
use crate::health::HealthStatus;

const TOPIC: &str = "fold-unit-agent-events";

fn fold() -> HealthFold {
    let codec = Codec::new(&dora_schema::RegistrySettings {
        url: "http://127.0.0.1:9".into(),
        ..Default::default()
    })
    .unwrap();
    HealthFold::new(
        codec,
        TOPIC,
        "fold-unit-agent-health",
        AgentDirectory::default(),
        Liveness {
            allowed_silence_ms: 30_000,
            retire_after_ms: Some(600_000),
            caught_up_margin_ms: 2_000,
        },
    )
}

fn event(agent: &str, event_type: &str, timestamp: i64) -> AgentEvent {
    use dora_schema::EventType as T;
    let event_type = match event_type {
        "HEARTBEAT" => T::Heartbeat,
        "TASK_COMPLETED" => T::TaskCompleted,
        other => panic!("{other}"),
    };
    AgentEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        agent_id: agent.into(),
        timestamp,
        event_type,
        agent_type: "GAP_ANALYZER".into(),
        status: dora_schema::AgentStatus::Healthy,
        version: "1".into(),
        message: None,
        metadata: serde_json::json!({}),
        task_id: Some("t".into()),
    }
}

fn at(partition: i32, offset: i64) -> EventPosition {
    EventPosition { partition, offset }
}

fn lag(partition: i32, lag: i64) {
    dora_kafka::metrics::CONSUMER_LAG
        .with_label_values(&[TOPIC, &partition.to_string()])
        .set(lag);
}

#[tokio::test]
async fn an_event_at_or_before_the_applied_position_is_not_folded_again() {
    let f = fold();
    f.assigned(&[(TOPIC.into(), 0)]).await;
    let done = event("a", "TASK_COMPLETED", 1_000);
    assert_eq!(f.fold(&done, at(0, 5), Some(1_000)).unwrap().tasks_completed, 1);
    f.committed().await;
    assert!(f.fold(&done, at(0, 5), Some(1_000)).is_none(), "the same offset again");
    assert!(f.fold(&done, at(0, 4), Some(1_000)).is_none(), "an earlier offset");
    assert_eq!(f.fold(&done, at(0, 6), Some(1_000)).unwrap().tasks_completed, 2);
    // A new owner seeded from the view recognises it too.
    f.committed().await;
    let g = fold();
    g.directory.merge(f.directory.get("a").unwrap());
    g.assigned(&[(TOPIC.into(), 0)]).await;
    assert!(g.fold(&done, at(0, 6), Some(1_000)).is_none());
    assert_eq!(g.fold(&done, at(0, 7), Some(1_000)).unwrap().tasks_completed, 3);
}

#[tokio::test]
async fn an_aborted_transaction_is_undone_and_committed_ones_reach_the_directory() {
    let f = fold();
    f.assigned(&[(TOPIC.into(), 1)]).await;
    let done = event("b", "TASK_COMPLETED", 1_000);
    f.fold(&done, at(1, 0), Some(1_000)).unwrap();
    f.committed().await;
    assert_eq!(f.directory.get("b").unwrap().tasks_completed, 1);
    f.fold(&done, at(1, 1), Some(1_001)).unwrap();
    f.fold(&done, at(1, 2), Some(1_002)).unwrap();
    f.aborted(&[(TOPIC.into(), 1)]).await;
    assert_eq!(f.directory.get("b").unwrap().tasks_completed, 1, "nothing shown before commit");
    // The loop hands the same records again: counted once each.
    assert_eq!(f.fold(&done, at(1, 1), Some(1_001)).unwrap().tasks_completed, 2);
    assert_eq!(f.fold(&done, at(1, 2), Some(1_002)).unwrap().tasks_completed, 3);
    f.committed().await;
    assert_eq!(f.directory.get("b").unwrap().tasks_completed, 3);
}

#[tokio::test]
async fn a_replica_judges_only_the_agents_of_partitions_it_owns() {
    let f = fold();
    let now = 100_000;
    let mine = event("mine", "HEARTBEAT", 0);
    // Another replica folded "theirs" on partition 8; this one owns 7.
    f.assigned(&[(TOPIC.into(), 7)]).await;
    f.fold(&mine, at(7, 0), Some(0)).unwrap();
    f.committed().await;
    let mut theirs = f.directory.get("mine").unwrap();
    theirs.agent_id = "theirs".into();
    theirs.applied = Some(at(8, 0));
    f.directory.merge(theirs);
    lag(7, 0);
    lag(8, 0);
    let (unhealthy, retired) = f.judge(now);
    assert!(retired.is_empty());
    let ids: Vec<&str> = unhealthy.iter().map(|s| s.agent_id.as_str()).collect();
    assert_eq!(ids, ["mine"]);
    assert_eq!(unhealthy[0].status, HealthStatus::Unhealthy);
    f.committed().await;
    assert!(f.judge(now + 1).0.is_empty(), "one UNHEALTHY record, not one per tick");
}

#[tokio::test]
async fn a_partition_behind_is_judged_by_its_last_processed_record_not_the_wall_clock() {
    let f = fold();
    f.assigned(&[(TOPIC.into(), 3)]).await;
    f.fold(&event("busy", "HEARTBEAT", 0), at(3, 0), Some(0)).unwrap();
    f.fold(&event("other", "HEARTBEAT", 20_000), at(3, 1), Some(20_000)).unwrap();
    f.committed().await;
    // 60 s later the partition is still 500 records behind: its clock is
    // 20 s, so "busy" (last heard at 0) is not silent yet.
    lag(3, 500);
    assert!(f.judge(60_000).0.is_empty());
    // Processed to the end: judged on the wall clock.
    lag(3, 0);
    let ids: Vec<String> = f.judge(60_000).0.into_iter().map(|s| s.agent_id).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
}

#[tokio::test]
async fn an_agent_silent_past_the_limit_is_retired_and_its_next_event_starts_afresh() {
    let f = fold();
    f.assigned(&[(TOPIC.into(), 5)]).await;
    let done = event("old", "TASK_COMPLETED", 0);
    f.fold(&done, at(5, 0), Some(0)).unwrap();
    f.committed().await;
    lag(5, 0);
    let (_, retired) = f.judge(700_000);
    assert_eq!(retired, ["old"]);
    f.committed().await;
    assert!(f.directory.get("old").is_none());
    let again = f.fold(&event("old", "TASK_COMPLETED", 800_000), at(5, 1), Some(800_000));
    assert_eq!(again.unwrap().tasks_completed, 1);
}

#[tokio::test]
async fn a_batch_writes_one_record_per_changed_agent_with_its_last_state() {
    let f = fold();
    let done = event("worker", "TASK_COMPLETED", 1_000);
    for offset in 0..3 {
        f.fold(&done, at(2, offset), Some(1_000)).unwrap();
    }
    f.fold(&event("other", "HEARTBEAT", 1_000), at(4, 9), Some(1_000)).unwrap();
    let states = f.changed_states();
    let seen: Vec<(&str, u64, Option<EventPosition>)> = states
        .iter()
        .map(|s| (s.agent_id.as_str(), s.tasks_completed, s.applied))
        .collect();
    assert_eq!(
        seen,
        vec![("worker", 3, Some(at(2, 2))), ("other", 0, Some(at(4, 9)))],
        "one record per agent, its last state and position"
    );
    assert!(f.changed_states().is_empty(), "each change is written once");
    // An aborted batch writes nothing of what it changed; its redo does.
    f.fold(&done, at(2, 3), Some(1_001)).unwrap();
    f.aborted(&[]).await;
    assert!(f.changed_states().is_empty(), "an aborted change is not written");
    f.fold(&done, at(2, 3), Some(1_001)).unwrap();
    f.revoked(&[(TOPIC.to_string(), 2)]).await;
    assert!(f.changed_states().is_empty(), "a revoked partition's changes are not written");
}
