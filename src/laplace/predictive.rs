//! Linearised ("GLM") predictive: from a Gaussian over the K answer logits, f ~ N(mu, Sigma_f),
//! to class probabilities (MATH.md section 7).
//!
//! Three link approximations:
//! - probit: p = softmax(mu_c / sqrt(1 + (pi/8) Sigma_cc)), the multi-class extension of
//!   MacKay's probit approximation, applied to the centred logits (see [`probit`]: unlike
//!   laplace-torch's `link_approx="probit"`, invariant to a common shift of the logits);
//! - Monte Carlo: f_s = mu + C z_s, C C^T = Sigma_f (+ jitter), p = (1/S) sum_s softmax(f_s);
//!   probabilities are averaged, never logits;
//! - Laplace bridge (Hobbhahn, Kristiadi & Hennig, "Fast predictive uncertainty for
//!   classification with Bayesian deep networks", UAI 2022, arXiv:2003.01227): map the Gaussian to
//!   a Dirichlet, alpha_k = (1/Sigma_kk)(1 - 2/K + e^{mu_k}/K^2 sum_l e^{-mu_l}), and return its mean
//!   alpha / sum(alpha), after the paper's corrections (see [`laplace_bridge_with`]).
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

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

/// What is left after removing masked classes.
enum Prep {
    /// Finished: a degenerate case already has its answer (all masked, +inf logits).
    Done(Vec<f64>),
    /// Active class indices, their means, and their covariance block (None if non-finite).
    Active { idx: Vec<usize>, mu: Vec<f64>, cov: Option<Vec<f64>> },
}

