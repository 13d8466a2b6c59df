//! The normalised Laplace bridge (Hobbhahn, Kristiadi & Hennig, "Fast predictive uncertainty for
//! classification with Bayesian deep networks", UAI 2022, arXiv:2003.01227): the Gaussian over the
//! logits mapped to a Dirichlet whose mean is the predictive. "Normalised" is laplace-torch's
//! `link_approx="bridge_norm"`: the variance correction of step 2 below is on by default.

use super::{prepare, scatter, softmax_vec, Prep};

/// Laplace bridge with the paper's corrections (variance correction on). See
/// [`laplace_bridge_with`].
pub fn laplace_bridge(mu: &[f64], cov: &[f64]) -> Vec<f64> {
    laplace_bridge_with(mu, cov, true)
}

/// Laplace bridge (Hobbhahn, Kristiadi & Hennig, UAI 2022): the mean alpha / sum(alpha) of the
/// Dirichlet matched to N(mu, Sigma) over the K active logits.
///
/// 1. Mean correction. The softmax ignores a shift of all logits, and the bridge assumes the
///    Gaussian lives on sum_k f_k = 0. Condition on it (as the paper and laplace-torch do):
///    with s = Sigma 1 and t = 1^T Sigma 1,
///    mu <- mu - s (1^T mu) / t,   Sigma <- Sigma - s s^T / t.
///    (Skipped when t <= 1e-12 tr(Sigma): then s ~ 0 and conditioning changes nothing.) This is
///    the centring mu - mean(mu) when Sigma 1 is proportional to 1; in general it moves mu along
///    Sigma 1, so a common shift of mu is only approximately ignored.
/// 2. Variance correction (optional, `variance_correction`; laplace-torch's "bridge_norm"):
///    c = mean_k(Sigma_kk) / sqrt(K/2),  mu <- mu / sqrt(c),  Sigma_kk <- Sigma_kk / c.
/// 3. alpha_k = (1/Sigma_kk)(1 - 2/K + e^{mu_k}/K^2 sum_l e^{-mu_l}), evaluated in log space
///    (log-sum-exp) so large logits do not overflow; the result is softmax(log alpha).
///
/// Degenerate cases: one active class -> 1; zero variance left after step 1 (Sigma = 0, or all
/// of it along the shift direction 1, which the softmax ignores) -> softmax(mu), the limit of the
/// predictive; a per-class variance below 1e-9 of the mean is floored there (alpha finite);
/// non-finite cov -> softmax(mu).
pub fn laplace_bridge_with(mu: &[f64], cov: &[f64], variance_correction: bool) -> Vec<f64> {
    let k = mu.len();
    let (idx, mut m, c) = match prepare(mu, cov) {
        Prep::Done(p) => return p,
        Prep::Active { idx, mu: m, cov: None } => return scatter(&softmax_vec(&m), &idx, k),
        Prep::Active { idx, mu, cov: Some(c) } => (idx, mu, c),
    };
    let n = idx.len();
    if n == 1 {
        return scatter(&[1.0], &idx, k);
    }
    let trace: f64 = (0..n).map(|i| c[i * n + i].max(0.0)).sum();
    if !(trace > 0.0) {
        return scatter(&softmax_vec(&m), &idx, k);
    }
    // 1. Mean correction: condition on sum f = 0.
    let s: Vec<f64> = (0..n).map(|i| (0..n).map(|j| c[i * n + j]).sum()).collect();
    let t: f64 = s.iter().sum();
    let mut var: Vec<f64> = (0..n).map(|i| c[i * n + i]).collect();
    if t > 1e-12 * trace {
        let sum_mu: f64 = m.iter().sum();
        for i in 0..n {
            m[i] -= s[i] * sum_mu / t;
            var[i] -= s[i] * s[i] / t;
        }
    }
    let mean_var = var.iter().map(|v| v.max(0.0)).sum::<f64>() / n as f64;
    if !(mean_var > 1e-12 * trace / n as f64) {
        return scatter(&softmax_vec(&m), &idx, k);
    }
    let kf = n as f64;
    // 2. Variance correction.
    let mut var_mean = mean_var;
    if variance_correction {
        let cc = mean_var / (kf / 2.0).sqrt();
        let r = cc.sqrt();
        m.iter_mut().for_each(|x| *x /= r);
        var.iter_mut().for_each(|v| *v /= cc);
        var_mean /= cc;
    }
    let floor = 1e-9 * var_mean;
    // 3. log alpha_k = log(1 - 2/K + exp(mu_k + LSE(-mu) - 2 log K)) - log var_k.
    let neg_max = m.iter().map(|x| -x).fold(f64::NEG_INFINITY, f64::max);
    let lse_neg = neg_max + m.iter().map(|x| (-x - neg_max).exp()).sum::<f64>().ln();
    let base = 1.0 - 2.0 / kf; // 0 for K = 2
    let log_alpha: Vec<f64> = (0..n)
        .map(|i| {
            let lt = m[i] + lse_neg - 2.0 * kf.ln();
            let l1 = if base > 0.0 {
                let lb = base.ln();
                let (hi, lo) = if lt > lb { (lt, lb) } else { (lb, lt) };
                hi + (lo - hi).exp().ln_1p()
            } else {
                lt
            };
            l1 - var[i].max(floor).ln()
        })
        .collect();
    scatter(&softmax_vec(&log_alpha), &idx, k)
}
