//! The prior slider's spectral cache (MATH.md section 8).
//!
//! For one example, the functional covariance at prior precision delta is (MATH.md section 7)
//!
//!   Sigma_f[c, c'](delta) = sum_blocks sum_{i,j} w_ij / (lambda_ij + delta),
//!   w_ij = M~_c[j, i] M~_c'[j, i],   lambda_ij = a_i g_j,
//!
//! with M~_c = Q_O^T M_c Q_X the Jacobian of logit c for the block in the Kronecker eigenbasis.
//! Instead of keeping M~ (K x P numbers) we bin the lambdas on a fixed log grid and keep, per class
//! pair (c <= c') and per bin b with geometric centre c_b,
//!
//!   W_b  = sum_{lambda in b} w,      WD_b = sum_{lambda in b} w (lambda / c_b - 1),
//!
//! and expand 1/(lambda + delta) to first order around c_b:
//!
//!   1/(lambda + delta) ~= 1/(c_b + delta) - (lambda - c_b)/(c_b + delta)^2
//!   =>  Sigma_f ~= sum_b  W_b / (c_b + delta)  -  WD_b c_b / (c_b + delta)^2.
//!
//! (WD is stored relative to the centre, not as sum w lambda, so that the f32 storage does not
//! lose the correction to cancellation between sum w lambda and c_b sum w.)
//!
//! Eigenvalues outside the grid: lambda below 10^log10_min (including exact zeros, and the
//! Jacobian mass outside a low-rank factor's kept eigenvectors, see [`SpectralEntry::add_block`])
//! go to a "zero" bin expanded around 0: 1/(lambda + delta) ~= 1/delta - lambda/delta^2, exact for
//! lambda = 0. Eigenvalues above 10^log10_max go to an "over" bin expanded in delta/lambda:
//! 1/(lambda + delta) ~= 1/lambda - delta/lambda^2.
//!
//! ## Error bound
//! Write lambda = c (1 + u) and eps = (lambda - c)/(c + delta), so 1/(lambda + delta) =
//! (1/(c + delta)) / (1 + eps). The first-order expansion is (1/(c + delta))(1 - eps), and
//!
//!   exact - approx = (1/(c + delta)) eps^2 / (1 + eps) = eps^2 * exact.
//!
//! So every term is UNDER-estimated by exactly the relative amount eps^2. With bin ratio
//! rho = 10^h (h = log10 width of a bin = 1 / bins per decade) and lambda within [c/sqrt(rho),
//! c sqrt(rho)], |lambda - c| <= c (sqrt(rho) - 1), hence
//!
//!   eps^2 <= (sqrt(rho) - 1)^2 (c / (c + delta))^2 <= (sqrt(rho) - 1)^2 = (10^{h/2} - 1)^2
//!         ~= (ln 10 / (2 b))^2 = 1.33 / b^2   for b bins per decade.
//!
//! (b = 10: 1.5e-2; b = 16.7 (200 bins over 12 decades): 5.1e-3; b = 25: 2.1e-3; b = 50: 5.3e-4.)
//! The zero bin has eps = lambda/delta (relative error (lambda/delta)^2 <= (10^log10_min/delta)^2;
//! exactly 0 for lambda = 0) and the over bin eps = delta/lambda (error <= (delta/10^log10_max)^2).
//! Hence, with e(delta) = max((10^{h/2} - 1)^2, (10^log10_min / delta)^2, (delta / 10^log10_max)^2)
//! ([`SpectralGrid::rel_error_bound`]):
//! - diagonal entries (w >= 0): 0 <= (exact - approx) / exact <= e(delta);
//! - off-diagonal entries: |exact - approx| <= e(delta) sum |w|/(lambda + delta)
//!   <= e(delta) sqrt(Sigma_cc Sigma_c'c') (Cauchy-Schwarz on |m_c m_c'|).
//! Plus f32 storage round-off (~1e-7 relative to sum |w|/(lambda+delta) per block added).
//! Choose the grid to cover [delta_min / 100, delta_max * 100] (then the out-of-grid terms are
//! within 1e-4) at >= 15 bins per decade; the exact refresh replaces the cache's values when the
//! slider stops (MATH.md section 8).
//!
//! Cost per example and delta: 2 multiply-adds per (pair, bin); the per-bin factors
//! 1/(c_b + delta) and c_b/(c_b + delta)^2 are shared by all examples ([`SpectralWeights`]).
//! Storage per example: 2 x K(K+1)/2 x bins f32 (K = 4, 200 bins: 16 KB) + 4 x K(K+1)/2 f64.

