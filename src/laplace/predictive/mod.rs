//! Linearised ("GLM") predictive: from a Gaussian over the K answer logits, f ~ N(mu, Sigma_f),
//! to class probabilities (MATH.md section 7). The quantity wanted is the exact GLM predictive
//! p* = E[softmax(f)]; every predictive here is judged by its total variation to it.
//!
//! The named predictives ([`PredictiveKind`], `laplace.predictive` in the configuration):
//! - `quadrature` (the default, [`quadrature`]): p* itself, by 1-D quadrature of the logit
//!   difference at K = 2 (to ~1e-15) and quasi-Monte Carlo on the centred Gaussian at K > 2
//!   (measured within TV 0.005; `quadrature.rs`);
//! - `probit` ([`probit`]): the shift-invariant pairwise probit, MacKay's at K = 2;
//! - `probit_torch` ([`probit_torch`]): laplace-torch's per-class probit on the raw logits;
//! - `mc` ([`monte_carlo`]): S correlated draws, probabilities averaged;
//! - `bridge` ([`laplace_bridge`]): the normalised Laplace bridge.
//!
//! Common conventions, for every function here:
//! - `mu` has K entries, `cov` is K x K row-major.
//! - Masked classes (mu = -inf; NaN is treated the same) get probability exactly 0 and are
//!   removed before any computation: their rows/columns of `cov` are never read for validity, and
//!   K below means the number of active classes. If a class has mu = +inf, the result is
//!   one-hot on it (uniform over several such classes): the limit of every approximation.
//!   If every class is masked, the result is all zeros.
//! - If the active block of `cov` contains NaN or inf, the Gaussian is unusable and the result
//!   falls back to softmax(mu) (the MAP predictive). No function here returns NaN.

mod bridge;
mod mc;
mod probit;
pub mod quadrature;
pub mod sobol;
#[cfg(test)]
mod tests;

pub use super::PredictiveKind;
pub use bridge::{laplace_bridge, laplace_bridge_with};
pub use mc::{cholesky_jitter, mc_samples_top, monte_carlo};
pub use probit::{probit, probit_torch};

/// The predictive probabilities of one example under the chosen predictive (masked classes get
/// 0). `samples` and `seed` are used by Monte Carlo only.
pub fn predict(kind: PredictiveKind, mu: &[f64], cov: &[f64], samples: usize, seed: u64) -> Vec<f64> {
    match kind {
        PredictiveKind::Quadrature => quadrature(mu, cov),
        PredictiveKind::Probit => probit(mu, cov),
        PredictiveKind::ProbitTorch => probit_torch(mu, cov),
        PredictiveKind::Mc => monte_carlo(mu, cov, samples, seed),
        PredictiveKind::Bridge => laplace_bridge(mu, cov),
    }
}

/// A predictive with its settings: what a fit used and what a viewer must use again (the prior
/// slider, the examples view, every analysis of a run).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Predictor {
    pub kind: PredictiveKind,
    /// Monte Carlo draws.
    pub samples: usize,
    /// Monte Carlo seed; example i uses seed + i.
    pub seed: u64,
}

impl Default for Predictor {
    fn default() -> Self {
        Predictor { kind: PredictiveKind::Quadrature, samples: 1000, seed: 0 }
    }
}

impl Predictor {
    /// The predictive of example `i` of a set.
    pub fn apply(&self, i: usize, mu: &[f64], cov: &[f64]) -> Vec<f64> {
        predict(self.kind, mu, cov, self.samples, self.seed.wrapping_add(i as u64))
    }
}

/// The GLM predictive E[softmax(f)] by quadrature (see `quadrature.rs`).
pub fn quadrature(mu: &[f64], cov: &[f64]) -> Vec<f64> {
    on_active(mu, cov, |m, c| match m.len() {
        1 => vec![1.0],
        2 => quadrature::binary(m, c).to_vec(),
        _ => quadrature::multiclass(m, c),
    })
}

