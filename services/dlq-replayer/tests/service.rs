//! The service as a real process against the real stack: transient failures
//! replayed after their delay and parked at the maximum, without holding up
//! the letters behind one that waits, permanent ones never
//! touched, the per-topic gauges (new dead-letter topics included), and
//! exactly once across a crash in the middle of automatic replays.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use common::*;
use dora_testkit as tk;

/// `Flaky` is transient: 1 s, then 2 s (plus jitter up to 1 s), at most 2 replays.
const FLAKY: &str = "[[dlq.transient]]\nerror_type = \"Flaky\"\nbase_delay_ms = 1000\nmax_delay_ms = 8000\nmax_retries = 2\n";

async fn metric(service: &tk::ServiceProcess, name: &str, topic: &str) -> Option<f64> {
    let (_, body) = service.admin_get("/metrics").await.ok()?;
    tk::metric_value(&body, name, &[("topic", topic)])
}

#[tokio::test]
async fn a_transient_failure_is_replayed_after_its_delay_until_the_maximum_then_parked(
) -> Result<()> {
    let s = Scenario::new(FLAKY).await?;
    let downstream = Downstream::start(&s);
    let mut service = s.service().await?;
    let producer = tk::producer(&tk::kafka())?;
    let key = tk::unique("agent");
    tk::produce(
        &producer,
        &s.topic,
        Some(key.as_bytes()),
        b"{\"flaky\":true}",
        &[("h", b"1")],
    )
    .await?;
    tk::produce(
        &producer,
        &s.topic,
        Some(key.as_bytes()),
        b"{\"poison\":true}",
        &[],
    )
    .await?;

    // Failed, replayed, failed, replayed, failed: the third letter is parked.
    tk::eventually(Duration::from_secs(60), || async {
        let parked = tk::read_committed(&tk::kafka(), &s.parked).await.ok()?;
        (!parked.is_empty()).then_some(())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", service.log()))?;

    let letters = tk::read_committed(&tk::kafka(), &s.dlq).await?;
    let codec = codec();
    let mut flaky: Vec<(i64, dora_schema::DeadLetter)> = Vec::new();
    for r in letters
        .iter()
        .filter(|r| r.header("dora-dlq-resolution").is_none())
    {
        let d: dora_schema::DeadLetter = codec
            .decode(&s.dlq, r.payload().unwrap_or_default())
            .await?;
        if d.error_type == "Flaky" {
            flaky.push((r.offset, d));
        }
    }
    assert_eq!(
        flaky.len(),
        3,
        "the original failure and two failed replays"
    );
    let replays = s.replays().await?;
    assert_eq!(replays.len(), 2, "replayed twice, the maximum");
    for (n, replay) in replays.iter().enumerate() {
        let (offset, letter) = &flaky[n];
        assert_eq!(
            replay.header("dora-replay-of"),
            Some(format!("{}/0/{offset}", s.dlq).as_bytes())
        );
        assert_eq!(
            replay.header("dora-replay-count"),
            Some((n + 1).to_string().as_bytes())
        );
        assert_eq!(
            replay.header("dora-replayed-by"),
            Some(&b"dlq-replayer"[..])
        );
        assert_eq!(
            replay.header("h"),
            Some(&b"1"[..]),
            "the original headers travel along"
        );
        let waited = replay.timestamp.unwrap() - letter.timestamp;
        let delay = 1000 << n;
        assert!(
            waited >= delay,
            "replay {n} came {waited} ms after its failure, before its delay of {delay} ms"
        );
    }
    // The count travelled with the record: each new letter knows its replays.
    let counts: Vec<Option<String>> = flaky
        .iter()
        .map(|(_, d)| {
            d.original_headers
                .iter()
                .find(|h| h.key == "dora-replay-count")
                .and_then(|h| h.value.clone())
                .map(|v| String::from_utf8_lossy(&v).into_owned())
        })
        .collect();
    assert_eq!(counts, [None, Some("1".into()), Some("2".into())]);
    let parked = tk::read_committed(&tk::kafka(), &s.parked).await?;
    assert_eq!(parked.len(), 1);
    assert_eq!(
        parked[0].header("dora-parked-from"),
        Some(format!("{}/0/{}", s.dlq, flaky[2].0).as_bytes())
    );
    assert!(
        String::from_utf8_lossy(parked[0].header("dora-parked-reason").unwrap())
            .contains("2 automatic replays")
    );

    let audit = s.audit_events().await?;
    let actions: Vec<(&str, &str, bool)> = audit
        .iter()
        .map(|a| {
            (
                a.user_id.as_str(),
                a.action.as_str(),
                a.details["automatic"] == true,
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("dlq-replayer", "dlq.replay", true),
            ("dlq-replayer", "dlq.replay", true),
            ("dlq-replayer", "dlq.park", true)
        ]
    );

    // The permanent PoisonPill letter was never touched, and still waits.
    let poison_at = letters
        .iter()
        .find(|r| {
            r.header("dora-dlq-resolution").is_none() && flaky.iter().all(|(o, _)| *o != r.offset)
        })
        .map(|r| r.offset)
        .expect("the poison letter");
    let touched: Vec<_> = s
        .markers()
        .await?
        .into_iter()
        .filter(|(_, p)| p.ends_with(&format!("/{poison_at}")))
        .collect();
    assert!(touched.is_empty(), "{touched:?}");
    tk::eventually(tk::DEADLINE, || async {
        (metric(&service, "dlq_records_waiting", &s.dlq).await? == 1.0).then_some(())
    })
    .await?;
    assert_eq!(
        metric(&service, "dlq_records_replayed", &s.dlq).await,
        Some(2.0)
    );
    assert_eq!(
        metric(&service, "dlq_records_parked", &s.dlq).await,
        Some(1.0)
    );

    let status = service.terminate(Duration::from_secs(30)).await?;
    assert!(status.success(), "exit {status}: {}", service.log());
    downstream.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_letter_waiting_for_its_delay_does_not_hold_up_the_letters_behind_it() -> Result<()> {
    // On one dead-letter partition: a permanent letter, a transient one due in
    // ten minutes, then a transient one due at once. Offsets are committed in
    // order, so a service that waited in the loop would hold the third.
    let s = Scenario::new(
        "[[dlq.transient]]\nerror_type = \"Slow\"\nbase_delay_ms = 600000\nmax_delay_ms = 600000\nmax_retries = 1\n\
         [[dlq.transient]]\nerror_type = \"Quick\"\nbase_delay_ms = 0\nmax_delay_ms = 0\nmax_retries = 1\n",
    )
    .await?;
    let letters = [
        dead_letter(&s.topic, 0, 1, "held", "Rejected"),
        dead_letter(&s.topic, 0, 2, "slow", "Slow"),
        dead_letter(&s.topic, 0, 3, "quick", "Quick"),
    ];
    let offsets = s.write_letters(&letters).await?;
    let mut service = s.service().await?;
    tk::eventually(tk::DEADLINE, || async {
        (s.replays().await.ok()?.len() == 1).then_some(())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", service.log()))?;
    let replays = s.replays().await?;
    assert_eq!(
        replays[0].header("dora-replay-of"),
        Some(format!("{}/0/{}", s.dlq, offsets[2]).as_bytes()),
        "the letter due at once was replayed past the two before it"
    );
    assert_eq!(replays[0].key.as_deref(), Some(&b"quick"[..]));
    tk::eventually(tk::DEADLINE, || async {
        let f = |n| metric(&service, n, &s.dlq);
        let seen = (
            f("dlq_records_waiting").await?,
            f("dlq_records_replayed").await?,
        );
        (seen == (2.0, 1.0)).then_some(())
    })
    .await?;
    let marked: Vec<String> = s.markers().await?.into_iter().map(|(_, p)| p).collect();
    assert_eq!(marked, [format!("{}/0/{}", s.dlq, offsets[2])]);
    let status = service.terminate(Duration::from_secs(30)).await?;
    assert!(status.success(), "exit {status}: {}", service.log());
    Ok(())
}

#[tokio::test]
async fn the_gauges_follow_every_dead_letter_topic_new_ones_included() -> Result<()> {
    let s = Scenario::new("").await?;
    let mut old = dead_letter(&s.topic, 0, 1, "a", "Rejected");
    old.timestamp -= 3_600_000;
    let letters = [
        old,
        dead_letter(&s.topic, 1, 2, "b", "Rejected"),
        dead_letter(&s.topic, 2, 3, "c", "Rejected"),
    ];
    s.write_letters(&letters).await?;
    let mut service = s.service().await?;
    tk::eventually(tk::DEADLINE, || async {
        (metric(&service, "dlq_records_waiting", &s.dlq).await? == 3.0).then_some(())
    })
    .await?;
    let age = metric(&service, "dlq_oldest_record_age_seconds", &s.dlq)
        .await
        .unwrap();
    assert!((3600.0..3700.0).contains(&age), "oldest age {age}");

    // An operator's actions show up: one replayed, one parked.
    assert_eq!(
        s.run(&["replay", "--topic", &s.topic, "--key", "b", "--as", "op"])
            .await?
            .code(),
        Some(0)
    );
    assert_eq!(
        s.run(&["park", "--topic", &s.topic, "--key", "a", "--as", "op"])
            .await?
            .code(),
        Some(0)
    );
    tk::eventually(tk::DEADLINE, || async {
        let f = |n| metric(&service, n, &s.dlq);
        let seen = (
            f("dlq_records_waiting").await?,
            f("dlq_records_replayed").await?,
            f("dlq_records_parked").await?,
        );
        (seen == (1.0, 1.0, 1.0)).then_some(())
    })
    .await?;
    let age = metric(&service, "dlq_oldest_record_age_seconds", &s.dlq)
        .await
        .unwrap();
    assert!(
        age < 600.0,
        "the hour-old letter was parked; oldest now {age} s"
    );

    // A dead-letter topic created while the service runs is followed too.
    let later = format!("{}-late-dlq", s.topic);
    tk::create_topic(&tk::kafka(), &later, 1).await?;
    let producer = tk::producer(&tk::kafka())?;
    let value = codec()
        .encode(&later, &dead_letter(&s.topic, 0, 9, "z", "Rejected"))
        .await?;
    tk::produce(&producer, &later, Some(b"z"), &value, &[]).await?;
    tk::eventually(Duration::from_secs(60), || async {
        (metric(&service, "dlq_records_waiting", &later).await? == 1.0).then_some(())
    })
    .await?;
    let status = service.terminate(Duration::from_secs(30)).await?;
    assert!(status.success(), "exit {status}: {}", service.log());
    Ok(())
}

#[tokio::test]
async fn a_service_killed_in_the_middle_of_automatic_replays_replays_each_letter_once() -> Result<()>
{
    // 20 letters per tick, a tick every 200 ms: 600 letters take some 6 s.
    let s = Scenario::new("max_per_tick = 20\n[[dlq.transient]]\nerror_type = \"Timeout\"\nbase_delay_ms = 0\nmax_delay_ms = 0\nmax_retries = 5\n").await?;
    let letters: Vec<_> = (0..600)
        .map(|i| dead_letter(&s.topic, (i % 3) as i32, i, &format!("k{i}"), "Timeout"))
        .collect();
    s.write_letters(&letters).await?;
    let mut first = s.service().await?;
    tk::eventually(Duration::from_secs(60), || async {
        (!s.replays().await.ok()?.is_empty()).then_some(())
    })
    .await?;
    first.kill().await?;
    let before = s.replays().await?.len();
    assert!(before < 600, "killed in the middle ({before} replayed)");

    let mut second = s.service().await?;
    tk::eventually(Duration::from_secs(90), || async {
        (s.replays().await.ok()?.len() >= 600).then_some(())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e} ({} replayed)\n{}", before, second.log()))?;
    // Let a tick or two pass: nothing more may come.
    tk::eventually(tk::DEADLINE, || async {
        (metric(&second, "dlq_records_waiting", &s.dlq).await? == 0.0).then_some(())
    })
    .await?;
    let counts: BTreeMap<String, usize> = s.replay_counts().await?;
    assert_eq!(counts.len(), 600);
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        twice.is_empty(),
        "replayed more than once after the crash: {twice:?}"
    );
    assert_eq!(s.markers().await?.len(), 600);
    let audited = s.audited_letters().await?;
    assert_eq!(audited.len(), 600, "each letter named by one audit event");
    assert_eq!(
        audited
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        600
    );
    let status = second.terminate(Duration::from_secs(30)).await?;
    assert!(status.success(), "exit {status}: {}", second.log());
    Ok(())
}

#[tokio::test]
async fn two_replicas_and_a_crashed_one_replay_each_letter_once() -> Result<()> {
    // Two dead-letter partitions, one per replica; 10 letters per tick.
    let s = Scenario::with_dlq_partitions(
        "max_per_tick = 10\n[[dlq.transient]]\nerror_type = \"Timeout\"\nbase_delay_ms = 0\nmax_delay_ms = 0\nmax_retries = 5\n",
        2,
    )
    .await?;
    let letters: Vec<_> = (0..400)
        .map(|i| dead_letter(&s.topic, (i % 3) as i32, i, &format!("k{i}"), "Timeout"))
        .collect();
    let mut a = s.service().await?;
    let mut b = s.service().await?;
    s.write_letters(&letters).await?;
    tk::eventually(Duration::from_secs(60), || async {
        (s.replays().await.ok()?.len() >= 60).then_some(())
    })
    .await?;
    a.kill().await?;
    let before = s.replays().await?.len();
    assert!(before < 400, "killed in the middle ({before} replayed)");
    tk::eventually(Duration::from_secs(90), || async {
        (s.replays().await.ok()?.len() >= 400).then_some(())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", b.log()))?;
    tk::eventually(tk::DEADLINE, || async {
        let waiting = metric(&b, "dlq_records_waiting", &s.dlq).await?;
        (waiting == 0.0).then_some(())
    })
    .await?;
    let counts = s.replay_counts().await?;
    assert_eq!(counts.len(), 400);
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        twice.is_empty(),
        "replayed more than once across the handover: {twice:?}"
    );
    let partitions: std::collections::BTreeSet<String> = counts
        .keys()
        .map(|p| p.rsplit('/').nth(1).unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        partitions.len(),
        2,
        "letters on both dead-letter partitions"
    );
    let status = b.terminate(Duration::from_secs(30)).await?;
    assert!(status.success(), "exit {status}: {}", b.log());
    Ok(())
}
