//! Fused CPU kernels with hand-written backward passes for the decoder's non-matmul work.
//!
//! Composed from candle ops, one RMSNorm is six elementwise passes forward and more backward, the
//! attention core (rotary, q k^T, mask, softmax, p v) a dozen, each allocating a tensor and each a
//! node of the backward graph. `perf` on the LoRA step put those passes, their allocations and page
//! faults, and candle's per-op thread barrier at about half of the step once the matmuls ran on
//! AVX-512. Here each block is one op: one pass forward, one pass backward, parallel over rows or
//! heads. `ops.rs` dispatches here on the CPU for f32 (and to `fast.rs` on a GPU); the tests at the bottom check values and gradients against those composed forms.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

/// The contiguous f32 slice of a CPU storage, or an error naming the op.
pub(super) fn slice<'a>(op: &str, s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let v = match s {
        CpuStorage::F32(v) => v,
        _ => candle_core::bail!("{op}: only f32 on the CPU path"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{op}: input not contiguous"),
    }
}

/// Runs `f` on the contiguous f32 data of CPU tensors `ts` (each copied only if strided).
fn with_data<R, const N: usize>(op: &str, ts: [&Tensor; N], f: impl FnOnce([&[f32]; N]) -> Result<R>) -> Result<R> {
    let owned = ts.iter().map(|t| t.contiguous()).collect::<Result<Vec<Tensor>>>()?;
    let guards: Vec<_> = owned.iter().map(|t| t.storage_and_layout()).collect();
    let mut data = Vec::with_capacity(N);
    for (st, l) in &guards {
        match &**st {
            Storage::Cpu(s) => data.push(slice(op, s, l)?),
            _ => candle_core::bail!("{op}: CPU tensors only"),
        }
    }
    match data.try_into() {
        Ok(data) => f(data),
        Err(_) => unreachable!("one slice per tensor"),
    }
}

fn tensor(v: Vec<f32>, shape: &Shape) -> Result<Tensor> {
    Tensor::from_vec(v, shape.clone(), &candle_core::Device::Cpu)
}

/// Sum of a[i] b[i] with 16 independent partial sums, so that the compiler can keep them in one
/// AVX-512 register (a single running f32 sum cannot be reordered, hence not vectorised).
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 16];
    let mut ca = a.chunks_exact(16);
    let mut cb = b.chunks_exact(16);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for k in 0..16 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for v in acc {
        s += v;
    }
    s
}

/// One thread: the parallelism of the per-head products.
const ONE_THREAD: gemm::Parallelism = gemm::Parallelism::None;

