//! Selective prediction: a model may abstain on the items it is least sure of. Sort the n items
//! by top-class confidence, most confident first; at coverage k/n it answers the first k, and its
//! risk is their error rate
//!
//!   risk_k = (errors among the k most confident items) / k,   k = 1..n.
//!
//! AURC, the area under this risk-coverage curve, is (1/n) sum_k risk_k (lower is better: the
//! confident answers are the right ones). A model whose confidence says nothing has
//! risk_k ~ the error rate at every k, so AURC ~ its error rate.
//!
//! Ties in confidence have no order of their own; they are taken in expectation over every
//! order: of a tied group of g items with e errors, the first j of them contribute j e / g.

/// The curve as points (coverage k/n, risk_k), k = 1..n, from (confidence, correct) pairs.
pub fn risk_coverage(items: &[(f64, bool)]) -> Vec<[f64; 2]> {
    let n = items.len();
    let mut v: Vec<(f64, bool)> = items.iter().map(|&(c, ok)| (if c.is_finite() { c } else { f64::NEG_INFINITY }, ok)).collect();
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut out = Vec::with_capacity(n);
    let (mut i, mut errors_before) = (0usize, 0.0);
    while i < n {
        let mut j = i;
        while j < n && v[j].0 == v[i].0 {
            j += 1;
        }
        let g = (j - i) as f64;
        let e = v[i..j].iter().filter(|x| !x.1).count() as f64;
        for t in 1..=(j - i) {
            let k = i + t;
            out.push([k as f64 / n as f64, (errors_before + t as f64 * e / g) / k as f64]);
        }
        errors_before += e;
        i = j;
    }
    out
}

/// AURC = mean of risk_k over k = 1..n (0 for no items).
pub fn aurc(curve: &[[f64; 2]]) -> f64 {
    if curve.is_empty() {
        return 0.0;
    }
    curve.iter().map(|p| p[1]).sum::<f64>() / curve.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aurc_of_a_hand_case() {
        // Confidences 0.9 (right), 0.8 (wrong), 0.7 (right), 0.6 (wrong), given out of order:
        // risks 0/1, 1/2, 1/3, 2/4; AURC = (0 + 1/2 + 1/3 + 1/2) / 4 = 1/3.
        let c = risk_coverage(&[(0.7, true), (0.9, true), (0.6, false), (0.8, false)]);
        assert_eq!(c.iter().map(|p| p[0]).collect::<Vec<_>>(), [0.25, 0.5, 0.75, 1.0]);
        let r: Vec<f64> = c.iter().map(|p| p[1]).collect();
        assert_eq!(r[0], 0.0);
        assert!((r[1] - 0.5).abs() < 1e-15 && (r[2] - 1.0 / 3.0).abs() < 1e-15 && (r[3] - 0.5).abs() < 1e-15);
        assert!((aurc(&c) - 1.0 / 3.0).abs() < 1e-15);
        // The errors last (perfect ranking) is better: 0, 0, 1/3, 2/4 -> (5/6) / 4.
        let p = risk_coverage(&[(0.9, true), (0.8, true), (0.7, false), (0.6, false)]);
        assert!((aurc(&p) - 5.0 / 24.0).abs() < 1e-15);
    }

    #[test]
    fn ties_are_taken_in_expectation() {
        // Two items at the same confidence, one wrong: risk_1 = 1/2 (either may come first).
        let c = risk_coverage(&[(0.5, true), (0.5, false)]);
        assert_eq!(c, vec![[0.5, 0.5], [1.0, 0.5]]);
        assert_eq!(aurc(&c), 0.5);
        assert_eq!(aurc(&[]), 0.0);
    }
}