fn prepare(mu: &[f64], cov: &[f64]) -> Prep {
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

fn scatter(p_active: &[f64], idx: &[usize], k: usize) -> Vec<f64> {
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
fn softmax_into(x: &[f64], out: &mut [f64]) {
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

fn softmax_vec(x: &[f64]) -> Vec<f64> {
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

/// Probit approximation, made invariant to the softmax's shift symmetry:
/// p = softmax(mu'_c / sqrt(1 + (pi/8) Sigma'_cc)) with mu' = C mu, Sigma' = C Sigma C and
/// C = I - 11^T/K the centring over the active classes.
///
/// Why centre: softmax(f) = softmax(C f) for every f, so the predictive of N(mu, Sigma) equals
/// that of N(C mu, C Sigma C) exactly, but the per-class probit scaling does not: applied to raw
/// answer logits (an LM's sit near +15 together) and to a Sigma_f dominated by the common mode
/// (every logit moves with the last hidden state), it shrinks each logit by a different factor
/// and can change the argmax. laplace-torch's `link_approx="probit"` uses the raw mu and Sigma_cc;
/// the centred form gives the same result when Sigma has no common mode and is far closer to
/// Monte Carlo when it has one (see the tests). Negative diagonal entries (round-off) are treated
/// as 0. Falls back to softmax(mu) if the active block of `cov` is non-finite.
pub fn probit(mu: &[f64], cov: &[f64]) -> Vec<f64> {
    probit_with(mu, cov, true)
}

/// laplace-torch's probit, softmax(mu_c / sqrt(1 + (pi/8) Sigma_cc)) on the raw logits, kept to
/// compare against (it is not invariant to a common shift of the logits; see [`probit`]).
pub fn probit_uncentred(mu: &[f64], cov: &[f64]) -> Vec<f64> {
    probit_with(mu, cov, false)
}

fn probit_with(mu: &[f64], cov: &[f64], centred: bool) -> Vec<f64> {
    let k = mu.len();
    match prepare(mu, cov) {
        Prep::Done(p) => p,
        Prep::Active { idx, mu: m, cov: None } => scatter(&softmax_vec(&m), &idx, k),
        Prep::Active { idx, mu: m, cov: Some(c) } => {
            let n = idx.len();
            let nf = n as f64;
            // Centring: mu' = mu - mean(mu) and (C Sigma C)_aa = Sigma_aa - 2 (Sigma 1)_a / n + 1^T Sigma 1 / n^2.
            let (mean, row, total) = if centred {
                let row: Vec<f64> = (0..n).map(|a| c[a * n..(a + 1) * n].iter().sum()).collect();
                let total = row.iter().sum::<f64>();
                (m.iter().sum::<f64>() / nf, row, total)
            } else {
                (0.0, vec![0.0; n], 0.0)
            };
            let scaled: Vec<f64> = (0..n)
                .map(|a| {
                    let var = c[a * n + a] - 2.0 * row[a] / nf + total / (nf * nf);
                    (m[a] - mean) / (1.0 + std::f64::consts::PI / 8.0 * var.max(0.0)).sqrt()
                })
                .collect();
            scatter(&softmax_vec(&scaled), &idx, k)
        }
    }
}

/// Probit from the diagonal of Sigma_f only (what the spectral cache's callers may hold).
pub fn probit_diag(mu: &[f64], var: &[f64]) -> Vec<f64> {
    let k = mu.len();
    let mut cov = vec![0.0; k * k];
    for c in 0..k {
        cov[c * k + c] = var[c];
    }
    probit(mu, &cov)
}

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
    let k = mu.len();
    match prepare(mu, cov) {
        Prep::Done(p) => p,
        Prep::Active { idx, mu: m, cov: None } => scatter(&softmax_vec(&m), &idx, k),
        Prep::Active { idx, mu: m, cov: Some(c) } => {
            if samples == 0 {
                return scatter(&softmax_vec(&m), &idx, k);
            }
            let ka = idx.len();
            let l = cholesky_jitter(&c, ka);
            let mut acc = vec![0.0; ka];
            for_each_sample(&m, &l, samples, seed, |p| {
                for (a, v) in acc.iter_mut().zip(p) {
                    *a += v;
                }
            });
            let inv = 1.0 / samples as f64;
            acc.iter_mut().for_each(|a| *a *= inv);
            scatter(&acc, &idx, k)
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_prob(p: &[f64]) {
        assert!(p.iter().all(|x| x.is_finite() && *x >= 0.0), "{p:?}");
        let s: f64 = p.iter().sum();
        assert!((s - 1.0).abs() < 1e-12, "sum {s}");
    }

    fn sigmoid(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    /// E[sigmoid(d)] and Var[sigmoid(d)] for d ~ N(m, s^2), by the trapezoid rule on
    /// [-12, 12] standard deviations with 24,001 nodes: the integrand is smooth and its tails are
    /// below 1e-30, so the result is exact to ~1e-14 (trapezoid on analytic, decaying integrands
    /// converges exponentially).
    fn binary_exact(m: f64, s: f64) -> (f64, f64) {
        let n = 24_000;
        let h = 24.0 / n as f64;
        let (mut e1, mut e2) = (0.0, 0.0);
        for i in 0..=n {
            let z = -12.0 + h * i as f64;
            let w = if i == 0 || i == n { 0.5 } else { 1.0 } * h * (-0.5 * z * z).exp()
                / (2.0 * std::f64::consts::PI).sqrt();
            let p = sigmoid(m + s * z);
            e1 += w * p;
            e2 += w * p * p;
        }
        (e1, e2 - e1 * e1)
    }

    #[test]
    fn probit_zero_cov_is_softmax() {
        let mu = [1.0, -0.5, 2.0, 0.0];
        let p = probit(&mu, &[0.0; 16]);
        let s = softmax(&mu);
        for (a, b) in p.iter().zip(&s) {
            assert!((a - b).abs() < 1e-15);
        }
        assert_prob(&p);
        // Variance shrinks the logits towards 0: the top class loses confidence.
        let mut cov = [0.0; 16];
        for c in 0..4 {
            cov[c * 4 + c] = 4.0;
        }
        let q = probit(&mu, &cov);
        assert_prob(&q);
        assert!(q[2] < p[2]);
    }

    #[test]
    fn mc_converges_to_exact_binary_integral() {
        // Two classes: p_0 = E[sigmoid(f0 - f1)], f0 - f1 ~ N(mu0 - mu1, S00 + S11 - 2 S01).
        let mu: [f64; 2] = [0.8, -0.3];
        let cov: [f64; 4] = [1.5, 0.4, 0.4, 0.9];
        let (m, s2) = (mu[0] - mu[1], cov[0] + cov[3] - 2.0 * cov[1]);
        let (exact, var) = binary_exact(m, s2.sqrt());
        let sd = var.sqrt();
        let mut prev = f64::INFINITY;
        for &samples in &[100usize, 10_000, 100_000] {
            // RMS error over 20 seeds; expected sd / sqrt(S). With 20 seeds the RMS estimate has
            // ~16% relative spread, so [0.5, 1.6] x sd/sqrt(S) holds with a wide margin.
            let seeds = 20;
            let mse: f64 = (0..seeds)
                .map(|seed| {
                    let p = monte_carlo(&mu, &cov, samples, seed);
                    assert_prob(&p);
                    (p[0] - exact).powi(2)
                })
                .sum::<f64>()
                / seeds as f64;
            let rms = mse.sqrt();
            let expected = sd / (samples as f64).sqrt();
            eprintln!("MC S={samples}: RMS error {rms:.2e}, sd/sqrt(S) = {expected:.2e}");
            assert!(rms < 1.6 * expected && rms > 0.5 * expected, "S={samples}: {rms} vs {expected}");
            assert!(rms < prev);
            prev = rms;
        }
        // Probit is an approximation (not the exact integral): a few 1e-2 at these variances.
        let pr = probit(&mu, &cov);
        assert!((pr[0] - exact).abs() < 0.05, "probit {} vs exact {exact}", pr[0]);
    }

    fn total_variation(p: &[f64], q: &[f64]) -> f64 {
        0.5 * p.iter().zip(q).map(|(a, b)| (a - b).abs()).sum::<f64>()
    }

    #[test]
    fn probit_is_shift_invariant_and_near_mc_with_a_common_mode() {
        // Answer logits and Sigma_f of one compare4 test item from a real Laplace-LoRA run on
        // SmolLM2-135M (delta 15.8): logits near +16 together, a covariance dominated by the
        // common mode 11^T.
        let mu = [13.921086, 16.739376, 19.788748, 15.805538];
        let cov = [
            93.09078, 72.24532, 57.88132, 90.62768, //
            72.24532, 99.73809, 68.24904, 72.00631, //
            57.88132, 68.24904, 98.15719, 64.51997, //
            90.62768, 72.00631, 64.51997, 123.42501,
        ];
        let mc = monte_carlo(&mu, &cov, 200_000, 0);
        let centred = probit(&mu, &cov);
        let raw = probit_uncentred(&mu, &cov);
        let (tc, tr) = (total_variation(&centred, &mc), total_variation(&raw, &mc));
        eprintln!("TV to MC(200k): centred probit {tc:.4}, uncentred {tr:.4}");
        // Measured with numpy: 0.053 vs 0.125 (MC noise at 200k draws is ~1e-3).
        assert!(tc < 0.07 && tr > 0.1, "centred {tc}, uncentred {tr}");
        // Adding c to every logit and a 11^T to Sigma does not change softmax(f) for any draw.
        let mu2: Vec<f64> = mu.iter().map(|m| m - 40.0).collect();
        let cov2: Vec<f64> = cov.iter().map(|c| c + 250.0).collect();
        for (a, b) in probit(&mu2, &cov2).iter().zip(&centred) {
            assert!((a - b).abs() < 1e-12);
        }
        // Without a common mode (Sigma 1 = 0) centring changes nothing.
        let z = [2.0, -1.0, -1.0, -1.0, 2.0, -1.0, -1.0, -1.0, 2.0];
        let m3 = [0.4, -0.1, 0.9];
        for (a, b) in probit(&m3, &z).iter().zip(probit_uncentred(&m3, &z).iter()) {
            assert!((a - b).abs() < 1e-12);
        }
    }

    #[test]
    fn probit_approaches_mc_as_the_variance_shrinks() {
        // Probit is a closed-form approximation of the integral MC estimates; their gap closes
        // as Sigma -> 0 (both tend to softmax(mu)). 400k draws: MC noise ~ 5e-4 in TV.
        let mu = [1.0, -0.5, 2.0, 0.0];
        let base = [1.0, 0.3, 0.1, 0.2, 0.3, 1.5, 0.2, 0.1, 0.1, 0.2, 0.8, 0.3, 0.2, 0.1, 0.3, 1.2];
        let mut prev = f64::INFINITY;
        for scale in [4.0, 1.0, 0.1, 0.01] {
            let cov: Vec<f64> = base.iter().map(|c| c * scale).collect();
            let tv = total_variation(&probit(&mu, &cov), &monte_carlo(&mu, &cov, 400_000, 5));
            eprintln!("scale {scale}: TV(probit, MC) = {tv:.2e}");
            assert!(tv < prev.max(2e-3), "scale {scale}: {tv} after {prev}");
            prev = tv;
        }
        assert!(prev < 2e-3);
    }

    #[test]
    fn mc_zero_cov_and_samples_top() {
        let mu = [0.3, 1.2, -0.7];
        let p = monte_carlo(&mu, &[0.0; 9], 50, 1);
        let s = softmax(&mu);
        for (a, b) in p.iter().zip(&s) {
            assert!((a - b).abs() < 1e-15);
        }
        let cov = [1.0, 0.2, 0.0, 0.2, 1.0, 0.1, 0.0, 0.1, 1.0];
        let top = mc_samples_top(&mu, &cov, 1000, 7);
        assert_eq!(top.len(), 1000);
        assert!(top.iter().all(|x| (0.0..=1.0).contains(x)));
        // Same draws as monte_carlo: their mean is monte_carlo's probability of class 1.
        let mean = top.iter().sum::<f64>() / 1000.0;
        let mc = monte_carlo(&mu, &cov, 1000, 7);
        assert!((mean - mc[1]).abs() < 1e-12);
    }

    #[test]
    fn bridge_sums_to_one_and_keeps_ordering() {
        let mu = [2.0, 0.5, -1.0, 1.0];
        for sigma2 in [0.01, 0.5, 3.0, 50.0] {
            let mut cov = [0.0; 16];
            for c in 0..4 {
                cov[c * 4 + c] = sigma2;
            }
            for vc in [true, false] {
                let p = laplace_bridge_with(&mu, &cov, vc);
                assert_prob(&p);
                // With equal variances alpha_k is increasing in mu_k: same ordering as softmax.
                assert!(p[0] > p[3] && p[3] > p[1] && p[1] > p[2], "{sigma2} {vc} {p:?}");
            }
        }
        // K = 2, no variance correction, small variance: alpha_0/alpha_1 =
        // (1 + e^{2a})/(1 + e^{-2a}) for mu = (a, -a), i.e. exactly sigmoid(2a) = softmax(mu)_0.
        let p = laplace_bridge_with(&[0.7, -0.7], &[1e-3, 0.0, 0.0, 1e-3], false);
        assert!((p[0] - sigmoid(1.4)).abs() < 1e-12);
        // Shift invariance (the mean correction): when Sigma 1 is proportional to 1 (constant row
        // sums, e.g. exchangeable classes) conditioning on sum f = 0 is the centring mu - mean(mu),
        // so adding a constant to mu changes nothing. (For general Sigma the conditioning moves
        // mu along Sigma 1, and a shift is not exactly invariant: that is the paper's choice.)
        let cov = [1.0, 0.3, 0.1, 0.3, 0.9, 0.2, 0.1, 0.2, 1.1];
        let a = laplace_bridge(&[1.0, 0.0, -0.5], &cov);
        let b = laplace_bridge(&[11.0, 10.0, 9.5], &cov);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-12);
        }
        // Huge logits: no overflow.
        assert_prob(&laplace_bridge(&[800.0, -800.0, 0.0], &[1e-6, 0.0, 0.0, 0.0, 1e-6, 0.0, 0.0, 0.0, 1e-6]));
    }

    #[test]
    fn masked_classes_get_zero() {
        let ninf = f64::NEG_INFINITY;
        let mu = [1.0, ninf, 0.5, f64::NAN];
        // Masked rows may hold garbage, even NaN: never read for validity.
        let mut cov = vec![f64::NAN; 16];
        for &i in &[0usize, 2] {
            for &j in &[0usize, 2] {
                cov[i * 4 + j] = if i == j { 1.0 } else { 0.2 };
            }
        }
        let two = [1.0, 0.2, 0.2, 1.0];
        let funcs: [(&str, Box<dyn Fn(&[f64], &[f64]) -> Vec<f64>>); 4] = [
            ("probit", Box::new(probit)),
            ("mc", Box::new(|m, c| monte_carlo(m, c, 2000, 3))),
            ("bridge", Box::new(laplace_bridge)),
            ("bridge_nc", Box::new(|m, c| laplace_bridge_with(m, c, false))),
        ];
        for (name, f) in funcs.iter() {
            let p = f(&mu, &cov);
            assert_prob(&p);
            assert_eq!(p[1], 0.0, "{name}");
            assert_eq!(p[3], 0.0, "{name}");
            let q = f(&[1.0, 0.5], &two);
            assert!((p[0] - q[0]).abs() < 1e-15 && (p[2] - q[1]).abs() < 1e-15, "{name}");
        }
        assert_eq!(probit(&[ninf, ninf], &[0.0; 4]), vec![0.0, 0.0]);
        assert_eq!(monte_carlo(&[ninf, 2.0], &[0.0; 4], 10, 0), vec![0.0, 1.0]);
        assert_eq!(softmax(&[f64::INFINITY, 0.0, ninf]), vec![1.0, 0.0, 0.0]);
    }

    #[test]
    fn singular_and_bad_covariances_never_nan() {
        let mu = [0.5, -0.2, 1.1];
        // Rank 1: v v^T.
        let v = [1.0, -2.0, 0.5];
        let mut r1 = [0.0; 9];
        for i in 0..3 {
            for j in 0..3 {
                r1[i * 3 + j] = v[i] * v[j];
            }
        }
        // All variance along the shift direction 1 1^T: the softmax is unaffected.
        let ones = [2.0; 9];
        // Slightly indefinite.
        let indef = [1.0, 1.0 + 1e-9, 0.0, 1.0 + 1e-9, 1.0, 0.0, 0.0, 0.0, 0.0];
        for cov in [r1, ones, indef, [0.0; 9]] {
            for p in [probit(&mu, &cov), monte_carlo(&mu, &cov, 500, 1), laplace_bridge(&mu, &cov), laplace_bridge_with(&mu, &cov, false)] {
                assert_prob(&p);
            }
        }
        // Shift-only covariance: the bridge and MC are exactly softmax(mu) (the draws are
        // mu + c 1, to the ~1e-6 relative jitter that makes the Cholesky succeed).
        let s = softmax(&mu);
        let b = laplace_bridge(&mu, &ones);
        let mc = monte_carlo(&mu, &ones, 200, 2);
        for i in 0..3 {
            assert!((b[i] - s[i]).abs() < 1e-12);
            assert!((mc[i] - s[i]).abs() < 1e-3);
        }
        // Extreme finite logits: the draws overflow to +-inf; still a distribution.
        assert_prob(&monte_carlo(&[1e308, -1e308, 0.0], &[1e300, 0.0, 0.0, 0.0, 1e300, 0.0, 0.0, 0.0, 1.0], 50, 3));
        assert_prob(&laplace_bridge(&[1e308, -1e308, 0.0], &[1e-300, 0.0, 0.0, 0.0, 1e-300, 0.0, 0.0, 0.0, 1e-300]));
        // NaN / inf: softmax(mu) fallback.
        let mut bad = r1;
        bad[4] = f64::NAN;
        bad[2] = f64::INFINITY;
        for p in [probit(&mu, &bad), monte_carlo(&mu, &bad, 100, 1), laplace_bridge(&mu, &bad)] {
            assert_prob(&p);
            for i in 0..3 {
                assert!((p[i] - s[i]).abs() < 1e-15);
            }
        }
        assert!(mc_samples_top(&mu, &bad, 10, 0).iter().all(|x| (x - s[2]).abs() < 1e-15));
    }
}