/// dst (m x n, row-major) = [dst +] c lhs rhs, with lhs (m x k) and rhs (k x n) addressed by
/// (row, column) strides, so transposes cost nothing. The attention core runs its per-head
/// products (64 x 64 x 64 on the bench) on one thread each (`Parallelism::None`), in parallel
/// across heads; the frozen projections (`ops.rs`) split one product across the threads.
#[allow(clippy::too_many_arguments)]
pub(super) fn mm(
    dst: &mut [f32],
    accumulate: bool,
    c: f32,
    (m, n, k): (usize, usize, usize),
    lhs: &[f32],
    (l_rs, l_cs): (usize, usize),
    rhs: &[f32],
    (r_rs, r_cs): (usize, usize),
    par: gemm::Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    // The furthest element each operand is read or written at must lie inside its slice.
    assert!(dst.len() >= m * n && lhs.len() > (m - 1) * l_rs + (k - 1) * l_cs && rhs.len() > (k - 1) * r_rs + (n - 1) * r_cs);
    // SAFETY: the assert above bounds every address gemm touches.
    // Through `isa::gemm_f32`: gemm's own kernels, or its AVX2 ones under the AVX2 switch.
    unsafe {
        super::isa::gemm_f32(
            super::isa::avx2_forced(),
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            l_cs as isize,
            l_rs as isize,
            rhs.as_ptr(),
            r_cs as isize,
            r_rs as isize,
            c,
            par,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// RMSNorm: y = x r w, r = (mean(x^2) + eps)^(-1/2), per row of length d; w frozen.
// Backward (g = dL/dy, u = g w):  dx = r u - x r^3 (x . u) / d.
// ---------------------------------------------------------------------------------------------

struct RmsNorm {
    /// (d), contiguous f32 on the CPU.
    weight: Vec<f32>,
    eps: f32,
}

/// Rows per parallel task: enough work to amortise a task (~16k floats).
fn row_chunk(d: usize) -> usize {
    (16384 / d.max(1)).max(1)
}

impl RmsNorm {
    fn inv_rms(&self, row: &[f32]) -> f32 {
        let ms = dot(row, row) / row.len() as f32;
        1.0 / (ms + self.eps).sqrt()
    }
}

impl CustomOp1 for RmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(self.name(), s, l)?;
        let d = self.weight.len();
        if d == 0 || x.len() % d != 0 {
            candle_core::bail!("fused-rms-norm: input of {} values is not rows of {d}", x.len());
        }
        let mut y = vec![0f32; x.len()];
        let c = row_chunk(d) * d;
        y.par_chunks_mut(c).zip(x.par_chunks(c)).for_each(|(yc, xc)| {
            for (yr, xr) in yc.chunks_exact_mut(d).zip(xc.chunks_exact(d)) {
                let r = self.inv_rms(xr);
                for ((yi, xi), wi) in yr.iter_mut().zip(xr).zip(&self.weight) {
                    *yi = xi * r * wi;
                }
            }
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let d = self.weight.len();
        let dx = with_data(self.name(), [arg, grad], |[x, g]| {
            let mut dx = vec![0f32; x.len()];
            let c = row_chunk(d) * d;
            dx.par_chunks_mut(c).zip(x.par_chunks(c)).zip(g.par_chunks(c)).for_each(|((dc, xc), gc)| {
                let mut u = vec![0f32; d];
                for ((dr, xr), gr) in dc.chunks_exact_mut(d).zip(xc.chunks_exact(d)).zip(gc.chunks_exact(d)) {
                    let r = self.inv_rms(xr);
                    for ((ui, gi), wi) in u.iter_mut().zip(gr).zip(&self.weight) {
                        *ui = gi * wi;
                    }
                    let k = r * r * r * dot(xr, &u) / d as f32;
                    for ((di, ui), xi) in dr.iter_mut().zip(&u).zip(xr) {
                        *di = r * ui - k * xi;
                    }
                }
            });
            Ok(dx)
        })?;
        Ok(Some(tensor(dx, arg.shape())?))
    }
}

/// RMSNorm over the last dimension of a contiguous f32 CPU tensor; the weight gets no gradient.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let weight = weight.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    if x.dims().last() != Some(&weight.len()) {
        candle_core::bail!("fused-rms-norm: input {:?} does not end in the weight's {}", x.dims(), weight.len());
    }
    x.contiguous()?.apply_op1(RmsNorm { weight, eps: eps as f32 })
}

// ---------------------------------------------------------------------------------------------
// SwiGLU gate: y = silu(g) u = g s(g) u, s the logistic function.
// Backward: du = dy silu(g);  dg = dy u s(g) (1 + g (1 - s(g))).
// ---------------------------------------------------------------------------------------------

struct SiluMul;

/// s[i] = logistic(g[i]) = 1 / (1 + e^(-g[i])), through the vectorised exp.
fn sigmoid_into(g: &[f32], s: &mut [f32]) {
    for (si, gi) in s.iter_mut().zip(g) {
        *si = -gi;
    }
    super::fastmath::exp_in_place(s);
    for si in s.iter_mut() {
        *si = 1.0 / (1.0 + *si);
    }
}

impl CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "fused-silu-mul"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = slice(self.name(), s1, l1)?;
        let u = slice(self.name(), s2, l2)?;
        if l1.shape() != l2.shape() {
            candle_core::bail!("fused-silu-mul: shapes {:?} and {:?} differ", l1.shape(), l2.shape());
        }
        let mut y = vec![0f32; g.len()];
        const C: usize = 16384;
        y.par_chunks_mut(C).zip(g.par_chunks(C)).zip(u.par_chunks(C)).for_each(|((yc, gc), uc)| {
            sigmoid_into(gc, yc);
            for ((yi, gi), ui) in yc.iter_mut().zip(gc).zip(uc) {
                *yi *= gi * ui;
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(&self, g: &Tensor, u: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let n = g.elem_count();
        let (mut dg, mut du) = (vec![0f32; n], vec![0f32; n]);
        with_data(self.name(), [g, u, dy], |[g, u, dy]| {
            const C: usize = 16384;
            dg.par_chunks_mut(C).zip(du.par_chunks_mut(C)).zip(g.par_chunks(C).zip(u.par_chunks(C)).zip(dy.par_chunks(C))).for_each(
                |((dgc, duc), ((gc, uc), yc))| {
                    // The logistic values first (into du, overwritten below).
                    sigmoid_into(gc, duc);
                    for i in 0..gc.len() {
                        let (x, s) = (gc[i], duc[i]);
                        duc[i] = yc[i] * x * s;
                        dgc[i] = yc[i] * uc[i] * s * (1.0 + x * (1.0 - s));
                    }
                },
            );
            Ok(())
        })?;
        Ok((Some(tensor(dg, g.shape())?), Some(tensor(du, u.shape())?)))
    }
}

/// silu(g) * u for contiguous f32 CPU tensors of one shape.
pub fn silu_mul(g: &Tensor, u: &Tensor) -> Result<Tensor> {
    g.contiguous()?.apply_op2(&u.contiguous()?, SiluMul)
}

// ---------------------------------------------------------------------------------------------
// Causal self-attention core with rotary embeddings and grouped KV heads, in the projections'
// own layout: q (B*T, H*hd), k and v (B*T, Hkv*hd), output (B*T, H*hd). For query head h (kv head
// g = h / (H / Hkv)) of sequence b:
//   q~ = R_t q_t, k~ = R_t k_t (rotate-half rotary, angle table per position t),
//   S = c q~ k~^T + M (c = hd^-1/2, M = 0 where key j <= query i within the window, else -inf),
//   P = softmax_rows(S), O = P V.
// Backward (dO given), with D_i = sum_j P_ij dP_ij:
//   dP = dO V^T, dS = P (dP - D), dq~ = c dS k~, dk~ += c dS^T q~, dV += P^T dO,
//   dq = R_t^T dq~, dk = R_t^T dk~   (R_t orthogonal: its transpose is the rotation by -angle).
// P is recomputed in the backward pass (T x T per head) rather than kept from the forward.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct AttnDims {
    b: usize,
    t: usize,
    heads: usize,
    kv_heads: usize,
    hd: usize,
    window: usize,
}

struct Attention {
    dims: AttnDims,
    /// cos and sin of the rotary angles: (t, hd / 2) each, row-major.
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl Attention {
    /// Rows t = 0..T of sequence b, head `head`, of a (B*T, n_heads*hd) buffer into `out` (T, hd),
    /// rotated by each position's rotary angle if `rotate`.
    fn gather(&self, src: &[f32], n_heads: usize, b: usize, head: usize, rotate: bool, out: &mut [f32]) {
        let AttnDims { t, hd, .. } = self.dims;
        for pos in 0..t {
            out[pos * hd..][..hd].copy_from_slice(&src[((b * t + pos) * n_heads + head) * hd..][..hd]);
        }
        if rotate {
            self.rotate(out, 1.0);
        }
    }

    /// Rotates each row `pos` of a (T, hd) buffer in place by `sign` times the rotary angle of
    /// `pos` ("rotate half" pairs (i, i + hd/2)); sign = -1 applies R^T.
    fn rotate(&self, buf: &mut [f32], sign: f32) {
        let hd = self.dims.hd;
        let half = hd / 2;
        for pos in 0..self.dims.t {
            let row = &mut buf[pos * hd..][..hd];
            let (c, s) = (&self.cos[pos * half..][..half], &self.sin[pos * half..][..half]);
            for i in 0..half {
                let (x1, x2, si) = (row[i], row[i + half], sign * s[i]);
                row[i] = x1 * c[i] - x2 * si;
                row[i + half] = x2 * c[i] + x1 * si;
            }
        }
    }

    /// Softmax rows of c q~ k~^T under the mask: P (T, T), zero where masked.
    fn probabilities(&self, q: &[f32], k: &[f32], p: &mut [f32]) {
        let AttnDims { t, hd, .. } = self.dims;
        let c = 1.0 / (hd as f32).sqrt();
        mm(p, false, c, (t, t, hd), q, (hd, 1), k, (1, hd), ONE_THREAD);
        for i in 0..t {
            let row = &mut p[i * t..][..t];
            // The keys query i may see (j <= i, i - j < window: M above) are one run lo..=i. Only
            // the run is exponentiated and summed (at T = 256 about half the row); the masked
            // keys' terms are exact zeros, so leaving them out changes no sum or maximum. The
            // config refuses window 0, so the run holds at least key i.
            let lo = (i + 1).saturating_sub(self.dims.window);
            let (run, after) = row[lo..].split_at_mut(i + 1 - lo);
            let max = run.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
            run.iter_mut().for_each(|v| *v -= max);
            super::fastmath::exp_in_place(run);
            let inv = 1.0 / run.iter().sum::<f32>();
            run.iter_mut().for_each(|v| *v *= inv);
            after.fill(0.0);
            row[..lo].fill(0.0);
        }
    }

    fn check(&self, q: usize, k: usize, v: usize) -> Result<()> {
        let AttnDims { b, t, heads, kv_heads, hd, .. } = self.dims;
        if hd % 2 != 0 || kv_heads == 0 || heads % kv_heads != 0 {
            candle_core::bail!("fused-attention: bad dims {:?}", self.dims);
        }
        if q != b * t * heads * hd || k != b * t * kv_heads * hd || v != k || self.cos.len() != t * hd / 2 || self.sin.len() != self.cos.len() {
            candle_core::bail!("fused-attention: sizes q {q}, k {k}, v {v}, rotary {} do not match {:?}", self.cos.len(), self.dims);
        }
        Ok(())
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let (q, k, v) = (slice(self.name(), s1, l1)?, slice(self.name(), s2, l2)?, slice(self.name(), s3, l3)?);
        self.check(q.len(), k.len(), v.len())?;
        let AttnDims { b, t, heads, kv_heads, hd, .. } = self.dims;
        let rep = heads / kv_heads;
        // One task per (sequence, query head): O (T, hd).
        let outs: Vec<Vec<f32>> = (0..b * heads)
            .into_par_iter()
            .map(|task| {
                let (bi, h) = (task / heads, task % heads);
                let g = h / rep;
                let (mut qr, mut kr, mut vv) = (vec![0f32; t * hd], vec![0f32; t * hd], vec![0f32; t * hd]);
                self.gather(q, heads, bi, h, true, &mut qr);
                self.gather(k, kv_heads, bi, g, true, &mut kr);
                self.gather(v, kv_heads, bi, g, false, &mut vv);
                let mut p = vec![0f32; t * t];
                self.probabilities(&qr, &kr, &mut p);
                let mut o = vec![0f32; t * hd];
                mm(&mut o, false, 1.0, (t, hd, t), &p, (t, 1), &vv, (hd, 1), ONE_THREAD);
                o
            })
            .collect();
        let mut out = vec![0f32; b * t * heads * hd];
        for (task, o) in outs.iter().enumerate() {
            let (bi, h) = (task / heads, task % heads);
            for pos in 0..t {
                out[((bi * t + pos) * heads + h) * hd..][..hd].copy_from_slice(&o[pos * hd..][..hd]);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((b * t, heads * hd))))
    }

    fn bwd(&self, q: &Tensor, k: &Tensor, v: &Tensor, _res: &Tensor, d_out: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let AttnDims { b, t, heads, kv_heads, hd, .. } = self.dims;
        let rep = heads / kv_heads;
        let c = 1.0 / (hd as f32).sqrt();
        let name = self.name();
        // One task per (sequence, kv head): it owns dk and dv of that head, and dq of its `rep`
        // query heads.
        let parts: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = with_data(name, [q, k, v, d_out], |[q, k, v, dout]| {
            self.check(q.len(), k.len(), v.len())?;
            Ok((0..b * kv_heads)
                .into_par_iter()
                .map(|task| {
                    let (bi, g) = (task / kv_heads, task % kv_heads);
                    let (mut kr, mut vv) = (vec![0f32; t * hd], vec![0f32; t * hd]);
                    self.gather(k, kv_heads, bi, g, true, &mut kr);
                    self.gather(v, kv_heads, bi, g, false, &mut vv);
                    let (mut dkr, mut dv) = (vec![0f32; t * hd], vec![0f32; t * hd]);
                    let mut dq = vec![0f32; rep * t * hd];
                    let (mut qr, mut go) = (vec![0f32; t * hd], vec![0f32; t * hd]);
                    let (mut p, mut ds) = (vec![0f32; t * t], vec![0f32; t * t]);
                    for r in 0..rep {
                        let h = g * rep + r;
                        self.gather(q, heads, bi, h, true, &mut qr);
                        self.gather(dout, heads, bi, h, false, &mut go);
                        self.probabilities(&qr, &kr, &mut p);
                        let dqr = &mut dq[r * t * hd..][..t * hd];
                        // dP = dO V^T, then dS = c P (dP - D) in place.
                        mm(&mut ds, false, 1.0, (t, t, hd), &go, (hd, 1), &vv, (1, hd), ONE_THREAD);
                        for i in 0..t {
                            let (pr, dr) = (&p[i * t..][..t], &mut ds[i * t..][..t]);
                            let d_i = dot(pr, dr);
                            for (dij, pij) in dr.iter_mut().zip(pr) {
                                *dij = c * pij * (*dij - d_i);
                            }
                        }
                        mm(dqr, false, 1.0, (t, hd, t), &ds, (t, 1), &kr, (hd, 1), ONE_THREAD); // dq~ = dS k~
                        mm(&mut dkr, true, 1.0, (t, hd, t), &ds, (1, t), &qr, (hd, 1), ONE_THREAD); // dk~ += dS^T q~
                        mm(&mut dv, true, 1.0, (t, hd, t), &p, (1, t), &go, (hd, 1), ONE_THREAD); // dV += P^T dO
                        self.rotate(dqr, -1.0); // dq = R^T dq~
                    }
                    self.rotate(&mut dkr, -1.0); // dk = R^T dk~
                    (dq, dkr, dv)
                })
                .collect())
        })?;
        let mut dq = vec![0f32; b * t * heads * hd];
        let mut dk = vec![0f32; b * t * kv_heads * hd];
        let mut dv = vec![0f32; b * t * kv_heads * hd];
        for (task, (pq, pk, pv)) in parts.iter().enumerate() {
            let (bi, g) = (task / kv_heads, task % kv_heads);
            for pos in 0..t {
                let kv_at = ((bi * t + pos) * kv_heads + g) * hd;
                dk[kv_at..][..hd].copy_from_slice(&pk[pos * hd..][..hd]);
                dv[kv_at..][..hd].copy_from_slice(&pv[pos * hd..][..hd]);
                for r in 0..rep {
                    let q_at = ((bi * t + pos) * heads + g * rep + r) * hd;
                    dq[q_at..][..hd].copy_from_slice(&pq[(r * t + pos) * hd..][..hd]);
                }
            }
        }
        Ok((Some(tensor(dq, q.shape())?), Some(tensor(dk, k.shape())?), Some(tensor(dv, v.shape())?)))
    }
}

/// Causal attention with rotary embeddings on (B*T, H*hd) queries and (B*T, Hkv*hd) keys and
/// values; `cos`, `sin` are (T, hd/2) tables, `window` the sliding window (usize::MAX for none).
/// Returns (B*T, H*hd), ready for o_proj.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    b: usize,
    t: usize,
    heads: usize,
    kv_heads: usize,
    window: usize,
) -> Result<Tensor> {
    let hd = q.dim(candle_core::D::Minus1)? / heads.max(1);
    let op = Attention {
        dims: AttnDims { b, t, heads, kv_heads, hd, window },
        cos: cos.flatten_all()?.to_vec1::<f32>()?,
        sin: sin.flatten_all()?.to_vec1::<f32>()?,
    };
    q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{check_attention, check_rms_norm, compare, rotary};
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn rms_norm_matches_composed_ops() -> Result<()> {
        check_rms_norm(rms_norm)
    }

    #[test]
    fn silu_mul_matches_composed_ops() -> Result<()> {
        let dev = Device::Cpu;
        let g = (Tensor::randn(0f32, 1., (5, 7000), &dev)? * 4.0)?;
        let u = Tensor::randn(0f32, 1., (5, 7000), &dev)?;
        compare(&[g, u], |t| silu_mul(&t[0], &t[1]), |t| t[0].silu()? * &t[1], 1e-5)
    }

    #[test]
    fn attention_matches_composed_ops_with_grouped_heads_and_window() -> Result<()> {
        check_attention(|q, k, v, rot, _mask, s| attention(q, k, v, &rot.0, &rot.1, s.batch, s.seq, s.heads, s.kv_heads, s.window))
    }

    /// Central differences of a scalar read-out against the hand-written backward pass, in f32 on
    /// a small case (step 1e-2 on O(1) inputs: truncation ~1e-4, rounding ~1e-5 relative).
    #[test]
    fn attention_gradient_matches_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let (b, t, h, hkv, hd) = (1, 4, 2, 1, 4);
        let (cos, sin) = rotary(t, hd)?;
        let q = Tensor::randn(0f32, 1., (b * t, h * hd), &dev)?;
        let k = Tensor::randn(0f32, 1., (b * t, hkv * hd), &dev)?;
        let v = Tensor::randn(0f32, 1., (b * t, hkv * hd), &dev)?;
        let r = Tensor::randn(0f32, 1., (b * t, h * hd), &dev)?;
        let f = |q: &Tensor, k: &Tensor, v: &Tensor| -> Result<f32> {
            (attention(q, k, v, &cos, &sin, b, t, h, hkv, usize::MAX)? * &r)?.sum_all()?.to_scalar::<f32>()
        };
        let vars = [Var::from_tensor(&q)?, Var::from_tensor(&k)?, Var::from_tensor(&v)?];
        let grads =
            (attention(vars[0].as_tensor(), vars[1].as_tensor(), vars[2].as_tensor(), &cos, &sin, b, t, h, hkv, usize::MAX)? * &r)?.sum_all()?.backward()?;
        let eps = 1e-2f32;
        for (which, var) in vars.iter().enumerate() {
            let g = grads.get(var.as_tensor()).expect("gradient").flatten_all()?.to_vec1::<f32>()?;
            let base = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            for idx in 0..base.len() {
                let shifted = |d: f32| -> Result<Tensor> {
                    let mut x = base.clone();
                    x[idx] += d;
                    Tensor::from_vec(x, var.as_tensor().shape(), &dev)
                };
                let mut args = [q.clone(), k.clone(), v.clone()];
                args[which] = shifted(eps)?;
                let up = f(&args[0], &args[1], &args[2])?;
                args[which] = shifted(-eps)?;
                let down = f(&args[0], &args[1], &args[2])?;
                let fd = (up - down) / (2.0 * eps);
                assert!((fd - g[idx]).abs() < 2e-3 * (1.0 + fd.abs()), "input {which}[{idx}]: finite difference {fd}, backward {}", g[idx]);
            }
        }
        Ok(())
    }
}
