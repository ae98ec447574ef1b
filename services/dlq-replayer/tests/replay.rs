//! `replay` and `park` as real processes against the real stack: a poison
//! record's life (listed, inspected, replayed byte-exact, processed once),
//! filters, the rate limit, a crash and a stop in the middle, parking (the
//! seed's JSON letters too) and the audit event of every action.

mod common;

use anyhow::Result;
use common::*;
use dora_testkit as tk;

#[tokio::test]
async fn a_poison_record_is_listed_inspected_then_replayed_byte_exact_and_processed_once(
) -> Result<()> {
    let s = Scenario::new("").await?;
    let downstream = Downstream::start(&s);
    let key = tk::unique("agent");
    let poison = format!("{{\"agentId\":\"{key}\",\"poison\":true}}");
    let producer = tk::producer(&tk::kafka())?;
    tk::produce(
        &producer,
        &s.topic,
        Some(key.as_bytes()),
        b"{\"ok\":1}",
        &[],
    )
    .await?;
    let (partition, offset) = tk::produce(
        &producer,
        &s.topic,
        Some(key.as_bytes()),
        poison.as_bytes(),
        &[
            (
                "traceparent",
                b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("source", b"test"),
        ],
    )
    .await?;
    tk::eventually(tk::DEADLINE, || async {
        (tk::record_count(&tk::kafka(), &s.dlq).await.ok()? >= 1).then_some(())
    })
    .await?;

    // list: one waiting, by its error type and the service that failed it.
    let listed = s.list().await?;
    assert_eq!(listed["waiting"], 1, "{listed}");
    assert_eq!(listed["byErrorType"]["PoisonPill"], 1, "{listed}");
    assert_eq!(
        listed["byFailedBy"].as_object().map(|m| m.len()),
        Some(1),
        "{listed}"
    );

    // inspect: the reason, the original position and the value decoded.
    let out = s.run(&["inspect", "--topic", &s.topic, "--json"]).await?;
    let letters = out.json_lines();
    assert_eq!(letters.len(), 1, "{out:?}");
    let l = &letters[0];
    assert_eq!(l["errorType"], "PoisonPill");
    assert!(
        l["errorMessage"].as_str().unwrap().contains("poison pill"),
        "{l}"
    );
    assert_eq!(
        (
            l["originalPartition"].as_i64(),
            l["originalOffset"].as_i64()
        ),
        (Some(partition.into()), Some(offset))
    );
    assert_eq!(l["originalKey"], key.as_str());
    assert_eq!(l["originalValue"]["format"], "json");
    assert_eq!(l["originalValue"]["value"]["poison"], true);
    let text = s.run(&["inspect", "--topic", &s.topic]).await?;
    assert!(
        text.stdout.contains("PoisonPill") && text.stdout.contains("poison pill"),
        "{text:?}"
    );

    // The cause is fixed; the operator replays it.
    downstream.fix();
    let out = s
        .run(&["replay", "--topic", &s.topic, "--as", "alice"])
        .await?;
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(out.stdout.contains("replayed 1 of 1"), "{out:?}");

    // Byte-exact on the original topic and partition, plus the replay headers.
    let replays = s.replays().await?;
    assert_eq!(replays.len(), 1);
    let replayed = &replays[0];
    let original = tk::read_committed(&tk::kafka(), &s.topic)
        .await?
        .into_iter()
        .find(|r| r.partition == partition && r.offset == offset)
        .expect("original record");
    assert_eq!(replayed.partition, original.partition);
    assert_eq!(replayed.key, original.key);
    assert_eq!(replayed.payload, original.payload);
    let n = original.headers.len();
    assert_eq!(
        replayed.headers[..n],
        original.headers[..],
        "original headers, in order, byte-exact"
    );
    let names: Vec<&str> = replayed.headers[n..]
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(
        names,
        ["dora-replay-count", "dora-replay-of", "dora-replayed-by"]
    );
    assert_eq!(replayed.header("dora-replay-count"), Some(&b"1"[..]));
    assert_eq!(
        replayed.header("dora-replay-of"),
        Some(format!("{}/0/0", s.dlq).as_bytes())
    );
    assert_eq!(replayed.header("dora-replayed-by"), Some(&b"alice"[..]));

    // Processed once downstream: wait until its group committed past the replay.
    tk::eventually(tk::DEADLINE, || async {
        let c = tk::committed_offset(&tk::kafka(), &downstream.group, &s.topic, partition)
            .await
            .ok()??;
        (c > replayed.offset).then_some(())
    })
    .await?;
    let seen = downstream.processed_with(poison.as_bytes());
    assert_eq!(seen.len(), 1, "processed once: {seen:?}");
    assert_eq!(seen[0].offset, replayed.offset);
    assert!(seen[0].headers.iter().any(|(k, _)| k == "dora-replay-of"));

    let listed = s.list().await?;
    assert_eq!(
        (listed["waiting"].as_u64(), listed["replayed"].as_u64()),
        (Some(0), Some(1)),
        "{listed}"
    );
    let audit = s.audit_events().await?;
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (audit[0].user_id.as_str(), audit[0].action.as_str()),
        ("alice", "dlq.replay")
    );
    assert_eq!(audit[0].resource, s.dlq);
    assert_eq!(audit[0].details["records"][0]["originalOffset"], offset);
    assert_eq!(s.audited_letters().await?, [format!("{}/0/0", s.dlq)]);
    downstream.stop().await;
    Ok(())
}

