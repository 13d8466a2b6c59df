//! Calibration metrics, reliability bins and temperature scaling (MATH.md §9, DESIGN.md §2).
//!
//! Everything here is plain `f64` arithmetic on slices; rows are the K answer-token
//! probabilities (or logits) of one example, and K may differ between rows.
//!
//! - Confidence of a row: its top probability c = max_k p_k; prediction = argmax, ties going to
//!   the lowest index.
//! - ECE (15 equal-width bins on [0, 1], bin b = [b/15, (b+1)/15), c = 1.0 in the last bin):
//!   ECE = sum_b (n_b / N) |acc_b - conf_b|; MCE = max over non-empty bins of |acc_b - conf_b|.
//! - `NLL = mean_i -ln p_i[y_i]`; `Brier = mean_i sum_k (p_ik - [k = y_i])^2`.
//! - Temperature scaling: p = softmax(f / T) with T > 0 minimising validation NLL. With
//!   beta = 1/T the mean NLL `L(beta) = mean_i [logsumexp(beta f_i) - beta f_i[y_i]]` is convex:
//!   `L'(beta) = mean_i (E_p[f_i] - f_i[y_i])` and `L''(beta) = mean_i Var_p(f_i) >= 0`.

use serde::{Deserialize, Serialize};

pub mod binning;
pub mod bootstrap;
pub mod shift;

/// Number of equal-width confidence bins used for ECE, MCE and the reliability diagram.
pub const ECE_BINS: usize = 15;

/// Probabilities are clamped below at this value before taking logs in [`metrics`], so that a
/// zero probability on the true class gives a finite NLL term of -ln(1e-12) ~= 27.63.
pub const NLL_PROB_FLOOR: f64 = 1e-12;

/// Smallest temperature [`fit_temperature`] returns.
pub const T_MIN: f64 = 0.05;
/// Largest temperature [`fit_temperature`] returns.
pub const T_MAX: f64 = 100.0;

/// One bin of a reliability diagram. Empty bins have count 0, mean_confidence 0 and accuracy 0.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ReliabilityBin {
    pub lower: f64,
    pub upper: f64,
    pub count: usize,
    pub mean_confidence: f64,
    pub accuracy: f64,
}

/// Metrics of a set of predictions. For N = 0 every number is 0 and all bins are empty.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Metrics {
    pub n: usize,
    pub accuracy: f64,
    pub ece: f64,
    pub mce: f64,
    pub nll: f64,
    pub brier: f64,
    pub bins: Vec<ReliabilityBin>,
}

/// Result of [`fit_temperature`]; both NLLs are exact mean `-log_softmax(f/T)[y]` (no clamp) over
/// the examples the fit used.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TemperatureFit {
    pub temperature: f64,
    pub nll_before: f64,
    pub nll_after: f64,
}

/// (argmax, max) of a row; ties go to the lowest index, NaN entries are never the max.
/// An empty row gives (usize::MAX, 0.0): never correct, confidence 0.
pub fn top_label(p: &[f64]) -> (usize, f64) {
    let mut best = (usize::MAX, f64::NEG_INFINITY);
    for (k, &v) in p.iter().enumerate() {
        if v > best.1 {
            best = (k, v);
        }
    }
    if best.0 == usize::MAX {
        (usize::MAX, 0.0)
    } else {
        best
    }
}

/// Bin of confidence c among `bins` equal-width bins on [0, 1]: b with b/bins <= c < (b+1)/bins,
/// the edges computed exactly as `b as f64 / bins as f64` (the same values reported as
/// `lower`/`upper`), so a confidence equal to an edge always opens the bin above it.
/// c >= 1 goes into the last bin, c <= 0 or NaN into the first.
pub(crate) fn bin_index(c: f64, bins: usize) -> usize {
    let nb = bins as f64;
    if c.is_nan() || c <= 0.0 {
        return 0;
    }
    if c >= 1.0 {
        return bins - 1;
    }
    let mut b = ((c * nb).floor() as usize).min(bins - 1);
    // c * nb is rounded; fix the rare off-by-one against the exact edges.
    while b + 1 < bins && c >= (b + 1) as f64 / nb {
        b += 1;
    }
    while b > 0 && c < b as f64 / nb {
        b -= 1;
    }
    b
}