use serde::{Deserialize, Serialize};

/// Number of class pairs (c <= c') for K classes.
pub fn n_pairs(k: usize) -> usize {
    k * (k + 1) / 2
}

/// Index of the pair (c, c2) with c <= c2 in the row-major upper triangle.
#[inline]
pub fn pair_index(c: usize, c2: usize, k: usize) -> usize {
    debug_assert!(c <= c2 && c2 < k);
    // Rows 0..c hold k, k-1, ..., k-c+1 pairs: c (2k - c + 1) / 2 in all.
    c * (2 * k - c + 1) / 2 + (c2 - c)
}

/// A fixed log grid of eigenvalues: `bins` bins of equal log10 width between 10^log10_min and
/// 10^log10_max.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpectralGrid {
    pub log10_min: f64,
    pub log10_max: f64,
    pub bins: usize,
}

impl Default for SpectralGrid {
    /// The grid for the default slider range delta in [1e-4, 1e4]: 10^-6 .. 10^6, 200 bins
    /// (16.7 per decade: per-term error bound 5.1e-3, measured ~1.5e-3).
    fn default() -> Self {
        Self::for_deltas(1e-4, 1e4, 200)
    }
}

/// Where one eigenvalue goes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Loc {
    /// lambda < 10^log10_min, including 0 (the value, clamped at >= 0).
    Zero(f64),
    /// Bin index and offset lambda / c_b - 1.
    Bin(u32, f64),
    /// lambda > 10^log10_max (the value).
    Over(f64),
}

impl SpectralGrid {
    pub fn new(log10_min: f64, log10_max: f64, bins: usize) -> Self {
        assert!(bins > 0 && log10_max > log10_min, "grid needs bins > 0 and max > min");
        SpectralGrid { log10_min, log10_max, bins }
    }

    /// The grid the slider needs for deltas in [delta_min, delta_max]: covering
    /// [delta_min / 100, delta_max * 100] (out-of-grid terms then within 1e-4 relative),
    /// with `bins` bins.
    pub fn for_deltas(delta_min: f64, delta_max: f64, bins: usize) -> Self {
        Self::new(delta_min.log10() - 2.0, delta_max.log10() + 2.0, bins)
    }

    /// log10 width of a bin (h = 1 / bins per decade).
    pub fn width(&self) -> f64 {
        (self.log10_max - self.log10_min) / self.bins as f64
    }

    /// Bins per decade.
    pub fn bins_per_decade(&self) -> f64 {
        1.0 / self.width()
    }

    /// Bin ratio rho = 10^h.
    pub fn ratio(&self) -> f64 {
        10f64.powf(self.width())
    }

    /// Geometric centre of bin b.
    pub fn centre(&self, b: usize) -> f64 {
        10f64.powf(self.log10_min + (b as f64 + 0.5) * self.width())
    }

    pub fn centres(&self) -> Vec<f64> {
        (0..self.bins).map(|b| self.centre(b)).collect()
    }

    /// Where lambda goes (negative values, round-off of a PSD factor, count as 0).
    pub fn locate(&self, lambda: f64) -> Loc {
        let lambda = if lambda.is_nan() { 0.0 } else { lambda.max(0.0) };
        if lambda == 0.0 {
            return Loc::Zero(0.0);
        }
        let l10 = lambda.log10();
        if l10 < self.log10_min {
            return Loc::Zero(lambda);
        }
        if l10 > self.log10_max {
            return Loc::Over(lambda);
        }
        let b = (((l10 - self.log10_min) / self.width()) as usize).min(self.bins - 1);
        Loc::Bin(b as u32, lambda / self.centre(b) - 1.0)
    }

