//! One organisation's sliding window of risk scores in event time, kept as
//! per-second buckets so its memory is bounded by the window length (in
//! seconds) whatever the rate of assessments.
//!
//! Scores are fixed-point integers ([`Score`], nano-units): sums are exact,
//! so an average does not depend on the order the scores were added in.
//!
//! The window is evaluated at whole seconds `t`, covering the buckets
//! `t - W + 1 ..= t` (W = window length in seconds): the seed's "every record
//! newer than `newest - window`", on a one-second grid. The *cursor* is the
//! last second evaluated; buckets at or before it are final (a record for
//! them is late) and their totals are kept incrementally, so an evaluation is
//! O(1) amortised.

use std::collections::VecDeque;

/// A risk score in nano-units (`1.0` = 1 000 000 000), exact to add.
pub type Score = i64;

/// Nano-units per 1.0.
pub const SCORE_UNIT: f64 = 1e9;

/// A riskScore as a [`Score`]: finite and within 0..=1, else why not.
pub fn score_of(risk_score: f64) -> Result<Score, String> {
    if !risk_score.is_finite() || !(0.0..=1.0).contains(&risk_score) {
        return Err(format!("riskScore {risk_score} is outside 0..1"));
    }
    Ok((risk_score * SCORE_UNIT).round() as Score)
}

/// A [`Score`] as the double the alert carries.
pub fn score_value(score: Score) -> f64 {
    score as f64 / SCORE_UNIT
}

/// The second (of event time) an epoch-millisecond timestamp falls in.
pub fn second_of(timestamp_ms: i64) -> i64 {
    timestamp_ms.div_euclid(1000)
}

/// All assessments of one organisation within one second of event time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bucket {
    second: i64,
    sum: Score,
    count: u32,
    /// Highest score of the second, and the report that carried it (ties:
    /// the smallest reportId, so arrival order never matters).
    peak: Score,
    /// Shared, so snapshotting a window for a rollback copies no text.
    peak_report: std::sync::Arc<str>,
}

/// Sum and count of the scores in the window at the cursor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Sum of the scores.
    pub sum: i128,
    /// Number of scores.
    pub count: u64,
}

impl Totals {
    /// True when the average is strictly above `level`.
    pub fn average_above(&self, level: Score) -> bool {
        self.count > 0 && self.sum > i128::from(level) * i128::from(self.count)
    }

    /// True when the average is strictly below `level` (false when empty).
    pub fn average_below(&self, level: Score) -> bool {
        self.count > 0 && self.sum < i128::from(level) * i128::from(self.count)
    }

    /// The average as a double (0 when empty).
    pub fn average(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64 / SCORE_UNIT
        }
    }
}

/// The window's state apart from its buckets: what a rollback restores
/// after the bucket changes are undone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowScalars {
    counted: usize,
    cursor: i64,
    totals: Totals,
}

/// One organisation's window: buckets newer than `cursor - W`, the cursor,
/// and the totals of the buckets at or before the cursor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrgWindow {
    /// Sorted by second; every second is greater than `cursor - W`.
    buckets: VecDeque<Bucket>,
    /// `buckets[..counted]` are at or before the cursor (in `totals`).
    counted: usize,
    cursor: i64,
    totals: Totals,
}

impl OrgWindow {
    /// An empty window evaluated through `cursor`.
    pub fn new(cursor: i64) -> Self {
        Self {
            buckets: VecDeque::new(),
            counted: 0,
            cursor,
            totals: Totals::default(),
        }
    }

    /// The last second evaluated.
    pub fn cursor(&self) -> i64 {
        self.cursor
    }

    /// Totals of the window at the cursor.
    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// True when no bucket is kept.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// The newest second with a score, if any.
    pub fn newest_second(&self) -> Option<i64> {
        self.buckets.back().map(|b| b.second)
    }

