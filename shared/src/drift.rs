//! Drift statistics, with exactly the definitions of the handbook's BENCHMARKS.md §4.

/// Proportions below this are replaced by it (Evidently's convention), so empty bins stay finite.
pub const PSI_FLOOR: f64 = 1e-4;

/// Population stability index of `current` against `reference`, both counts over the same bins:
/// `Σ (p_cur − p_ref) · ln(p_cur / p_ref)` on proportions, zeros replaced by [`PSI_FLOOR`]. None
/// when either side is empty or the bin counts differ.
pub fn psi(reference: &[u64], current: &[u64]) -> Option<f64> {
    if reference.len() != current.len() {
        return None;
    }
    let (r_total, c_total) = (reference.iter().sum::<u64>(), current.iter().sum::<u64>());
    if r_total == 0 || c_total == 0 {
        return None;
    }
    let share = |n: u64, total: u64| {
        let p = n as f64 / total as f64;
        if p == 0.0 { PSI_FLOOR } else { p }
    };
    Some(
        reference
            .iter()
            .zip(current)
            .map(|(&r, &c)| {
                let (p_ref, p_cur) = (share(r, r_total), share(c, c_total));
                (p_cur - p_ref) * (p_cur / p_ref).ln()
            })
            .sum(),
    )
}

/// Adds `counts` into `into`, growing it to the longer length.
pub fn add_counts(into: &mut Vec<u64>, counts: &[u64]) {
    if into.len() < counts.len() {
        into.resize(counts.len(), 0);
    }
    for (a, b) in into.iter_mut().zip(counts) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psi_matches_the_definition() {
        assert_eq!(psi(&[10, 20, 30], &[10, 20, 30]), Some(0.0));
        // p_ref = (0.5, 0.5), p_cur = (0.9, 0.1):
        // (0.9-0.5) ln(0.9/0.5) + (0.1-0.5) ln(0.1/0.5) = 0.4 ln 1.8 + 0.4 ln 5.
        let expected = 0.4 * 1.8f64.ln() + 0.4 * 5f64.ln();
        assert!((psi(&[50, 50], &[90, 10]).expect("psi") - expected).abs() < 1e-12);
        // An empty current bin counts as 1e-4.
        let expected = (1e-4 - 0.5) * (1e-4f64 / 0.5).ln() + (1.0 - 0.5) * (1.0f64 / 0.5).ln();
        assert!((psi(&[1, 1], &[0, 7]).expect("psi") - expected).abs() < 1e-12);
        assert_eq!(psi(&[], &[]), None);
        assert_eq!(psi(&[0, 0], &[1, 2]), None);
        assert_eq!(psi(&[1], &[1, 2]), None);
    }

    #[test]
    fn counts_add_up_across_lengths() {
        let mut total = vec![1, 2];
        add_counts(&mut total, &[1, 1, 5]);
        assert_eq!(total, vec![2, 3, 5]);
    }
}