    /// The bins of a block's eigenvalues lambda_ij = a_i g_j, in the order of M~ (index
    /// j * a.len() + i): compute once per block and reuse for every example.
    pub fn bin_block(&self, a: &[f64], g: &[f64]) -> BlockBins {
        let mut locs = Vec::with_capacity(a.len() * g.len());
        for &gj in g {
            for &ai in a {
                locs.push(self.locate(ai.max(0.0) * gj.max(0.0)));
            }
        }
        BlockBins { n_a: a.len(), n_g: g.len(), locs }
    }

    /// The relative error bound e(delta) of the module doc: per term, and for the diagonal of
    /// Sigma_f; the off-diagonal error is at most e(delta) sqrt(Sigma_cc Sigma_c'c').
    pub fn rel_error_bound(&self, delta: f64) -> f64 {
        let e_bin = (10f64.powf(self.width() / 2.0) - 1.0).powi(2);
        let e_under = (10f64.powf(self.log10_min) / delta).powi(2);
        let e_over = (delta / 10f64.powf(self.log10_max)).powi(2);
        e_bin.max(e_under).max(e_over)
    }
}

/// The precomputed bin of each eigenvalue of one block ([`SpectralGrid::bin_block`]).
#[derive(Clone, Debug)]
pub struct BlockBins {
    pub n_a: usize,
    pub n_g: usize,
    pub locs: Vec<Loc>,
}

/// Per-bin factors at one delta, shared by every example: r1_b = 1/(c_b + delta),
/// r2_b = c_b/(c_b + delta)^2.
#[derive(Clone, Debug)]
pub struct SpectralWeights {
    pub delta: f64,
    r1: Vec<f64>,
    r2: Vec<f64>,
}

impl SpectralWeights {
    pub fn new(grid: &SpectralGrid, delta: f64) -> Self {
        let (mut r1, mut r2) = (Vec::with_capacity(grid.bins), Vec::with_capacity(grid.bins));
        for c in grid.centres() {
            let r = 1.0 / (c + delta);
            r1.push(r);
            r2.push(c * r * r);
        }
        SpectralWeights { delta, r1, r2 }
    }
}

/// One example's cache entry.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SpectralEntry {
    /// Number of classes.
    pub k: usize,
    /// Number of bins (of the grid it was built on).
    pub bins: usize,
    /// Per pair p (see [`pair_index`]) and bin b, at `p * bins + b`: sum of w = m_c m_c'.
    pub w: Vec<f32>,
    /// Same layout: sum of w (lambda / c_b - 1), the first-order correction.
    pub wd: Vec<f32>,
    /// Per pair: sum of w over lambda below the grid (0 included; plus the residual mass).
    pub zero: Vec<f64>,
    /// Per pair: sum of w lambda over lambda below the grid.
    pub zero_l: Vec<f64>,
    /// Per pair: sum of w / lambda over lambda above the grid.
    pub over_inv: Vec<f64>,
    /// Per pair: sum of w / lambda^2 over lambda above the grid.
    pub over_inv2: Vec<f64>,
}

impl SpectralEntry {
    pub fn new(k: usize, grid: &SpectralGrid) -> Self {
        let np = n_pairs(k);
        SpectralEntry {
            k,
            bins: grid.bins,
            w: vec![0.0; np * grid.bins],
            wd: vec![0.0; np * grid.bins],
            zero: vec![0.0; np],
            zero_l: vec![0.0; np],
            over_inv: vec![0.0; np],
            over_inv2: vec![0.0; np],
        }
    }

