//! A service built on the boot sequence and the consume loop, as a real
//! process (`kafka-probe`): at-least-once across a SIGKILL, a clean SIGTERM
//! drain under load, and exactly once across a SIGKILL between producing a
//! transaction's outputs and committing it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use dora_testkit::{
    committed_offset, create_topic, eventually, kafka, read_all, read_committed, unique,
    ServiceProcess, DEADLINE,
};

const PROBE: &str = env!("CARGO_BIN_EXE_kafka-probe");

/// Produces `{"id": n}` for every n in `ids` to `topic` (key = id), awaiting every ack.
async fn produce_ids(topic: &str, ids: std::ops::Range<u64>) -> anyhow::Result<()> {
    let records: Vec<(String, Vec<u8>)> = ids
        .map(|n| (n.to_string(), format!("{{\"id\":{n}}}").into_bytes()))
        .collect();
    dora_testkit::produce_all(&kafka(), topic, &records).await
}

/// `(partition, offset, id)` per line of the probe's output file.
fn processed(path: &std::path::Path) -> Vec<(i32, i64, u64)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ' ');
            let p = it.next()?.parse().ok()?;
            let o = it.next()?.parse().ok()?;
            let v: serde_json::Value = serde_json::from_str(it.next()?).ok()?;
            Some((p, o, v["id"].as_u64()?))
        })
        .collect()
}

fn probe_env(
    topic: &str,
    group: &str,
    out: &std::path::Path,
    extra: &[(&str, String)],
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("DORA_PROBE__TOPIC", topic.to_string()),
        ("DORA_PROBE__OUTPUT_PATH", out.display().to_string()),
        ("DORA_CONSUMER__GROUP_ID", group.to_string()),
        ("DORA_CONSUMER__FETCH_MIN_BYTES", "1".to_string()),
        ("DORA_CONSUMER__FETCH_MAX_WAIT_MS", "100".to_string()),
        ("DORA_CONSUMER__COMMIT_INTERVAL_MS", "300".to_string()),
        ("DORA_CONSUMER__SESSION_TIMEOUT_MS", "6000".to_string()),
        ("DORA_TELEMETRY__LOG_FILTER", "info".to_string()),
    ];
    for (k, v) in extra {
        let k: &'static str = Box::leak(k.to_string().into_boxed_str());
        env.push((k, v.clone()));
    }
    env
}

async fn wait_lines(out: &std::path::Path, n: usize, deadline: Duration) -> anyhow::Result<()> {
    eventually(deadline, || {
        let ok = processed(out).len() >= n;
        async move { ok.then_some(()) }
    })
    .await
}

#[tokio::test]
async fn a_sigkilled_consumer_restarted_processes_every_id() -> anyhow::Result<()> {
    let topic = unique("crash");
    let group = unique("crash-g");
    create_topic(&kafka(), &topic, 3).await?;
    produce_ids(&topic, 0..600).await?;
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("processed");
    let env = probe_env(&topic, &group, &out, &[("DORA_PROBE__WORK_MS", "5".into())]);
    let mut first = ServiceProcess::spawn(PROBE, &env).await?;
    wait_lines(&out, 150, DEADLINE).await?;
    let killed = first.kill().await?;
    assert!(!killed.success(), "the probe was killed, not stopped");
    let before = processed(&out).len();
    assert!(
        before < 600,
        "killed mid-stream ({before} of 600 processed)"
    );
    let mut second = ServiceProcess::spawn(PROBE, &env).await?;
    let ids = eventually(DEADLINE * 2, || {
        let ids: BTreeSet<u64> = processed(&out).into_iter().map(|(_, _, id)| id).collect();
        async move { (ids.len() == 600).then_some(ids) }
    })
    .await?;
    assert_eq!(
        ids,
        (0..600).collect(),
        "every produced id processed, none skipped"
    );
    let status = second.terminate(DEADLINE).await?;
    assert!(status.success(), "{}", second.log());
    Ok(())
}

