//! The trust boundary of reports derived from agents, against the gateway as a
//! real process: a task completion whose result names an organisation
//! (`result_summary.organization_id`, what report-ingest turns into a report's
//! `organizationId`) is accepted only when the agent's token names that
//! organisation — by CompleteTask, PublishEvent and on a stream. Another
//! organisation or a token naming none -> PERMISSION_DENIED naming the field; a
//! non-string -> INVALID_ARGUMENT; nothing reaches agent-events. Completions
//! that name no organisation (the seed's plain ones) and other event types are
//! not concerned.

mod common;

use std::time::Duration;

use agent_gateway::auth;
use agent_gateway::intake::RESULT_ORGANIZATION_FIELD;
use anyhow::Result;
use common::Scenario;
use dora_proto::agent::v1 as pb;
use dora_testkit as tk;
use serde_json::{json, Value};
use tonic::Code;

fn complete(agent: &str, result: Value) -> pb::CompleteTaskRequest {
    pb::CompleteTaskRequest {
        agent_id: agent.into(),
        agent_type: "RISK_ASSESSOR".into(),
        task_id: tk::unique("task"),
        result_json: result.to_string(),
    }
}

fn publish(agent: &str, event_type: pb::EventType, result: Value) -> pb::PublishEventRequest {
    pb::PublishEventRequest {
        agent_id: agent.into(),
        event_type: event_type as i32,
        agent_type: "RISK_ASSESSOR".into(),
        status: pb::AgentStatus::Healthy as i32,
        message: None,
        metadata_json: json!({ "result_summary": result }).to_string(),
        task_id: Some(tk::unique("task")),
    }
}

fn assessment(org: &Value) -> Value {
    json!({"organization_id": org, "assessment": {"overall_score": 0.9, "risk_level": "CRITICAL"}})
}

#[tokio::test]
async fn an_agent_completes_tasks_only_for_the_organisations_its_token_names() -> Result<()> {
    let scenario = Scenario::new().await?;
    let gw = scenario.start().await?;
    let agent = tk::unique("agent");
    let (own, other) = (tk::unique("org-own"), tk::unique("org-other"));
    let token = auth::agent_token_for(
        &scenario.key,
        &agent,
        std::slice::from_ref(&own),
        Duration::from_secs(60),
    )?;
    let mut client = scenario.client_with(&gw, &token).await?;
    let no_orgs = auth::agent_token(&scenario.key, &agent, Duration::from_secs(60))?;
    let mut without_orgs = scenario.client_with(&gw, &no_orgs).await?;

    let denied = [
        client
            .complete_task(complete(&agent, assessment(&json!(other))))
            .await
            .unwrap_err(),
        client
            .publish_event(publish(
                &agent,
                pb::EventType::TaskCompleted,
                assessment(&json!(other)),
            ))
            .await
            .unwrap_err(),
        without_orgs
            .complete_task(complete(&agent, assessment(&json!(own))))
            .await
            .unwrap_err(),
    ];
    for err in &denied {
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
        assert!(
            err.message().contains(RESULT_ORGANIZATION_FIELD),
            "{err:?} does not name the field"
        );
    }
    let err = client
        .complete_task(complete(&agent, assessment(&json!(7))))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains(RESULT_ORGANIZATION_FIELD), "{err:?}");

    // On a stream the refusal is the event's ack; the stream goes on.
    let mut stream = client
        .stream_events(tokio_stream::iter(vec![
            publish(&agent, pb::EventType::TaskCompleted, assessment(&json!(other))),
            publish(&agent, pb::EventType::TaskCompleted, assessment(&json!(own))),
        ]))
        .await?
        .into_inner();
    let mut acks = Vec::new();
    while let Some(ack) = stream.message().await? {
        acks.push(ack);
    }
    assert_eq!(acks.len(), 2, "{acks:?}");
    assert_eq!(acks[0].error_code, Code::PermissionDenied as i32, "{acks:?}");
    assert!(acks[0].accepted.is_none() && acks[1].accepted.is_some(), "{acks:?}");
    assert_eq!(
        scenario.events().await?,
        1,
        "only the stream's own-organisation completion may reach agent-events"
    );

    // Its own organisation, a completion naming none (the seed's plain one)
    // and a non-completion mentioning another organisation all pass.
    client
        .complete_task(complete(&agent, assessment(&json!(own))))
        .await?;
    client
        .complete_task(complete(&agent, json!({"gaps_found": 3})))
        .await?;
    client
        .publish_event(publish(
            &agent,
            pb::EventType::TaskStarted,
            json!({"organization_id": other}),
        ))
        .await?;
    assert_eq!(scenario.events().await?, 4);
    Ok(())
}