    /// Adds a block's contribution. `a` (input side) and `g` (output side) are the eigenvalues
    /// KEPT for the block; `m` holds K matrices M~_c = Q_O^T M_c Q_X (g.len() x a.len(),
    /// row-major: `m[c][j * a.len() + i]` pairs with lambda = a_i g_j).
    ///
    /// `residual`: for a low-rank factor, the Jacobian mass outside the kept eigenvectors, whose
    /// eigenvalue is 0 (weight / delta exactly): per pair (in [`pair_index`] order),
    /// `residual[p] = <M_c, M_c'>_F - <M~_c, M~_c'>_F` (the Frobenius inner product is invariant
    /// under the orthogonal change of basis, so total minus projected is the mass on the missing
    /// directions; [`pair_inner`] computes both sides). Pass `&[]` when both factors are full.
    pub fn add_block<M: AsRef<[f32]>>(&mut self, a: &[f64], g: &[f64], m: &[M], residual: &[f64], grid: &SpectralGrid) {
        let bins = grid.bin_block(a, g);
        self.add_block_binned(&bins, m, residual);
    }

    /// [`add_block`](Self::add_block) with the block's bins precomputed once for all examples.
    pub fn add_block_binned<M: AsRef<[f32]>>(&mut self, bins: &BlockBins, m: &[M], residual: &[f64]) {
        let k = self.k;
        let np = n_pairs(k);
        let nb = self.bins;
        assert_eq!(m.len(), k, "one M~ per class");
        let len = bins.locs.len();
        for mc in m {
            assert_eq!(mc.as_ref().len(), len, "M~_c must be g.len() x a.len()");
        }
        assert!(residual.is_empty() || residual.len() == np, "residual: one value per pair or none");
        // Accumulate the block in f64 (layout [bin][pair] for locality), then add to the f32 store.
        let mut acc_w = vec![0.0f64; nb * np];
        let mut acc_wd = vec![0.0f64; nb * np];
        let mut vals = vec![0.0f64; k];
        let mut prods = vec![0.0f64; np];
        for (t, loc) in bins.locs.iter().enumerate() {
            let mut any = false;
            for c in 0..k {
                let v = m[c].as_ref()[t] as f64;
                any |= v != 0.0;
                vals[c] = v;
            }
            if !any {
                continue;
            }
            let mut p = 0;
            for c in 0..k {
                for c2 in c..k {
                    prods[p] = vals[c] * vals[c2];
                    p += 1;
                }
            }
            match *loc {
                Loc::Bin(b, off) => {
                    let base = b as usize * np;
                    for p in 0..np {
                        acc_w[base + p] += prods[p];
                        acc_wd[base + p] += prods[p] * off;
                    }
                }
                Loc::Zero(l) => {
                    for p in 0..np {
                        self.zero[p] += prods[p];
                        self.zero_l[p] += prods[p] * l;
                    }
                }
                Loc::Over(l) => {
                    let inv = 1.0 / l;
                    for p in 0..np {
                        self.over_inv[p] += prods[p] * inv;
                        self.over_inv2[p] += prods[p] * inv * inv;
                    }
                }
            }
        }
        for (p, r) in residual.iter().enumerate() {
            self.zero[p] += r;
        }
        for b in 0..nb {
            for p in 0..np {
                let (aw, awd) = (acc_w[b * np + p], acc_wd[b * np + p]);
                if aw != 0.0 || awd != 0.0 {
                    let i = p * nb + b;
                    self.w[i] = (self.w[i] as f64 + aw) as f32;
                    self.wd[i] = (self.wd[i] as f64 + awd) as f32;
                }
            }
        }
    }

    /// Sigma_f (K x K row-major, symmetric) at prior precision delta, first-order corrected.
    pub fn sigma_f(&self, delta: f64, grid: &SpectralGrid) -> Vec<f64> {
        self.sigma_f_with(&SpectralWeights::new(grid, delta))
    }

