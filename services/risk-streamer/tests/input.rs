//! What risk-streamer reads, risk-streamer as a real process against the
//! real broker and registry: the seed's JSON risk assessments count exactly
//! as Avro ones; an undecodable record, and one with a score outside [0, 1],
//! go to `<topic>-dlq` with the reason and the window goes on; an
//! assessment without a score is skipped and counted; a bad setting stops
//! the start with exit 78 naming the key.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::*;
use dora_testkit as tk;

/// A breach and its end for `org`.
fn breach(org: &str, t0: i64) -> Vec<Assessment> {
    let mut v = steady(org, t0, t0 + 8_000, 250, 0.9);
    v.extend(steady(org, t0 + 8_000, t0 + 16_000, 250, 0.2));
    for a in &mut v {
        // the same report ids for both organisations, so top reportIds compare
        a.report_id = format!("r-{}", a.timestamp_ms - t0);
    }
    v
}

#[tokio::test]
async fn seed_json_counts_the_same_as_avro_and_an_undecodable_record_goes_to_the_dlq() -> Result<()>
{
    let h = Harness::new(1).await?;
    let mut p = h.spawn(&tk::unique("risk-streamer-tx"), 0).await?;
    let t0 = now_ms() - 120_000;
    let garbage = b"\x07 neither Avro nor JSON".to_vec();
    let mut records = Vec::new();
    for (avro, json) in breach("org-avro", t0).iter().zip(breach("org-json", t0)) {
        records.push(outgoing(avro, h.avro(avro).await?));
        records.push(outgoing(&json, Harness::seed_json(&json)));
        if avro.timestamp_ms == t0 + 4_000 {
            // mid-breach: an undecodable value, and the seed's pending score
            records.push(tk::Outgoing {
                key: "org-avro".into(),
                value: garbage.clone(),
                timestamp_ms: Some(avro.timestamp_ms),
                partition: None,
            });
            // a score outside [0, 1]: decodable, but not an assessment to count
            let impossible = Assessment {
                score: Some(7.0),
                report_id: "impossible".into(),
                ..avro.clone()
            };
            records.push(outgoing(&impossible, h.avro(&impossible).await?));
            let pending = Assessment {
                score: None,
                report_id: "pending".into(),
                ..json.clone()
            };
            records.push(outgoing(&pending, Harness::seed_json(&pending)));
        }
    }
    let clock = assessment("org-clock", t0 + 20_000, 0.1);
    records.push(outgoing(&clock, h.avro(&clock).await?));
    h.produce_raw(&records).await?;
    h.wait_all_committed(&h.group).await?;
    let t = h
        .wait_transitions("both breaches", |t| {
            states(t, "org-avro") == [RAISED, CLEARED]
        })
        .await?;
    assert_eq!(
        t["org-json"], t["org-avro"],
        "the seed's JSON counts as Avro does"
    );
    let letters = h.dead_letters().await?;
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert_eq!(
        letters[0].original_message, garbage,
        "the original bytes, exactly"
    );
    assert_eq!(letters[0].original_key.as_deref(), Some(&b"org-avro"[..]));
    assert_eq!(letters[0].error_type, "SchemaError");
    assert!(
        letters[0].error_message.contains("unknown magic byte 0x07"),
        "the reason names the problem: {}",
        letters[0].error_message
    );
    assert_eq!(letters[1].error_type, "InvalidRiskAssessment");
    assert!(
        letters[1].error_message.contains("riskScore"),
        "the reason names the field: {}",
        letters[1].error_message
    );
    assert_eq!(
        metric(
            &p,
            "risk_streamer_skipped_records_total",
            &[("reason", "no_score")]
        )
        .await?,
        1.0
    );
    assert_eq!(p.terminate(Duration::from_secs(30)).await?.code(), Some(0));
    Ok(())
}

#[tokio::test]
async fn an_unusable_rule_exits_78_naming_the_key() -> Result<()> {
    let h = Harness::new(1).await?;
    let mut env = h.env(&tk::unique("risk-streamer-tx"), 0);
    env.push(("DORA_RISK__WINDOW_MS", "2500".into()));
    let (status, _, stderr) = tk::run_to_exit(BIN, &env, Duration::from_secs(30)).await?;
    assert_eq!(status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("risk.window_ms"), "{stderr}");
    Ok(())
}
