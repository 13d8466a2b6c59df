//! The GLM predictive p* = E[softmax(f)], f ~ N(mu, Sigma), by quadrature (MATH.md section 7):
//! the default predictive.
//!
//! softmax ignores a common shift of the logits, so p* depends on the K - 1 logit differences
//! only: everything below works on the centred Gaussian N(C mu, C Sigma C), C = I - 11^T/K,
//! which removes a common-mode variance exactly (an LM's answer logits move together).
//!
//! K = 2: p*_0 = E[sigmoid(d)], d = f_0 - f_1 ~ N(m, s^2), a 1-D integral ([`expected_sigmoid`]),
//! computed to ~1e-15.
//!
//! K > 2: quasi-Monte Carlo in the eigenbasis of C Sigma C: f = C mu + sum_i sqrt(l_i) v_i z_i over
//! its K - 1 non-null directions, z from a shifted Sobol net (`sobol.rs`) and its antithetic
//! copy -z (which cancels every odd term of the integrand's expansion), N points chosen from K
//! and the spread D = max_{i<j} sd(f_i - f_j) ([`points_for`]). Measured against Monte Carlo with
//! 4 million draws (`examples/predictive_accuracy.rs`, README "The predictive"): within total
//! variation 0.005 for K = 3..8 over logit-difference spreads from 0.1 to 100.

use super::sobol::{gauss_legendre, gauss_points, norm_cdf, norm_pdf, MAX_DIM, MAX_POINTS};
use std::sync::OnceLock;

#[inline]
fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// E[sigmoid(d)] for d ~ N(m, s^2).
///
/// - s <= 2: the trapezoid rule in z = (d - m)/s on [-9, 9] (the Gaussian's mass outside is
///   2e-19). For an integrand analytic in the strip |Im z| < a the rule's error is about
///   exp(-2 pi a / h); sigmoid(m + s z) has its poles at Im z = pi/s, so a step h = min(0.5, 0.5/s)
///   gives exp(-4 pi^2) ~ 7e-18 at the pole itself, and ~1e-15 in practice (tested).
/// - s > 2: E[sigmoid(d)] = P(d > 0) + E[sigmoid(d) - H(d)] (H the unit step), and the second term
///   folds onto u = |d| > 0 as the integral of sigmoid(-u) (n(-u) - n(u)) du with n the
///   N(m, s^2) density: smooth on [0, inf), below 4e-18 beyond u = 40, and there s >= 2 makes n
///   vary slowly against 48 Gauss-Legendre nodes on [0, 40] (poles of sigmoid(-u) at u = i pi (2k+1)
///   sit at the interval's end, where Gauss-Legendre converges fastest). Cost: 48 nodes whatever s.
pub fn expected_sigmoid(m: f64, s: f64) -> f64 {
    if !(s > 0.0) {
        return sigmoid(m);
    }
    if s <= 2.0 {
        let h = (0.5f64).min(0.5 / s);
        let n = (9.0 / h).ceil() as i64;
        let mut acc = 0.0;
        for i in -n..=n {
            let z = i as f64 * h;
            acc += norm_pdf(z) * sigmoid(m + s * z);
        }
        return (acc * h).clamp(0.0, 1.0);
    }
    static GL: OnceLock<(Vec<f64>, Vec<f64>)> = OnceLock::new();
    let (x, w) = GL.get_or_init(|| gauss_legendre(48));
    const U: f64 = 40.0;
    let mut corr = 0.0;
    for (xi, wi) in x.iter().zip(w) {
        let u = (xi + 1.0) * 0.5 * U;
        let dens = |d: f64| norm_pdf((d - m) / s) / s;
        corr += wi * sigmoid(-u) * (dens(-u) - dens(u));
    }
    (norm_cdf(m / s) + corr * 0.5 * U).clamp(0.0, 1.0)
}

/// Two active classes: p*_0 = E[sigmoid(f_0 - f_1)] with Var(f_0 - f_1) = S00 + S11 - 2 S01.
pub fn binary(mu: &[f64], cov: &[f64]) -> [f64; 2] {
    let v = (cov[0] + cov[3] - cov[1] - cov[2]).max(0.0);
    let p0 = expected_sigmoid(mu[0] - mu[1], v.sqrt());
    [p0, 1.0 - p0]
}

