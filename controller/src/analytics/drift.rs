//! Drift statistics, defined as numpy/scipy (and Evidently, for Wasserstein) compute them: PSI and
//! Jensen–Shannon distance on binned counts, Evidently's normalised Wasserstein distance and the
//! two-sample Kolmogorov–Smirnov test on raw samples, Pearson's chi-squared test on class counts.
//! `tests/fixtures/make_drift_reference.py` computes the same numbers with numpy/scipy into
//! `tests/testdata/drift/reference.json`; the tests below compare.

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

/// Jensen–Shannon distance (natural log; the square root of the divergence) between the
/// proportions of two count vectors over the same bins, as `scipy.spatial.distance.jensenshannon`.
pub fn jensen_shannon(reference: &[u64], current: &[u64]) -> Option<f64> {
    if reference.len() != current.len() {
        return None;
    }
    let (r_total, c_total) = (reference.iter().sum::<u64>(), current.iter().sum::<u64>());
    if r_total == 0 || c_total == 0 {
        return None;
    }
    // scipy's rel_entr(x, y): x ln(x/y), 0 when x is 0.
    let rel_entr = |x: f64, y: f64| if x == 0.0 { 0.0 } else { x * (x / y).ln() };
    let (mut left, mut right) = (0.0, 0.0);
    for (&r, &c) in reference.iter().zip(current) {
        let (p, q) = (r as f64 / r_total as f64, c as f64 / c_total as f64);
        let m = (p + q) / 2.0;
        left += rel_entr(p, m);
        right += rel_entr(q, m);
    }
    Some(((left + right) / 2.0).max(0.0).sqrt())
}

/// Evidently's normalised Wasserstein distance: `scipy.stats.wasserstein_distance(ref, cur) /
/// max(numpy.std(ref), 0.001)`. None when either sample is empty. NaNs are ignored.
pub fn wasserstein_normed(reference: &[f64], current: &[f64]) -> Option<f64> {
    let (r, c) = (sorted(reference), sorted(current));
    if r.is_empty() || c.is_empty() {
        return None;
    }
    // The integral of |F_r - F_c| over the merged sample points (scipy's _cdf_distance, p = 1).
    let mut all: Vec<f64> = r.iter().chain(&c).copied().collect();
    all.sort_by(f64::total_cmp);
    let (mut i, mut j, mut total) = (0usize, 0usize, 0.0);
    for w in all.windows(2) {
        while i < r.len() && r[i] <= w[0] {
            i += 1;
        }
        while j < c.len() && c[j] <= w[0] {
            j += 1;
        }
        let gap = (i as f64 / r.len() as f64 - j as f64 / c.len() as f64).abs();
        total += gap * (w[1] - w[0]);
    }
    let n = r.len() as f64;
    let mean = r.iter().sum::<f64>() / n;
    let std = (r.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n).sqrt();
    Some(total / std.max(0.001))
}

/// The result of a two-sample test.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TestResult {
    /// The test statistic.
    pub statistic: f64,
    /// Its p-value.
    pub pvalue: f64,
}

/// Two-sided two-sample Kolmogorov–Smirnov test: the statistic of `scipy.stats.ks_2samp`
/// exactly, the p-value of its `method="asymp"` (the Kolmogorov distribution for
/// `round(n1·n2/(n1+n2))` observations). None when either sample is empty. NaNs are ignored.
pub fn ks_2samp(reference: &[f64], current: &[f64]) -> Option<TestResult> {
    let (a, b) = (sorted(reference), sorted(current));
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0.0f64);
    // Walk the merged values; after all copies of a value, compare the two empirical CDFs.
    while i < a.len() || j < b.len() {
        let x = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) => x.min(y),
            (Some(&x), None) => x,
            (None, Some(&y)) => y,
            (None, None) => break,
        };
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n1 - j as f64 / n2).abs());
    }
    let (m, n) = if n1 >= n2 { (n1, n2) } else { (n2, n1) };
    let en = (m * n / (m + n)).round_ties_even().max(1.0) as u64;
    Some(TestResult { statistic: d, pvalue: kolmogorov_sf(en, d) })
}

