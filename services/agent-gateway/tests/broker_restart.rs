//! The broker restarts while agents stream events, checked both ways: every
//! acknowledged event is on the topic exactly once (by its eventId and by
//! the agent's own sequence number), no refused event is there at all, and
//! each agent's events are in the order it sent them.
//!
//! The broker is one of the test's own ([`tk::PrivateKafka`]): restarting the
//! shared broker would disturb every other test.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::Scenario;
use dora_proto::agent::v1 as pb;
use dora_testkit as tk;
use tokio_stream::wrappers::ReceiverStream;

const AGENTS: usize = 4;

/// What an agent was told about one event it sent.
#[derive(Debug)]
enum Answer {
    Acked(String),
    Refused(i32),
}

/// Streams numbered heartbeats (`message` = the number, from 0) until `stop`;
/// returns the answer to each number.
async fn agent(
    mut client: agent_gateway::simulator::AuthedClient,
    agent: String,
    acked: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> Result<(String, BTreeMap<u64, Answer>)> {
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::PublishEventRequest>(16);
    let id = agent.clone();
    let sender = tokio::spawn(async move {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let mut event = common::stream_event(&id);
            event.message = Some(n.to_string());
            if tx.send(event).await.is_err() {
                return;
            }
            n += 1;
            // ~500 small events a second, one per HTTP/2 DATA frame: a gateway
            // that leaves them unread while the outage holds its acks back has
            // its connections closed by h2 (too many small DATA frames) within
            // seconds; at 100 a second it took a restart of ~30 s, and the
            // test failed only on a busy machine.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let mut answers = BTreeMap::new();
    let mut acks = client
        .stream_events(ReceiverStream::new(rx))
        .await?
        .into_inner();
    loop {
        let ack = match acks.message().await {
            Ok(Some(ack)) => ack,
            Ok(None) => break,
            Err(status) => anyhow::bail!(
                "{agent}: the ack stream failed at {} after {} answers: {status}",
                chrono::Utc::now().format("%H:%M:%S%.3f"),
                answers.len()
            ),
        };
        let answer = match ack.accepted {
            Some(a) => {
                acked.fetch_add(1, Ordering::Relaxed);
                Answer::Acked(a.event_id)
            }
            None => Answer::Refused(ack.error_code),
        };
        answers.insert(ack.sequence, answer);
    }
    sender.await?;
    Ok((agent, answers))
}

async fn acks_reach(acked: &AtomicUsize, n: usize, what: &str) -> Result<()> {
    // Generous: a broker restart on a busy machine (a JVM start) can take a while.
    tk::eventually(Duration::from_secs(120), || {
        let seen = acked.load(Ordering::Relaxed);
        async move { (seen >= n).then_some(()) }
    })
    .await
    .with_context(|| format!("{what}: fewer than {n} acks"))
}

#[tokio::test]
async fn across_a_broker_restart_acked_events_land_once_and_refused_ones_never() -> Result<()> {
    let broker = tk::PrivateKafka::start().await?;
    let mut scenario = Scenario::on(broker.settings.clone()).await?;
    // A small queue with a short wait: while the broker is away the queue
    // fills and further events are refused, so both answers occur.
    scenario.env = vec![
        ("DORA_GATEWAY__SEND_QUEUE_CAPACITY", "64".into()),
        ("DORA_GATEWAY__SEND_QUEUE_WAIT_MS", "200".into()),
        // h2's connection errors (rare lines) name the cause if a connection is closed.
        ("RUST_LOG", "info,h2::proto::streams::streams=debug,h2::proto::connection=debug".into()),
    ];
    let gw = scenario.start().await?;

    let acked = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        let id = format!("{}-{i}", tk::unique("restart-agent"));
        let client = scenario.client(&gw, &id).await?;
        agents.push(tokio::spawn(agent(client, id, acked.clone(), stop.clone())));
    }
    acks_reach(&acked, 100, "before the restart").await?;
    let restarting = chrono::Utc::now();
    broker.restart().await?;
    eprintln!(
        "broker restarted from {} to {}",
        restarting.format("%H:%M:%S%.3f"),
        chrono::Utc::now().format("%H:%M:%S%.3f")
    );
    let after = acked.load(Ordering::Relaxed) + 100;
    if let Err(e) = acks_reach(&acked, after, "after the restart").await {
        // Which agents' streams are still open, and how the others ended.
        let mut streams = String::new();
        for a in &mut agents {
            if a.is_finished() {
                match a.await {
                    Ok(Ok((id, answers))) => streams += &format!("{id}: stream ended after {} answers\n", answers.len()),
                    Ok(Err(e)) => streams += &format!("stream failed: {e:#}\n"),
                    Err(e) => streams += &format!("agent task: {e}\n"),
                }
            } else {
                streams += "a stream still open\n";
            }
        }
        anyhow::bail!(
            "{e:#}\n{streams}gateway log:\n{}\nbroker log (last 200 lines):\n{}",
            gw.process.log(),
            broker.log_tail(200)
        );
    }
    stop.store(true, Ordering::Relaxed);

    let mut told: HashMap<String, BTreeMap<u64, Answer>> = HashMap::new();
    for a in agents {
        let (id, answers) = a.await??;
        told.insert(id, answers);
    }
    let acked_total: usize = told
        .values()
        .flat_map(|a| a.values())
        .filter(|a| matches!(a, Answer::Acked(_)))
        .count();
    let refusals: Vec<i32> = told
        .values()
        .flat_map(|a| a.values())
        .filter_map(|a| match a {
            Answer::Refused(code) => Some(*code),
            Answer::Acked(_) => None,
        })
        .collect();
    let refused_total = refusals.len();
    // A broker away is back-pressure or unavailability, never anything else.
    let retryable = [
        tonic::Code::ResourceExhausted as i32,
        tonic::Code::Unavailable as i32,
    ];
    ensure!(
        refusals.iter().all(|c| retryable.contains(c)),
        "refusal codes {refusals:?}"
    );

    let records =
        common::read_records_on(&scenario.kafka, &scenario.events_topic, acked_total).await?;
    let codec = common::codec()?;
    // Per agent, (number, eventId) in topic order.
    let mut on_topic: HashMap<String, Vec<(u64, String)>> = HashMap::new();
    for r in &records {
        let e: dora_schema::AgentEvent = codec.decode(&scenario.events_topic, r.payload()).await?;
        let n: u64 = e.message.as_deref().context("numbered event")?.parse()?;
        on_topic
            .entry(e.agent_id)
            .or_default()
            .push((n, e.event_id));
    }
    for (id, answers) in &told {
        let landed = on_topic.remove(id).unwrap_or_default();
        let expected: Vec<(u64, String)> = answers
            .iter()
            .filter_map(|(n, a)| match a {
                Answer::Acked(event_id) => Some((*n, event_id.clone())),
                Answer::Refused(_) => None,
            })
            .collect();
        let refused_there: Vec<u64> = landed
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| matches!(answers.get(n), Some(Answer::Refused(_))))
            .collect();
        ensure!(
            refused_there.is_empty(),
            "{id}: refused events on the topic: {refused_there:?}"
        );
        ensure!(
            landed == expected,
            "{id}: {} acked, {} on the topic (acked once each, in order, nothing else expected); first difference at {:?}",
            expected.len(),
            landed.len(),
            expected.iter().zip(&landed).position(|(a, b)| a != b)
        );
    }
    ensure!(
        on_topic.is_empty(),
        "events of unknown agents: {:?}",
        on_topic.keys()
    );
    ensure!(acked_total > 200, "acked {acked_total}");
    eprintln!("acknowledged {acked_total}, refused {refused_total}");
    Ok(())
}
