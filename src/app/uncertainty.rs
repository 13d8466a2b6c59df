//! The split of predictive uncertainty into its aleatoric and epistemic parts, from samples of
//! the class probabilities p_1 ... p_S (ensemble members, MC-dropout passes, or softmax of
//! Gaussian logit draws f_s ~ N(mu, Sigma) for the Laplace methods):
//!
//!   total      H[E p]   = H( (1/S) sum_s p_s )          entropy of the averaged prediction
//!   aleatoric  E[H p]   = (1/S) sum_s H(p_s)            what each sample is unsure of itself
//!   epistemic  I        = H[E p] - E[H p]               mutual information between the label
//!                                                        and the weights: the samples disagree
//!
//! with H(p) = -sum_k p_k ln p_k (nats). I >= 0 because H is concave (Jensen), and it is exactly
//! total - aleatoric for the same samples, so the three always add up.

use laplace_lora::calibration::softmax;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Split {
    pub total: f64,
    pub aleatoric: f64,
    pub epistemic: f64,
}

/// H(p) = -sum p ln p, with 0 ln 0 = 0.
pub fn entropy(p: &[f64]) -> f64 {
    -p.iter().filter(|x| **x > 0.0).map(|x| x * x.ln()).sum::<f64>()
}

/// The split from probability samples (S x K); None when there are none or their lengths differ.
pub fn split_samples(samples: &[Vec<f64>]) -> Option<Split> {
    let k = samples.first()?.len();
    if k == 0 || samples.iter().any(|s| s.len() != k) {
        return None;
    }
    let n = samples.len() as f64;
    let mut mean = vec![0.0; k];
    let mut aleatoric = 0.0;
    for s in samples {
        for (m, x) in mean.iter_mut().zip(s) {
            *m += x / n;
        }
        aleatoric += entropy(s) / n;
    }
    let total = entropy(&mean);
    // Rounding can leave a tiny negative difference when all samples agree.
    Some(Split { total, aleatoric, epistemic: (total - aleatoric).max(0.0) })
}

/// Lower-triangular L with L L^T = cov + jitter I (rows of a K x K covariance; a non-positive
/// pivot is taken as 0, so a singular covariance still gives samples).
pub fn cholesky(cov: &[Vec<f64>], k: usize) -> Vec<Vec<f64>> {
    let mut l = vec![vec![0.0; k]; k];
    for i in 0..k {
        for j in 0..=i {
            let mut sum = cov.get(i).and_then(|r| r.get(j)).copied().unwrap_or(0.0);
            for t in 0..j {
                sum -= l[i][t] * l[j][t];
            }
            if i == j {
                l[i][j] = (sum + 1e-9).max(0.0).sqrt();
            } else {
                l[i][j] = if l[j][j] > 0.0 { sum / l[j][j] } else { 0.0 };
            }
        }
    }
    l
}

/// `n` draws of softmax(f), f = mu + L z, z ~ N(0, I), from a seeded generator.
pub fn gaussian_prob_samples(mu: &[f64], cov: &[Vec<f64>], n: usize, seed: u64) -> Vec<Vec<f64>> {
    use rand::{Rng, SeedableRng};
    use rand_distr::StandardNormal;
    let k = mu.len();
    let l = cholesky(cov, k);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let z: Vec<f64> = (0..k).map(|_| rng.sample(StandardNormal)).collect();
            let f: Vec<f64> = (0..k).map(|i| mu[i] + (0..=i).map(|j| l[i][j] * z[j]).sum::<f64>()).collect();
            softmax(&f)
        })
        .collect()
}

/// The split of a Gaussian over the logits by `n` seeded Monte Carlo draws.
pub fn split_gaussian(mu: &[f64], cov: &[Vec<f64>], n: usize, seed: u64) -> Option<Split> {
    if mu.is_empty() || cov.len() != mu.len() || mu.iter().any(|x| !x.is_finite()) {
        return None;
    }
    split_samples(&gaussian_prob_samples(mu, cov, n, seed))
}

/// One plain sentence on which part dominates.
pub fn explain(s: &Split) -> &'static str {
    if s.total < 0.05 {
        "Confident: the samples agree and each is sure."
    } else if s.epistemic > s.aleatoric {
        "Mostly epistemic: the posterior disagrees with itself here (its samples favour different answers)."
    } else {
        "Mostly aleatoric: the model is unsure even at its best guess (each sample spreads its probability)."
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_point_masses_split_by_hand() {
        // p1 = (1, 0), p2 = (0, 1): each certain, their average (0.5, 0.5) has H = ln 2.
        let s = split_samples(&[vec![1.0, 0.0], vec![0.0, 1.0]]).unwrap();
        assert!((s.total - 2f64.ln()).abs() < 1e-15 && s.aleatoric == 0.0 && (s.epistemic - 2f64.ln()).abs() < 1e-15);
        // p1 = (0.5, 0.5), p2 = (0.9, 0.1): E[H] = (ln 2 + H(0.9, 0.1)) / 2, H[E p] = H(0.7, 0.3).
        let h = |a: f64| -(a * a.ln() + (1.0 - a) * (1.0 - a).ln());
        let s = split_samples(&[vec![0.5, 0.5], vec![0.9, 0.1]]).unwrap();
        assert!((s.aleatoric - (2f64.ln() + h(0.9)) / 2.0).abs() < 1e-14);
        assert!((s.total - h(0.7)).abs() < 1e-14);
        assert!((s.epistemic - (h(0.7) - (2f64.ln() + h(0.9)) / 2.0)).abs() < 1e-14);
        assert!(split_samples(&[vec![0.5, 0.5], vec![1.0]]).is_none());
    }

    #[test]
    fn gaussian_split_limits() {
        // No covariance: every draw is softmax(mu), so no epistemic part.
        let mu = [1.0, 0.0, -1.0];
        let zero = vec![vec![0.0; 3]; 3];
        let s = split_gaussian(&mu, &zero, 500, 1).unwrap();
        assert!((s.total - entropy(&softmax(&mu))).abs() < 1e-6 && s.epistemic < 1e-6);
        // A wide posterior on equal means: draws are near one-hot, spread over the classes, so
        // most of the ln 3 total is epistemic.
        let wide: Vec<Vec<f64>> = (0..3).map(|i| (0..3).map(|j| if i == j { 400.0 } else { 0.0 }).collect()).collect();
        let s = split_gaussian(&[0.0; 3], &wide, 4000, 2).unwrap();
        assert!((s.total - 3f64.ln()).abs() < 0.02, "{s:?}");
        assert!(s.epistemic > 0.8 * s.total, "{s:?}");
        // The same seed gives the same numbers.
        assert_eq!(split_gaussian(&[0.0; 3], &wide, 100, 9), split_gaussian(&[0.0; 3], &wide, 100, 9));
    }
}
