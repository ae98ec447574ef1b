//! Refused writes: a missing or bad token, another agent's token, invalid
//! fields, invalid UTF-8 and oversize payloads each get their status code, and
//! the events topic holds nothing from them (only the one valid event sent last).

mod common;

use std::time::Duration;

use agent_gateway::auth::{self, TokenKey};
use agent_gateway::simulator;
use anyhow::Result;
use common::{heartbeat, Scenario};
use dora_proto::agent::v1 as pb;
use dora_proto::agent::v1::agent_gateway_client::AgentGatewayClient;
use tonic::Code;

fn event(agent: &str) -> pb::PublishEventRequest {
    pb::PublishEventRequest {
        agent_id: agent.into(),
        event_type: pb::EventType::Heartbeat as i32,
        agent_type: "GAP_ANALYZER".into(),
        status: pb::AgentStatus::Healthy as i32,
        message: None,
        metadata_json: "{}".into(),
        task_id: None,
    }
}

/// `PublishEventRequest` with `message` declared as bytes: same wire format,
/// but it can carry invalid UTF-8.
#[derive(Clone, PartialEq, prost::Message)]
struct RawPublishEventRequest {
    #[prost(string, tag = "1")]
    agent_id: String,
    #[prost(int32, tag = "2")]
    event_type: i32,
    #[prost(string, tag = "3")]
    agent_type: String,
    #[prost(int32, tag = "4")]
    status: i32,
    #[prost(bytes = "vec", optional, tag = "5")]
    message: Option<Vec<u8>>,
}

async fn publish_raw(url: &str, token: &str, req: RawPublishEventRequest) -> Result<tonic::Status> {
    let channel = simulator::connect(url).await?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    let mut request = tonic::Request::new(req);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/dora.agent.v1.AgentGateway/PublishEvent",
    );
    let codec =
        tonic_prost::ProstCodec::<RawPublishEventRequest, pb::PublishEventResponse>::default();
    match grpc.unary(request, path, codec).await {
        Ok(_) => anyhow::bail!("invalid UTF-8 was accepted"),
        Err(status) => Ok(status),
    }
}

#[tokio::test]
async fn refused_writes_get_their_code_and_produce_nothing() -> Result<()> {
    let scenario = Scenario::new().await?;
    let gw = scenario.start().await?;

    // No token at all.
    let channel = simulator::connect(&gw.url).await?;
    let err = AgentGatewayClient::new(channel.clone())
        .heartbeat(heartbeat("agent-a"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // A token signed with another key.
    let forged = auth::agent_token(
        &TokenKey::new(b"not the gateway key, but 32 bytes")?,
        "agent-a",
        Duration::from_secs(60),
    )?;
    let err = simulator::client_with_token(channel.clone(), &forged)?
        .heartbeat(heartbeat("agent-a"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // A valid token for agent-b writing as agent-a, through every write call.
    let mut as_b = scenario.client(&gw, "agent-b").await?;
    let err = as_b.heartbeat(heartbeat("agent-a")).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = as_b.publish_event(event("agent-a")).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let acks: Vec<pb::EventAck> = as_b
        .stream_events(tokio_stream::iter(vec![event("agent-a")]))
        .await?
        .into_inner()
        .message()
        .await?
        .into_iter()
        .collect();
    assert_eq!(acks.len(), 1);
    assert_eq!(
        acks[0].error_code,
        Code::PermissionDenied as i32,
        "{acks:?}"
    );

    // Invalid fields, each named.
    let mut as_a = scenario.client(&gw, "agent-a").await?;
    let cases: Vec<(pb::PublishEventRequest, &str)> = vec![
        (
            pb::PublishEventRequest {
                event_type: 99,
                ..event("agent-a")
            },
            "event_type",
        ),
        (
            pb::PublishEventRequest {
                status: 0,
                ..event("agent-a")
            },
            "status",
        ),
        (
            pb::PublishEventRequest {
                agent_type: String::new(),
                ..event("agent-a")
            },
            "agent_type",
        ),
        (
            pb::PublishEventRequest {
                metadata_json: "[1,2]".into(),
                ..event("agent-a")
            },
            "metadata_json",
        ),
        (
            pb::PublishEventRequest {
                metadata_json: "{not json".into(),
                ..event("agent-a")
            },
            "metadata_json",
        ),
        (
            pb::PublishEventRequest {
                event_type: pb::EventType::TaskCompleted as i32,
                ..event("agent-a")
            },
            "task_id",
        ),
        // Over the configured limits (message 4 KiB, metadata 16 KiB).
        (
            pb::PublishEventRequest {
                message: Some("m".repeat(4_097)),
                ..event("agent-a")
            },
            "message",
        ),
        (
            pb::PublishEventRequest {
                metadata_json: format!(r#"{{"blob":"{}"}}"#, "x".repeat(16_384)),
                ..event("agent-a")
            },
            "metadata_json",
        ),
    ];
    for (req, field) in cases {
        let err = as_a.publish_event(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(
            err.message().starts_with(field),
            "expected {field} to be named: {}",
            err.message()
        );
    }

    // Invalid UTF-8 in a string field: INVALID_ARGUMENT naming the field.
    let token = auth::agent_token(&scenario.key, "agent-a", Duration::from_secs(60))?;
    let status = publish_raw(
        &gw.url,
        &token,
        RawPublishEventRequest {
            agent_id: "agent-a".into(),
            event_type: pb::EventType::Heartbeat as i32,
            agent_type: "GAP_ANALYZER".into(),
            status: pb::AgentStatus::Healthy as i32,
            message: Some(vec![b'o', b'k', 0xff, 0xfe]),
        },
    )
    .await?;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("message"), "{status:?}");

    // A request frame over the gateway's 64 KiB request limit.
    let err = as_a
        .publish_event(pb::PublishEventRequest {
            message: Some("m".repeat(70_000)),
            ..event("agent-a")
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");

    // Nothing from any of that reached the topic; a valid event does.
    assert_eq!(
        scenario.events().await?,
        0,
        "a refused write reached {}",
        scenario.events_topic
    );
    let ok = as_a.heartbeat(heartbeat("agent-a")).await?.into_inner();
    assert!(!ok.event_id.is_empty());
    assert_eq!(
        scenario.events().await?,
        1,
        "exactly the valid event is on {}",
        scenario.events_topic
    );
    Ok(())
}