#[tokio::test]
async fn sigterm_under_load_drains_commits_last_processed_plus_one_and_exits_zero(
) -> anyhow::Result<()> {
    let topic = unique("term");
    let group = unique("term-g");
    create_topic(&kafka(), &topic, 2).await?;
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("processed");
    let env = probe_env(
        &topic,
        &group,
        &out,
        &[
            ("DORA_PROBE__WORK_MS", "2".into()),
            ("DORA_CONSUMER__SHUTDOWN_DEADLINE_MS", "5000".into()),
        ],
    );
    let mut probe = ServiceProcess::spawn(PROBE, &env).await?;
    // Load: keep producing while the signal arrives.
    let t = topic.clone();
    let load = tokio::spawn(async move {
        for chunk in 0..40u64 {
            if produce_ids(&t, chunk * 50..chunk * 50 + 50).await.is_err() {
                break;
            }
        }
    });
    wait_lines(&out, 300, DEADLINE).await?;
    let started = Instant::now();
    let status = probe.terminate(Duration::from_secs(15)).await?;
    let took = started.elapsed();
    load.abort();
    assert!(status.success(), "exit status {status}\n{}", probe.log());
    assert!(took < Duration::from_secs(10), "drain took {took:?}");
    let lines = processed(&out);
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    for (p, o, _) in &lines {
        let e = last.entry(*p).or_insert(*o);
        *e = (*e).max(*o);
    }
    assert!(!last.is_empty());
    for (p, o) in last {
        assert_eq!(
            committed_offset(&kafka(), &group, &topic, p).await?,
            Some(o + 1),
            "partition {p}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_transactional_crash_between_produce_and_commit_shows_nothing_then_exactly_one_output_each(
) -> anyhow::Result<()> {
    let input = unique("txcrash-in");
    let output = unique("txcrash-out");
    let group = unique("txcrash-g");
    create_topic(&kafka(), &input, 2).await?;
    create_topic(&kafka(), &output, 2).await?;
    produce_ids(&input, 0..100).await?;
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("processed");
    let txn = unique("txcrash-id");
    let base = [
        ("DORA_PROBE__MODE", "transactional".to_string()),
        ("DORA_PROBE__OUTPUT_TOPIC", output.clone()),
        ("DORA_CONSUMER__TRANSACTIONAL_ID", txn.clone()),
    ];
    let mut hanging = base.to_vec();
    hanging.push(("DORA_PROBE__HANG_BEFORE_COMMIT", "true".into()));
    let mut first = ServiceProcess::spawn(PROBE, &probe_env(&input, &group, &out, &hanging)).await?;
    // The first transaction's outputs are acknowledged; its commit has not begun.
    let marker = dir.path().join("processed.holding");
    eventually(DEADLINE, || {
        let held = marker.exists();
        async move { held.then_some(()) }
    })
    .await?;
    let status = first.kill().await?;
    assert!(!status.success(), "the probe was killed");
    let uncommitted = read_all(&kafka(), &output).await?;
    assert!(
        !uncommitted.is_empty(),
        "the killed transaction had produced outputs"
    );
    assert!(
        read_committed(&kafka(), &output).await?.is_empty(),
        "a read_committed reader saw outputs of a transaction that never committed"
    );
    let mut second = ServiceProcess::spawn(PROBE, &probe_env(&input, &group, &out, &base)).await?;
    let outputs = eventually(DEADLINE * 2, || {
        let o = output.clone();
        async move {
            read_committed(&kafka(), &o)
                .await
                .ok()
                .filter(|m| m.len() >= 100)
        }
    })
    .await?;
    let mut ids: Vec<u64> = outputs
        .iter()
        .filter_map(|m| {
            serde_json::from_slice::<serde_json::Value>(m.payload()?).ok()?["id"].as_u64()
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        (0..100).collect::<Vec<_>>(),
        "each input exactly one committed output, none missing, none twice"
    );
    let status = second.terminate(DEADLINE).await?;
    assert!(status.success(), "{}", second.log());
    Ok(())
}
