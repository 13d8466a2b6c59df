//! Symmetric eigendecompositions and PSD Kronecker factors, dense or streamed low-rank
//! (MATH.md section 5).
//!
//! A KFAC factor F (the input side X or the output side O of one LoRA matrix) is a sum of outer
//! products. Small sides (n <= threshold) are accumulated densely and decomposed once at the end;
//! large sides keep only their top-k eigenpairs, updated batch by batch:
//!
//!   F_so_far ~= Q diag(l) Q^T  (Q n x r orthonormal, r <= k),  new batch F += w V V^T:
//!   B = [Q, V] = Q1 R (thin QR, Q1 n x p, p = min(n, r + m)),
//!   F_new ~= Q1 (R D R^T) Q1^T  with D = diag(l, w, ..., w),
//!   R D R^T = W diag(s) W^T  (a small p x p symmetric eigenproblem),
//!   keep the top k: Q <- Q1 W[:, :k], l <- s[:k].
//! The truncation discards the smallest eigenvalues of the current sum, so when the true rank is
//! <= k the streamed factor is exact up to round-off. Memory: Q and l, n k + k numbers, plus a
//! transient n (k + m) during an update.
//!
//! Conventions: every matrix passed in or out is row-major (`mat[i * ncols + j]`); eigenvalues are
//! in DESCENDING order; eigenvector j is column j of `vectors` (an n x k row-major array).

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par, Side};

/// Eigenpairs of a symmetric PSD matrix, eigenvalues in DESCENDING order; vectors column j = pair j,
/// stored row-major n x k (`vectors[i * k + j]`).
#[derive(Clone, Debug)]
pub struct SymEig {
    /// Side of the matrix.
    pub n: usize,
    /// Number of pairs kept (n for a dense decomposition).
    pub k: usize,
    /// Eigenvalues, descending, all >= 0.
    pub values: Vec<f64>,
    /// Eigenvectors, row-major n x k: `vectors[i * k + j]` is component i of vector j.
    pub vectors: Vec<f64>,
    /// How many negative eigenvalues (round-off of a PSD matrix) were clamped to 0.
    pub clamped: usize,
}

impl SymEig {
    /// Eigenvector j as a vector of length n (copied out of the row-major storage).
    pub fn vector(&self, j: usize) -> Vec<f64> {
        (0..self.n).map(|i| self.vectors[i * self.k + j]).collect()
    }

    /// Q diag(values) Q^T, row-major n x n (for tests and small n).
    pub fn reconstruct(&self) -> Vec<f64> {
        let (n, k) = (self.n, self.k);
        let mut out = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                let mut s = 0.0;
                for p in 0..k {
                    s += self.vectors[i * k + p] * self.values[p] * self.vectors[j * k + p];
                }
                out[i * n + j] = s;
            }
        }
        out
    }
}

/// Copies a faer matrix into a row-major Vec.
fn to_row_major(m: MatRef<'_, f64>) -> Vec<f64> {
    let (r, c) = (m.nrows(), m.ncols());
    let mut out = vec![0.0; r * c];
    for i in 0..r {
        for j in 0..c {
            out[i * c + j] = m[(i, j)];
        }
    }
    out
}

/// Eigen-decomposition of a symmetric n x n faer matrix: (values descending, vectors as columns).
fn eigh_desc(m: MatRef<'_, f64>) -> (Vec<f64>, Mat<f64>) {
    let n = m.nrows();
    if n == 0 {
        return (Vec::new(), Mat::zeros(0, 0));
    }
    match m.self_adjoint_eigen(Side::Lower) {
        Ok(evd) => {
            // faer returns eigenvalues in nondecreasing order: reverse.
            let s = evd.S().column_vector();
            let u = evd.U();
            let values: Vec<f64> = (0..n).rev().map(|i| s[i]).collect();
            let vectors = Mat::from_fn(n, n, |i, j| u[(i, n - 1 - j)]);
            (values, vectors)
        }
        Err(_) => {
            // Not expected for finite symmetric input; a NaN/inf matrix lands here. Return the
            // zero spectrum with the identity basis rather than panic (the caller sees values 0).
            (vec![0.0; n], Mat::identity(n, n))
        }
    }
}