/// Eigen-decomposition of a small symmetric n x n matrix (row-major) by cyclic Jacobi rotations:
/// (eigenvalues, eigenvectors as columns of a row-major n x n matrix). Converges quadratically;
/// for n <= 8 a few sweeps reach round-off.
pub fn small_sym_eig(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let norm: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    for _sweep in 0..50 {
        let off: f64 = (0..n).flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j))).map(|(i, j)| a[i * n + j].powi(2)).sum::<f64>().sqrt();
        if off <= 1e-15 * norm || norm == 0.0 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                // Rotation angle that zeroes a_pq (Golub & Van Loan, algorithm 8.4.1).
                let tau = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = tau.signum() / (tau.abs() + (1.0 + tau * tau).sqrt());
                let t = if tau == 0.0 { 1.0 } else { t };
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

/// Points (antithetic pairs, so 2N evaluations) for K active classes and a spread D of the
/// logit differences. Chosen from the accuracy measurement in `examples/predictive_accuracy.rs`:
/// the error grows with D (the softmax turns into a steep step across the planes f_i = f_j, which
/// a point set resolves ever less well) and with the dimension K - 1.
pub fn points_for(k: usize, spread: f64) -> usize {
    let n = if spread < 0.5 {
        256
    } else if spread < 2.0 {
        1024
    } else if k <= 5 {
        4096
    } else {
        MAX_POINTS
    };
    n.min(MAX_POINTS)
}

/// K > 2 active classes (K <= 8): the QMC estimate of E[softmax(f)] described in the module doc.
pub fn multiclass(mu: &[f64], cov: &[f64]) -> Vec<f64> {
    let k = mu.len();
    assert!(k >= 3 && k <= MAX_DIM + 1, "multiclass quadrature for 3..=8 classes");
    // Centre: S = C Sigma C, m = C mu.
    let row: Vec<f64> = (0..k).map(|a| cov[a * k..(a + 1) * k].iter().sum::<f64>() / k as f64).collect();
    let tot = row.iter().sum::<f64>() / k as f64;
    let mut s = vec![0.0; k * k];
    for a in 0..k {
        for b in 0..k {
            s[a * k + b] = 0.5 * (cov[a * k + b] + cov[b * k + a]) - row[a] - row[b] + tot;
        }
    }
    let mean = mu.iter().sum::<f64>() / k as f64;
    let m: Vec<f64> = mu.iter().map(|x| x - mean).collect();
    let spread = (0..k)
        .flat_map(|i| (i + 1..k).map(move |j| (i, j)))
        .map(|(i, j)| (s[i * k + i] + s[j * k + j] - 2.0 * s[i * k + j]).max(0.0).sqrt())
        .fold(0.0, f64::max);
    let (lam, vec) = small_sym_eig(&s, k);
    let lmax = lam.iter().copied().fold(0.0, f64::max);
    // Directions with variance: the null direction 1/sqrt(K) (and round-off) dropped.
    let mut dirs: Vec<usize> = (0..k).filter(|&i| lam[i] > 1e-12 * lmax.max(1e-300) && lam[i] > 1e-14).collect();
    dirs.sort_by(|&a, &b| lam[b].total_cmp(&lam[a]));
    dirs.truncate(k - 1);
    if dirs.is_empty() {
        return super::softmax_vec(&m);
    }
    let d = dirs.len();
    // B (k x d): column i = sqrt(l_i) v_i.
    let (lam, vec) = (&lam, &vec);
    let b: Vec<f32> = (0..k).flat_map(|c| dirs.iter().map(move |&i| (lam[i].sqrt() * vec[c * k + i]) as f32)).collect();
    let mf: Vec<f32> = m.iter().map(|&x| x as f32).collect();
    mean_softmax(&mf, &b, d, points_for(k, spread))
}

