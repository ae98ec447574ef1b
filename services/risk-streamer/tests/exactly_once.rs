//! Exactly once across a crash and a rebalance, risk-streamer as real
//! processes against the real broker: an instance SIGKILLed mid-window and
//! restarted, and an instance joined by a second one, each leave on their
//! alerts topic (read_committed) exactly the transitions of an uninterrupted
//! run over the same input — none missing, none twice — including a quiet
//! organisation's CLEARED that came from the wall-clock tick (no input
//! involved) and RAISED alerts still open when the first instance went away.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use common::*;
use dora_testkit as tk;

const TICK_MS: u64 = 200;
/// A longer window than the other tests: the input's two halves must reach
/// the reference run less than window + lateness apart, or its busy
/// organisations would be cleared as quiet in between.
const WINDOW: i64 = 10_000;
const LATENESS: i64 = 2_000;

/// Busy organisations on input partitions 0 and 1, each hot (scores around
/// 0.9) for 14 of every 24 s of event time, shifted by 4 s per
/// organisation, so that several breaches are open at 20 s; every one is
/// low from 30 s on, so every alert has cleared by the end (50 s).
fn busy(t0: i64, from: i64, to: i64) -> Vec<Assessment> {
    let mut out = Vec::new();
    for k in 0..6i64 {
        let org = format!("org-busy-{k}");
        let mut t = t0 + from + k * 41;
        while t < t0 + to {
            let secs = (t - t0) / 1000;
            let hot = (secs + 4 * k).rem_euclid(24) < 14 && secs < 30;
            let score = if hot {
                0.86 + 0.01 * (secs % 5) as f64
            } else {
                0.2 + 0.01 * k as f64
            };
            let mut a = assessment(&org, t, score);
            a.partition = Some((k % 2) as i32);
            out.push(a);
            t += 200 + 13 * k;
        }
    }
    out.sort_by_key(|a| a.timestamp_ms);
    out
}

/// One organisation alone on partition 2: raised, then silent for good.
fn quiet(t0: i64) -> Vec<Assessment> {
    steady("org-quiet", t0, t0 + 4_000, 250, 0.95)
        .into_iter()
        .map(|mut a| {
            a.partition = Some(2);
            a
        })
        .collect()
}

fn check_shape(t: &BTreeMap<String, Vec<Seen>>, quiet: bool) {
    if quiet {
        assert_eq!(states(t, "org-quiet"), [RAISED, CLEARED], "{t:?}");
        assert_eq!(
            t["org-quiet"][1].samples, 0,
            "cleared by the tick: its window emptied"
        );
    }
    for k in 0..6 {
        let s = states(t, &format!("org-busy-{k}"));
        assert!(s.len() >= 2, "org-busy-{k} raises and clears: {s:?}");
        assert!(
            s.windows(2).all(|w| w[0] != w[1]),
            "org-busy-{k} alternates: {s:?}"
        );
        assert_eq!(s.last().map(String::as_str), Some(CLEARED));
    }
}

/// The harness and the reference (uninterrupted) instance over the same
/// input, both with the wall-clock tick every `tick_ms` (0: off).
async fn setup(tick_ms: u64) -> Result<(Harness, Harness, tk::ServiceProcess, i64)> {
    let h = Harness::new(3).await?.with_window(WINDOW, LATENESS);
    let r = h.reference().await?;
    let rp = r
        .spawn(&tk::unique("risk-streamer-ref-tx"), tick_ms)
        .await?;
    Ok((h, r, rp, now_ms() - 600_000))
}

/// Produces the quiet organisation and waits until `h`'s alerts show its
/// tick-made CLEARED.
async fn quiet_cleared(h: &Harness, t0: i64) -> Result<()> {
    h.produce(&quiet(t0)).await?;
    h.wait_transitions("the quiet organisation cleared by the tick", |t| {
        states(t, "org-quiet") == [RAISED, CLEARED]
    })
    .await?;
    Ok(())
}

/// Produces the busy organisations' first 20 s and waits until they are
/// committed with some breach open.
async fn first_half(h: &Harness, t0: i64) -> Result<()> {
    h.produce(&busy(t0, 0, 20_000)).await?;
    h.wait_all_committed(&h.group).await?;
    let open = h
        .wait_transitions("an open breach", |t| {
            (0..6).any(|k| {
                states(t, &format!("org-busy-{k}"))
                    .last()
                    .map(String::as_str)
                    == Some(RAISED)
            })
        })
        .await?;
    assert!(open.len() > 1);
    Ok(())
}

/// Waits until both groups committed everything, then compares the two alert topics.
async fn compare(h: &Harness, r: &Harness, quiet: bool) -> Result<()> {
    h.wait_all_committed(&h.group).await?;
    r.wait_all_committed(&r.group).await?;
    let orgs = if quiet { 7 } else { 6 };
    let done = |t: &BTreeMap<String, Vec<Seen>>| {
        t.len() == orgs
            && t.values()
                .all(|s| s.last().is_some_and(|x| x.state == CLEARED))
    };
    let expected = r
        .wait_transitions("the reference run's alerts", done)
        .await?;
    check_shape(&expected, quiet);
    let got = h
        .wait_transitions("the same alerts", |t| t == &expected)
        .await?;
    assert_eq!(got, expected);
    assert_eq!(
        h.committed_alerts().await?.len(),
        r.committed_alerts().await?.len(),
        "none twice"
    );
    Ok(())
}

#[tokio::test]
async fn sigkill_mid_window_and_restart_leaves_exactly_the_uninterrupted_transitions() -> Result<()>
{
    let (h, r, mut rp, t0) = setup(TICK_MS).await?;
    let tx = tk::unique("risk-streamer-tx");
    let mut p = h.spawn(&tx, TICK_MS).await?;
    quiet_cleared(&h, t0).await?;
    first_half(&h, t0).await?;
    p.kill().await?;
    // the rest reaches the reference at once (its busy organisations must
    // not fall quiet), the restarted instance after its rebuild
    h.produce(&busy(t0, 20_000, 50_000)).await?;
    let mut p = h.spawn(&tx, TICK_MS).await?;
    compare(&h, &r, true).await?;
    assert!(
        p.log().contains("alert history read"),
        "the restarted instance read its alerts back"
    );
    assert_eq!(p.terminate(Duration::from_secs(30)).await?.code(), Some(0));
    assert_eq!(rp.terminate(Duration::from_secs(30)).await?.code(), Some(0));
    Ok(())
}

/// Without the wall-clock tick (the crash test covers it), so that how long
/// the second instance takes to join cannot matter.
#[tokio::test]
async fn a_second_instance_joining_leaves_exactly_the_uninterrupted_transitions() -> Result<()> {
    let (h, r, mut rp, t0) = setup(0).await?;
    let mut first = h.spawn(&tk::unique("risk-streamer-a"), 0).await?;
    first_half(&h, t0).await?;
    let reads = |p: &tk::ServiceProcess| p.log().matches("alert history read").count();
    let before = reads(&first);
    // the rebalance: partitions move and are rebuilt mid-breach by whoever gets them
    let mut second = h.spawn(&tk::unique("risk-streamer-b"), 0).await?;
    tk::eventually(tk::DEADLINE, || {
        let moved = reads(&first) > before && reads(&second) >= 1;
        async move { moved.then_some(()) }
    })
    .await?;
    h.produce(&busy(t0, 20_000, 50_000)).await?;
    compare(&h, &r, false).await?;
    for p in [&mut first, &mut second, &mut rp] {
        assert_eq!(p.terminate(Duration::from_secs(30)).await?.code(), Some(0));
    }
    Ok(())
}
