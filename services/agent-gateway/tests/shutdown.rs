//! SIGTERM while an agent streams events: every event gets exactly one ack, in
//! order (accepted, or UNAVAILABLE once the gateway is draining, which tells
//! the agent to stop and resend elsewhere; RESOURCE_EXHAUSTED, at any time,
//! when the stream's window stayed full); the stream ends cleanly, the
//! process exits 0, and the topic holds exactly the accepted events.

mod common;

use std::time::Duration;

use anyhow::{bail, Result};

use common::Scenario;
use dora_proto::agent::v1 as pb;
use dora_testkit as tk;
use tokio_stream::wrappers::ReceiverStream;

#[tokio::test]
async fn sigterm_completes_in_flight_calls_and_exits_zero() -> Result<()> {
    let scenario = Scenario::new().await?;
    let mut gw = scenario.start().await?;
    let agent = tk::unique("agent");
    let mut client = scenario.client(&gw, &agent).await?;

    let (tx, rx) = tokio::sync::mpsc::channel::<pb::PublishEventRequest>(64);
    let mut acks = client
        .stream_events(ReceiverStream::new(rx))
        .await?
        .into_inner();
    // Keep events coming until the gateway stops reading them.
    let sender = tokio::spawn({
        let agent = agent.clone();
        async move {
            let mut sent = 0u64;
            loop {
                let ev = pb::PublishEventRequest {
                    agent_id: agent.clone(),
                    event_type: pb::EventType::Heartbeat as i32,
                    agent_type: "GAP_ANALYZER".into(),
                    status: pb::AgentStatus::Healthy as i32,
                    metadata_json: "{}".into(),
                    ..Default::default()
                };
                if tx.send(ev).await.is_err() || sent >= 100_000 {
                    return sent;
                }
                sent += 1;
            }
        }
    });

    let mut accepted = 0u64;
    let mut refused = 0u64;
    // This sender keeps no window of its own: when acks lag for over a
    // second, the gateway refuses what does not fit in the stream's window
    // (RESOURCE_EXHAUSTED), at any time; that is back-pressure, not the drain.
    let mut pushed_back = 0u64;
    let mut terminated = false;
    loop {
        let next = tokio::time::timeout(tk::DEADLINE, acks.message()).await;
        match next {
            Ok(Ok(Some(ack))) => {
                assert_eq!(
                    ack.sequence,
                    accepted + refused + pushed_back,
                    "acks in order, none skipped"
                );
                if ack.error_code == tonic::Code::ResourceExhausted as i32 {
                    pushed_back += 1;
                    continue;
                }
                if ack.accepted.is_none() {
                    assert!(
                        terminated,
                        "event {} refused before SIGTERM: {ack:?}",
                        ack.sequence
                    );
                    assert_eq!(ack.error_code, tonic::Code::Unavailable as i32, "{ack:?}");
                    // A well-behaved agent stops sending on this stream.
                    sender.abort();
                    refused += 1;
                    continue;
                }
                assert_eq!(refused, 0, "an event was accepted after one was refused");
                accepted += 1;
                if accepted == 200 && !terminated {
                    nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(gw.process.pid().unwrap_or_default() as i32),
                        nix::sys::signal::Signal::SIGTERM,
                    )?;
                    terminated = true;
                }
            }
            Ok(Ok(None)) => break,
            Ok(Err(status)) => bail!("stream failed instead of ending cleanly: {status:?}"),
            Err(_) => bail!("no ack or end of stream within {:?}", tk::DEADLINE),
        }
    }
    assert!(terminated, "the stream ended before SIGTERM was sent");
    drop(acks);

    let exit = gw.process.wait_exit(Duration::from_secs(30)).await?;
    assert!(exit.success(), "exit {exit}\n{}", gw.process.log());
    assert_eq!(
        scenario.events().await?,
        accepted as i64,
        "topic holds exactly the acknowledged events"
    );
    Ok(())
}