    /// Sigma_f with the per-bin factors precomputed for this delta (the fast path: one
    /// [`SpectralWeights`] for all examples).
    pub fn sigma_f_with(&self, wts: &SpectralWeights) -> Vec<f64> {
        let (k, nb) = (self.k, self.bins);
        assert_eq!(wts.r1.len(), nb, "weights built on another grid");
        let delta = wts.delta;
        let mut out = vec![0.0; k * k];
        let mut p = 0;
        for c in 0..k {
            for c2 in c..k {
                let w = &self.w[p * nb..(p + 1) * nb];
                let wd = &self.wd[p * nb..(p + 1) * nb];
                // Four independent accumulators: lets the CPU overlap the multiply-adds.
                let mut s = [0.0f64; 4];
                let mut i = 0;
                while i + 4 <= nb {
                    for l in 0..4 {
                        s[l] += w[i + l] as f64 * wts.r1[i + l] - wd[i + l] as f64 * wts.r2[i + l];
                    }
                    i += 4;
                }
                while i < nb {
                    s[0] += w[i] as f64 * wts.r1[i] - wd[i] as f64 * wts.r2[i];
                    i += 1;
                }
                let mut v = (s[0] + s[1]) + (s[2] + s[3]);
                v += self.zero[p] / delta - self.zero_l[p] / (delta * delta);
                v += self.over_inv[p] - delta * self.over_inv2[p];
                out[c * k + c2] = v;
                out[c2 * k + c] = v;
                p += 1;
            }
        }
        out
    }

    /// Bytes of payload (the slider's memory per example).
    pub fn size_bytes(&self) -> usize {
        4 * (self.w.len() + self.wd.len()) + 8 * (self.zero.len() + self.zero_l.len() + self.over_inv.len() + self.over_inv2.len())
    }
}

/// Per pair (in [`pair_index`] order): sum over entries of m_c m_c'. Applied to the projected
/// M~ and to the original M_c, total minus projected is [`SpectralEntry::add_block`]'s `residual`.
pub fn pair_inner<M: AsRef<[f32]>>(m: &[M]) -> Vec<f64> {
    let k = m.len();
    let mut out = vec![0.0; n_pairs(k)];
    let mut p = 0;
    for c in 0..k {
        for c2 in c..k {
            out[p] = m[c].as_ref().iter().zip(m[c2].as_ref()).map(|(&x, &y)| x as f64 * y as f64).sum();
            p += 1;
        }
    }
    out
}

/// A symmetric K x K matrix given as nested rows (`mat[c][c2]`) to the per-pair layout
/// (c <= c2, [`pair_index`] order) that [`SpectralEntry::add_block`]'s `residual` takes.
pub fn pairs_from_nested(mat: &[Vec<f64>]) -> Vec<f64> {
    let k = mat.len();
    (0..k).flat_map(|c| (c..k).map(move |c2| mat[c][c2])).collect()
}

/// Exact Sigma_f for comparison: sum_blocks sum_ij m_c m_c' / (a_i g_j + delta). Each block is
/// (a, g, m) with m as in [`SpectralEntry::add_block`]; negative eigenvalues count as 0.
pub fn sigma_f_exact(blocks: &[(Vec<f64>, Vec<f64>, Vec<Vec<f32>>)], k: usize, delta: f64) -> Vec<f64> {
    let mut out = vec![0.0; k * k];
    for (a, g, m) in blocks {
        assert_eq!(m.len(), k);
        for (j, &gj) in g.iter().enumerate() {
            for (i, &ai) in a.iter().enumerate() {
                let t = j * a.len() + i;
                let r = 1.0 / (ai.max(0.0) * gj.max(0.0) + delta);
                for c in 0..k {
                    let mc = m[c][t] as f64 * r;
                    for c2 in c..k {
                        out[c * k + c2] += mc * m[c2][t] as f64;
                    }
                }
            }
        }
    }
    for c in 0..k {
        for c2 in 0..c {
            out[c * k + c2] = out[c2 * k + c];
        }
    }
    out
}