#[tokio::test]
async fn filters_select_exactly_the_matching_letters() -> Result<()> {
    let s = Scenario::new("").await?;
    // Dead-lettered one second apart, starting an hour ago.
    let hour_ago = chrono::Utc::now().timestamp_millis() - 3_600_000;
    let mut letters = Vec::new();
    for (i, (key, error_type)) in [
        ("a", "Rejected"),
        ("b", "Rejected"),
        ("a", "Timeout"),
        ("a", "Rejected"),
        ("c", "Rejected"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut d = dead_letter(&s.topic, (i % 3) as i32, 100 + i as i64, key, error_type);
        if i == 4 {
            d.failed_by = "audit-sink/audit-sink".into();
        }
        d.timestamp = hour_ago + 1000 * i as i64;
        letters.push(d);
    }
    let offsets = s.write_letters(&letters).await?;

    // errorType and key together: letters 0 and 3.
    let out = s
        .run(&[
            "replay",
            "--topic",
            &s.dlq,
            "--error-type",
            "Rejected",
            "--key",
            "a",
            "--as",
            "op",
        ])
        .await?;
    assert_eq!(out.code(), Some(0), "{out:?}");
    let replayed: Vec<String> = s.replay_counts().await?.into_keys().collect();
    let expected: Vec<String> = [offsets[0], offsets[3]]
        .iter()
        .map(|o| format!("{}/0/{o}", s.dlq))
        .collect();
    assert_eq!(replayed, expected);

    // failedBy, then original partition + offset, then a dead-letter offset: parked.
    s.run(&[
        "park",
        "--topic",
        &s.topic,
        "--failed-by",
        "audit-sink/audit-sink",
        "--as",
        "op",
    ])
    .await?;
    s.run(&[
        "park",
        "--topic",
        &s.topic,
        "--partition",
        "1",
        "--offset",
        "101",
        "--as",
        "op",
    ])
    .await?;
    let parked: Vec<String> = s
        .markers()
        .await?
        .into_iter()
        .filter(|(a, _)| a == "parked")
        .map(|(_, p)| p)
        .collect();
    assert_eq!(
        parked,
        [
            format!("{}/0/{}", s.dlq, offsets[4]),
            format!("{}/0/{}", s.dlq, offsets[1])
        ]
    );

    // Time range, since inclusive and until exclusive: letters 1 and 2 of all five.
    let (since, until) = ((hour_ago + 1000).to_string(), (hour_ago + 3000).to_string());
    let out = s
        .run(&[
            "inspect", "--topic", &s.topic, "--all", "--since", &since, "--until", &until, "--json",
        ])
        .await?;
    let in_range: Vec<i64> = out.json_lines().iter().map(dlq_offset).collect();
    assert_eq!(in_range, [offsets[1], offsets[2]], "{out:?}");
    let out = s
        .run(&[
            "inspect",
            "--topic",
            &s.topic,
            "--since",
            "2000-01-01",
            "--json",
        ])
        .await?;
    let waiting: Vec<i64> = out.json_lines().iter().map(dlq_offset).collect();
    assert_eq!(
        waiting,
        [offsets[2]],
        "only the Timeout letter is left waiting"
    );
    let all = s
        .run(&["inspect", "--topic", &s.topic, "--all", "--json"])
        .await?
        .json_lines();
    assert_eq!(all.len(), 5);
    Ok(())
}

#[tokio::test]
async fn the_rate_limit_holds_within_ten_percent() -> Result<()> {
    let s = Scenario::new("").await?;
    let letters: Vec<_> = (0..41)
        .map(|i| dead_letter(&s.topic, 0, i, "k", "Rejected"))
        .collect();
    s.write_letters(&letters).await?;
    let out = s
        .run(&["replay", "--topic", &s.topic, "--rate", "10", "--as", "op"])
        .await?;
    assert_eq!(out.code(), Some(0), "{out:?}");
    // The group of a real run exists (the dry-run test relies on seeing it).
    let prefix = format!("{}-cli-{}", s.group, s.dlq);
    assert!(tk::group_names(&tk::kafka())
        .await?
        .iter()
        .any(|g| g.starts_with(&prefix)));
    let mut times: Vec<i64> = s
        .replays()
        .await?
        .iter()
        .filter_map(|r| r.timestamp)
        .collect();
    assert_eq!(times.len(), 41, "{out:?}");
    times.sort();
    let span_s = (times[40] - times[0]) as f64 / 1000.0;
    let rate = 40.0 / span_s;
    assert!(
        (9.0..=11.0).contains(&rate),
        "40 intervals in {span_s:.3} s: {rate:.2} records/s"
    );
    Ok(())
}

#[tokio::test]
async fn the_seeds_json_dead_letter_is_parked_byte_exact_with_an_audit_event() -> Result<()> {
    let s = Scenario::new("").await?;
    let (key, value) = seed_letter(&s.topic, "evt-2");
    let producer = tk::producer(&tk::kafka())?;
    tk::produce(
        &producer,
        &s.dlq,
        Some(key.as_bytes()),
        &value,
        &[("origin", b"seed")],
    )
    .await?;

    let out = s
        .run(&[
            "park",
            "--topic",
            &s.topic,
            "--reason",
            "malformed at the source",
            "--as",
            "carol",
        ])
        .await?;
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(out.stdout.contains("parked 1 of 1"), "{out:?}");

    let parked = tk::read_committed(&tk::kafka(), &s.parked).await?;
    assert_eq!(parked.len(), 1);
    assert_eq!(
        parked[0].payload.as_deref(),
        Some(&value[..]),
        "the dead letter byte-exact"
    );
    assert_eq!(parked[0].key.as_deref(), Some(key.as_bytes()));
    assert_eq!(
        parked[0].headers[0],
        ("origin".to_string(), Some(b"seed".to_vec()))
    );
    assert_eq!(
        parked[0].header("dora-parked-from"),
        Some(format!("{}/0/0", s.dlq).as_bytes())
    );
    assert_eq!(
        parked[0].header("dora-parked-reason"),
        Some(&b"malformed at the source"[..])
    );
    assert_eq!(
        tk::record_count(&tk::kafka(), &s.topic).await?,
        0,
        "nothing replayed"
    );

    let l = s.list().await?;
    assert_eq!(
        (l["waiting"].as_u64(), l["parked"].as_u64()),
        (Some(0), Some(1)),
        "{l}"
    );
    let audit = s.audit_events().await?;
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (audit[0].user_id.as_str(), audit[0].action.as_str()),
        ("carol", "dlq.park")
    );
    assert_eq!(audit[0].details["reason"], "malformed at the source");
    assert_eq!(
        audit[0].details["records"][0]["errorType"],
        "JSONDecodeError"
    );
    assert_eq!(audit[0].details["count"], 1);
    Ok(())
}