/// Accuracy, ECE, MCE, NLL, Brier and reliability bins of `probs` against `labels`.
///
/// A label outside its row (y >= K) counts as wrong, with `p[y] = 0` in NLL (clamped to
/// [`NLL_PROB_FLOOR`]) and a one-hot outside the row in Brier (adds 1).
/// Panics if `probs` and `labels` differ in length (a programming error, not a data error).
pub fn metrics(probs: &[Vec<f64>], labels: &[usize]) -> Metrics {
    assert_eq!(probs.len(), labels.len(), "metrics: probs and labels differ in length");
    let n = probs.len();
    let mut count = [0usize; ECE_BINS];
    let mut conf_sum = [0.0f64; ECE_BINS];
    let mut correct_sum = [0usize; ECE_BINS];
    let (mut correct, mut nll, mut brier) = (0usize, 0.0f64, 0.0f64);

    for (p, &y) in probs.iter().zip(labels) {
        let (pred, conf) = top_label(p);
        let b = bin_index(conf, ECE_BINS);
        count[b] += 1;
        conf_sum[b] += conf;
        if pred == y {
            correct += 1;
            correct_sum[b] += 1;
        }
        // -ln max(p[y], 1e-12): f64::max also maps a NaN p[y] to the floor.
        let py = p.get(y).copied().unwrap_or(0.0);
        nll -= py.max(NLL_PROB_FLOOR).ln();
        let mut sq: f64 = p.iter().enumerate().map(|(k, &pk)| if k == y { (pk - 1.0).powi(2) } else { pk * pk }).sum();
        if y >= p.len() {
            sq += 1.0;
        }
        brier += sq;
    }

    let nf = n as f64;
    let (mut ece, mut mce) = (0.0f64, 0.0f64);
    let bins: Vec<ReliabilityBin> = (0..ECE_BINS)
        .map(|b| {
            let (mean_confidence, accuracy) = if count[b] == 0 {
                (0.0, 0.0)
            } else {
                let c = count[b] as f64;
                (conf_sum[b] / c, correct_sum[b] as f64 / c)
            };
            if count[b] > 0 {
                let gap = (accuracy - mean_confidence).abs();
                ece += count[b] as f64 / nf * gap;
                mce = mce.max(gap);
            }
            ReliabilityBin { lower: b as f64 / ECE_BINS as f64, upper: (b + 1) as f64 / ECE_BINS as f64, count: count[b], mean_confidence, accuracy }
        })
        .collect();

    let mean = |s: f64| if n == 0 { 0.0 } else { s / nf };
    Metrics { n, accuracy: mean(correct as f64), ece, mce, nll: mean(nll), brier: mean(brier), bins }
}

/// Counts of top-label confidences in `bins` equal-width bins on [0, 1] (same edges as
/// [`metrics`]: [b/bins, (b+1)/bins), 1.0 in the last bin). `bins == 0` gives an empty vector.
pub fn confidence_histogram(probs: &[Vec<f64>], bins: usize) -> Vec<usize> {
    let mut h = vec![0usize; bins];
    if bins == 0 {
        return h;
    }
    for p in probs {
        h[bin_index(top_label(p).1, bins)] += 1;
    }
    h
}

/// Numerically stable log-softmax: f_k - m - ln sum_j exp(f_j - m), m = max_j f_j.
/// -inf entries (masked choices) give -inf. Limits are taken for the degenerate rows: if some
/// entries are +inf they share the mass equally (-ln #inf, others -inf); if all entries are -inf
/// the row is uniform (-ln K). NaN propagates. Empty in, empty out.
pub fn log_softmax(logits: &[f64]) -> Vec<f64> {
    let n_pos_inf = logits.iter().filter(|&&x| x == f64::INFINITY).count();
    if n_pos_inf > 0 {
        let l = -(n_pos_inf as f64).ln();
        return logits
            .iter()
            .map(|&x| {
                if x == f64::INFINITY {
                    l
                } else if x.is_nan() {
                    f64::NAN
                } else {
                    f64::NEG_INFINITY
                }
            })
            .collect();
    }
    let m = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        // All -inf (or empty): the limit of equal logits is uniform.
        let l = -(logits.len() as f64).ln();
        return logits.iter().map(|&x| if x.is_nan() { f64::NAN } else { l }).collect();
    }
    // exp(-inf) = 0, so masked entries drop out of the sum.
    let lse = logits.iter().map(|&x| (x - m).exp()).sum::<f64>().ln();
    logits.iter().map(|&x| x - m - lse).collect()
}