/// `P(D_n > x)` for the two-sided one-sample Kolmogorov statistic with `n` observations
/// (`scipy.stats.kstwo.sf`): the exact Durbin matrix (Marsaglia–Tsang–Wang) for n ≤ 140, the
/// Pelz–Good expansion above, and the exact Ruben–Gambino tails (Simard & L'Ecuyer's choices).
/// Agrees with scipy within 1e-3 (the tolerance the drift tests hold KS p-values to).
pub fn kolmogorov_sf(n: u64, x: f64) -> f64 {
    let nf = n as f64;
    if n == 0 || x.is_nan() {
        return f64::NAN;
    }
    if x >= 1.0 {
        return 0.0;
    }
    let t = nf * x;
    if t <= 0.5 {
        return 1.0;
    }
    if t <= 1.0 {
        // P(D_n <= x) = n!/n^n (2t-1)^n for 1/2n <= x <= 1/n.
        let log = ln_factorial(n) - nf * nf.ln() + nf * (2.0 * t - 1.0).ln();
        return (1.0 - log.exp()).clamp(0.0, 1.0);
    }
    if t >= nf - 1.0 {
        return (2.0 * (1.0 - x).powf(nf)).clamp(0.0, 1.0);
    }
    if n <= 140 {
        return (1.0 - kolmogorov_cdf_durbin(n, x)).clamp(0.0, 1.0);
    }
    if t * x >= 18.0 {
        return 0.0;
    }
    (1.0 - kolmogorov_cdf_pelz_good(nf, x)).clamp(0.0, 1.0)
}

/// Durbin's matrix method, as refined by Marsaglia, Tsang and Wang (2003).
fn kolmogorov_cdf_durbin(n: u64, d: f64) -> f64 {
    const SCALE: f64 = 1e140;
    let nd = n as f64 * d;
    let k = nd.ceil() as usize;
    let h = k as f64 - nd;
    let m = 2 * k - 1;
    let mut hm = vec![0.0f64; m * m];
    for i in 0..m {
        for j in 0..m {
            if i + 1 >= j {
                hm[i * m + j] = 1.0;
            }
        }
    }
    for i in 0..m {
        let hp = h.powi(i as i32 + 1);
        hm[i * m] -= hp;
        hm[(m - 1) * m + i] -= h.powi((m - i) as i32);
    }
    if 2.0 * h - 1.0 > 0.0 {
        hm[(m - 1) * m] += (2.0 * h - 1.0).powi(m as i32);
    }
    for i in 0..m {
        for j in 0..m {
            if i + 1 > j {
                for g in 1..=(i + 1 - j) {
                    hm[i * m + j] /= g as f64;
                }
            }
        }
    }
    let matmul = |a: &[f64], b: &[f64]| {
        let mut c = vec![0.0f64; m * m];
        for i in 0..m {
            for l in 0..m {
                let x = a[i * m + l];
                if x != 0.0 {
                    for j in 0..m {
                        c[i * m + j] += x * b[l * m + j];
                    }
                }
            }
        }
        c
    };
    // H^n by squaring, with power-of-two rescaling to stay in range.
    let mut result: Vec<f64> = (0..m * m).map(|ix| if ix / m == ix % m { 1.0 } else { 0.0 }).collect();
    let (mut base, mut exp, mut e_result, mut e_base) = (hm, n, 0i64, 0i64);
    while exp > 0 {
        if exp & 1 == 1 {
            result = matmul(&result, &base);
            e_result += e_base;
            if result[(k - 1) * m + k - 1] > SCALE {
                result.iter_mut().for_each(|v| *v /= SCALE);
                e_result += 1;
            }
        }
        exp >>= 1;
        if exp > 0 {
            base = matmul(&base, &base);
            e_base *= 2;
            if base[(k - 1) * m + k - 1] > SCALE {
                base.iter_mut().for_each(|v| *v /= SCALE);
                e_base += 1;
            }
        }
    }
    let mut p = result[(k - 1) * m + k - 1];
    for i in 1..=n {
        p = p * i as f64 / n as f64;
        if p < 1.0 / SCALE {
            p *= SCALE;
            e_result -= 1;
        }
    }
    p * SCALE.powi(e_result as i32)
}