/// Dense symmetric eigendecomposition of a row-major n x n matrix, full k = n.
///
/// The input is symmetrised ((M + M^T)/2) first; negative eigenvalues (round-off of a PSD matrix)
/// are clamped to 0 and counted in `clamped`. Non-finite entries are treated as 0 (and make the
/// whole decomposition meaningless: the caller should not pass them).
pub fn sym_eig(mat: &[f64], n: usize) -> SymEig {
    assert_eq!(mat.len(), n * n, "sym_eig: matrix must be n x n");
    let sym = Mat::from_fn(n, n, |i, j| {
        let v = 0.5 * (mat[i * n + j] + mat[j * n + i]);
        if v.is_finite() {
            v
        } else {
            0.0
        }
    });
    let (mut values, vectors) = eigh_desc(sym.as_ref());
    let mut clamped = 0;
    for v in values.iter_mut() {
        if *v < 0.0 {
            *v = 0.0;
            clamped += 1;
        }
    }
    SymEig { n, k: n, values, vectors: to_row_major(vectors.as_ref()), clamped }
}

#[derive(Clone, Debug)]
enum Repr {
    /// Row-major n x n accumulator.
    Dense(Vec<f64>),
    /// Q (n x r, orthonormal columns, faer column-major) and its eigenvalues l (descending).
    LowRank { q: Mat<f64>, l: Vec<f64> },
}

/// A PSD factor F = sum of weighted outer products, kept either dense (n <= threshold) or low-rank:
/// the top-k eigenpairs maintained as batches of columns stream in (see the module doc).
/// Memory O(n k) when low rank.
#[derive(Clone, Debug)]
pub struct Factor {
    n: usize,
    k: usize,
    repr: Repr,
    /// Exact trace of everything added (sum w |v|^2, scaled), to report the mass a low-rank
    /// factor drops: `trace() - eig().values.sum()`.
    trace: f64,
    /// Negative eigenvalues clamped during low-rank updates (round-off), summed over updates.
    clamped: usize,
}

impl Factor {
    /// A zero factor of side n: dense if n <= threshold, else low-rank keeping the top `k` pairs.
    pub fn new(n: usize, threshold: usize, k: usize) -> Self {
        let repr = if n <= threshold { Repr::Dense(vec![0.0; n * n]) } else { Repr::LowRank { q: Mat::zeros(n, 0), l: Vec::new() } };
        Factor { n, k: k.min(n), repr, trace: 0.0, clamped: 0 }
    }