/// Numerically stable softmax: exp(f_k - m) / sum_j exp(f_j - m). -inf entries get probability 0;
/// degenerate rows follow [`log_softmax`].
pub fn softmax(logits: &[f64]) -> Vec<f64> {
    log_softmax(logits).into_iter().map(f64::exp).collect()
}

/// Probabilities softmax(f / t) of every row. Panics unless t is finite and > 0.
pub fn apply_temperature(logits: &[Vec<f64>], t: f64) -> Vec<Vec<f64>> {
    assert!(t.is_finite() && t > 0.0, "apply_temperature: t = {t} must be finite and > 0");
    logits.iter().map(|f| softmax(&f.iter().map(|&x| x / t).collect::<Vec<_>>())).collect()
}

/// Rows that carry information about T: label inside the row, finite true-class logit, no NaN
/// and no +inf (-inf entries, masked choices, are allowed). Other rows have an NLL that does not
/// depend on T (infinite or undefined) and are left out of the fit.
fn usable_rows<'a>(logits: &'a [Vec<f64>], labels: &[usize]) -> Vec<(&'a [f64], usize)> {
    assert_eq!(logits.len(), labels.len(), "fit_temperature: logits and labels differ in length");
    logits
        .iter()
        .zip(labels)
        .filter(|(f, &y)| y < f.len() && f[y].is_finite() && f.iter().all(|x| !x.is_nan() && *x != f64::INFINITY))
        .map(|(f, &y)| (f.as_slice(), y))
        .collect()
}

/// Mean NLL L(beta) and its first two derivatives in beta = 1/T over usable rows
/// (see the module comment): L' = mean(E_p[f] - f_y), L'' = mean Var_p(f), p = softmax(beta f).
fn nll_derivs(rows: &[(&[f64], usize)], beta: f64) -> (f64, f64, f64) {
    let (mut l, mut g, mut h) = (0.0, 0.0, 0.0);
    for &(f, y) in rows {
        let m = f.iter().copied().fold(f64::NEG_INFINITY, f64::max); // finite: f[y] is
                                                                     // Weights w_k = exp(beta (f_k - m)) in (0, 1]; masked entries (w = 0) are skipped
                                                                     // so that 0 * (-inf) never appears.
        let (mut s, mut e) = (0.0, 0.0);
        for &x in f.iter().filter(|x| x.is_finite()) {
            let w = (beta * (x - m)).exp();
            s += w;
            e += w * x;
        }
        e /= s;
        let var = f.iter().filter(|x| x.is_finite()).map(|&x| (beta * (x - m)).exp() * (x - e).powi(2)).sum::<f64>() / s;
        l += beta * (m - f[y]) + s.ln();
        g += e - f[y];
        h += var;
    }
    let n = rows.len().max(1) as f64;
    (l / n, g / n, h / n)
}

/// Mean exact NLL, `-log_softmax(f/t)[y]`, over the rows [`fit_temperature`] uses.
pub fn nll_at_temperature(logits: &[Vec<f64>], labels: &[usize], t: f64) -> f64 {
    nll_derivs(&usable_rows(logits, labels), 1.0 / t).0
}

