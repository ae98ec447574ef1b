//! The exactly-once model: an instance that crashes (or loses its partition
//! in a rebalance) at any point, and a successor that rebuilds from what was
//! committed — the alerts (read back as an [`AlertHistory`]) and the input up
//! to the committed offset, replayed from `T - span` where `T` is the last
//! committed record's timestamp — together commit exactly the transitions of
//! an uninterrupted run: none missing, none twice, the same content.
//!
//! The recovered runs also abort a fifth of their transactions (the windows
//! roll back and the records come again).
//!
//! The input satisfies the precondition the crate docs state: a record
//! arrives within the allowed lateness of its timestamp. Wall-clock ticks
//! (the quiet-organisation clear) run between transactions, as in the loop.

use super::*;
use crate::state::{RiskState, TopicPartition};

#[derive(Clone, Debug)]
enum Event {
    Record(Input),
    Commit,
    Tick(i64),
}

fn tp() -> TopicPartition {
    ("risk-assessments".into(), 0)
}

fn obs(i: &Input) -> Observation<'_> {
    Observation {
        organization_id: &i.org,
        timestamp_ms: i.ts,
        score: score_of(i.score).unwrap(),
        report_id: &i.report,
    }
}

/// A partition's input over a few minutes: organisations with phases of
/// high and low risk, some falling silent for longer than window + lateness,
/// whole-partition pauses, ticks every second, commits every few records.
fn scenario(rng: &mut StdRng) -> Vec<Event> {
    let orgs = ["org-a", "org-b", "org-c", "org-d", "org-e"];
    let mut events = Vec::new();
    let mut wall: i64 = 5_000_000;
    let mut next_tick = wall + 1_000;
    let mut silent_until = [0i64; 5];
    for n in 0..900 {
        wall += if rng.random_bool(0.01) {
            W * 1000 + L + rng.random_range(0..6_000) // the whole partition pauses
        } else {
            rng.random_range(0..400)
        };
        while next_tick <= wall {
            events.push(Event::Tick(next_tick));
            next_tick += 1_000;
        }
        let k = rng.random_range(0..orgs.len());
        if silent_until[k] > wall {
            continue;
        }
        if rng.random_bool(0.005) {
            silent_until[k] = wall + W * 1000 + L + rng.random_range(0..8_000);
        }
        let hot = ((wall / 15_000) + k as i64) % 3 == 0;
        let score = if hot {
            rng.random_range(0.75..1.0)
        } else {
            rng.random_range(0.0..0.85)
        };
        let ts = wall - rng.random_range(0..=L / 2);
        events.push(Event::Record(Input {
            org: orgs[k].into(),
            ts,
            score: (score * 100.0f64).round() / 100.0,
            report: format!("r-{n}"),
            arrival: wall,
        }));
        if rng.random_bool(0.15) {
            events.push(Event::Commit);
        }
    }
    events
}

/// The successor's state: the committed alerts as history, the input from
/// the first record at or after `T - span` up to the committed offset replayed.
fn rebuild(topic: &[Input], committed_offset: usize, alerts: &[Transition], now: i64) -> RiskState {
    let mut state = RiskState::new(rules());
    let mut history = AlertHistory::default();
    for t in alerts {
        history.record(CommittedAlert {
            organization_id: t.organization_id.to_string(),
            edge: t.edge,
            second: t.second,
            sample_count: t.totals.count,
            detected_at: t.detected_at,
        });
    }
    state.install_history(history);
    state.assign(&[tp()]);
    if committed_offset > 0 {
        let last = topic[committed_offset - 1].ts;
        let from = topic[..committed_offset]
            .iter()
            .position(|i| i.ts >= last - rules().rebuild_span_ms())
            .unwrap_or(committed_offset);
        for i in &topic[from..committed_offset] {
            state.replay(&tp(), &obs(i), now);
        }
    }
    state.committed();
    state
}