/// Seconds to recompute every predictive and the metrics of `n_examples` cache entries at a new
/// delta (K classes, a 200-bin grid over 12 decades, random entries): the prior slider's redraw
/// cost, through the same [`crate::laplace::fit::recompute`] the slider calls. The entries are
/// built outside the timing; the figure is the fastest of 5 recomputations, each at a different
/// delta (deltas 1e-2 .. 1e2: at the small ones the logit differences have sds of tens, where the
/// quadrature default uses its most points).
pub fn bench_prior_recompute(n_examples: usize, k: usize, predictor: &crate::laplace::predictive::Predictor) -> f64 {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    let grid = SpectralGrid::new(-6.0, 6.0, 200);
    let mut rng = StdRng::seed_from_u64(0);
    let np = n_pairs(k);
    let mut entries = Vec::with_capacity(n_examples);
    let mut mus = Vec::with_capacity(n_examples);
    for _ in 0..n_examples {
        let mut e = SpectralEntry::new(k, &grid);
        for x in e.w.iter_mut() {
            *x = rng.random::<f32>();
        }
        for x in e.wd.iter_mut() {
            *x = rng.random::<f32>() * 0.1 - 0.05;
        }
        for p in 0..np {
            e.zero[p] = rng.random::<f64>();
        }
        mus.push((0..k).map(|_| rng.random::<f64>() * 4.0 - 2.0).collect::<Vec<f64>>());
        entries.push(e);
    }
    let labels: Vec<usize> = (0..n_examples).map(|i| i % k).collect();
    let mut best = f64::INFINITY;
    let mut sink = 0.0;
    for rep in 0..5 {
        let delta = 10f64.powf(-2.0 + rep as f64);
        let t0 = std::time::Instant::now();
        let probs = crate::laplace::fit::recompute(&entries, &mus, delta, &grid, predictor);
        let m = crate::calibration::metrics(&probs, &labels);
        sink += m.nll;
        best = best.min(t0.elapsed().as_secs_f64());
    }
    std::hint::black_box(sink);
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::laplace::eigen::sym_eig;
    use crate::laplace::marglik::log_grid;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use rand_distr::StandardNormal;

    type Block = (Vec<f64>, Vec<f64>, Vec<Vec<f32>>);

    /// Blocks with a_i in 10^U(-5, 0) and g_j in 10^U(-1, 2): lambda spread over 8 decades.
    fn random_blocks(rng: &mut StdRng, k: usize, n_blocks: usize) -> Vec<Block> {
        (0..n_blocks)
            .map(|_| {
                let (na, ng) = (rng.random_range(5..40), rng.random_range(2..9));
                let a: Vec<f64> = (0..na).map(|_| 10f64.powf(rng.random_range(-5.0..0.0))).collect();
                let g: Vec<f64> = (0..ng).map(|_| 10f64.powf(rng.random_range(-1.0..2.0))).collect();
                // Correlated classes: m_c = common + own, so off-diagonals are not ~0.
                let common: Vec<f64> = (0..na * ng).map(|_| rng.sample(StandardNormal)).collect();
                let m = (0..k).map(|_| common.iter().map(|&x| (x + rng.sample::<f64, _>(StandardNormal)) as f32).collect()).collect();
                (a, g, m)
            })
            .collect()
    }

    fn entry_from(blocks: &[Block], k: usize, grid: &SpectralGrid) -> SpectralEntry {
        let mut e = SpectralEntry::new(k, grid);
        for (a, g, m) in blocks {
            e.add_block(a, g, m, &[], grid);
        }
        e
    }

    /// Checks approx against exact with the module's bound; returns the worst relative errors
    /// (diagonal, off-diagonal relative to sqrt(S_cc S_c'c')).
    fn check_bound(approx: &[f64], exact: &[f64], k: usize, bound: f64) -> (f64, f64) {
        // f32 storage: ~6e-8 relative per stored sum, a few blocks: 1e-6 slack.
        let slack = 1e-6;
        let (mut worst_d, mut worst_o) = (0.0f64, 0.0f64);
        for c in 0..k {
            for c2 in 0..k {
                let (x, y) = (approx[c * k + c2], exact[c * k + c2]);
                let scale = (exact[c * k + c] * exact[c2 * k + c2]).sqrt();
                let rel = (x - y).abs() / scale;
                if c == c2 {
                    // Diagonal: under-estimate (up to round-off) by at most the bound.
                    assert!(x <= y * (1.0 + slack), "diag over-estimates: {x} > {y}");
                    assert!(rel <= bound + slack, "diag rel error {rel} > bound {bound}");
                    worst_d = worst_d.max(rel);
                } else {
                    assert!(rel <= bound + slack, "offdiag rel error {rel} > bound {bound}");
                    worst_o = worst_o.max(rel);
                }
            }
        }
        (worst_d, worst_o)
    }

    #[test]
    fn pair_index_is_upper_triangle_order() {
        for k in 1..7 {
            let mut p = 0;
            for c in 0..k {
                for c2 in c..k {
                    assert_eq!(pair_index(c, c2, k), p);
                    p += 1;
                }
            }
            assert_eq!(p, n_pairs(k));
        }
    }

    #[test]
    fn binned_sigma_f_within_bound_over_8_decades() {
        let k = 4;
        let mut rng = StdRng::seed_from_u64(20);
        let blocks = random_blocks(&mut rng, k, 6);
        for (lo, hi, bins) in [(-8.0, 4.0, 200), (-8.0, 4.0, 60), (-8.0, 4.0, 600)] {
            let grid = SpectralGrid::new(lo, hi, bins);
            let e = entry_from(&blocks, k, &grid);
            let mut worst = (0.0f64, 0.0f64);
            for delta in log_grid(1e-6, 1e2, 25) {
                let bound = grid.rel_error_bound(delta);
                let (d, o) = check_bound(&e.sigma_f(delta, &grid), &sigma_f_exact(&blocks, k, delta), k, bound);
                worst = (worst.0.max(d), worst.1.max(o));
            }
            eprintln!(
                "{bins} bins ({:.1}/decade): bound {:.2e}, worst measured diag {:.2e}, off-diag {:.2e}",
                grid.bins_per_decade(),
                grid.rel_error_bound(1.0),
                worst.0,
                worst.1
            );
        }
    }

    #[test]
    fn out_of_grid_eigenvalues_use_the_edge_expansions() {
        // Eigenvalues 1e-7 .. 1e5, grid only 1e-4 .. 1e2, deltas in 1e-2 .. 1: the zero and over
        // bins carry (lambda/delta)^2 <= 1e-4 and (delta/lambda)^2 <= 1e-4.
        let k = 3;
        let mut rng = StdRng::seed_from_u64(21);
        let mut blocks = random_blocks(&mut rng, k, 4);
        for b in blocks.iter_mut() {
            for a in b.0.iter_mut() {
                *a *= 10f64.powf(rng.random_range(-2.0..3.0));
            }
        }
        let grid = SpectralGrid::new(-4.0, 2.0, 120);
        let e = entry_from(&blocks, k, &grid);
        assert!(e.zero.iter().any(|&z| z != 0.0) && e.over_inv.iter().any(|&z| z != 0.0));
        for delta in log_grid(1e-2, 1.0, 9) {
            let bound = grid.rel_error_bound(delta);
            check_bound(&e.sigma_f(delta, &grid), &sigma_f_exact(&blocks, k, delta), k, bound);
        }
    }

    #[test]
    fn zero_eigenvalues_are_exact() {
        // A block whose every eigenvalue is 0: Sigma_f = sum m_c m_c' / delta, exactly (to f64
        // round-off: 1e-12 relative).
        let k = 2;
        let a = vec![0.0, 0.0, 0.0];
        let g = vec![1.0, 2.0];
        let m: Vec<Vec<f32>> = vec![vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], vec![0.5, -1.0, 0.0, 2.0, 1.0, -3.0]];
        let grid = SpectralGrid::new(-6.0, 6.0, 100);
        let mut e = SpectralEntry::new(k, &grid);
        e.add_block(&a, &g, &m, &[], &grid);
        for delta in [1e-5, 0.3, 1e4] {
            let got = e.sigma_f(delta, &grid);
            let want = sigma_f_exact(&[(a.clone(), g.clone(), m.clone())], k, delta);
            for (x, y) in got.iter().zip(&want) {
                assert!((x - y).abs() <= 1e-12 * y.abs(), "{x} vs {y}");
            }
        }
    }

    #[test]
    fn low_rank_residual_goes_to_the_zero_bin() {
        // Full eigenbases Q_X (n_a x n_a), Q_O (n_g x n_g) of random PSD factors; the input factor
        // keeps only its top k_a pairs (the rest are 0). The reference is the exact sum over the
        // full basis with the dropped a_i set to 0; the cache sees only the kept block plus the
        // residual <M_c, M_c'> - <M~_c, M~_c'>.
        let (na, ng, ka, k) = (12usize, 4usize, 5usize, 3usize);
        let mut rng = StdRng::seed_from_u64(22);
        let psd = |rng: &mut StdRng, n: usize| {
            let gm: Vec<f64> = (0..n * n).map(|_| rng.sample(StandardNormal)).collect();
            let mut x = vec![0.0; n * n];
            for i in 0..n {
                for j in 0..n {
                    x[i * n + j] = (0..n).map(|p| gm[i * n + p] * gm[j * n + p]).sum();
                }
            }
            sym_eig(&x, n)
        };
        let ex = psd(&mut rng, na);
        let eo = psd(&mut rng, ng);
        // M_c in the original basis (n_g x n_a), then M~_full = Q_O^T M Q_X.
        let ms: Vec<Vec<f32>> = (0..k).map(|_| (0..ng * na).map(|_| rng.sample::<f32, _>(StandardNormal)).collect()).collect();
        let project = |m: &[f32], cols: usize| -> Vec<f32> {
            let mut out = vec![0.0f32; ng * cols];
            for j in 0..ng {
                for i in 0..cols {
                    let mut s = 0.0f64;
                    for r in 0..ng {
                        for q in 0..na {
                            s += eo.vectors[r * ng + j] * m[r * na + q] as f64 * ex.vectors[q * na + i];
                        }
                    }
                    out[j * cols + i] = s as f32;
                }
            }
            out
        };
        let full: Vec<Vec<f32>> = ms.iter().map(|m| project(m, na)).collect();
        let kept: Vec<Vec<f32>> = full.iter().map(|f| (0..ng).flat_map(|j| f[j * na..j * na + ka].to_vec()).collect()).collect();
        let mut a_full = ex.values.clone();
        a_full[ka..].iter_mut().for_each(|x| *x = 0.0);
        let reference = vec![(a_full, eo.values.clone(), full)];
        let total = pair_inner(&ms);
        let proj = pair_inner(&kept);
        let residual: Vec<f64> = total.iter().zip(&proj).map(|(t, p)| t - p).collect();
        let grid = SpectralGrid::new(-6.0, 6.0, 240);
        let mut e = SpectralEntry::new(k, &grid);
        e.add_block(&ex.values[..ka], &eo.values, &kept, &residual, &grid);
        for delta in log_grid(1e-3, 1e3, 13) {
            // f32 projections: the residual is a difference of f32-rounded sums, ~1e-6 relative.
            let bound = grid.rel_error_bound(delta) + 1e-5;
            check_bound(&e.sigma_f(delta, &grid), &sigma_f_exact(&reference, k, delta), k, bound);
        }
    }

    #[test]
    fn default_grid_and_nested_pairs() {
        let g = SpectralGrid::default();
        assert_eq!((g.log10_min, g.log10_max, g.bins), (-6.0, 6.0, 200));
        // Bound at the default slider ends: bin term 5.1e-3 dominates the 1e-4 edge terms.
        assert!(g.rel_error_bound(1e-4) < 5.2e-3 && g.rel_error_bound(1e4) < 5.2e-3);
        let nested = vec![vec![1.0, 2.0, 3.0], vec![2.0, 4.0, 5.0], vec![3.0, 5.0, 6.0]];
        let p = pairs_from_nested(&nested);
        assert_eq!(p, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(p[pair_index(1, 2, 3)], 5.0);
    }

    #[test]
    fn bench_runs() {
        let s = bench_prior_recompute(1000, 4, &Default::default());
        eprintln!("bench_prior_recompute(1000, 4, quadrature): {:.3} ms", s * 1e3);
        assert!(s.is_finite() && s > 0.0);
        let e = SpectralEntry::new(4, &SpectralGrid::new(-6.0, 6.0, 200));
        eprintln!("entry size: {} bytes", e.size_bytes());
    }
}
