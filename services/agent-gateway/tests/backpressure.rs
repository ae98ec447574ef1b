//! Back-pressure: with a send queue of one slot and almost no wait, a burst of
//! concurrent writes gets RESOURCE_EXHAUSTED for what does not fit, every
//! accepted write is on the topic, and no refused one is.

mod common;

use anyhow::Result;
use common::{heartbeat, Scenario};
use dora_testkit as tk;
use tonic::Code;

#[tokio::test]
async fn a_full_send_queue_answers_resource_exhausted_and_produces_nothing_for_it() -> Result<()> {
    let mut scenario = Scenario::new().await?;
    scenario.env = vec![
        ("DORA_GATEWAY__SEND_QUEUE_CAPACITY", "1".into()),
        ("DORA_GATEWAY__SEND_QUEUE_WAIT_MS", "1".into()),
    ];
    let gw = scenario.start().await?;
    let agent = tk::unique("agent");
    let client = scenario.client(&gw, &agent).await?;

    let calls: Vec<_> = (0..64)
        .map(|_| {
            let mut c = client.clone();
            let req = heartbeat(&agent);
            tokio::spawn(async move { c.heartbeat(req).await })
        })
        .collect();
    let (mut accepted, mut exhausted) = (0i64, 0i64);
    for call in calls {
        match call.await? {
            Ok(_) => accepted += 1,
            Err(s) if s.code() == Code::ResourceExhausted => exhausted += 1,
            Err(s) => anyhow::bail!("unexpected status {s:?}"),
        }
    }
    assert!(accepted >= 1, "at least the first write fits");
    assert!(
        exhausted >= 1,
        "64 concurrent writes through one slot: some must be refused"
    );
    assert_eq!(
        scenario.events().await?,
        accepted,
        "exactly the accepted writes are on the topic"
    );
    Ok(())
}