/// `f` on the active classes' mean and covariance (`prepare`), its probabilities put back in
/// place; softmax(mu) where the covariance is not finite, `prepare`'s answer where it decided.
pub(super) fn on_active(mu: &[f64], cov: &[f64], f: impl Fn(&[f64], &[f64]) -> Vec<f64>) -> Vec<f64> {
    let k = mu.len();
    match prepare(mu, cov) {
        Prep::Done(p) => p,
        Prep::Active { idx, mu: m, cov: None } => scatter(&softmax_vec(&m), &idx, k),
        Prep::Active { idx, mu: m, cov: Some(c) } => scatter(&f(&m, &c), &idx, k),
    }
}

/// What is left after removing masked classes.
pub(crate) enum Prep {
    /// Finished: a degenerate case already has its answer (all masked, +inf logits).
    Done(Vec<f64>),
    /// Active class indices, their means, and their covariance block (None if non-finite).
    Active { idx: Vec<usize>, mu: Vec<f64>, cov: Option<Vec<f64>> },
}

pub(crate) fn prepare(mu: &[f64], cov: &[f64]) -> Prep {
    let k = mu.len();
    assert_eq!(cov.len(), k * k, "cov must be K x K with K = mu.len()");
    let idx: Vec<usize> = (0..k).filter(|&c| !(mu[c].is_nan() || mu[c] == f64::NEG_INFINITY)).collect();
    if idx.is_empty() {
        return Prep::Done(vec![0.0; k]);
    }
    let inf: Vec<usize> = idx.iter().copied().filter(|&c| mu[c] == f64::INFINITY).collect();
    if !inf.is_empty() {
        let mut p = vec![0.0; k];
        for &c in &inf {
            p[c] = 1.0 / inf.len() as f64;
        }
        return Prep::Done(p);
    }
    let ka = idx.len();
    let mut sub = vec![0.0; ka * ka];
    let mut finite = true;
    for (a, &i) in idx.iter().enumerate() {
        for (b, &j) in idx.iter().enumerate() {
            let v = cov[i * k + j];
            finite &= v.is_finite();
            sub[a * ka + b] = v;
        }
    }
    let mu_a = idx.iter().map(|&c| mu[c]).collect();
    Prep::Active { idx, mu: mu_a, cov: if finite { Some(sub) } else { None } }
}

pub(crate) fn scatter(p_active: &[f64], idx: &[usize], k: usize) -> Vec<f64> {
    let mut p = vec![0.0; k];
    for (&c, &v) in idx.iter().zip(p_active) {
        p[c] = v;
    }
    p
}

/// Numerically stable softmax, written into `out`. Meant for finite values; it still never
/// returns NaN: +inf entries share probability 1, NaN entries get 0, and an input with no
/// usable value (all NaN / -inf) gives the uniform distribution.
#[inline]
pub(crate) fn softmax_into(x: &[f64], out: &mut [f64]) {
    let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max); // max ignores NaN
    if !m.is_finite() {
        let hits = |v: f64| if m == f64::INFINITY { v == m } else { true };
        let n = x.iter().filter(|&&v| hits(v)).count() as f64;
        for (o, &v) in out.iter_mut().zip(x) {
            *o = if hits(v) { 1.0 / n } else { 0.0 };
        }
        return;
    }
    let mut s = 0.0;
    for (o, &v) in out.iter_mut().zip(x) {
        let e = (v - m).exp();
        *o = if e.is_nan() { 0.0 } else { e };
        s += *o;
    }
    for o in out.iter_mut() {
        *o /= s;
    }
}

pub(crate) fn softmax_vec(x: &[f64]) -> Vec<f64> {
    let mut out = vec![0.0; x.len()];
    softmax_into(x, &mut out);
    out
}

/// softmax(mu) with masked classes (mu = -inf or NaN) at probability 0: the MAP predictive.
pub fn softmax(mu: &[f64]) -> Vec<f64> {
    let k = mu.len();
    match prepare(mu, &vec![0.0; k * k]) {
        Prep::Done(p) => p,
        Prep::Active { idx, mu: m, .. } => scatter(&softmax_vec(&m), &idx, k),
    }
}
