//! Laplace log marginal likelihood and the prior precision (MATH.md section 6).
//!
//! One Kronecker-factored block ("layer": one LoRA matrix) has posterior precision
//! X (x) O + delta I with eigenvalues lambda_ij = a_i g_j + delta (MATH.md section 5). A low-rank
//! factor keeps only some of its eigenvalues; the missing ones are 0, so their lambda_ij are 0.
//!
//!   log Z(delta) = log p(D | theta*) + sum_l [ -(delta_l/2) |theta*_l|^2 + (P_l/2) log delta_l
//!                                           - (1/2) sum_{i,j} log(a_i g_j + delta_l) ]
//!
//! (the 2 pi terms of the prior and of the Laplace normaliser cancel). Splitting each layer's
//! P_l = n_a n_g terms into the kept products (|a| |g| of them) and the zeros (log delta each):
//!
//!   per layer:  -(delta/2) |theta*|^2 - (1/2) sum_{kept i,j} log(1 + lambda_ij / delta)
//!
//! which is what we evaluate (ln_1p: no cancellation between P/2 log delta and the log det).
//! With t = log delta, per layer
//!
//!   D(t)  = d log Z / dt = -(delta/2)|theta*|^2 + P/2 - (1/2) sum_{all} delta/(lambda + delta)
//!         = -(delta/2)|theta*|^2 + (1/2) sum_{kept} lambda / (lambda + delta)
//!   D'(t) = -(delta/2)|theta*|^2 - (1/2) sum_{kept} lambda delta / (lambda + delta)^2  <= 0
//!
//! so log Z is concave in log delta (strictly unless |theta*| = 0 and every lambda = 0): the
//! maximiser is the unique root of D, or a bound of [lo, hi] when D has one sign there. We find it
//! by Newton on t safeguarded by bisection on the sign bracket: typically 5 to 8 evaluations.
//! log Z separates over layers when each layer has its own delta, so the per-layer optimum is
//! n_layers independent 1-D problems, and it is never below the scalar optimum (it maximises over
//! a superset).

use serde::{Deserialize, Serialize};

/// The spectrum of one Kronecker-factored block.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LayerSpectrum {
    pub name: String,
    /// Input-side eigenvalues kept (<= n_a of them; the missing ones are 0).
    pub a: Vec<f64>,
    /// Input side dimension.
    pub n_a: usize,
    /// Output-side eigenvalues kept (<= n_g of them).
    pub g: Vec<f64>,
    /// Output side dimension.
    pub n_g: usize,
    /// |theta*|^2 of this block (its MAP parameters; prior mean 0).
    pub theta_sq: f64,
}

impl LayerSpectrum {
    /// Number of parameters of the block: n_a * n_g.
    pub fn n_params(&self) -> usize {
        self.n_a * self.n_g
    }

    /// Calls `f(lambda)` for each kept product lambda_ij = a_i g_j (negatives clamped to 0).
    #[inline]
    fn for_each_lambda(&self, mut f: impl FnMut(f64)) {
        for &a in &self.a {
            let a = a.max(0.0);
            for &g in &self.g {
                f(a * g.max(0.0));
            }
        }
    }

    /// This layer's contribution to log Z at prior precision delta (see the module doc).
    pub fn log_marglik_term(&self, delta: f64) -> f64 {
        debug_assert!(self.a.len() <= self.n_a && self.g.len() <= self.n_g);
        let mut s = 0.0;
        self.for_each_lambda(|l| s += (l / delta).ln_1p());
        -0.5 * delta * self.theta_sq - 0.5 * s
    }

    /// The effective number of parameters gamma = sum_{kept} lambda / (lambda + delta): at the
    /// optimum of this block's delta, delta |theta*|^2 = gamma (D = 0 below).
    pub fn effective_params(&self, delta: f64) -> f64 {
        let mut s = 0.0;
        self.for_each_lambda(|l| s += l / (l + delta));
        s
    }