/// e^x for x <= 0 (a logit minus the largest), branch-free so that it vectorises: the reduction
/// of `model::fastmath` (e^x = 2^n e^r, |r| <= ln2/2, degree-6 Taylor, 2.3e-8 relative) without
/// its NaN and overflow selects, which the compiler kept scalar; x is clamped at -87 (e^-87 =
/// 1.6e-38 instead of 0 below it: nothing a probability can show).
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0;
    let x = x.max(-87.0).min(0.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // n in [-126, 0]: 2^n is a normal f32 built in the exponent bits.
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// (1 / 2N) sum over the first N shifted Sobol points z and their mirror images -z of
/// softmax(m + B z), B k x d row-major. f32 lanes of 16 points so that the compiler vectorises
/// the products and the exponentials; sums per chunk go to f64. The body is compiled twice: for
/// the baseline (SSE2, 4 lanes), with AVX2 (8 lanes) and with AVX-512 (16 lanes: one register a
/// row), chosen at run time (the AVX2 switch of `model::isa` turns the last off); all add in the
/// same order (Rust contracts no mul + add into an FMA, so the wider bodies round alike).
fn mean_softmax(m: &[f32], b: &[f32], d: usize, n: usize) -> Vec<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::model::isa::f32_path() == "avx512" {
            // SAFETY: the CPU has AVX-512F (`f32_path` checked it).
            return unsafe { mean_softmax_avx512(m, b, d, n) };
        }
        if crate::model::isa::f32_path() == "avx2" {
            // SAFETY: the CPU has AVX2 and FMA (`f32_path` checked them).
            return unsafe { mean_softmax_avx2(m, b, d, n) };
        }
    }
    mean_softmax_body(m, b, d, n)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn mean_softmax_avx512(m: &[f32], b: &[f32], d: usize, n: usize) -> Vec<f64> {
    mean_softmax_body(m, b, d, n)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn mean_softmax_avx2(m: &[f32], b: &[f32], d: usize, n: usize) -> Vec<f64> {
    mean_softmax_body(m, b, d, n)
}

#[inline(always)]
fn mean_softmax_body(m: &[f32], b: &[f32], d: usize, n: usize) -> Vec<f64> {
    const L: usize = 16;
    let k = m.len();
    let pts = gauss_points(d);
    let mut acc = vec![0.0f64; k];
    let mut g = vec![[0.0f32; L]; k];
    let mut e = vec![[0.0f32; L]; k];
    for start in (0..n).step_by(L) {
        for c in 0..k {
            let gc = &mut g[c];
            *gc = [0.0; L];
            for i in 0..d {
                let bci = b[c * d + i];
                let z = &pts.z[i][start..start + L];
                for l in 0..L {
                    gc[l] += bci * z[l];
                }
            }
        }
        for sign in [1.0f32, -1.0] {
            let mut mx = [f32::NEG_INFINITY; L];
            for c in 0..k {
                for l in 0..L {
                    let f = m[c] + sign * g[c][l];
                    e[c][l] = f;
                    mx[l] = mx[l].max(f);
                }
            }
            let mut sum = [0.0f32; L];
            for c in 0..k {
                for l in 0..L {
                    e[c][l] -= mx[l];
                }
                for x in e[c].iter_mut() {
                    *x = exp_nonpositive(*x);
                }
                for l in 0..L {
                    sum[l] += e[c][l];
                }
            }
            for l in 0..L {
                sum[l] = 1.0 / sum[l];
            }
            for c in 0..k {
                let mut t = 0.0f32;
                for l in 0..L {
                    t += e[c][l] * sum[l];
                }
                acc[c] += t as f64;
            }
        }
    }
    let inv = 1.0 / (2 * n) as f64;
    let mut p: Vec<f64> = acc.iter().map(|a| a * inv).collect();
    let s: f64 = p.iter().sum();
    p.iter_mut().for_each(|x| *x /= s);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against f64 exp on a fine grid of [-87, 0]: within 4e-7 relative (a few f32 ulps).
    #[test]
    fn exp_nonpositive_matches_exp() {
        let (mut worst, mut x) = (0f64, -87.0f32);
        while x <= 0.0 {
            let (got, want) = (exp_nonpositive(x) as f64, (x as f64).exp());
            worst = worst.max(((got - want) / want).abs());
            x += 0.000_41;
        }
        assert!(worst < 4e-7, "worst relative error {worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert!(exp_nonpositive(-1e4) < 2e-38);
    }

    /// The vector build this CPU dispatches to (AVX-512 or AVX2) adds in the baseline's order:
    /// the same probabilities.
    #[test]
    fn both_vector_widths_give_the_same_sum() {
        let m = [0.3f32, -1.2, 2.0, 0.1];
        let b: Vec<f32> = (0..12).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.7).collect();
        let base = mean_softmax_body(&m, &b, 3, 4096);
        let disp = mean_softmax(&m, &b, 3, 4096);
        for (x, y) in base.iter().zip(&disp) {
            assert!((x - y).abs() < 1e-12, "{base:?} vs {disp:?}");
        }
        assert!((base.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }
}
