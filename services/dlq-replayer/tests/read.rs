//! The read-only side of the operator's commands, as real processes against
//! the real stack: `list` and `inspect` (the seed's JSON dead letters too),
//! dry runs that write nothing, and replays refused before anything is
//! written (a letter from another topic, a topic outside the catalog).

mod common;

use std::time::Duration;

use anyhow::Result;
use common::*;
use dora_testkit as tk;

#[tokio::test]
async fn dry_run_writes_nothing_and_moves_no_offset() -> Result<()> {
    let s = Scenario::new("").await?;
    let letters: Vec<_> = (0..3)
        .map(|i| dead_letter(&s.topic, 0, i, "k", "Rejected"))
        .collect();
    s.write_letters(&letters).await?;
    let counts = || async {
        let k = tk::kafka();
        Ok::<_, anyhow::Error>((
            tk::record_count(&k, &s.topic).await?,
            tk::record_count(&k, &s.dlq).await?,
            tk::record_count(&k, &s.parked).await?,
            tk::record_count(&k, &s.audit).await?,
        ))
    };
    let before = counts().await?;
    for command in ["replay", "park"] {
        let out = s
            .run(&[command, "--topic", &s.topic, "--dry-run", "--as", "bob"])
            .await?;
        assert_eq!(out.code(), Some(0), "{out:?}");
        assert_eq!(
            out.stdout
                .lines()
                .filter(|l| l.starts_with("would"))
                .count(),
            4,
            "3 letters and the total: {out:?}"
        );
    }
    assert_eq!(counts().await?, before, "nothing written");
    let prefix = format!("{}-cli-{}", s.group, s.dlq);
    let groups = tk::group_names(&tk::kafka()).await?;
    assert!(
        !groups.iter().any(|g| g.starts_with(&prefix)),
        "no consumer group, so no offset: {groups:?}"
    );
    assert_eq!(s.list().await?["waiting"], 3);
    Ok(())
}

#[tokio::test]
async fn a_replay_only_goes_back_where_the_letter_came_from_and_only_to_catalog_topics(
) -> Result<()> {
    let s = Scenario::new("").await?;
    let foreign = dead_letter("risk-assessments", 0, 1, "k", "Rejected");
    s.write_letters(&[foreign]).await?;
    let out = s
        .run(&["replay", "--topic", &s.topic, "--as", "op"])
        .await?;
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("came from risk-assessments"), "{out:?}");
    assert!(out.stderr.contains("nothing replayed"), "{out:?}");
    assert!(s.markers().await?.is_empty());
    assert_eq!(tk::record_count(&tk::kafka(), &s.topic).await?, 0);

    // The scenario's topic outside the catalog: refused as well.
    let t = Scenario::new("").await?;
    let own = dead_letter(&t.topic, 0, 1, "k", "Rejected");
    t.write_letters(&[own]).await?;
    let mut env = t.env();
    env.push(("DORA_DLQ__REPLAY_TOPICS", "[\"agent-events\"]".into()));
    let (status, _, stderr) = tk::run_with_args(
        BIN,
        &["replay", "--topic", &t.topic, "--as", "op"],
        &env,
        Duration::from_secs(60),
    )
    .await?;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("not a topic of the platform's catalog"),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn list_counts_waiting_letters_by_error_type_and_failing_service() -> Result<()> {
    let s = Scenario::new("").await?;
    let mut letters: Vec<_> = (0..3)
        .map(|i| dead_letter(&s.topic, 0, i, "a", "Rejected"))
        .collect();
    letters.push(dead_letter(&s.topic, 1, 7, "b", "RegistryUnavailable"));
    letters[0].timestamp = 1_700_000_000_000;
    letters[3].failed_by = "audit-sink/audit-sink".into();
    s.write_letters(&letters).await?;
    let producer = tk::producer(&tk::kafka())?;
    tk::produce(
        &producer,
        &s.dlq,
        Some(b"x"),
        b"\x07 not a dead letter",
        &[],
    )
    .await?;

    let l = s.list().await?;
    assert_eq!(l["topic"], s.dlq.as_str());
    assert_eq!(l["waiting"], 5);
    assert_eq!(
        (l["replayed"].as_u64(), l["parked"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(l["byErrorType"]["Rejected"], 3);
    assert_eq!(l["byErrorType"]["RegistryUnavailable"], 1);
    assert_eq!(l["byErrorType"]["<unreadable>"], 1);
    assert_eq!(l["byFailedBy"]["report-ingest/report-ingest"], 3);
    assert_eq!(l["byFailedBy"]["audit-sink/audit-sink"], 1);
    assert_eq!(l["oldest"], 1_700_000_000_000i64);
    assert!(l["newest"].as_i64().unwrap() > 1_700_000_000_000);

    // Without --topic: every topic matching dlq.pattern (here only this one).
    let out = s.run(&["list"]).await?;
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(
        out.stdout.contains(&s.dlq) && out.stdout.contains("Rejected=3"),
        "{out:?}"
    );

    // The unreadable record is shown as bytes.
    let out = s
        .run(&[
            "inspect",
            "--topic",
            &s.dlq,
            "--error-type",
            "<unreadable>",
            "--json",
        ])
        .await?;
    let shown = out.json_lines();
    assert_eq!(shown.len(), 1, "{out:?}");
    assert_eq!(shown[0]["format"], "unreadable");
    assert_eq!(shown[0]["originalValue"]["format"], "bytes");
    assert!(
        shown[0]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("magic byte"),
        "{}",
        shown[0]
    );
    Ok(())
}

#[tokio::test]
async fn the_seeds_json_dead_letter_is_listed_and_inspected() -> Result<()> {
    let s = Scenario::new("").await?;
    let (key, value) = seed_letter(&s.topic, "evt-1");
    let producer = tk::producer(&tk::kafka())?;
    tk::produce(&producer, &s.dlq, Some(key.as_bytes()), &value, &[]).await?;

    let l = s.list().await?;
    assert_eq!(l["waiting"], 1);
    assert_eq!(l["byErrorType"]["JSONDecodeError"], 1);
    assert_eq!(l["byFailedBy"]["unknown"], 1);

    let out = s.run(&["inspect", "--topic", &s.topic, "--json"]).await?;
    let shown = out.json_lines();
    assert_eq!(shown.len(), 1, "{out:?}");
    let d = &shown[0];
    assert_eq!(d["format"], "seed-json");
    assert_eq!(d["originalTopic"], s.topic.as_str());
    assert_eq!(
        (
            d["originalPartition"].as_i64(),
            d["originalOffset"].as_i64()
        ),
        (Some(-1), Some(-1))
    );
    assert_eq!(d["originalValue"]["value"]["agent_id"], "py-agent");
    assert_eq!(
        d["originalKey"],
        serde_json::Value::Null,
        "the seed keeps no original key"
    );
    let text = s.run(&["inspect", "--topic", &s.topic]).await?;
    assert!(
        text.stdout.contains("the seed's JSON dead letter"),
        "{text:?}"
    );

    // It cannot be replayed byte-exact: refused, with the advice to park it.
    let out = s
        .run(&["replay", "--topic", &s.topic, "--as", "op"])
        .await?;
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("park it"), "{out:?}");
    Ok(())
}