    /// Buckets kept (at most W plus those ahead of the cursor).
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// Adds a score at `second`, which must be after the cursor. Returns the
    /// bucket of that second as it was before (`None`: a new bucket), for
    /// [`undo_add`](Self::undo_add).
    pub fn add(&mut self, second: i64, score: Score, report_id: &str) -> Option<Bucket> {
        debug_assert!(
            second > self.cursor,
            "a record at or before the cursor is late"
        );
        let pos = self.buckets.partition_point(|b| b.second < second);
        match self.buckets.get_mut(pos) {
            Some(b) if b.second == second => {
                let before = b.clone();
                b.sum += score;
                b.count += 1;
                if score > b.peak || (score == b.peak && *report_id < *b.peak_report) {
                    b.peak = score;
                    b.peak_report = report_id.into();
                }
                Some(before)
            }
            _ => {
                self.buckets.insert(
                    pos,
                    Bucket {
                        second,
                        sum: score,
                        count: 1,
                        peak: score,
                        peak_report: report_id.into(),
                    },
                );
                None
            }
        }
    }

    /// Undoes an [`add`](Self::add) at `second` that returned `before`.
    pub fn undo_add(&mut self, second: i64, before: Option<Bucket>) {
        let pos = self.buckets.partition_point(|b| b.second < second);
        match before {
            Some(b) => self.buckets[pos] = b,
            None => {
                self.buckets.remove(pos);
            }
        }
    }

    /// Puts back a bucket [`advance_to`](Self::advance_to) evicted (undo
    /// evictions newest first, then restore the scalars).
    pub fn undo_evict(&mut self, bucket: Bucket) {
        self.buckets.push_front(bucket);
    }

    /// Cursor, totals and how many buckets they cover.
    pub fn scalars(&self) -> WindowScalars {
        WindowScalars {
            counted: self.counted,
            cursor: self.cursor,
            totals: self.totals,
        }
    }

    /// Restores what [`scalars`](Self::scalars) returned, once the bucket
    /// changes made since have been undone.
    pub fn set_scalars(&mut self, s: WindowScalars) {
        self.counted = s.counted;
        self.cursor = s.cursor;
        self.totals = s.totals;
    }

