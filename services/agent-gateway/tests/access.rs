//! Who gets in and what they may read, against the gateway as a real process:
//! a token for another service, an unsigned (`alg: none`) token and an expired
//! token are UNAUTHENTICATED; a stream ends with UNAUTHENTICATED when its
//! token expires; an agent reads only its own health, and listing or watching
//! every agent needs the reader role.

mod common;

use std::time::Duration;

use agent_gateway::auth::{self, Grant};
use anyhow::Result;
use common::{await_agent, heartbeat, Scenario};
use dora_proto::agent::v1 as pb;
use dora_testkit as tk;
use tonic::Code;

/// The header of an unsigned JWT, `{"alg":"none","typ":"JWT"}`, base64url.
const ALG_NONE_HEADER: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";

#[tokio::test]
async fn tokens_for_another_service_unsigned_or_expired_are_unauthenticated() -> Result<()> {
    let scenario = Scenario::new().await?;
    let gw = scenario.start().await?;
    let agent = tk::unique("agent");

    let other_service = scenario.key.issue(&Grant::new(
        &agent,
        "report-ingest",
        Duration::from_secs(60),
    ))?;
    // The payload of a valid token under an `alg: none` header, without a signature.
    let valid = auth::agent_token(&scenario.key, &agent, Duration::from_secs(60))?;
    let payload = valid.split('.').nth(1).expect("a JWT has a payload");
    let unsigned = format!("{ALG_NONE_HEADER}.{payload}.");
    let expired = scenario.key.sign(&dora_auth::Claims {
        sub: agent.clone(),
        aud: auth::AUDIENCE.into(),
        iat: 1,
        exp: 2,
        orgs: vec![],
        roles: vec![],
    })?;
    for (what, token) in [
        ("another audience", &other_service),
        ("alg none", &unsigned),
        ("expired", &expired),
    ] {
        let err = scenario
            .client_with(&gw, token)
            .await?
            .heartbeat(heartbeat(&agent))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{what}: {err:?}");
    }
    assert_eq!(scenario.events().await?, 0, "a refused token produced");
    // The valid token itself is fine: the refusals were about the tokens.
    scenario
        .client_with(&gw, &valid)
        .await?
        .heartbeat(heartbeat(&agent))
        .await?;
    Ok(())
}

#[tokio::test]
async fn an_agent_reads_only_itself_and_a_reader_reads_everyone() -> Result<()> {
    let scenario = Scenario::new().await?;
    let gw = scenario.start().await?;
    let (a, b) = (tk::unique("agent-a"), tk::unique("agent-b"));
    let mut as_a = scenario.client(&gw, &a).await?;
    let mut as_b = scenario.client(&gw, &b).await?;
    as_a.report_error(pb::ReportErrorRequest {
        agent_id: a.clone(),
        agent_type: "GAP_ANALYZER".into(),
        message: "secret detail of agent a".into(),
        details_json: "{}".into(),
        task_id: None,
    })
    .await?;
    // A reads itself.
    let own = await_agent(&mut as_a, &a, "known", |_| true).await?;
    assert_eq!(own.last_error.as_deref(), Some("secret detail of agent a"));

    // B may not read A, list or watch.
    let err = as_b
        .get_agent(pb::GetAgentRequest {
            agent_id: a.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = as_b
        .list_agents(pb::ListAgentsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = as_b
        .watch_agents(pb::WatchAgentsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // A reader may.
    let mut reader = scenario.reader(&gw).await?;
    let seen = reader
        .get_agent(pb::GetAgentRequest {
            agent_id: a.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(seen.agent_id, a);
    let listed = reader
        .list_agents(pb::ListAgentsRequest::default())
        .await?
        .into_inner();
    assert!(listed.agents.iter().any(|h| h.agent_id == a));
    Ok(())
}

#[tokio::test]
async fn a_stream_ends_unauthenticated_when_its_token_expires() -> Result<()> {
    let scenario = Scenario::new().await?;
    let gw = scenario.start().await?;
    let agent = tk::unique("agent");
    let token = auth::agent_token(&scenario.key, &agent, Duration::from_secs(1))?;
    let mut client = scenario.client_with(&gw, &token).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut acks = client
        .stream_events(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    tx.send(common::stream_event(&agent)).await?;
    let first = acks.message().await?.expect("an ack");
    assert!(first.accepted.is_some(), "{first:?}");
    // The agent keeps its side open; the token (1 s, plus the verifier's
    // 5 s leeway) runs out: the gateway ends the stream.
    let end = tokio::time::timeout(tk::DEADLINE, acks.message())
        .await
        .expect("the stream must end once the token expired");
    let status = end.expect_err("the stream ends with an error");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    drop(tx);
    Ok(())
}
