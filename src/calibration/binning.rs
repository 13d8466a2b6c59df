//! Other binnings of the reliability diagram than `metrics`' 15 equal-width bins: any number of
//! equal-width bins, or equal-mass bins (each holding N/B items of the confidence order; Nixon
//! et al. 2019's adaptive ECE). Accuracy, NLL and Brier do not depend on the binning.
//!
//! Equal mass: sort the items by top-label confidence (ties keep their input order), item of rank
//! r (0-based) goes to bin floor(r B / N); a bin's `lower` / `upper` are its smallest and largest
//! confidence. ECE = sum_b (n_b / N) |acc_b - conf_b| as for equal width.

use super::{bin_index, metrics, top_label, Metrics, ReliabilityBin, ECE_BINS};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scheme {
    EqualWidth,
    EqualMass,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binning {
    pub bins: usize,
    pub scheme: Scheme,
}

impl Default for Binning {
    /// `metrics`' own: 15 equal-width bins.
    fn default() -> Self {
        Self { bins: ECE_BINS, scheme: Scheme::EqualWidth }
    }
}

/// `metrics` with the reliability bins, ECE and MCE of `binning` (`bins` >= 1).
pub fn metrics_binned(probs: &[Vec<f64>], labels: &[usize], binning: &Binning) -> Metrics {
    if *binning == Binning::default() {
        return metrics(probs, labels);
    }
    rebinned(probs, labels, binning)
}

fn rebinned(probs: &[Vec<f64>], labels: &[usize], binning: &Binning) -> Metrics {
    let mut m = metrics(probs, labels);
    let nb = binning.bins.max(1);
    let items: Vec<(f64, bool)> = probs
        .iter()
        .zip(labels)
        .map(|(p, &y)| {
            let (pred, conf) = top_label(p);
            (conf, pred == y)
        })
        .collect();
    let n = items.len();
    let bin_of: Vec<usize> = match binning.scheme {
        Scheme::EqualWidth => items.iter().map(|&(c, _)| bin_index(c, nb)).collect(),
        Scheme::EqualMass => {
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| items[a].0.total_cmp(&items[b].0));
            let mut b = vec![0; n];
            for (rank, &i) in order.iter().enumerate() {
                b[i] = rank * nb / n.max(1);
            }
            b
        }
    };
    let (mut count, mut conf, mut right) = (vec![0usize; nb], vec![0.0f64; nb], vec![0usize; nb]);
    let (mut lo, mut hi) = (vec![f64::INFINITY; nb], vec![f64::NEG_INFINITY; nb]);
    for (&(c, ok), &b) in items.iter().zip(&bin_of) {
        count[b] += 1;
        conf[b] += c;
        right[b] += ok as usize;
        lo[b] = lo[b].min(c);
        hi[b] = hi[b].max(c);
    }
    let (mut ece, mut mce) = (0.0f64, 0.0f64);
    m.bins = (0..nb)
        .map(|b| {
            let (lower, upper) = match binning.scheme {
                Scheme::EqualWidth => (b as f64 / nb as f64, (b + 1) as f64 / nb as f64),
                Scheme::EqualMass if count[b] > 0 => (lo[b], hi[b]),
                Scheme::EqualMass => (0.0, 0.0),
            };
            if count[b] == 0 {
                return ReliabilityBin { lower, upper, count: 0, mean_confidence: 0.0, accuracy: 0.0 };
            }
            let k = count[b] as f64;
            let (mc, acc) = (conf[b] / k, right[b] as f64 / k);
            ece += k / n as f64 * (acc - mc).abs();
            mce = mce.max((acc - mc).abs());
            ReliabilityBin { lower, upper, count: count[b], mean_confidence: mc, accuracy: acc }
        })
        .collect();
    m.ece = ece;
    m.mce = mce;
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    /// 15 equal-width bins through the general path equal `metrics` (the same edges), and other
    /// counts regroup the same items.
    #[test]
    fn equal_width_matches_metrics() {
        let probs: Vec<Vec<f64>> = (0..40)
            .map(|i| {
                let c = 0.3 + 0.7 * ((i * 37 % 40) as f64 / 40.0);
                vec![c, 1.0 - c]
            })
            .collect();
        let labels: Vec<usize> = (0..40).map(|i| (i % 3 == 0) as usize).collect();
        let m = metrics(&probs, &labels);
        // The general path with metrics' own 15 bins.
        let g = rebinned(&probs, &labels, &Binning::default());
        assert_eq!(m, g);
        let five = metrics_binned(&probs, &labels, &Binning { bins: 5, scheme: Scheme::EqualWidth });
        assert_eq!(five.bins.len(), 5);
        assert_eq!(five.bins.iter().map(|b| b.count).sum::<usize>(), 40);
        assert!(close(five.accuracy, m.accuracy) && close(five.nll, m.nll));
    }

    /// By hand: confidences 0.9 (right), 0.8 (wrong), 0.7 (right), 0.6 (right) in 2 equal-mass
    /// bins: {0.6, 0.7} conf 0.65 acc 1, {0.8, 0.9} conf 0.85 acc 0.5;
    /// ECE = 1/2 0.35 + 1/2 0.35 = 0.35, MCE 0.35.
    #[test]
    fn equal_mass_by_hand() {
        let probs = vec![vec![0.9, 0.1], vec![0.8, 0.2], vec![0.7, 0.3], vec![0.6, 0.4]];
        let labels = vec![0, 1, 0, 0];
        let m = metrics_binned(&probs, &labels, &Binning { bins: 2, scheme: Scheme::EqualMass });
        assert_eq!((m.bins[0].count, m.bins[1].count), (2, 2));
        assert!(close(m.bins[0].mean_confidence, 0.65) && close(m.bins[0].accuracy, 1.0));
        assert!(close(m.bins[1].mean_confidence, 0.85) && close(m.bins[1].accuracy, 0.5));
        assert!(close(m.bins[0].lower, 0.6) && close(m.bins[0].upper, 0.7));
        assert!(close(m.ece, 0.35) && close(m.mce, 0.35), "{m:?}");
    }
}