    /// The next second at which the window's content changes: a bucket
    /// enters (its second) or leaves (its second + W). `None` when empty.
    pub fn next_change(&self, window_secs: i64) -> Option<i64> {
        let entry = self.buckets.get(self.counted).map(|b| b.second);
        let exit = (self.counted > 0).then(|| self.buckets[0].second + window_secs);
        match (entry, exit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Moves the cursor forward to `second`: buckets up to it enter the
    /// totals, buckets at or before `second - W` leave the window (handed to
    /// `evicted`, oldest first).
    pub fn advance_to(&mut self, second: i64, window_secs: i64, mut evicted: impl FnMut(Bucket)) {
        debug_assert!(second > self.cursor);
        while let Some(b) = self.buckets.get(self.counted) {
            if b.second > second {
                break;
            }
            self.totals.sum += i128::from(b.sum);
            self.totals.count += u64::from(b.count);
            self.counted += 1;
        }
        while let Some(b) = self.buckets.front() {
            if b.second > second - window_secs {
                break;
            }
            if self.counted > 0 {
                self.totals.sum -= i128::from(b.sum);
                self.totals.count -= u64::from(b.count);
                self.counted -= 1;
            }
            if let Some(b) = self.buckets.pop_front() {
                evicted(b);
            }
        }
        self.cursor = second;
    }

    /// Empties the window and moves the cursor to `second`; returns the
    /// buckets it held (for [`restore`](Self::restore)).
    pub fn clear_to(&mut self, second: i64) -> VecDeque<Bucket> {
        debug_assert!(second >= self.cursor);
        self.counted = 0;
        self.totals = Totals::default();
        self.cursor = second;
        std::mem::take(&mut self.buckets)
    }

    /// Puts back the buckets [`clear_to`](Self::clear_to) returned.
    pub fn restore(&mut self, buckets: VecDeque<Bucket>) {
        self.buckets = buckets;
    }

    /// The highest score in the window at the cursor, if any.
    pub fn peak(&self) -> Option<Score> {
        self.buckets.range(..self.counted).map(|b| b.peak).max()
    }

    /// The reportIds of the `n` highest scores in the window at the cursor
    /// (one per second), highest first; ties by reportId.
    pub fn top_reports(&self, n: usize) -> Vec<String> {
        let mut peaks: Vec<(Score, &str)> = self
            .buckets
            .range(..self.counted)
            .map(|b| (b.peak, &*b.peak_report))
            .collect();
        peaks.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        peaks
            .into_iter()
            .take(n)
            .map(|(_, r)| r.to_string())
            .collect()
    }

    /// Approximate heap bytes held (buckets and their reportIds).
    pub fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<Bucket>()
            + self
                .buckets
                .iter()
                .map(|b| b.peak_report.len())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: i64 = 300;

    fn s(x: f64) -> Score {
        score_of(x).unwrap()
    }

    #[test]
    fn scores_are_checked_and_exact() {
        assert_eq!(score_of(0.8).unwrap(), 800_000_000);
        assert!(score_of(1.5).is_err());
        assert!(score_of(-0.1).is_err());
        assert!(score_of(f64::NAN).is_err());
        assert_eq!(score_value(s(0.87)), 0.87);
        assert_eq!(second_of(-1), -1);
        assert_eq!(second_of(1_999), 1);
    }

    #[test]
    fn the_window_covers_the_last_w_seconds_up_to_the_cursor() {
        let mut w = OrgWindow::new(99);
        w.add(100, s(0.9), "a");
        w.add(100, s(0.7), "b");
        w.add(250, s(0.2), "c");
        assert_eq!(w.next_change(W), Some(100));
        w.advance_to(100, W, drop);
        assert_eq!(w.totals().count, 2);
        assert!((w.totals().average() - 0.8).abs() < 1e-12);
        assert_eq!(w.next_change(W), Some(250));
        w.advance_to(250, W, drop);
        assert_eq!(w.totals().count, 3);
        // 100 leaves at 400 (window at 400 covers 101..=400)
        assert_eq!(w.next_change(W), Some(400));
        w.advance_to(399, W, drop);
        assert_eq!(w.totals().count, 3);
        w.advance_to(400, W, drop);
        assert_eq!(w.totals().count, 1);
        assert_eq!(w.next_change(W), Some(550));
        w.advance_to(550, W, drop);
        assert_eq!(w.totals(), Totals::default());
        assert!(w.is_empty());
        assert_eq!(w.next_change(W), None);
    }

    #[test]
    fn order_of_addition_does_not_change_totals_peak_or_top_reports() {
        let items = [
            (10, 0.3, "r1"),
            (12, 0.9, "r2"),
            (10, 0.9, "r0"),
            (11, 0.1, "r3"),
            (12, 0.9, "r4"),
        ];
        let build = |order: &[usize]| {
            let mut w = OrgWindow::new(0);
            for &i in order {
                let (sec, score, id) = items[i];
                w.add(sec, s(score), id);
            }
            w.advance_to(20, W, drop);
            (w.totals(), w.peak(), w.top_reports(2), w)
        };
        let a = build(&[0, 1, 2, 3, 4]);
        let b = build(&[4, 3, 2, 1, 0]);
        let c = build(&[2, 0, 4, 1, 3]);
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.1, Some(s(0.9)));
        assert_eq!(a.2, vec!["r0".to_string(), "r2".to_string()]);
    }

    #[test]
    fn memory_is_bounded_by_the_window_whatever_the_rate() {
        let mut w = OrgWindow::new(-1);
        for second in 0..10_000 {
            for i in 0..50 {
                w.add(second, s(0.5), &format!("report-{i}"));
            }
            w.advance_to(second, W, drop);
            assert!(w.bucket_count() <= W as usize);
        }
        assert_eq!(w.totals().count, 50 * W as u64);
    }

    #[test]
    fn clearing_forgets_everything_and_moves_the_cursor() {
        let mut w = OrgWindow::new(0);
        w.add(5, s(0.9), "a");
        w.advance_to(5, W, drop);
        w.clear_to(305);
        assert_eq!(
            (w.cursor(), w.totals(), w.is_empty()),
            (305, Totals::default(), true)
        );
    }

    #[test]
    fn averages_compare_exactly() {
        let t = Totals {
            sum: 3 * i128::from(s(0.8)),
            count: 3,
        };
        assert!(!t.average_above(s(0.8)));
        assert!(!t.average_below(s(0.8)));
        let t = Totals {
            sum: t.sum + 1,
            count: 3,
        };
        assert!(t.average_above(s(0.8)));
        assert!(!Totals::default().average_below(s(0.8)));
    }
}
