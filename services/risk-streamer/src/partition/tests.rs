//! The partition's guarantees as pure logic: edge-triggered alerts with
//! hysteresis, arrival-order independence within the lateness, late records
//! left out, the quiet-organisation clear, rollback on abort, and (the
//! exactly-once model) a rebuild from committed alerts plus replayed input
//! continuing exactly as an uninterrupted run.

use super::*;
use crate::restore::{AlertHistory, CommittedAlert};
use crate::window::score_of;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const W: i64 = 10;
const L: i64 = 4_000;

fn rules() -> Rules {
    Rules {
        window_secs: W,
        lateness_ms: L,
        raise_above: score_of(0.8).unwrap(),
        clear_below: score_of(0.75).unwrap(),
        top_reports: 3,
    }
}

/// One assessment and the wall-clock time it arrives.
#[derive(Clone, Debug)]
struct Input {
    org: String,
    ts: i64,
    score: f64,
    report: String,
    arrival: i64,
}

fn input(org: &str, ts: i64, score: f64) -> Input {
    Input {
        org: org.into(),
        ts,
        score,
        report: format!("{org}-{ts}"),
        arrival: ts,
    }
}

/// What a transition says, without the wall-clock detection time.
type Seen = (String, Edge, i64, u64, i128, Option<Score>, Vec<String>);

fn seen(t: &Transition) -> Seen {
    (
        t.organization_id.to_string(),
        t.edge,
        t.second,
        t.totals.count,
        t.totals.sum,
        t.peak,
        t.top_reports.clone(),
    )
}

fn offer(
    p: &mut PartitionWindows,
    i: &Input,
    mode: Mode,
    hints: &AlertHistory,
) -> (Admission, Vec<Transition>) {
    let obs = Observation {
        organization_id: &i.org,
        timestamp_ms: i.ts,
        score: score_of(i.score).unwrap(),
        report_id: &i.report,
    };
    let a = p.offer(&obs, mode, i.arrival, |org| hints.hint(org));
    (a, p.evaluate(mode, i.arrival))
}

fn run(inputs: &[Input]) -> (Vec<Seen>, Vec<Admission>) {
    let mut p = PartitionWindows::new(rules());
    let none = AlertHistory::default();
    let mut out = Vec::new();
    let mut admissions = Vec::new();
    for i in inputs {
        let (a, ts) = offer(&mut p, i, Mode::Live, &none);
        admissions.push(a);
        out.extend(ts.iter().map(seen));
    }
    (out, admissions)
}

fn edges(seen: &[Seen], org: &str) -> Vec<Edge> {
    seen.iter().filter(|s| s.0 == org).map(|s| s.1).collect()
}

/// Scores of `org` every 500 ms from `from` for `secs` seconds.
fn steady(org: &str, from: i64, secs: i64, score: f64) -> Vec<Input> {
    (0..secs * 2)
        .map(|k| input(org, from + k * 500, score))
        .collect()
}

fn by_time(mut inputs: Vec<Input>) -> Vec<Input> {
    inputs.sort_by_key(|i| (i.arrival, i.ts));
    inputs
}

#[test]
fn a_sustained_breach_raises_once_and_clears_once() {
    let mut inputs = steady("org-a", 0, 30, 0.9);
    inputs.extend(steady("org-a", 30_000, 30, 0.3));
    inputs.extend(steady("org-b", 60_000, 20, 0.1)); // moves the watermark on
    let (out, _) = run(&by_time(inputs));
    assert_eq!(edges(&out, "org-a"), vec![Edge::Raised, Edge::Cleared]);
    assert!(edges(&out, "org-b").is_empty());
    let raised = &out[0];
    assert_eq!(
        (raised.2, raised.3),
        (0, 2),
        "raised at the first closed second"
    );
    let cleared = out.iter().find(|s| s.1 == Edge::Cleared).unwrap();
    assert!(
        cleared.3 > 0,
        "cleared by the average, not by an empty window"
    );
}

#[test]
fn scores_hovering_within_the_margin_never_flap() {
    let mut inputs = steady("org-a", 0, 15, 0.9);
    let hover = [0.78, 0.80, 0.76, 0.79, 0.77];
    for k in 0..200 {
        inputs.push(input(
            "org-a",
            15_000 + k * 500,
            hover[k as usize % hover.len()],
        ));
    }
    // never above the threshold, never below the clear level: no alert at all
    for k in 0..200 {
        inputs.push(input("org-c", k * 500, hover[k as usize % hover.len()]));
    }
    let (out, _) = run(&by_time(inputs));
    assert_eq!(edges(&out, "org-a"), vec![Edge::Raised]);
    assert!(edges(&out, "org-c").is_empty());
}

