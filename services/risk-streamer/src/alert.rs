//! The alert rules as pure logic: when a window's average raises or clears
//! an organisation's alert (edge-triggered, with hysteresis), what a
//! transition carries, and the DORA clock hint.

use std::sync::Arc;

use crate::window::{Score, Totals};

/// One hour in milliseconds.
const HOUR_MS: i64 = 3_600_000;

/// RTS (EU) 2025/301 Art. 5: the initial notification of a major ICT-related
/// incident is due within 4 hours of its classification as major ...
pub const NOTIFY_AFTER_CLASSIFICATION_MS: i64 = 4 * HOUR_MS;
/// ... and no later than 24 hours after the entity became aware of it.
pub const NOTIFY_AFTER_AWARENESS_MS: i64 = 24 * HOUR_MS;

/// When an initial notification would be due for a breach detected at
/// `detected_at`, if it is classified as a major ICT-related incident at
/// `classified_at` (`None`: not classified yet, so the latest possible time).
///
/// A hint for the people who classify, not a classification: whether a
/// breach of the risk threshold is a major incident is decided by the
/// entity under the RTS's criteria, not by this service.
pub fn initial_notification_due(detected_at: i64, classified_at: Option<i64>) -> i64 {
    let latest = detected_at + NOTIFY_AFTER_AWARENESS_MS;
    classified_at.map_or(latest, |c| (c + NOTIFY_AFTER_CLASSIFICATION_MS).min(latest))
}

/// The window and alert rules (see the `risk` settings section).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    /// Window length in seconds (the seed's 300).
    pub window_secs: i64,
    /// Allowed lateness of a record behind the newest one of its partition, ms.
    pub lateness_ms: i64,
    /// An average strictly above this raises.
    pub raise_above: Score,
    /// An average strictly below this (threshold minus margin) clears.
    pub clear_below: Score,
    /// How many top reportIds an alert lists.
    pub top_reports: usize,
}

impl Rules {
    /// Wall-clock silence after which a raised organisation's window counts
    /// as empty: window + lateness, ms.
    pub fn quiet_after_ms(&self) -> i64 {
        self.window_secs * 1000 + self.lateness_ms
    }

    /// How far before the last committed record a rebuild replays: window +
    /// lateness, plus two seconds for the one-second grid on both ends.
    pub fn rebuild_span_ms(&self) -> i64 {
        self.quiet_after_ms() + 2000
    }
}

/// Whether an organisation's alert is open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AlertState {
    /// No open alert.
    #[default]
    Clear,
    /// Raised; `detected_at` is when (wall clock), if known.
    Raised {
        /// When the RAISED was produced, epoch ms.
        detected_at: Option<i64>,
    },
}

/// Which edge an alert is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Edge {
    /// The average went above the threshold.
    Raised,
    /// The average fell below the clear threshold, or the window emptied.
    Cleared,
}

/// The hysteresis: RAISED when clear and the average is above the threshold;
/// CLEARED when raised and the average is below threshold minus margin or
/// the window is empty; nothing otherwise (so an average hovering between
/// the two never flaps).
pub fn decide(state: AlertState, totals: Totals, rules: &Rules) -> Option<Edge> {
    match state {
        AlertState::Clear if totals.average_above(rules.raise_above) => Some(Edge::Raised),
        AlertState::Raised { .. }
            if totals.count == 0 || totals.average_below(rules.clear_below) =>
        {
            Some(Edge::Cleared)
        }
        _ => None,
    }
}

/// One transition of one organisation's alert: what its alert record says.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    /// The organisation.
    pub organization_id: Arc<str>,
    /// Which edge.
    pub edge: Edge,
    /// The second of event time the window was evaluated at (its last second).
    pub second: i64,
    /// Window length, seconds.
    pub window_secs: i64,
    /// Sum and count of the window's scores.
    pub totals: Totals,
    /// Highest score in the window.
    pub peak: Option<Score>,
    /// reportIds of the highest scores, highest first.
    pub top_reports: Vec<String>,
    /// When the breach was detected (the RAISED's wall clock), if known.
    pub detected_at: Option<i64>,
}

impl Transition {
    /// End of the window (exclusive), epoch ms.
    pub fn window_end_ms(&self) -> i64 {
        (self.second + 1) * 1000
    }

    /// Start of the window (inclusive), epoch ms.
    pub fn window_start_ms(&self) -> i64 {
        (self.second + 1 - self.window_secs) * 1000
    }

    /// Deterministic id: organisation, edge and window end.
    pub fn alert_id(&self) -> String {
        let edge = match self.edge {
            Edge::Raised => "RAISED",
            Edge::Cleared => "CLEARED",
        };
        format!("{}/{edge}/{}", self.organization_id, self.window_end_ms())
    }

    /// The latest time an initial notification would be due (see
    /// [`initial_notification_due`]), when the detection time is known.
    pub fn notification_due_by(&self) -> Option<i64> {
        self.detected_at.map(|d| initial_notification_due(d, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::score_of;

    fn rules() -> Rules {
        Rules {
            window_secs: 300,
            lateness_ms: 30_000,
            raise_above: score_of(0.8).unwrap(),
            clear_below: score_of(0.75).unwrap(),
            top_reports: 3,
        }
    }

    fn totals(avg: f64, count: u64) -> Totals {
        Totals {
            sum: i128::from(score_of(avg).unwrap()) * i128::from(count),
            count,
        }
    }

    #[test]
    fn raises_above_the_threshold_and_clears_below_the_margin_only() {
        let r = rules();
        let raised = AlertState::Raised {
            detected_at: Some(1),
        };
        assert_eq!(
            decide(AlertState::Clear, totals(0.81, 4), &r),
            Some(Edge::Raised)
        );
        assert_eq!(
            decide(AlertState::Clear, totals(0.80, 4), &r),
            None,
            "strictly above"
        );
        assert_eq!(decide(raised, totals(0.9, 4), &r), None, "already raised");
        assert_eq!(
            decide(raised, totals(0.77, 4), &r),
            None,
            "within the margin"
        );
        assert_eq!(decide(raised, totals(0.75, 4), &r), None, "strictly below");
        assert_eq!(decide(raised, totals(0.74, 4), &r), Some(Edge::Cleared));
        assert_eq!(
            decide(raised, Totals::default(), &r),
            Some(Edge::Cleared),
            "window empty"
        );
        assert_eq!(decide(AlertState::Clear, Totals::default(), &r), None);
    }

    #[test]
    fn the_dora_clock_is_four_hours_after_classification_capped_at_24_after_awareness() {
        let detected = 1_000_000;
        assert_eq!(
            initial_notification_due(detected, None),
            detected + 24 * HOUR_MS
        );
        assert_eq!(
            initial_notification_due(detected, Some(detected + HOUR_MS)),
            detected + 5 * HOUR_MS
        );
        assert_eq!(
            initial_notification_due(detected, Some(detected + 22 * HOUR_MS)),
            detected + 24 * HOUR_MS
        );
    }

    #[test]
    fn a_transition_names_its_window_and_is_identified_by_it() {
        let t = Transition {
            organization_id: "org-a".into(),
            edge: Edge::Cleared,
            second: 1_000,
            window_secs: 300,
            totals: Totals::default(),
            peak: None,
            top_reports: vec![],
            detected_at: Some(5),
        };
        assert_eq!(
            (t.window_start_ms(), t.window_end_ms()),
            (701_000, 1_001_000)
        );
        assert_eq!(t.alert_id(), "org-a/CLEARED/1001000");
        assert_eq!(t.notification_due_by(), Some(5 + 24 * HOUR_MS));
    }
}
