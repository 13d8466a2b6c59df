//! Probit approximations of E[softmax(f)], f ~ N(mu, Sigma) (MATH.md section 7): closed forms,
//! kept as named options to compare against the quadrature default.
//!
//! - [`probit`], shift-invariant and pairwise: p_c = 1 / (1 + sum_{j != c} exp(-(mu_c - mu_j) /
//!   sqrt(1 + (pi/8) Var(f_c - f_j)))), then normalised. It depends on logit differences only, so a
//!   common shift of the logits (and any common-mode variance) changes nothing, and at K = 2 it is
//!   exactly MacKay's binary probit sigmoid(d / sqrt(1 + pi v/8)), d = mu_0 - mu_1,
//!   v = Var(f_0 - f_1).
//! - [`probit_torch`], laplace-torch's `link_approx="probit"`: softmax(mu_c / sqrt(1 + (pi/8)
//!   Sigma_cc)) on the raw logits. Not shift-invariant: an LM's answer logits sit together near
//!   +15 with a Sigma dominated by the common mode, and each logit is shrunk by its own factor.
//!
//! (The per-class formula applied to the centred logits C mu, C Sigma C, this program's earlier
//! default, is shift-invariant but sees each class's variance at K = 2 as v/4, i.e. it computes
//! sigmoid(d / sqrt(1 + pi v/32)): four times too little variance. It is gone.)

use super::{on_active, softmax_vec};

const PI_8: f64 = std::f64::consts::PI / 8.0;

/// The shift-invariant pairwise probit (module doc). Negative variances (round-off) count as 0;
/// a non-finite covariance falls back to softmax(mu).
pub fn probit(mu: &[f64], cov: &[f64]) -> Vec<f64> {
    on_active(mu, cov, |m, c| {
        let n = m.len();
        let mut p: Vec<f64> = (0..n)
            .map(|a| {
                let mut denom = 1.0;
                for j in (0..n).filter(|&j| j != a) {
                    let var = (c[a * n + a] + c[j * n + j] - 2.0 * c[a * n + j]).max(0.0);
                    denom += (-(m[a] - m[j]) / (1.0 + PI_8 * var).sqrt()).exp();
                }
                1.0 / denom
            })
            .collect();
        let s: f64 = p.iter().sum();
        p.iter_mut().for_each(|x| *x /= s);
        p
    })
}

/// laplace-torch's probit on the raw logits (module doc).
pub fn probit_torch(mu: &[f64], cov: &[f64]) -> Vec<f64> {
    on_active(mu, cov, |m, c| {
        let n = m.len();
        let scaled: Vec<f64> = (0..n).map(|a| m[a] / (1.0 + PI_8 * c[a * n + a].max(0.0)).sqrt()).collect();
        softmax_vec(&scaled)
    })
}