    /// (D, D') = d log Z_l / d log delta and its derivative in log delta.
    pub fn d_log_delta(&self, delta: f64) -> (f64, f64) {
        let mut s1 = 0.0;
        let mut s2 = 0.0;
        self.for_each_lambda(|l| {
            let r = 1.0 / (l + delta);
            s1 += l * r;
            s2 += l * delta * r * r;
        });
        let prior = 0.5 * delta * self.theta_sq;
        (-prior + 0.5 * s1, -prior - 0.5 * s2)
    }
}

fn check(layers: &[LayerSpectrum], deltas: &[f64]) {
    assert_eq!(layers.len(), deltas.len(), "one delta per layer");
}

/// log Z at one prior precision per layer (the 2 pi terms cancel; the zero eigenvalues of
/// low-rank factors enter as log(delta) and cancel against (P/2) log delta).
pub fn log_marglik(log_lik: f64, layers: &[LayerSpectrum], deltas: &[f64]) -> f64 {
    check(layers, deltas);
    log_lik + layers.iter().zip(deltas).map(|(l, &d)| l.log_marglik_term(d)).sum::<f64>()
}

/// log Z at one shared delta, for every delta of a grid (the prior curve).
pub fn log_marglik_curve(log_lik: f64, layers: &[LayerSpectrum], grid: &[f64]) -> Vec<f64> {
    grid.iter().map(|&d| log_lik + layers.iter().map(|l| l.log_marglik_term(d)).sum::<f64>()).collect()
}

/// d log Z / d log delta_l, per layer.
pub fn d_log_marglik_d_log_delta(layers: &[LayerSpectrum], deltas: &[f64]) -> Vec<f64> {
    check(layers, deltas);
    layers.iter().zip(deltas).map(|(l, &d)| l.d_log_delta(d).0).collect()
}

/// Maximises a concave function of t = log delta on [log lo, log hi] given (D, D') = its first
/// and second derivatives: the root of the decreasing D by Newton, safeguarded by bisection on
/// the sign bracket. Returns delta. A bound is returned when D does not change sign on it.
fn maximise_log_delta(lo: f64, hi: f64, mut deriv: impl FnMut(f64) -> (f64, f64)) -> f64 {
    assert!(lo > 0.0 && hi >= lo && lo.is_finite() && hi.is_finite(), "need 0 < lo <= hi < inf");
    let (mut a, mut b) = (lo.ln(), hi.ln());
    if a == b {
        return lo;
    }
    let (da, _) = deriv(lo);
    if da <= 0.0 {
        return lo; // log Z decreasing already at lo: the optimum is at (or below) lo
    }
    let (db, _) = deriv(hi);
    if db >= 0.0 {
        return hi; // still increasing at hi
    }
    if !(da.is_finite() && db.is_finite()) {
        return (0.5 * (a + b)).exp();
    }
    // Start from the secant root of the bracket (D is close to linear in t near the root).
    let mut t = a + (b - a) * da / (da - db);
    for _ in 0..100 {
        let (d, dd) = deriv(t.exp());
        if d == 0.0 {
            return t.exp();
        }
        if d > 0.0 {
            a = t;
        } else {
            b = t;
        }
        let newton = if dd < 0.0 { t - d / dd } else { f64::NAN };
        let next = if newton > a && newton < b { newton } else { 0.5 * (a + b) };
        if (next - t).abs() < 1e-12 * (1.0 + t.abs()) || (b - a) < 1e-12 * (1.0 + t.abs()) {
            return next.exp();
        }
        t = next;
    }
    t.exp()
}

/// The delta in [lo, hi] maximising log Z with one delta shared by every layer (log scale).
pub fn optimize_scalar_delta(log_lik: f64, layers: &[LayerSpectrum], lo: f64, hi: f64) -> f64 {
    let _ = log_lik; // log Z's maximiser does not depend on the likelihood term
    maximise_log_delta(lo, hi, |delta| layers.iter().map(|l| l.d_log_delta(delta)).fold((0.0, 0.0), |(s, ss), (d, dd)| (s + d, ss + dd)))
}