/// Runs the events, crashing before each event index in `crashes` and
/// aborting each transaction with probability `abort` (its records are
/// delivered again, as the loop does); returns every transition committed,
/// in commit order.
fn execute(events: &[Event], crashes: &[usize], abort: f64) -> Vec<Transition> {
    let mut rng = StdRng::seed_from_u64(events.len() as u64);
    let mut topic: Vec<Input> = Vec::new();
    let mut committed_offset = 0;
    let mut committed: Vec<Transition> = Vec::new();
    let mut state = RiskState::new(rules());
    state.assign(&[tp()]);
    let mut open: Vec<Transition> = Vec::new();
    let mut wall = 0;
    // what was consumed but not committed is delivered again
    let redeliver = |state: &mut RiskState, topic: &[Input], from: usize, wall: i64| {
        let mut out = Vec::new();
        for i in &topic[from..] {
            let again = Input { arrival: i.arrival.max(wall), ..i.clone() };
            out.extend(state.process(&tp(), &obs(&again), again.arrival).1);
        }
        out
    };
    for (k, event) in events.iter().enumerate() {
        if crashes.contains(&k) {
            state = rebuild(&topic, committed_offset, &committed, wall);
            open = redeliver(&mut state, &topic, committed_offset, wall);
        }
        match event {
            Event::Record(i) => {
                wall = i.arrival;
                topic.push(i.clone());
                open.extend(state.process(&tp(), &obs(i), wall).1);
            }
            Event::Commit | Event::Tick(_) => {
                if rng.random_bool(abort) {
                    state.aborted();
                    open = redeliver(&mut state, &topic, committed_offset, wall);
                }
                state.committed();
                committed.append(&mut open);
                committed_offset = topic.len();
                if let Event::Tick(now) = event {
                    wall = *now;
                    let cleared = state.tick(*now);
                    if rng.random_bool(abort) {
                        state.aborted();
                    } else {
                        state.committed();
                        committed.extend(cleared);
                    }
                }
            }
        }
    }
    committed
}

fn per_org(transitions: &[Transition]) -> HashMap<String, Vec<Seen>> {
    let mut out: HashMap<String, Vec<Seen>> = HashMap::new();
    for t in transitions {
        out.entry(t.organization_id.to_string())
            .or_default()
            .push(seen(t));
    }
    out
}

#[test]
fn a_rebuild_after_a_crash_or_rebalance_commits_exactly_the_uninterrupted_transitions() {
    let mut checked = 0;
    let mut flushes = 0;
    for seed in 0..120 {
        let mut rng = StdRng::seed_from_u64(seed);
        let events = scenario(&mut rng);
        let reference = execute(&events, &[], 0.0);
        flushes += reference
            .iter()
            .filter(|t| t.edge == Edge::Cleared && t.totals.count == 0)
            .count();
        let crashes: Vec<usize> = {
            let mut c: Vec<usize> = (0..rng.random_range(1..4))
                .map(|_| rng.random_range(1..events.len()))
                .collect();
            c.sort();
            c
        };
        let recovered = execute(&events, &crashes, 0.2);
        let (a, b) = (per_org(&recovered), per_org(&reference));
        for (org, seq) in &b {
            if a.get(org) != Some(seq) {
                eprintln!(
                    "{org}\n ref: {:?}\n got: {:?}",
                    seq.iter().map(|s| (s.1, s.2, s.3)).collect::<Vec<_>>(),
                    a.get(org)
                        .map(|x| x.iter().map(|s| (s.1, s.2, s.3)).collect::<Vec<_>>())
                );
            }
        }
        assert_eq!(a, b, "seed {seed}, crashes before events {crashes:?}");
        checked += reference.len();
    }
    assert!(
        checked > 500,
        "the scenarios raise and clear alerts ({checked})"
    );
    assert!(
        flushes > 10,
        "quiet organisations are cleared by the tick ({flushes})"
    );
}

/// A crash right after a tick cleared a quiet organisation: the CLEARED is
/// not repeated, and a crash right after a RAISED: the RAISED is not repeated.
#[test]
fn committed_edges_are_never_repeated_after_a_rebuild() {
    let mut events: Vec<Event> = steady("org-a", 0, 12, 0.95)
        .into_iter()
        .map(Event::Record)
        .collect();
    events.push(Event::Commit);
    let raised_at = events.len();
    events.extend(
        steady("org-a", 12_000, 6, 0.95)
            .into_iter()
            .map(Event::Record),
    );
    events.push(Event::Commit);
    let quiet_from = 17_500 + W * 1000 + L;
    events.extend((0..3).map(|k| Event::Tick(quiet_from + k * 1000)));
    let after_clear = events.len();
    events.push(Event::Tick(quiet_from + 10_000));
    let reference = execute(&events, &[], 0.0);
    assert_eq!(
        reference.iter().map(|t| t.edge).collect::<Vec<_>>(),
        vec![Edge::Raised, Edge::Cleared]
    );
    for crash in [raised_at, raised_at + 3, after_clear - 1, after_clear] {
        let recovered = execute(&events, &[crash], 0.0);
        assert_eq!(
            per_org(&recovered),
            per_org(&reference),
            "crash before event {crash}"
        );
    }
}