/// Inputs of a few organisations whose arrival lags their timestamp by up
/// to `max_delay` ms, in arrival order.
fn jittered(rng: &mut StdRng, count: usize, max_delay: i64) -> Vec<Input> {
    let orgs = ["org-a", "org-b", "org-c", "org-d"];
    let mut ts = 1_000_000;
    let mut inputs: Vec<Input> = (0..count)
        .map(|_| {
            ts += rng.random_range(0..700);
            let org = orgs[rng.random_range(0..orgs.len())];
            let hot = (ts / 20_000) % 2 == 0; // phases of high and low risk
            let score = if hot {
                rng.random_range(0.7..1.0)
            } else {
                rng.random_range(0.0..0.8)
            };
            let score = (score * 1000.0f64).round() / 1000.0;
            Input {
                org: org.into(),
                ts,
                score,
                report: format!("r-{ts}-{}", rng.random_range(0..1000)),
                arrival: ts + rng.random_range(0..=max_delay),
            }
        })
        .collect();
    inputs.sort_by_key(|i| (i.arrival, i.ts));
    inputs
}

#[test]
fn arrival_order_within_the_lateness_does_not_change_the_alerts() {
    for seed in 0..50 {
        let mut rng = StdRng::seed_from_u64(seed);
        let shuffled = jittered(&mut rng, 600, L - 1_000);
        let mut in_order = shuffled.clone();
        in_order.sort_by_key(|i| i.ts);
        let (a, admitted_a) = run(&shuffled);
        let (b, admitted_b) = run(&in_order);
        assert!(
            admitted_a
                .iter()
                .chain(&admitted_b)
                .all(|x| *x == Admission::Accepted),
            "seed {seed}"
        );
        assert!(!a.is_empty(), "seed {seed}: the scenario raises alerts");
        assert_eq!(a, b, "seed {seed}");
    }
}

#[test]
fn a_record_later_than_the_lateness_is_left_out_and_changes_nothing() {
    let mut rng = StdRng::seed_from_u64(7);
    let inputs = jittered(&mut rng, 400, 0);
    let (expected, _) = run(&inputs);
    let mut with_late = inputs.clone();
    let at = 300;
    let newest = inputs[..at].iter().map(|i| i.ts).max().unwrap();
    let late = Input {
        org: "org-a".into(),
        ts: newest - L - 1_500,
        score: 1.0,
        report: "late".into(),
        arrival: inputs[at].arrival,
    };
    with_late.insert(at, late);
    let (out, admissions) = run(&with_late);
    assert!(matches!(admissions[at], Admission::Late { .. }));
    assert_eq!(
        admissions
            .iter()
            .filter(|a| **a != Admission::Accepted)
            .count(),
        1
    );
    assert_eq!(out, expected);
}

#[test]
fn a_quiet_organisations_alert_clears_after_window_and_lateness_of_silence() {
    let mut p = PartitionWindows::new(rules());
    let none = AlertHistory::default();
    let mut out = Vec::new();
    for i in steady("org-a", 0, 12, 0.95) {
        out.extend(offer(&mut p, &i, Mode::Live, &none).1);
    }
    assert_eq!(out.len(), 1);
    let last_arrival = 11_500;
    assert!(p.clear_quiet(last_arrival + W * 1000 + L - 1).is_empty());
    let cleared = p.clear_quiet(last_arrival + W * 1000 + L);
    assert_eq!(cleared.len(), 1);
    assert_eq!(cleared[0].edge, Edge::Cleared);
    assert_eq!(cleared[0].totals.count, 0, "the window emptied");
    assert_eq!(
        cleared[0].second,
        11 + W,
        "the second the newest score aged out"
    );
    assert_eq!(
        cleared[0].detected_at, out[0].detected_at,
        "names its breach"
    );
    assert!(
        p.clear_quiet(last_arrival + 10 * W * 1000).is_empty(),
        "once"
    );
    // its records up to that second no longer count
    let stale = input("org-a", 20_000, 0.99);
    assert!(matches!(
        offer(&mut p, &stale, Mode::Live, &none).0,
        Admission::Late { .. }
    ));
}

#[test]
fn an_aborted_transaction_rolls_back_to_the_last_commit() {
    let mut rng = StdRng::seed_from_u64(11);
    let inputs = jittered(&mut rng, 500, 2_000);
    let (expected, _) = run(&inputs);
    let mut p = PartitionWindows::new(rules());
    let none = AlertHistory::default();
    let mut out = Vec::new();
    for chunk in inputs.chunks(37) {
        // first attempt: processed, then aborted
        for i in chunk {
            offer(&mut p, i, Mode::Live, &none);
        }
        p.clear_quiet(chunk[0].arrival);
        p.roll_back();
        for i in chunk {
            out.extend(offer(&mut p, i, Mode::Live, &none).1.iter().map(seen));
        }
        p.commit();
    }
    assert_eq!(out, expected);
}

#[test]
fn idle_organisations_are_forgotten() {
    let mut p = PartitionWindows::new(rules());
    let none = AlertHistory::default();
    for k in 0..1_000 {
        offer(
            &mut p,
            &input(&format!("org-{k}"), 1_000 + k, 0.5),
            Mode::Live,
            &none,
        );
    }
    assert_eq!(p.organizations(), 1_000);
    offer(
        &mut p,
        &input("org-x", 1_000 + W * 1000 + L + 5_000, 0.5),
        Mode::Live,
        &none,
    );
    assert_eq!(p.organizations(), 1, "every window but the newest aged out");
}

mod rebuild;