    /// F += weight * V V^T, with V an n x m row-major array (`V[i * m + j]`, column j one vector).
    pub fn add_outer(&mut self, cols: &[f64], m: usize, weight: f64) {
        let n = self.n;
        assert_eq!(cols.len(), n * m, "add_outer: cols must be n x m");
        if m == 0 || weight == 0.0 {
            return;
        }
        let step = self.k.max(32);
        if self.is_low_rank() && m > step {
            // In chunks of about k columns: an update costs ~n (r + m)^2 for the QR and
            // (r + m)^3 for the eigendecomposition, so per column it is cheapest near m = k
            // (a 4 x 64-token batch brings 256 columns; with stacked backward columns 768).
            for start in (0..m).step_by(step) {
                let w = step.min(m - start);
                let chunk: Vec<f64> = (0..n).flat_map(|i| cols[i * m + start..i * m + start + w].iter().copied()).collect();
                self.add_outer(&chunk, w, weight);
            }
            return;
        }
        self.trace += weight * cols.iter().map(|x| x * x).sum::<f64>();
        let v = MatRef::from_row_major_slice(cols, n, m);
        match &mut self.repr {
            Repr::Dense(f) => {
                // F += weight V V^T in place (any round-off asymmetry is removed by sym_eig).
                let dst = faer::MatMut::from_row_major_slice_mut(f, n, n);
                matmul(dst, Accum::Add, v, v.transpose(), weight, Par::Seq);
            }
            Repr::LowRank { q, l } => {
                let r = l.len();
                let p_cols = r + m;
                // B = [Q, V]
                let b = Mat::from_fn(n, p_cols, |i, j| if j < r { q[(i, j)] } else { v[(i, j - r)] });
                let qr = b.qr();
                let q1 = qr.compute_thin_Q(); // n x p
                let rr = qr.thin_R(); // p x (r + m)
                let p = rr.nrows();
                // S = R D R^T, D = diag(l, weight...)
                let d: Vec<f64> = l.iter().copied().chain(std::iter::repeat_n(weight, m)).collect();
                let rd = Mat::from_fn(p, p_cols, |a, c| rr[(a, c)] * d[c]);
                let mut s = Mat::<f64>::zeros(p, p);
                matmul(s.as_mut(), Accum::Replace, rd.as_ref(), rr.transpose(), 1.0, Par::Seq);
                let (vals, w) = eigh_desc(s.as_ref());
                let keep = self.k.min(p);
                let mut new_l = Vec::with_capacity(keep);
                for &x in vals.iter().take(keep) {
                    if x < 0.0 {
                        self.clamped += 1;
                        new_l.push(0.0);
                    } else {
                        new_l.push(x);
                    }
                }
                let mut new_q = Mat::<f64>::zeros(n, keep);
                matmul(new_q.as_mut(), Accum::Replace, q1.as_ref(), w.as_ref().get(.., ..keep), 1.0, Par::Seq);
                *q = new_q;
                *l = new_l;
            }
        }
    }

    /// F += mat (row-major n x n). Only for dense factors: a low-rank factor returns an error.
    pub fn add_dense(&mut self, mat: &[f64]) -> anyhow::Result<()> {
        let n = self.n;
        anyhow::ensure!(mat.len() == n * n, "add_dense: expected {}x{} entries, got {}", n, n, mat.len());
        match &mut self.repr {
            Repr::Dense(f) => {
                for (x, y) in f.iter_mut().zip(mat) {
                    *x += y;
                }
                self.trace += (0..n).map(|i| mat[i * n + i]).sum::<f64>();
                Ok(())
            }
            Repr::LowRank { .. } => anyhow::bail!("add_dense on a low-rank factor (side {n}); use add_outer"),
        }
    }

    /// F *= s (e.g. the 1/N normalisation of the input side, MATH.md section 4).
    pub fn scale(&mut self, s: f64) {
        self.trace *= s;
        match &mut self.repr {
            Repr::Dense(f) => f.iter_mut().for_each(|x| *x *= s),
            Repr::LowRank { q, l } => {
                l.iter_mut().for_each(|x| *x *= s);
                if s < 0.0 {
                    // Keep the descending order (a negative scale flips it; PSD factors never do this).
                    l.reverse();
                    let r = l.len();
                    *q = Mat::from_fn(q.nrows(), r, |i, j| q[(i, r - 1 - j)]);
                }
            }
        }
    }

    pub fn is_low_rank(&self) -> bool {
        matches!(self.repr, Repr::LowRank { .. })
    }

    pub fn n(&self) -> usize {
        self.n
    }

    /// The number of pairs a low-rank factor keeps at most (n for a dense one).
    pub fn k(&self) -> usize {
        if self.is_low_rank() {
            self.k
        } else {
            self.n
        }
    }

    /// Exact trace of all that was added (scaled). For a low-rank factor,
    /// `trace() - eig().values.iter().sum()` is the mass the truncation dropped.
    pub fn trace(&self) -> f64 {
        self.trace
    }