/// The Pelz–Good asymptotic expansion of `P(D_n <= x)` (scipy's `_kolmogn_PelzGood`).
fn kolmogorov_cdf_pelz_good(n: f64, x: f64) -> f64 {
    use std::f64::consts::PI;
    let z = n.sqrt() * x;
    let (z2, z3, z4, z6) = (z * z, z.powi(3), z.powi(4), z.powi(6));
    let qlog = -PI * PI / 8.0 / z2;
    if qlog < -700.0 {
        return 0.0;
    }
    let q = qlog.exp();
    let (pi2, pi4, pi6) = (PI * PI, PI.powi(4), PI.powi(6));
    let (k1a, k1b) = (-z2, pi2 / 4.0);
    let (k2a, k2b, k2c) = (6.0 * z6 + 2.0 * z4, (2.0 * z4 - 5.0 * z2) * pi2 / 4.0, pi4 * (1.0 - 2.0 * z2) / 16.0);
    let k3d = pi6 * (5.0 - 30.0 * z2) / 64.0;
    let k3c = pi4 * (-60.0 * z2 + 212.0 * z4) / 16.0;
    let k3b = pi2 * (135.0 * z4 - 96.0 * z6) / 4.0;
    let k3a = -30.0 * z6 - 90.0 * z.powi(8);
    let maxk = (16.0 * z / PI).ceil().max(1.0) as i32;
    let mut k = [0.0f64; 4];
    for kk in (1..=maxk).rev() {
        let m = f64::from(2 * kk - 1);
        let (m2, m4, m6) = (m * m, m.powi(4), m.powi(6));
        let qpower = q.powi(8 * kk);
        let coeffs = [1.0, k1a + k1b * m2, k2a + k2b * m2 + k2c * m4, k3a + k3b * m2 + k3c * m4 + k3d * m6];
        for (s, c) in k.iter_mut().zip(coeffs) {
            *s = *s * qpower + c;
        }
    }
    let sqrt2pi = (2.0 * PI).sqrt();
    let divisors = [z, 6.0 * z4, 72.0 * z.powi(7), 6480.0 * z.powi(10)];
    for (s, d) in k.iter_mut().zip(divisors) {
        *s *= q * sqrt2pi / d;
    }
    let q = (-pi2 / 2.0 / z2).exp();
    let (mut k2extra, mut k3extra) = (0.0, 0.0);
    let sqrt3z = 3f64.sqrt() * z;
    for kk in (1..=maxk).rev() {
        let kf = f64::from(kk);
        let qp = q.powi(kk * kk);
        k2extra += kf * kf * qp;
        k3extra += (sqrt3z + PI * kf) * (sqrt3z - PI * kf) * kf * kf * qp;
    }
    k[2] += k2extra * pi2 * sqrt2pi / (-36.0 * z3);
    k[3] += k3extra * pi2 * sqrt2pi / (216.0 * z6);
    (0..4).map(|i| k[i] / n.powf(i as f64 / 2.0)).sum()
}

/// Pearson's chi-squared test of `current` class counts against the `reference` proportions:
/// `scipy.stats.chisquare(cur, ref · n_cur / n_ref)`. The statistic is infinite when a class the
/// reference never saw occurs. None when either side is empty or the lengths differ.
pub fn chi_square(reference: &[u64], current: &[u64]) -> Option<TestResult> {
    if reference.len() != current.len() || reference.len() < 2 {
        return None;
    }
    let (r_total, c_total) = (reference.iter().sum::<u64>(), current.iter().sum::<u64>());
    if r_total == 0 || c_total == 0 {
        return None;
    }
    let scale = c_total as f64 / r_total as f64;
    let mut statistic = 0.0;
    for (&r, &c) in reference.iter().zip(current) {
        let expected = r as f64 * scale;
        let diff = c as f64 - expected;
        statistic += diff * diff / expected;
    }
    let dof = (reference.len() - 1) as f64;
    let pvalue = if statistic.is_nan() || statistic.is_infinite() { 0.0 } else { gamma_q(dof / 2.0, statistic / 2.0) };
    Some(TestResult { statistic, pvalue })
}

/// The regularized upper incomplete gamma function `Q(a, x)`: the series below `a + 1`, Lentz's
/// continued fraction above (Numerical Recipes §6.2), without truncating the far tail to zero.
fn gamma_q(a: f64, x: f64) -> f64 {
    const EPS: f64 = 1e-16;
    if x <= 0.0 {
        return 1.0;
    }
    let log_prefix = a * x.ln() - x - ln_gamma(a);
    if x < a + 1.0 {
        let (mut term, mut sum, mut ap) = (1.0 / a, 1.0 / a, a);
        for _ in 0..10_000 {
            ap += 1.0;
            term *= x / ap;
            sum += term;
            if term.abs() < sum.abs() * EPS {
                break;
            }
        }
        return (1.0 - sum * log_prefix.exp()).clamp(0.0, 1.0);
    }
    let tiny = f64::MIN_POSITIVE / EPS;
    let mut b = x + 1.0 - a;
    let (mut c, mut d) = (1.0 / tiny, 1.0 / b);
    let mut h = d;
    for i in 1..10_000 {
        let an = -(i as f64) * (i as f64 - a);
        b += 2.0;
        d = an * d + b;
        if d.abs() < tiny {
            d = tiny;
        }
        c = b + an / c;
        if c.abs() < tiny {
            c = tiny;
        }
        d = 1.0 / d;
        let delta = d * c;
        h *= delta;
        if (delta - 1.0).abs() < EPS {
            break;
        }
    }
    (log_prefix.exp() * h).clamp(0.0, 1.0)
}

/// `ln Γ(x)` for x > 0 (Lanczos, g = 7, n = 9; about 15 significant digits).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + G + 0.5;
    let series = C[1..].iter().enumerate().fold(C[0], |acc, (i, c)| acc + c / (x + i as f64 + 1.0));
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + series.ln()
}

fn ln_factorial(n: u64) -> f64 {
    ln_gamma(n as f64 + 1.0)
}

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    v.sort_by(f64::total_cmp);
    v
}