#[tokio::test]
async fn a_replay_killed_in_the_middle_then_run_again_replays_each_record_exactly_once(
) -> Result<()> {
    let s = Scenario::new("").await?;
    let letters: Vec<_> = (0..1000)
        .map(|i| dead_letter(&s.topic, (i % 3) as i32, i, &format!("k{i}"), "Rejected"))
        .collect();
    s.write_letters(&letters).await?;
    let mut first = s.start(&["replay", "--topic", &s.topic, "--rate", "200", "--as", "op"])?;
    tk::eventually(tk::DEADLINE, || async {
        let n = s.replays().await.ok()?.len();
        (n >= 200).then_some(())
    })
    .await?;
    first.kill().await?;
    let done_before = s.replays().await?.len();
    assert!(
        done_before < 1000,
        "killed in the middle ({done_before} replayed)"
    );

    let out = s
        .run(&["replay", "--topic", &s.topic, "--as", "op"])
        .await?;
    assert_eq!(out.code(), Some(0), "{out:?}");
    let counts = s.replay_counts().await?;
    assert_eq!(counts.len(), 1000, "every letter replayed");
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "replayed more than once: {twice:?}");
    let marked: std::collections::BTreeSet<String> =
        s.markers().await?.into_iter().map(|(_, p)| p).collect();
    assert_eq!(s.markers().await?.len(), 1000);
    // Markers name a transaction's letters of a partition together (3
    // partitions, at most 100 letters per rated transaction, 1 000 unrated).
    let marker_records = s.marker_records().await?;
    assert!(marker_records < 100, "{marker_records} marker records");
    // Each letter named by exactly one committed audit event.
    let audited = s.audited_letters().await?;
    assert_eq!(audited.len(), 1000);
    assert_eq!(
        audited
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>(),
        marked
    );
    assert_eq!(s.list().await?["waiting"], 0);
    Ok(())
}