    /// Number of f64 values held (n^2 dense; n r + r low-rank, r <= k): the memory check.
    pub fn stored_len(&self) -> usize {
        match &self.repr {
            Repr::Dense(f) => f.len(),
            Repr::LowRank { q, l } => q.nrows() * q.ncols() + l.len(),
        }
    }

    /// Dense: full decomposition (k = n). Low-rank: its kept pairs (values desc; k may be below
    /// the configured k while fewer columns than k have been added).
    pub fn eig(&self) -> SymEig {
        match &self.repr {
            Repr::Dense(f) => sym_eig(f, self.n),
            Repr::LowRank { q, l } => SymEig { n: self.n, k: l.len(), values: l.clone(), vectors: to_row_major(q.as_ref()), clamped: self.clamped },
        }
    }

    /// Whether `other` holds exactly the same dense accumulator (bit for bit; never for low-rank
    /// factors, whose decomposition is already at hand). Lets identical factors share one
    /// decomposition.
    pub fn same_as(&self, other: &Factor) -> bool {
        match (&self.repr, &other.repr) {
            (Repr::Dense(a), Repr::Dense(b)) => {
                self.n == other.n && self.trace.to_bits() == other.trace.to_bits() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
            }
            _ => false,
        }
    }

    /// The factor as a row-major n x n matrix (for tests / small n).
    pub fn to_dense(&self) -> Vec<f64> {
        match &self.repr {
            Repr::Dense(f) => f.clone(),
            Repr::LowRank { .. } => self.eig().reconstruct(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use rand_distr::StandardNormal;

    fn randn(rng: &mut StdRng, len: usize) -> Vec<f64> {
        (0..len).map(|_| rng.sample::<f64, _>(StandardNormal)).collect()
    }

    fn fro(a: &[f64]) -> f64 {
        a.iter().map(|x| x * x).sum::<f64>().sqrt()
    }

    fn rel_diff(a: &[f64], b: &[f64]) -> f64 {
        let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
        fro(&d) / fro(b).max(1e-300)
    }

    /// A = G G^T + eps I, SPD.
    fn random_spd(rng: &mut StdRng, n: usize) -> Vec<f64> {
        let g = randn(rng, n * n);
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = (0..n).map(|p| g[i * n + p] * g[j * n + p]).sum::<f64>();
            }
            a[i * n + i] += 1e-3;
        }
        a
    }

    /// Random orthonormal n x n basis (Q of a QR of a Gaussian matrix), row-major.
    fn random_orthonormal(rng: &mut StdRng, n: usize) -> Vec<f64> {
        let g = randn(rng, n * n);
        let m = MatRef::from_row_major_slice(&g, n, n).to_owned();
        to_row_major(m.qr().compute_thin_Q().as_ref())
    }

    #[test]
    fn sym_eig_reconstructs_random_spd() {
        // Tolerance 1e-10 relative Frobenius: a backward-stable eigensolver gives ~n * eps * |A|
        // (n <= 60: ~1e-14); 1e-10 leaves a wide margin yet catches any ordering/layout bug.
        let mut rng = StdRng::seed_from_u64(1);
        for &n in &[1usize, 2, 5, 17, 60] {
            let a = random_spd(&mut rng, n);
            let e = sym_eig(&a, n);
            assert_eq!(e.k, n);
            assert!(rel_diff(&e.reconstruct(), &a) < 1e-10, "n={n}");
            // Descending, non-negative.
            for w in e.values.windows(2) {
                assert!(w[0] >= w[1]);
            }
            assert!(e.values.iter().all(|&v| v >= 0.0));
            // Orthonormality Q^T Q = I to 1e-12 (round-off ~ n eps).
            for p in 0..n {
                for q in 0..n {
                    let dot: f64 = (0..n).map(|i| e.vectors[i * n + p] * e.vectors[i * n + q]).sum();
                    let want = if p == q { 1.0 } else { 0.0 };
                    assert!((dot - want).abs() < 1e-12, "n={n} p={p} q={q} dot={dot}");
                }
            }
        }
    }

    #[test]
    fn sym_eig_known_2x2() {
        // [[2, 1], [1, 2]]: eigenvalues 3 (vector (1,1)/sqrt2) and 1 (vector (1,-1)/sqrt2).
        let e = sym_eig(&[2.0, 1.0, 1.0, 2.0], 2);
        assert!((e.values[0] - 3.0).abs() < 1e-14 && (e.values[1] - 1.0).abs() < 1e-14);
        let v0 = e.vector(0);
        let s = std::f64::consts::FRAC_1_SQRT_2;
        assert!((v0[0].abs() - s).abs() < 1e-14 && (v0[1].abs() - s).abs() < 1e-14);
        assert!(v0[0] * v0[1] > 0.0);
        let v1 = e.vector(1);
        assert!(v1[0] * v1[1] < 0.0);
        assert_eq!(e.clamped, 0);
        // Non-symmetric input is symmetrised: [[2, 0], [2, 2]] -> [[2, 1], [1, 2]].
        let e2 = sym_eig(&[2.0, 0.0, 2.0, 2.0], 2);
        assert!((e2.values[0] - 3.0).abs() < 1e-14 && (e2.values[1] - 1.0).abs() < 1e-14);
    }

    #[test]
    fn sym_eig_clamps_slightly_negative() {
        // diag(1, -1e-14) in a rotated basis: the -1e-14 is round-off of a PSD matrix.
        let mut rng = StdRng::seed_from_u64(2);
        let q = random_orthonormal(&mut rng, 2);
        let d = [1.0, -1e-14];
        let mut a = vec![0.0; 4];
        for i in 0..2 {
            for j in 0..2 {
                a[i * 2 + j] = (0..2).map(|p| q[i * 2 + p] * d[p] * q[j * 2 + p]).sum();
            }
        }
        let e = sym_eig(&a, 2);
        assert_eq!(e.clamped, 1);
        assert_eq!(e.values[1], 0.0);
        assert!((e.values[0] - 1.0).abs() < 1e-14);
    }

    /// A matrix of known spectrum: Q diag(spec) Q^T, and a generator of columns whose outer
    /// products sum to it in expectation is awkward; instead we stream exact square-root columns:
    /// F = sum_b V_b V_b^T with V_b = Q diag(sqrt(spec)) Z_b / sqrt(B m), Z_b Gaussian, which has a
    /// random (but known after the fact) sum. The dense reference is accumulated alongside.
    #[test]
    fn low_rank_streaming_converges_to_dense() {
        let n = 40;
        let true_rank = 12;
        let batches = 20;
        let m = 5;
        let mut rng = StdRng::seed_from_u64(3);
        let q = random_orthonormal(&mut rng, n);
        // Decaying spectrum of rank 12: 10^(-i/3).
        let sqrt_spec: Vec<f64> = (0..n).map(|i| if i < true_rank { 10f64.powf(-(i as f64) / 6.0) } else { 0.0 }).collect();
        let mut batches_v = Vec::new();
        for _ in 0..batches {
            let z = randn(&mut rng, n * m);
            // V = Q diag(sqrt_spec) Z
            let mut v = vec![0.0; n * m];
            for i in 0..n {
                for j in 0..m {
                    v[i * m + j] = (0..n).map(|p| q[i * n + p] * sqrt_spec[p] * z[p * m + j]).sum();
                }
            }
            batches_v.push(v);
        }
        let weight = 1.0 / (batches * m) as f64;
        let mut dense = Factor::new(n, n, n);
        for v in &batches_v {
            dense.add_outer(v, m, weight);
        }
        assert!(!dense.is_low_rank());
        let de = dense.eig();
        let mut prev_err = f64::INFINITY;
        for &k in &[1usize, 2, 4, 6, 8, 10, 12, 14] {
            let mut lr = Factor::new(n, 8, k); // threshold 8 < n: low rank
            assert!(lr.is_low_rank());
            for v in &batches_v {
                lr.add_outer(v, m, weight);
                // Memory O(n k): Q is n x r with r <= k, plus r eigenvalues.
                assert!(lr.stored_len() <= n * k + k, "stored {} > n k + k", lr.stored_len());
            }
            let le = lr.eig();
            assert_eq!(le.k, k);
            // Error of the streamed rank-k factor against the dense one (relative Frobenius),
            // and of its kept eigenvalues against the dense top-k (relative to the largest).
            let err = rel_diff(&lr.to_dense(), &dense.to_dense());
            let eig_err = (0..k).map(|i| (le.values[i] - de.values[i]).abs()).fold(0.0, f64::max) / de.values[0];
            eprintln!("k={k}: factor error {err:.3e}, top-k eigenvalue error {eig_err:.3e}");
            // Monotone non-increasing in k (allowing 1e-12 round-off noise once both are ~exact).
            assert!(err <= prev_err + 1e-12, "k={k}: err {err} > previous {prev_err}");
            prev_err = err;
            // Streaming only drops PSD pieces, so every kept eigenvalue is <= the dense one
            // (Weyl); 1e-12 relative slack for round-off.
            for i in 0..k {
                assert!(le.values[i] <= de.values[i] * (1.0 + 1e-12) + 1e-15);
            }
            if k >= true_rank {
                let err = eig_err;
                // Exact up to round-off: every update then loses nothing. 1e-10 relative:
                // each of the 20 QR + eigh updates contributes ~n eps.
                assert!(err < 1e-10, "k={k} err={err}");
                assert!(rel_diff(&lr.to_dense(), &dense.to_dense()) < 1e-10);
                // No mass dropped: trace of kept pairs = exact trace.
                let kept: f64 = le.values.iter().sum();
                assert!((kept - lr.trace()).abs() < 1e-10 * lr.trace());
            }
        }
        // Truncation to k < rank does lose something measurable.
        let mut lr2 = Factor::new(n, 8, 2);
        for v in &batches_v {
            lr2.add_outer(v, m, weight);
        }
        let top1 = (lr2.eig().values[0] - de.values[0]).abs() / de.values[0];
        assert!(top1 < 0.05, "the top eigenvalue survives truncation to k=2: {top1}");
    }

    #[test]
    fn dense_factor_ops() {
        let mut rng = StdRng::seed_from_u64(4);
        let n = 6;
        let v = randn(&mut rng, n * 3);
        let mut f = Factor::new(n, 10, 3);
        f.add_outer(&v, 3, 2.0);
        let a = random_spd(&mut rng, n);
        f.add_dense(&a).unwrap();
        f.scale(0.5);
        let mut want = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                let vv: f64 = (0..3).map(|p| v[i * 3 + p] * v[j * 3 + p]).sum();
                want[i * n + j] = 0.5 * (2.0 * vv + a[i * n + j]);
            }
        }
        // 1e-13: a handful of flops per entry.
        assert!(rel_diff(&f.to_dense(), &want) < 1e-13);
        let tr: f64 = (0..n).map(|i| want[i * n + i]).sum();
        assert!((f.trace() - tr).abs() < 1e-12 * tr);
        let mut lr = Factor::new(n, 2, 3);
        assert!(lr.add_dense(&a).is_err());
        lr.add_outer(&v, 3, 1.0);
        lr.scale(3.0);
        let mut want2 = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                want2[i * n + j] = 3.0 * (0..3).map(|p| v[i * 3 + p] * v[j * 3 + p]).sum::<f64>();
            }
        }
        assert!(rel_diff(&lr.to_dense(), &want2) < 1e-12);
    }
}
