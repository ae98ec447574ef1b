//! The broker restarts while agents publish: no acknowledged event is missing
//! from the topic and no event is there twice.
//!
//! Ignored by default: restarting the shared local broker disturbs every other
//! test running against it, and the stack script must offer the restart. Run
//! it alone with `DORA_TEST_KAFKA_RESTART_CMD` set to a command that restarts
//! the broker, e.g.
//! `DORA_TEST_KAFKA_RESTART_CMD="bash deploy/local/stack.sh restart-kafka" cargo test -p agent-gateway --test broker_restart -- --ignored`.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use common::Scenario;
use dora_proto::agent::v1 as pb;
use dora_testkit as tk;
use tokio_stream::wrappers::ReceiverStream;

const AGENTS: usize = 4;
const SEND_FOR: Duration = Duration::from_secs(20);

#[tokio::test]
#[ignore = "restarts the broker; needs DORA_TEST_KAFKA_RESTART_CMD"]
async fn acknowledged_events_survive_a_broker_restart_exactly_once() -> Result<()> {
    let restart = std::env::var("DORA_TEST_KAFKA_RESTART_CMD")
        .context("DORA_TEST_KAFKA_RESTART_CMD is not set")?;
    let scenario = Scenario::new().await?;
    let gw = scenario.start().await?;

    let acked_so_far = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        let acked_so_far = acked_so_far.clone();
        let agent = format!("{}-{i}", tk::unique("restart-agent"));
        let mut client = scenario.client(&gw, &agent).await?;
        agents.push(tokio::spawn(async move {
            let (tx, rx) = tokio::sync::mpsc::channel::<pb::PublishEventRequest>(16);
            let sender = tokio::spawn(async move {
                let start = Instant::now();
                while start.elapsed() < SEND_FOR {
                    let ev = pb::PublishEventRequest {
                        agent_id: agent.clone(),
                        event_type: pb::EventType::Heartbeat as i32,
                        agent_type: "GAP_ANALYZER".into(),
                        status: pb::AgentStatus::Healthy as i32,
                        metadata_json: "{}".into(),
                        ..Default::default()
                    };
                    if tx.send(ev).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
            let mut acked = Vec::new();
            let mut refused = 0u64;
            let mut acks = client
                .stream_events(ReceiverStream::new(rx))
                .await?
                .into_inner();
            while let Some(ack) = acks.message().await? {
                match ack.accepted {
                    Some(a) => {
                        acked.push(a.event_id);
                        acked_so_far.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    None => refused += 1,
                }
            }
            sender.await?;
            anyhow::Ok((acked, refused))
        }));
    }

    // Restart once traffic is flowing.
    tk::eventually(tk::DEADLINE, || {
        let n = acked_so_far.load(std::sync::atomic::Ordering::Relaxed);
        async move { (n >= 100).then_some(()) }
    })
    .await
    .context("agents did not get 100 acks before the restart")?;
    let status = tokio::process::Command::new("sh")
        .args(["-c", &restart])
        .current_dir(tk::repo_root())
        .status()
        .await?;
    ensure!(status.success(), "restart command failed: {status}");

    let mut acked = Vec::new();
    let mut refused = 0;
    for a in agents {
        let (ids, r) = a.await??;
        acked.extend(ids);
        refused += r;
    }
    ensure!(!acked.is_empty(), "nothing was acknowledged");

    let total = scenario.events().await?;
    let records = common::read_records(&scenario.events_topic, total as usize).await?;
    let codec = common::codec()?;
    let mut on_topic = HashSet::new();
    for r in &records {
        let e: dora_schema::AgentEvent = codec.decode(&scenario.events_topic, r.payload()).await?;
        assert!(
            on_topic.insert(e.event_id.clone()),
            "event {} is on the topic twice",
            e.event_id
        );
    }
    let missing: Vec<&String> = acked.iter().filter(|id| !on_topic.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events missing, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    eprintln!(
        "acknowledged {}, refused {refused}, on topic {}",
        acked.len(),
        on_topic.len()
    );
    Ok(())
}
