//! A stream whose acks stall (the broker answers late, as after an outage)
//! while its agent goes on sending small events: the gateway must not let
//! them pile up unread in the HTTP/2 connection, whose guard against floods of
//! small DATA frames (h2 >= 0.4.16: GOAWAY ENHANCE_YOUR_CALM) would then close
//! it and fail every call on it. Every event is answered, in order, on a
//! stream that ends normally; every acked event is on the topic.

mod common;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::Scenario;
use dora_proto::agent::v1 as pb;
use dora_testkit as tk;
use tokio_stream::wrappers::ReceiverStream;

/// Events the agent sends, one per HTTP/2 DATA frame (~80 bytes each).
const EVENTS: u64 = 6_000;

/// The gateway's log lines from h2.
fn h2_lines(gw: &common::Gateway) -> String {
    let log = gw.process.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("\"h2::")).collect();
    lines.join("\n")
}

#[tokio::test]
async fn a_stream_whose_acks_stall_stays_open_and_every_event_is_answered_in_order() -> Result<()> {
    let mut scenario = Scenario::new().await?;
    // The broker's answers come late: every delivery waits 8 s in the producer.
    scenario.env = vec![
        ("DORA_PRODUCER__LINGER_MS", "8000".into()),
        ("DORA_PRODUCER__BATCH_SIZE", "1000000".into()),
        // h2's connection errors (rare lines) name the cause if the connection is closed.
        ("RUST_LOG", "info,h2::proto::streams::streams=debug,h2::proto::connection=debug".into()),
    ];
    let gw = scenario.start().await?;
    let agent = tk::unique("chatty");
    let mut client = scenario.client(&gw, &agent).await?;
    // One event at a time, so each travels in a DATA frame of its own.
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::PublishEventRequest>(1);
    let id = agent.clone();
    let sender = tokio::spawn(async move {
        for n in 0..EVENTS {
            let mut event = common::stream_event(&id);
            event.message = Some(n.to_string());
            if tx.send(event).await.is_err() {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        EVENTS
    });
    let mut acks = client
        .stream_events(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let (mut acked, mut refused) = (0i64, 0u64);
    let mut next = 0u64;
    while let Some(ack) = acks
        .message()
        .await
        .with_context(|| format!("the ack stream failed after {next} answers; h2 said:\n{}", h2_lines(&gw)))?
    {
        ensure!(ack.sequence == next, "ack {} where {next} was due", ack.sequence);
        if ack.accepted.is_some() {
            acked += 1;
        } else {
            ensure!(
                ack.error_code == tonic::Code::ResourceExhausted as i32,
                "event {next} refused with {} ({})",
                ack.error_code,
                ack.error_message
            );
            refused += 1;
        }
        next += 1;
    }
    let sent = sender.await?;
    ensure!(sent == EVENTS, "the agent could send only {sent} of {EVENTS} events");
    ensure!(next == EVENTS, "{next} of {EVENTS} events answered");
    ensure!(acked > 0, "nothing acked");
    // The window stayed full past its wait only if the acks really stalled.
    ensure!(refused > 0, "no event refused: the acks never stalled, the test proved nothing");
    eprintln!("acked {acked}, refused {refused}");
    tk::eventually(tk::DEADLINE, || async {
        (scenario.events().await.ok()? == acked).then_some(())
    })
    .await
    .with_context(|| format!("{acked} acked events not all on the topic (or more there)"))?;
    Ok(())
}