/// Adds `counts` into `into`, growing it to the longer length.
pub fn add_counts(into: &mut Vec<u64>, counts: &[u64]) {
    if into.len() < counts.len() {
        into.resize(counts.len(), 0);
    }
    for (a, b) in into.iter_mut().zip(counts) {
        *a = a.saturating_add(*b);
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

    #[derive(serde::Deserialize)]
    struct Reference {
        numeric: Vec<NumericCase>,
        classes: Vec<ClassCase>,
        kolmogorov: Vec<KolmogorovCase>,
    }

    #[derive(serde::Deserialize)]
    struct NumericCase {
        name: String,
        reference: Vec<f64>,
        current: Vec<f64>,
        edges: Vec<f64>,
        reference_counts: Vec<u64>,
        current_counts: Vec<u64>,
        psi: f64,
        jensen_shannon: f64,
        wasserstein_normed: f64,
        ks_statistic: f64,
        ks_pvalue_asymp: f64,
    }

    #[derive(serde::Deserialize)]
    struct ClassCase {
        name: String,
        reference_counts: Vec<u64>,
        current_counts: Vec<u64>,
        psi: f64,
        jensen_shannon: f64,
        chi2_statistic: f64,
        chi2_pvalue: f64,
    }

    #[derive(serde::Deserialize)]
    struct KolmogorovCase {
        n: u64,
        x: f64,
        sf: f64,
    }

    fn reference() -> Reference {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/testdata/drift/reference.json");
        serde_json::from_slice(&std::fs::read(path).expect("reference.json")).expect("parse")
    }

    #[track_caller]
    fn close(what: &str, got: f64, want: f64, rel: f64) {
        assert!((got - want).abs() <= rel * want.abs().max(1e-300), "{what}: got {got}, scipy {want}");
    }

    #[test]
    fn numeric_drift_matches_scipy() {
        for c in reference().numeric {
            let edges: Vec<f64> = {
                let mut v = c.reference.clone();
                v.sort_by(f64::total_cmp);
                crate::analytics::profile::feature("x", v.into_iter(), 10).edges
            };
            assert_eq!(edges, c.edges, "{}: quantile edges", c.name);
            let bin = |values: &[f64]| {
                let mut counts = vec![0u64; edges.len() + 1];
                values.iter().for_each(|v| counts[edgefleet_shared::profile::bin_index(&edges, *v)] += 1);
                counts
            };
            assert_eq!(bin(&c.reference), c.reference_counts, "{}", c.name);
            assert_eq!(bin(&c.current), c.current_counts, "{}", c.name);
            let (r, cur) = (&c.reference_counts, &c.current_counts);
            close(&format!("{} psi", c.name), psi(r, cur).expect("psi"), c.psi, 1e-9);
            close(&format!("{} js", c.name), jensen_shannon(r, cur).expect("js"), c.jensen_shannon, 1e-9);
            let w = wasserstein_normed(&c.reference, &c.current).expect("wasserstein");
            close(&format!("{} wasserstein", c.name), w, c.wasserstein_normed, 1e-6);
            let ks = ks_2samp(&c.reference, &c.current).expect("ks");
            assert_eq!(ks.statistic, c.ks_statistic, "{}: KS statistic must be exact", c.name);
            assert!(
                (ks.pvalue - c.ks_pvalue_asymp).abs() <= 1e-3,
                "{}: p {} vs {}",
                c.name,
                ks.pvalue,
                c.ks_pvalue_asymp
            );
        }
    }

    #[test]
    fn class_drift_matches_scipy() {
        for c in reference().classes {
            let (r, cur) = (&c.reference_counts, &c.current_counts);
            close(&format!("{} psi", c.name), psi(r, cur).expect("psi"), c.psi, 1e-9);
            close(&format!("{} js", c.name), jensen_shannon(r, cur).expect("js"), c.jensen_shannon, 1e-9);
            let chi = chi_square(r, cur).expect("chi2");
            close(&format!("{} chi2", c.name), chi.statistic, c.chi2_statistic, 1e-9);
            close(&format!("{} chi2 p", c.name), chi.pvalue, c.chi2_pvalue, 1e-6);
        }
    }

    #[test]
    fn kolmogorov_tail_matches_scipy_within_1e_3() {
        for c in reference().kolmogorov {
            let got = kolmogorov_sf(c.n, c.x);
            assert!((got - c.sf).abs() <= 1e-3, "n={} x={}: {got} vs scipy {}", c.n, c.x, c.sf);
        }
    }

    #[test]
    fn counts_add_up_across_lengths() {
        let mut total = vec![1, 2];
        add_counts(&mut total, &[1, 1, 5]);
        assert_eq!(total, vec![2, 3, 5]);
    }
}