/// One delta per layer, each maximising its own term of log Z (they separate).
/// A degenerate layer with |theta*| = 0 and no positive eigenvalue has a flat log Z (D = 0
/// everywhere): it gets `lo`, the first bound at which D <= 0.
pub fn optimize_per_layer_delta(log_lik: f64, layers: &[LayerSpectrum], lo: f64, hi: f64) -> Vec<f64> {
    let _ = log_lik;
    layers.iter().map(|l| maximise_log_delta(lo, hi, |delta| l.d_log_delta(delta))).collect()
}

/// n points geometrically spaced from lo to hi inclusive (n = 1: [lo]; n = 0: empty).
pub fn log_grid(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![lo],
        _ => {
            let (a, b) = (lo.ln(), hi.ln());
            (0..n).map(|i| if i == n - 1 { hi } else { (a + (b - a) * i as f64 / (n - 1) as f64).exp() }).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::laplace::eigen::sym_eig;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use rand_distr::StandardNormal;

    fn random_psd(rng: &mut StdRng, n: usize, rank: usize) -> Vec<f64> {
        let g: Vec<f64> = (0..n * rank).map(|_| rng.sample::<f64, _>(StandardNormal)).collect();
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = (0..rank).map(|p| g[i * rank + p] * g[j * rank + p]).sum();
            }
        }
        a
    }

    /// Truncates a decomposition to its top `keep` pairs: returns (values, dense reconstruction).
    fn truncated(mat: &[f64], n: usize, keep: usize) -> (Vec<f64>, Vec<f64>) {
        let e = sym_eig(mat, n);
        let mut rec = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                rec[i * n + j] = (0..keep).map(|p| e.vectors[i * n + p] * e.values[p] * e.vectors[j * n + p]).sum();
            }
        }
        (e.values[..keep].to_vec(), rec)
    }

    fn kron(x: &[f64], nx: usize, o: &[f64], no: usize) -> Vec<f64> {
        let n = nx * no;
        let mut k = vec![0.0; n * n];
        for i1 in 0..nx {
            for j1 in 0..nx {
                for i2 in 0..no {
                    for j2 in 0..no {
                        k[(i1 * no + i2) * n + (j1 * no + j2)] = x[i1 * nx + j1] * o[i2 * no + j2];
                    }
                }
            }
        }
        k
    }

    /// log det of an SPD matrix by Cholesky.
    fn logdet_chol(a: &[f64], n: usize) -> f64 {
        let mut l = vec![0.0; n * n];
        let mut ld = 0.0;
        for j in 0..n {
            let mut d = a[j * n + j];
            for p in 0..j {
                d -= l[j * n + p] * l[j * n + p];
            }
            assert!(d > 0.0);
            let djj = d.sqrt();
            l[j * n + j] = djj;
            ld += 2.0 * djj.ln();
            for i in j + 1..n {
                let mut s = a[i * n + j];
                for p in 0..j {
                    s -= l[i * n + p] * l[j * n + p];
                }
                l[i * n + j] = s / djj;
            }
        }
        ld
    }

    /// Two layers (n_a = 3, n_g = 4); the second keeps only 2 of 3 input and 3 of 4 output
    /// eigenpairs (low-rank). Returns the spectra and the dense per-layer X (x) O.
    fn setup(rng: &mut StdRng) -> (Vec<LayerSpectrum>, Vec<Vec<f64>>) {
        let (na, ng) = (3, 4);
        let mut layers = Vec::new();
        let mut dense = Vec::new();
        for (l, (ka, kg)) in [(3usize, 4usize), (2, 3)].into_iter().enumerate() {
            let x = random_psd(rng, na, 3);
            let o = random_psd(rng, ng, 4);
            let (a, xr) = truncated(&x, na, ka);
            let (g, or) = truncated(&o, ng, kg);
            let theta: Vec<f64> = (0..na * ng).map(|_| rng.sample::<f64, _>(StandardNormal)).collect();
            layers.push(LayerSpectrum { name: format!("layer{l}"), a, n_a: na, g, n_g: ng, theta_sq: theta.iter().map(|t| t * t).sum() });
            dense.push(kron(&xr, na, &or, ng));
        }
        (layers, dense)
    }

    /// The dense formula: log_lik - sum delta/2 |theta|^2 + P/2 log delta - 1/2 log det(K + delta I).
    fn dense_log_marglik(log_lik: f64, layers: &[LayerSpectrum], dense: &[Vec<f64>], deltas: &[f64]) -> f64 {
        let mut out = log_lik;
        for ((l, k), &d) in layers.iter().zip(dense).zip(deltas) {
            let p = l.n_params();
            let mut m = k.clone();
            for i in 0..p {
                m[i * p + i] += d;
            }
            out += -0.5 * d * l.theta_sq + 0.5 * p as f64 * d.ln() - 0.5 * logdet_chol(&m, p);
        }
        out
    }

    #[test]
    fn matches_dense_kronecker_formula() {
        // 1e-9 relative: the dense side is a 12x12 Cholesky (round-off ~1e-14 relative) of the
        // same matrices; anything above 1e-9 is a formula error, not round-off.
        let mut rng = StdRng::seed_from_u64(10);
        for _ in 0..5 {
            let (layers, dense) = setup(&mut rng);
            for deltas in [[0.01, 0.01], [1.0, 3.0], [50.0, 0.2], [1e3, 1e-3]] {
                let got = log_marglik(-12.5, &layers, &deltas);
                let want = dense_log_marglik(-12.5, &layers, &dense, &deltas);
                assert!((got - want).abs() <= 1e-9 * want.abs().max(1.0), "{got} vs {want} at {deltas:?}");
            }
        }
    }

    #[test]
    fn derivative_matches_finite_differences() {
        // Central differences in t = log delta with step h = 1e-4: truncation error
        // h^2/6 |f'''| ~ 1e-9 |f|, round-off eps |f| / h ~ 1e-11 |f|. Tolerance 1e-6 (1 + |D|).
        let mut rng = StdRng::seed_from_u64(11);
        let (layers, _) = setup(&mut rng);
        let h: f64 = 1e-4;
        for deltas in [[0.05, 0.5], [2.0, 7.0], [300.0, 0.01]] {
            let d = d_log_marglik_d_log_delta(&layers, &deltas);
            for l in 0..2 {
                let mut up = deltas;
                let mut dn = deltas;
                up[l] *= h.exp();
                dn[l] *= (-h).exp();
                let fd = (log_marglik(0.0, &layers, &up) - log_marglik(0.0, &layers, &dn)) / (2.0 * h);
                assert!((fd - d[l]).abs() < 1e-6 * (1.0 + d[l].abs()), "layer {l}: fd {fd} vs {}", d[l]);
                // And the second derivative used by Newton.
                let (_, dd) = layers[l].d_log_delta(deltas[l]);
                let (d_up, _) = layers[l].d_log_delta(up[l]);
                let (d_dn, _) = layers[l].d_log_delta(dn[l]);
                let fdd = (d_up - d_dn) / (2.0 * h);
                assert!((fdd - dd).abs() < 1e-6 * (1.0 + dd.abs()), "layer {l}: fdd {fdd} vs {dd}");
            }
        }
    }

    #[test]
    fn scalar_optimum_is_a_stationary_point_or_a_bound() {
        let mut rng = StdRng::seed_from_u64(12);
        let (layers, _) = setup(&mut rng);
        let total = |d: f64| d_log_marglik_d_log_delta(&layers, &[d, d]).iter().sum::<f64>();
        let (lo, hi) = (1e-6, 1e6);
        let d = optimize_scalar_delta(0.0, &layers, lo, hi);
        assert!(d > lo && d < hi);
        // |D| at the optimum: relative 1e-8 of the scale of its parts (P/2 = 12).
        assert!(total(d).abs() < 1e-8 * 12.0, "D = {}", total(d));
        // It is a maximum on the grid too.
        let best = log_marglik(0.0, &layers, &[d, d]);
        for g in log_grid(lo, hi, 121) {
            assert!(log_marglik(0.0, &layers, &[g, g]) <= best + 1e-12);
        }
        // Bounds: a tiny |theta| pushes the optimum up (D > 0 at hi -> hi), a huge one down.
        let mut small = layers.clone();
        small.iter_mut().for_each(|l| l.theta_sq = 0.0);
        assert_eq!(optimize_scalar_delta(0.0, &small, 1e-3, 1e2), 1e2);
        assert!(d_log_marglik_d_log_delta(&small, &[1e2, 1e2]).iter().sum::<f64>() > 0.0);
        let mut big = layers.clone();
        big.iter_mut().for_each(|l| l.theta_sq = 1e12);
        assert_eq!(optimize_scalar_delta(0.0, &big, 1e-3, 1e2), 1e-3);
        assert!(d_log_marglik_d_log_delta(&big, &[1e-3, 1e-3]).iter().sum::<f64>() < 0.0);
    }

    #[test]
    fn optimiser_uses_few_evaluations() {
        // 60 layers of 576 x 8: count derivative evaluations of the scalar optimiser.
        let mut rng = StdRng::seed_from_u64(13);
        let layers: Vec<LayerSpectrum> = (0..60)
            .map(|l| LayerSpectrum {
                name: format!("l{l}"),
                a: (0..576).map(|i| 10f64.powf(2.0 - 8.0 * i as f64 / 576.0) * rng.random::<f64>()).collect(),
                n_a: 576,
                g: (0..8).map(|_| rng.random::<f64>() * 100.0).collect(),
                n_g: 8,
                theta_sq: 0.5 + rng.random::<f64>(),
            })
            .collect();
        let mut evals = 0;
        let d = maximise_log_delta(1e-8, 1e8, |delta| {
            evals += 1;
            layers.iter().map(|l| l.d_log_delta(delta)).fold((0.0, 0.0), |(s, ss), (a, b)| (s + a, ss + b))
        });
        assert!(evals <= 20, "{evals} evaluations");
        let dd: f64 = d_log_marglik_d_log_delta(&layers, &vec![d; 60]).iter().sum();
        assert!(dd.abs() < 1e-6 * 60.0 * 576.0 * 8.0 / 2.0);
        eprintln!("scalar optimiser: {evals} derivative evaluations, delta = {d:.4e}");
    }

    #[test]
    fn per_layer_beats_or_equals_scalar() {
        let mut rng = StdRng::seed_from_u64(14);
        for _ in 0..5 {
            let (layers, _) = setup(&mut rng);
            let s = optimize_scalar_delta(-3.0, &layers, 1e-6, 1e6);
            let per = optimize_per_layer_delta(-3.0, &layers, 1e-6, 1e6);
            let zs = log_marglik(-3.0, &layers, &[s, s]);
            let zp = log_marglik(-3.0, &layers, &per);
            assert!(zp >= zs - 1e-12, "per-layer {zp} < scalar {zs}");
            for (l, &d) in layers.iter().zip(&per) {
                assert!(l.d_log_delta(d).0.abs() < 1e-8 * 12.0);
            }
        }
    }

    #[test]
    fn grid_and_curve() {
        let g = log_grid(1e-2, 1e2, 5);
        let want = [1e-2, 1e-1, 1.0, 1e1, 1e2];
        for (x, y) in g.iter().zip(want) {
            assert!((x / y - 1.0).abs() < 1e-12);
        }
        assert_eq!(log_grid(1.0, 2.0, 1), vec![1.0]);
        assert!(log_grid(1.0, 2.0, 0).is_empty());
        let mut rng = StdRng::seed_from_u64(15);
        let (layers, _) = setup(&mut rng);
        let c = log_marglik_curve(1.0, &layers, &g);
        for (d, z) in g.iter().zip(&c) {
            assert_eq!(*z, log_marglik(1.0, &layers, &[*d, *d]));
        }
    }
}
