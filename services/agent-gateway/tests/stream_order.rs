//! Per-agent order on streams: several agents each stream many events, mixed
//! types, through a send queue of two slots that is full all the time; on the
//! topic each agent's accepted events are in exactly the order its stream
//! sent them (an ERROR then a HEARTBEAT must not land as HEARTBEAT, ERROR).

mod common;

use std::collections::HashMap;

use anyhow::{ensure, Context, Result};
use common::Scenario;
use dora_proto::agent::v1 as pb;
use dora_testkit as tk;

const AGENTS: usize = 4;
const EVENTS: usize = 300;

fn event(agent: &str, n: usize) -> pb::PublishEventRequest {
    let event_type = if n.is_multiple_of(2) {
        pb::EventType::Error
    } else {
        pb::EventType::Heartbeat
    };
    pb::PublishEventRequest {
        agent_id: agent.into(),
        event_type: event_type as i32,
        agent_type: "GAP_ANALYZER".into(),
        status: pb::AgentStatus::Healthy as i32,
        message: Some(format!("{n}")),
        metadata_json: "{}".into(),
        task_id: None,
    }
}

#[tokio::test]
async fn each_agents_streamed_events_land_in_stream_order_under_a_full_send_queue() -> Result<()> {
    let mut scenario = Scenario::new().await?;
    scenario.env = vec![
        ("DORA_GATEWAY__SEND_QUEUE_CAPACITY", "2".into()),
        // Waiting is fine here: the point is order, not refusal.
        ("DORA_GATEWAY__SEND_QUEUE_WAIT_MS", "60000".into()),
    ];
    let gw = scenario.start().await?;
    let mut streams = Vec::new();
    for i in 0..AGENTS {
        let agent = format!("{}-{i}", tk::unique("ordered"));
        let mut client = scenario.client(&gw, &agent).await?;
        streams.push(tokio::spawn(async move {
            let events: Vec<_> = (0..EVENTS).map(|n| event(&agent, n)).collect();
            let mut acks = client
                .stream_events(tokio_stream::iter(events))
                .await?
                .into_inner();
            let mut accepted = Vec::new();
            while let Some(ack) = acks.message().await? {
                if ack.accepted.is_some() {
                    accepted.push(ack.sequence as usize);
                }
            }
            anyhow::Ok((agent, accepted))
        }));
    }
    let mut sent: HashMap<String, Vec<usize>> = HashMap::new();
    let mut total = 0;
    for s in streams {
        let (agent, accepted) = s.await??;
        ensure!(
            accepted.len() == EVENTS,
            "{agent}: {} of {EVENTS} accepted",
            accepted.len()
        );
        total += accepted.len();
        sent.insert(agent, accepted);
    }

    let records = common::read_records(&scenario.events_topic, total).await?;
    let codec = common::codec()?;
    let mut on_topic: HashMap<String, Vec<usize>> = HashMap::new();
    for r in &records {
        let e: dora_schema::AgentEvent = codec.decode(&scenario.events_topic, r.payload()).await?;
        let n: usize = e.message.as_deref().context("message")?.parse()?;
        on_topic.entry(e.agent_id).or_default().push(n);
    }
    for (agent, order) in &sent {
        let landed = on_topic.get(agent).map(Vec::as_slice).unwrap_or_default();
        let first_difference = order.iter().zip(landed).position(|(a, b)| a != b);
        assert!(
            landed.len() == order.len() && first_difference.is_none(),
            "{agent}: {} sent, {} on the topic; first out of order at position {first_difference:?}: sent {:?}, topic {:?}",
            order.len(),
            landed.len(),
            first_difference.map(|i| &order[i..(i + 3).min(order.len())]),
            first_difference.map(|i| &landed[i..(i + 3).min(landed.len())]),
        );
    }
    Ok(())
}