/// Temperature T in [0.05, 100] minimising the mean validation NLL of softmax(f / T).
///
/// The objective is convex in beta = 1/T, so L'(beta) is non-decreasing: if L'(1/100) >= 0 the
/// minimum is at T = 100, if L'(1/0.05) <= 0 at T = 0.05, otherwise L' has a root inside, found
/// by Newton's method safeguarded by bisection on a sign bracket (never leaves the bracket, so it
/// cannot diverge). Empty input, or input where every usable row has all its finite logits equal
/// (in particular single-class rows, K = 1), has an NLL independent of T and returns T = 1.
pub fn fit_temperature(logits: &[Vec<f64>], labels: &[usize]) -> TemperatureFit {
    let rows = usable_rows(logits, labels);
    let nll_before = nll_derivs(&rows, 1.0).0;
    let flat = rows.iter().all(|(f, _)| {
        let mut fin = f.iter().filter(|x| x.is_finite());
        let first = fin.next().copied();
        fin.all(|&x| Some(x) == first)
    });
    if flat {
        return TemperatureFit { temperature: 1.0, nll_before, nll_after: nll_before };
    }

    let (mut lo, mut hi) = (1.0 / T_MAX, 1.0 / T_MIN);
    let beta = if nll_derivs(&rows, lo).1 >= 0.0 {
        lo
    } else if nll_derivs(&rows, hi).1 <= 0.0 {
        hi
    } else {
        let mut b = 1.0;
        for _ in 0..200 {
            let (_, g, h) = nll_derivs(&rows, b);
            if g == 0.0 {
                break;
            }
            if g > 0.0 {
                hi = b;
            } else {
                lo = b;
            }
            let newton = b - g / h;
            let next = if h > 0.0 && newton > lo && newton < hi { newton } else { 0.5 * (lo + hi) };
            let done = (next - b).abs() <= 1e-14 * b || hi - lo <= 1e-14 * hi;
            b = next;
            if done {
                break;
            }
        }
        b
    };
    TemperatureFit { temperature: 1.0 / beta, nll_before, nll_after: nll_derivs(&rows, beta).0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    // Four examples worked by hand (K = 3, 2, 2, 2):
    //   1. p = [0.7, 0.2, 0.1], y = 0: conf 0.70, pred 0, right; 0.70*15 = 10.5  -> bin 10
    //   2. p = [0.4, 0.6],      y = 0: conf 0.60, pred 1, wrong; 0.60 = 9/15 (edge) -> bin 9
    //   3. p = [0.72, 0.28],    y = 1: conf 0.72, pred 0, wrong; 0.72*15 = 10.8 -> bin 10
    //   4. p = [0.5, 0.5],      y = 1: tie -> pred 0, wrong;    0.50*15 = 7.5  -> bin 7
    // accuracy = 1/4 = 0.25
    // bin 10: n 2, conf (0.7+0.72)/2 = 0.71, acc 1/2, gap 0.21
    // bin 9:  n 1, conf 0.6, acc 0, gap 0.6;  bin 7: n 1, conf 0.5, acc 0, gap 0.5
    // ECE = 2/4*0.21 + 1/4*0.6 + 1/4*0.5 = 0.105 + 0.15 + 0.125 = 0.38;  MCE = 0.6
    // NLL = -(ln 0.7 + ln 0.4 + ln 0.28 + ln 0.5)/4
    //     = (0.356675 + 0.916291 + 1.272966 + 0.693147)/4 = 0.80976963...
    // Brier: 1. 0.3^2+0.2^2+0.1^2 = 0.14   2. 0.6^2+0.6^2 = 0.72
    //        3. 0.72^2+0.72^2 = 1.0368     4. 0.5^2+0.5^2 = 0.5    mean = 2.3968/4 = 0.5992
    // Tolerance 1e-12: a handful of f64 operations on O(1) values, rounding ~1e-16 each.
    #[test]
    fn four_examples_by_hand() {
        let probs = vec![vec![0.7, 0.2, 0.1], vec![0.4, 0.6], vec![0.72, 0.28], vec![0.5, 0.5]];
        let m = metrics(&probs, &[0, 0, 1, 1]);
        let tol = 1e-12;
        assert_eq!(m.n, 4);
        assert!(close(m.accuracy, 0.25, tol), "{m:?}");
        assert!(close(m.ece, 0.38, tol), "{m:?}");
        assert!(close(m.mce, 0.6, tol), "{m:?}");
        assert!(close(m.nll, 0.8097696330464301, tol), "{m:?}");
        assert!(close(m.brier, 0.5992, tol), "{m:?}");
        assert_eq!(m.bins.len(), ECE_BINS);
        let counts: Vec<usize> = m.bins.iter().map(|b| b.count).collect();
        assert_eq!(counts, vec![0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 2, 0, 0, 0, 0]);
        assert!(close(m.bins[10].mean_confidence, 0.71, tol));
        assert!(close(m.bins[10].accuracy, 0.5, tol));
        assert_eq!(m.bins[0], ReliabilityBin { lower: 0.0, upper: 1.0 / 15.0, count: 0, mean_confidence: 0.0, accuracy: 0.0 });
        assert_eq!(m.bins[14].upper, 1.0);
        // Serialises (metrics.json) and reads back: serde_json's default float parser may be
        // off by one ulp (14/15 came back as ...333 instead of ...332), hence 1e-15.
        let back: Metrics = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back.bins.len(), ECE_BINS);
        for (a, b) in back.bins.iter().zip(&m.bins) {
            assert_eq!(a.count, b.count);
            assert!(close(a.upper, b.upper, 1e-15) && close(a.mean_confidence, b.mean_confidence, 1e-15));
        }
        assert!(close(back.ece, m.ece, 1e-15) && close(back.nll, m.nll, 1e-15));
    }

    // Perfect calibration: 10 rows at conf 0.7 with 7 right, 5 at conf 0.6 with 3 right,
    // 4 at conf 1.0 all right: every bin has acc = conf, so ECE = MCE = 0.
    // Tolerance 1e-12: the bin means are sums of <= 10 equal terms, rounding ~1e-15.
    #[test]
    fn perfectly_calibrated_has_zero_ece() {
        let mut probs = Vec::new();
        let mut labels = Vec::new();
        for i in 0..10 {
            probs.push(vec![0.7, 0.3]);
            labels.push(if i < 7 { 0 } else { 1 });
        }
        for i in 0..5 {
            probs.push(vec![0.4, 0.6]);
            labels.push(if i < 3 { 1 } else { 0 });
        }
        for _ in 0..4 {
            probs.push(vec![0.0, 1.0, 0.0]);
            labels.push(1);
        }
        let m = metrics(&probs, &labels);
        assert!(m.ece.abs() < 1e-12 && m.mce.abs() < 1e-12, "{m:?}");
        // accuracy (7 + 3 + 4)/19
        assert!(close(m.accuracy, 14.0 / 19.0, 1e-15));
    }

    // Edges: a confidence equal to b/15 (as the f64 b as f64 / 15.0) lands in bin b, 1.0 in the
    // last bin (14). Rows [c] are enough: the histogram reads only the top entry.
    #[test]
    fn bin_edges_and_confidence_one() {
        for b in 0..=15usize {
            let c = b as f64 / 15.0;
            let h = confidence_histogram(&[vec![c]], ECE_BINS);
            let expect = b.min(14);
            assert_eq!(h[expect], 1, "c = {c} should fall into bin {expect}: {h:?}");
        }
        // 1/15 from a uniform 15-way row, 0.6 written as a literal (== 9.0/15.0 in f64), and 1.0.
        let probs = vec![vec![1.0 / 15.0; 15], vec![0.6, 0.4], vec![1.0, 0.0]];
        let h = confidence_histogram(&probs, ECE_BINS);
        assert_eq!((h[1], h[9], h[14]), (1, 1, 1), "{h:?}");
        // The same rows in metrics; label 1 of [1.0, 0.0] has p = 0: the NLL term is clamped
        // to -ln(1e-12) = 27.631021115928547 and Brier is 1^2 + 1^2 = 2.
        let m = metrics(&probs[2..], &[1]);
        assert_eq!(m.bins[14].count, 1);
        assert!(close(m.nll, 27.631021115928547, 1e-12));
        assert!(close(m.brier, 2.0, 1e-15));
        assert!(close(m.ece, 1.0, 1e-15)); // conf 1, acc 0
                                           // Other bin counts, and degenerate inputs.
        assert_eq!(confidence_histogram(&probs, 3), vec![1, 1, 1]);
        assert!(confidence_histogram(&probs, 0).is_empty());
        let e = metrics(&[], &[]);
        assert_eq!((e.n, e.accuracy, e.ece, e.nll, e.brier), (0, 0.0, 0.0, 0.0, 0.0));
        // Label outside the row: wrong, p[y] = 0 (clamped), one-hot outside the row adds 1.
        let o = metrics(&[vec![0.5, 0.5]], &[2]);
        assert!(close(o.nll, 27.631021115928547, 1e-12) && close(o.brier, 1.5, 1e-15));
        assert_eq!(o.accuracy, 0.0);
    }

    // softmax([0, ln 3, -inf]) = [1/4, 3/4, 0]; shifting all logits by +-1000 changes nothing
    // (stability); log_softmax gives [ln 1/4, ln 3/4, -inf]. Tolerance 1e-15 unshifted (one
    // exp/ln each); 1e-12 shifted, because 1000 + ln 3 is itself stored with an error up to
    // ulp(1000)/2 ~ 6e-14 (observed error 1e-14).
    #[test]
    fn softmax_with_masked_entries() {
        let l3 = 3f64.ln();
        for (shift, tol) in [(0.0, 1e-15), (1000.0, 1e-12), (-1000.0, 1e-12)] {
            let p = softmax(&[shift, shift + l3, f64::NEG_INFINITY]);
            assert!(close(p[0], 0.25, tol) && close(p[1], 0.75, tol), "{p:?}");
            assert_eq!(p[2], 0.0);
        }
        let lp = log_softmax(&[0.0, l3, f64::NEG_INFINITY]);
        assert!(close(lp[0], 0.25f64.ln(), 1e-15) && close(lp[1], 0.75f64.ln(), 1e-15));
        assert_eq!(lp[2], f64::NEG_INFINITY);
        // Degenerate rows are limits: all -inf -> uniform; +inf entries share the mass.
        assert_eq!(softmax(&[f64::NEG_INFINITY; 4]), vec![0.25; 4]);
        assert_eq!(softmax(&[f64::INFINITY, 0.0, f64::INFINITY]), vec![0.5, 0.0, 0.5]);
        assert!(softmax(&[]).is_empty());
        // apply_temperature: [0, 2 ln 3] / 2 = [0, ln 3] -> [1/4, 3/4].
        let p = apply_temperature(&[vec![0.0, 2.0 * l3]], 2.0);
        assert!(close(p[0][0], 0.25, 1e-15) && close(p[0][1], 0.75, 1e-15));
    }

    // Small 64-bit LCG (Knuth's MMIX constants); the top 53 bits give a uniform in [0, 1).
    struct Lcg(u64);
    impl Lcg {
        fn uniform(&mut self) -> f64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    // N = 20000 rows of K = 4 logits uniform on [-5, 5]; the label is drawn from
    // softmax(f / T0), T0 = 2.5.
    fn synthetic(t0: f64) -> (Vec<Vec<f64>>, Vec<usize>) {
        let mut rng = Lcg(0x5eed_1234);
        let (mut logits, mut labels) = (Vec::new(), Vec::new());
        for _ in 0..20_000 {
            let f: Vec<f64> = (0..4).map(|_| 10.0 * rng.uniform() - 5.0).collect();
            let p = softmax(&f.iter().map(|x| x / t0).collect::<Vec<_>>());
            let u = rng.uniform();
            let mut acc = 0.0;
            let mut y = p.len() - 1;
            for (k, pk) in p.iter().enumerate() {
                acc += pk;
                if u < acc {
                    y = k;
                    break;
                }
            }
            logits.push(f);
            labels.push(y);
        }
        (logits, labels)
    }

    // Recovery of T0 = 2.5 within 5%. The MLE's standard error: beta0 = 0.4, Fisher information
    // per row = L''(beta) = mean Var_p(f) ~ 2.9 (measured), so se(beta) ~ 1/sqrt(2.9 * 20000)
    // ~ 0.004, i.e. ~1% of beta: 5% is about 5 standard errors (this seed gives T = 2.518, 0.7%).
    // Optimality: T* must beat T = 1 and T*(1 +- 0.01) exactly (<=). Near the optimum the NLL
    // rises by ~ L''(beta) (0.01 beta)^2 / 2 ~ 2.3e-5, far above f64 rounding (~1e-15).
    #[test]
    fn temperature_recovers_known_t_and_is_optimal() {
        let (logits, labels) = synthetic(2.5);
        let fit = fit_temperature(&logits, &labels);
        let t = fit.temperature;
        assert!((t / 2.5 - 1.0).abs() < 0.05, "fitted T = {t}");
        let nll = |t| nll_at_temperature(&logits, &labels, t);
        assert!(close(fit.nll_after, nll(t), 1e-15));
        assert!(close(fit.nll_before, nll(1.0), 1e-15));
        assert!(fit.nll_after <= fit.nll_before);
        assert!(fit.nll_after <= nll(t * 1.01) && fit.nll_after <= nll(t * 0.99));
        // The probabilities and metrics agree with the fitted NLL (metrics' clamp at 1e-12 is
        // never reached here: min p >= exp(-10 / 2.5) / 4 ~ 0.005); tolerance 1e-12 for the
        // different order of summation over 20000 terms.
        let m = metrics(&apply_temperature(&logits, t), &labels);
        assert!(close(m.nll, fit.nll_after, 1e-12));
    }

    // dL/dT at the optimum by central differences, h = 1e-5 T: truncation error
    // ~ h^2 L'''/6 ~ 6e-10 * O(0.1), rounding ~ 1e-16 * L / h ~ 5e-12 (measured: 2e-10). A T
    // off by 1e-6 relative would give dL/dT ~ L''(T) * 2.5e-6 ~ 0.07 * 2.5e-6 = 2e-7
    // (L''(T) = L''(beta)/T^4 ~ 2.9/40), so the bound 1e-8 is safe yet catches such an error.
    // At 1.1 T* the derivative is clearly nonzero (measured 0.015).
    #[test]
    fn temperature_derivative_vanishes_at_optimum() {
        let (logits, labels) = synthetic(2.5);
        let t = fit_temperature(&logits, &labels).temperature;
        let nll = |t| nll_at_temperature(&logits, &labels, t);
        let d = |t: f64| {
            let h = 1e-5 * t;
            (nll(t + h) - nll(t - h)) / (2.0 * h)
        };
        assert!(d(t).abs() < 1e-8, "dNLL/dT at T* = {}", d(t));
        assert!(d(1.1 * t) > 1e-4, "dNLL/dT at 1.1 T* = {}", d(1.1 * t));
    }

    // Edge cases of the fit.
    #[test]
    fn temperature_edge_cases() {
        // Empty and single-class (K = 1) input: the NLL does not depend on T -> T = 1.
        assert_eq!(fit_temperature(&[], &[]).temperature, 1.0);
        let one = fit_temperature(&[vec![3.0], vec![-1.0]], &[0, 0]);
        assert_eq!((one.temperature, one.nll_before, one.nll_after), (1.0, 0.0, 0.0));
        // Always right with a margin: sharper is always better -> lower bound T = 0.05.
        let f = vec![vec![2.0, 0.0], vec![0.0, 1.0]];
        assert_eq!(fit_temperature(&f, &[0, 1]).temperature, T_MIN);
        // Always the smallest logit: flatter is always better -> upper bound T = 100.
        assert_eq!(fit_temperature(&f, &[1, 0]).temperature, T_MAX);
        // Masked (-inf) choices are invisible: same T as with those entries removed
        // (1e-12 relative: both solves stop at ~1e-14 relative, on sums in a different order).
        let (logits, labels) = synthetic(2.5);
        let masked: Vec<Vec<f64>> = logits.iter().map(|f| vec![f[0], f[1], f64::NEG_INFINITY, f[2], f[3]]).collect();
        let relabel: Vec<usize> = labels.iter().map(|&y| if y >= 2 { y + 1 } else { y }).collect();
        let a = fit_temperature(&logits, &labels).temperature;
        let b = fit_temperature(&masked, &relabel).temperature;
        assert!((a / b - 1.0).abs() < 1e-12, "{a} vs {b}");
    }
}