#[tokio::test]
async fn sigterm_in_the_middle_exits_0_and_leaves_nothing_half_replayed() -> Result<()> {
    let s = Scenario::new("").await?;
    let letters: Vec<_> = (0..200)
        .map(|i| dead_letter(&s.topic, 0, i, "k", "Rejected"))
        .collect();
    s.write_letters(&letters).await?;
    let mut run = s.start(&["replay", "--topic", &s.topic, "--rate", "40", "--as", "op"])?;
    tk::eventually(tk::DEADLINE, || async {
        (s.replays().await.ok()?.len() >= 40).then_some(())
    })
    .await?;
    let status = run.terminate(std::time::Duration::from_secs(30)).await?;
    assert!(status.success(), "exit {status}: {}", run.log());

    // Each letter is either wholly replayed (record, marker, audit event) or untouched.
    let replayed: std::collections::BTreeSet<String> =
        s.replay_counts().await?.into_keys().collect();
    let marked: std::collections::BTreeSet<String> =
        s.markers().await?.into_iter().map(|(_, p)| p).collect();
    let named = s.audited_letters().await?;
    let audited: std::collections::BTreeSet<String> = named.iter().cloned().collect();
    assert_eq!(named.len(), audited.len(), "a letter audited twice");
    assert!(replayed.len() < 200, "stopped in the middle");
    assert_eq!(replayed, marked);
    assert_eq!(replayed, audited);
    assert_eq!(
        s.list().await?["waiting"].as_u64(),
        Some(200 - replayed.len() as u64)
    );
    Ok(())
}

/// The dead-letter offset of an `inspect --json` line (`<dlq>/<partition>/<offset>`).
fn dlq_offset(line: &serde_json::Value) -> i64 {
    let position = line["position"].as_str().expect("position");
    position
        .rsplit('/')
        .next()
        .and_then(|o| o.parse().ok())
        .expect("offset")
}
