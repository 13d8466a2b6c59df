//! Monte Carlo predictive (MATH.md section 7): S correlated draws f_s = mu + C z_s with
//! C C^T = Sigma_f (+ jitter), p = (1/S) sum_s softmax(f_s). Probabilities are averaged, never
//! logits. Also the per-draw top-class probabilities behind the examples view's histogram.

use super::{on_active, prepare, softmax_into, softmax_vec, Prep};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

/// Lower Cholesky factor (row-major n x n) of a symmetric matrix, or None if a pivot is not > 0.
fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for j in 0..n {
        let mut d = a[j * n + j];
        for p in 0..j {
            d -= l[j * n + p] * l[j * n + p];
        }
        if !(d > 0.0) || !d.is_finite() {
            return None;
        }
        let djj = d.sqrt();
        l[j * n + j] = djj;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for p in 0..j {
                s -= l[i * n + p] * l[j * n + p];
            }
            l[i * n + j] = s / djj;
        }
    }
    Some(l)
}

/// A factor C with C C^T ~= cov: Cholesky of cov + jitter I, with jitter = 1e-12, 1e-10, ...,
/// 1e-4 times the largest diagonal entry (retrying while the factorisation fails); if all fail,
/// the diagonal square root (correlations dropped). A zero matrix gives C = 0.
pub fn cholesky_jitter(cov: &[f64], n: usize) -> Vec<f64> {
    let scale = (0..n).map(|i| cov[i * n + i]).fold(0.0, f64::max);
    if !(scale > 0.0) {
        return vec![0.0; n * n];
    }
    let mut a = cov.to_vec();
    // Symmetrise: the caller's matrix may carry round-off asymmetry.
    for i in 0..n {
        for j in 0..i {
            let v = 0.5 * (a[i * n + j] + a[j * n + i]);
            a[i * n + j] = v;
            a[j * n + i] = v;
        }
    }
    for e in [-12, -10, -8, -6, -4] {
        let jitter = scale * 10f64.powi(e);
        let mut aj = a.clone();
        for i in 0..n {
            aj[i * n + i] += jitter;
        }
        if let Some(l) = cholesky(&aj, n) {
            return l;
        }
    }
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        l[i * n + i] = a[i * n + i].max(0.0).sqrt();
    }
    l
}

/// Draws `samples` softmax vectors of f = mu + C z over the active classes and hands each to `f`.
fn for_each_sample(mu: &[f64], chol: &[f64], samples: usize, seed: u64, mut f: impl FnMut(&[f64])) {
    let n = mu.len();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut z = vec![0.0; n];
    let mut logits = vec![0.0; n];
    let mut p = vec![0.0; n];
    for _ in 0..samples {
        for v in z.iter_mut() {
            *v = rng.sample(StandardNormal);
        }
        for i in 0..n {
            let mut s = mu[i];
            for j in 0..=i {
                s += chol[i * n + j] * z[j];
            }
            logits[i] = s;
        }
        softmax_into(&logits, &mut p);
        f(&p);
    }
}

/// Monte Carlo predictive: the mean of softmax(mu + C z) over `samples` draws (seeded), C from
/// [`cholesky_jitter`]. `samples = 0` or a non-finite covariance gives softmax(mu).
pub fn monte_carlo(mu: &[f64], cov: &[f64], samples: usize, seed: u64) -> Vec<f64> {
    on_active(mu, cov, |m, c| {
        if samples == 0 {
            return softmax_vec(m);
        }
        let ka = m.len();
        let l = cholesky_jitter(c, ka);
        let mut acc = vec![0.0; ka];
        for_each_sample(m, &l, samples, seed, |p| {
            for (a, v) in acc.iter_mut().zip(p) {
                *a += v;
            }
        });
        let inv = 1.0 / samples as f64;
        acc.iter_mut().for_each(|a| *a *= inv);
        acc
    })
}

/// Per-sample probability of the MAP top class (argmax of mu over the active classes), for a
/// histogram of the predictive. Same draws as [`monte_carlo`] with the same seed. Degenerate
/// inputs (all masked: empty; non-finite cov: `samples` copies of softmax(mu)[top]).
pub fn mc_samples_top(mu: &[f64], cov: &[f64], samples: usize, seed: u64) -> Vec<f64> {
    match prepare(mu, cov) {
        Prep::Done(p) => {
            if p.iter().all(|&x| x == 0.0) {
                Vec::new()
            } else {
                vec![p.iter().copied().fold(0.0, f64::max); samples]
            }
        }
        Prep::Active { mu: m, cov, .. } => {
            let top = (0..m.len()).fold(0, |b, i| if m[i] > m[b] { i } else { b });
            match cov {
                None => vec![softmax_vec(&m)[top]; samples],
                Some(c) => {
                    let l = cholesky_jitter(&c, m.len());
                    let mut out = Vec::with_capacity(samples);
                    for_each_sample(&m, &l, samples, seed, |p| out.push(p[top]));
                    out
                }
            }
        }
    }
}
