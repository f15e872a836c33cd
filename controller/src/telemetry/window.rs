//! Telemetry windows as pure functions of data and time: which window a batch is counted in,
//! and how its histograms fold into the window's counts. [`super::ingest`] reads and writes
//! the rows around them.

use edgefleet_shared::telemetry::ModelTelemetry;

use crate::analytics::drift::add_counts;

/// The counts of one (model version, device group, window).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowCounts {
    /// Rows counted.
    pub rows: u64,
    /// Per input feature: the baseline bins' counts, then the missing count last.
    pub features: Vec<Vec<u64>>,
    /// Predictions per class.
    pub classes: Vec<u64>,
    /// Labels matched to predictions.
    pub labeled: u64,
    /// Of those, correct.
    pub correct: u64,
}

/// The start (Unix seconds) of the window a batch that ended at `batch_end` on the device's
/// clock is counted in, when it arrives at `received` on the controller's. The device's clock
/// decides, so a batch delayed by an outage lands where its rows were served; it is clamped to
/// the retained past, so a wrong clock cannot write into the future or outside retention.
pub fn window_start(batch_end: u64, received: u64, retention_secs: u64, window_secs: u64) -> u64 {
    let at = batch_end.clamp(received.saturating_sub(retention_secs), received);
    at / window_secs.max(1) * window_secs.max(1)
}

/// Adds one batch's histograms for a model version into its window's counts: counts add up
/// bin by bin, and a histogram longer than the window's extends it.
pub fn merge(into: &mut WindowCounts, batch: &ModelTelemetry) {
    into.rows = into.rows.saturating_add(batch.rows);
    into.labeled = into.labeled.saturating_add(batch.labeled);
    into.correct = into.correct.saturating_add(batch.correct);
    if into.features.len() < batch.features.len() {
        into.features.resize(batch.features.len(), Vec::new());
    }
    for (counts, feature) in into.features.iter_mut().zip(&batch.features) {
        let mut bins = feature.counts.clone();
        bins.push(feature.missing);
        add_counts(counts, &bins);
    }
    add_counts(&mut into.classes, &batch.output_classes);
}

#[cfg(test)]
mod tests {
    use edgefleet_shared::telemetry::FeatureCounts;

    use super::*;

    const WINDOW: u64 = 300;
    const RETENTION: u64 = 86_400;
    const NOW: u64 = 1_700_000_100;

    #[test]
    fn a_batch_lands_in_the_window_its_device_served_it_in() {
        assert_eq!(window_start(NOW, NOW, RETENTION, WINDOW), NOW / WINDOW * WINDOW);
        // Delayed by an outage of an hour: still counted where it was served.
        assert_eq!(window_start(NOW - 3600, NOW, RETENTION, WINDOW), (NOW - 3600) / WINDOW * WINDOW);
        // Exactly on a boundary it starts that window.
        let boundary = NOW / WINDOW * WINDOW;
        assert_eq!(window_start(boundary, NOW, RETENTION, WINDOW), boundary);
        assert_eq!(window_start(boundary - 1, NOW, RETENTION, WINDOW), boundary - WINDOW);
    }

    #[test]
    fn a_wrong_device_clock_is_clamped_into_the_retained_past() {
        let now_window = NOW / WINDOW * WINDOW;
        assert_eq!(window_start(NOW + 86_400 * 365, NOW, RETENTION, WINDOW), now_window, "future");
        let oldest = (NOW - RETENTION) / WINDOW * WINDOW;
        assert_eq!(window_start(0, NOW, RETENTION, WINDOW), oldest, "before retention");
        assert_eq!(window_start(5, 10, RETENTION, WINDOW), 0, "a controller clock near the epoch");
        assert_eq!(window_start(NOW, NOW, RETENTION, 0), NOW, "a zero window cannot divide by zero");
    }

    fn batch(rows: u64, features: &[(&[u64], u64)], classes: &[u64], labeled: u64, correct: u64) -> ModelTelemetry {
        ModelTelemetry {
            model: "m".into(),
            version: 1,
            rows,
            features: features
                .iter()
                .map(|(c, missing)| FeatureCounts { counts: c.to_vec(), missing: *missing })
                .collect(),
            output_classes: classes.to_vec(),
            samples: Vec::new(),
            feedback: Vec::new(),
            labeled,
            correct,
        }
    }

    #[test]
    fn batches_add_up_bin_by_bin_with_the_missing_count_last() {
        let mut w = WindowCounts::default();
        merge(&mut w, &batch(10, &[(&[1, 2, 3], 1), (&[5], 0)], &[4, 6], 3, 2));
        assert_eq!(w.features, vec![vec![1, 2, 3, 1], vec![5, 0]]);
        merge(&mut w, &batch(5, &[(&[1, 1, 1], 2)], &[1, 1, 3], 2, 2));
        assert_eq!(
            w,
            WindowCounts {
                rows: 15,
                features: vec![vec![2, 3, 4, 3], vec![5, 0]],
                classes: vec![5, 7, 3],
                labeled: 5,
                correct: 4,
            }
        );
    }

    #[test]
    fn merging_never_overflows() {
        let mut w = WindowCounts { rows: u64::MAX - 1, labeled: u64::MAX, ..WindowCounts::default() };
        merge(&mut w, &batch(10, &[], &[], 1, 0));
        assert_eq!((w.rows, w.labeled), (u64::MAX, u64::MAX));
    }
}
