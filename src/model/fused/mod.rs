//! Fused CPU kernels with hand-written backward passes for the decoder's non-matmul work.
//!
//! Composed from candle ops, one RMSNorm is six elementwise passes forward and more backward, the
//! attention core (rotary, q k^T, mask, softmax, p v) a dozen, each allocating a tensor and each a
//! node of the backward graph. `perf` on the LoRA step put those passes, their allocations and page
//! faults, and candle's per-op thread barrier at about half of the step once the matmuls ran on
//! AVX-512. Here each block is one op: one pass forward, one pass backward, parallel over rows or
//! heads. `ops.rs` dispatches here on the CPU for f32 (and to `fast.rs` on a GPU); the tests at the bottom check values and gradients against those composed forms.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Storage, Tensor};
use std::mem::MaybeUninit;

mod attention;
mod lora;
mod mlp;
pub use attention::attention;
pub use lora::lora_linear;
pub use mlp::swiglu_mlp;
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

/// An output buffer of n floats that its kernel writes in full: not zeroed first. Zeroing is a
/// serial pass over the buffer inside the allocation (calloc's memset, one thread while the other
/// waits): 2% of a 4 x 64 step's CPU time for the gate, the norms and the attention together.
fn uninit(n: usize) -> Vec<MaybeUninit<f32>> {
    let mut v = Vec::with_capacity(n);
    // SAFETY: MaybeUninit needs no initialisation; the capacity is n.
    unsafe { v.set_len(n) };
    v
}

/// The floats of a buffer from [`uninit`].
///
/// # Safety
/// Every element must have been written.
unsafe fn assume_init(v: Vec<MaybeUninit<f32>>) -> Vec<f32> {
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: MaybeUninit<f32> has f32's size and alignment; the caller says all are initialised.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr() as *mut f32, v.len(), v.capacity()) }
}

/// Sum of a[i] b[i] with 16 independent partial sums, so that the compiler can keep them in one
/// AVX-512 register (a single running f32 sum cannot be reordered, hence not vectorised).
#[inline(always)]
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

/// 1 / sqrt(mean(x^2) + eps) of one row.
#[inline(always)]
fn inv_rms(row: &[f32], eps: f32) -> f32 {
    let ms = dot(row, row) / row.len() as f32;
    1.0 / (ms + eps).sqrt()
}

/// Rows of y = x r w (x, y: whole rows of w's length; every element of y written).
#[inline(always)]
fn rms_rows(w: &[f32], eps: f32, x: &[f32], y: &mut [MaybeUninit<f32>]) {
    let d = w.len();
    for (yr, xr) in y.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
        let r = inv_rms(xr, eps);
        for ((yi, xi), wi) in yr.iter_mut().zip(xr).zip(w) {
            yi.write(xi * r * wi);
        }
    }
}

/// Rows of dx = r u - x r^3 (x . u) / d, u = g w; `u` a scratch row.
#[inline(always)]
fn rms_rows_grad(w: &[f32], eps: f32, x: &[f32], g: &[f32], dx: &mut [MaybeUninit<f32>], u: &mut [f32]) {
    let d = w.len();
    for ((dr, xr), gr) in dx.chunks_exact_mut(d).zip(x.chunks_exact(d)).zip(g.chunks_exact(d)) {
        let r = inv_rms(xr, eps);
        for ((ui, gi), wi) in u.iter_mut().zip(gr).zip(w) {
            *ui = gi * wi;
        }
        let k = r * r * r * dot(xr, u) / d as f32;
        for ((di, ui), xi) in dr.iter_mut().zip(u.iter()).zip(xr) {
            di.write(r * ui - k * xi);
        }
    }
}

/// The row loops compiled for the widest vector path `isa` allows (the portable build's own
/// is SSE2), as `fastmath` does; the same operations in the same order on every path.
mod wide {
    use std::mem::MaybeUninit;

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn rms_avx512(w: &[f32], eps: f32, x: &[f32], y: &mut [MaybeUninit<f32>]) {
        super::rms_rows(w, eps, x, y)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rms_avx2(w: &[f32], eps: f32, x: &[f32], y: &mut [MaybeUninit<f32>]) {
        super::rms_rows(w, eps, x, y)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn rms_grad_avx512(w: &[f32], eps: f32, x: &[f32], g: &[f32], dx: &mut [MaybeUninit<f32>], u: &mut [f32]) {
        super::rms_rows_grad(w, eps, x, g, dx, u)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rms_grad_avx2(w: &[f32], eps: f32, x: &[f32], g: &[f32], dx: &mut [MaybeUninit<f32>], u: &mut [f32]) {
        super::rms_rows_grad(w, eps, x, g, dx, u)
    }

    pub fn rms(w: &[f32], eps: f32, x: &[f32], y: &mut [MaybeUninit<f32>]) {
        #[cfg(target_arch = "x86_64")]
        match crate::model::isa::f32_path() {
            // SAFETY: the path says the CPU has these features.
            "avx512" => return unsafe { rms_avx512(w, eps, x, y) },
            "avx2" => return unsafe { rms_avx2(w, eps, x, y) },
            _ => {}
        }
        super::rms_rows(w, eps, x, y)
    }

    pub fn rms_grad(w: &[f32], eps: f32, x: &[f32], g: &[f32], dx: &mut [MaybeUninit<f32>], u: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        match crate::model::isa::f32_path() {
            // SAFETY: as `rms`.
            "avx512" => return unsafe { rms_grad_avx512(w, eps, x, g, dx, u) },
            "avx2" => return unsafe { rms_grad_avx2(w, eps, x, g, dx, u) },
            _ => {}
        }
        super::rms_rows_grad(w, eps, x, g, dx, u)
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
        let mut y = uninit(x.len());
        let c = row_chunk(d) * d;
        y.par_chunks_mut(c).zip(x.par_chunks(c)).for_each(|(yc, xc)| wide::rms(&self.weight, self.eps, xc, yc));
        // SAFETY: the chunks cover y and rms_rows writes whole rows.
        Ok((CpuStorage::F32(unsafe { assume_init(y) }), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let d = self.weight.len();
        let dx = with_data(self.name(), [arg, grad], |[x, g]| {
            if x.len() != g.len() || x.len() % d != 0 {
                candle_core::bail!("fused-rms-norm: gradient of {} values for an input of {} (rows of {d})", g.len(), x.len());
            }
            let mut dx = uninit(x.len());
            let c = row_chunk(d) * d;
            dx.par_chunks_mut(c).zip(x.par_chunks(c)).zip(g.par_chunks(c)).for_each(|((dc, xc), gc)| {
                wide::rms_grad(&self.weight, self.eps, xc, gc, dc, &mut vec![0f32; d]);
            });
            // SAFETY: as in the forward pass.
            Ok(unsafe { assume_init(dx) })
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
        let mut y = uninit(g.len());
        const C: usize = 16384;
        y.par_chunks_mut(C).zip(g.par_chunks(C)).zip(u.par_chunks(C)).for_each(|((yc, gc), uc)| super::fastmath::silu_mul_into(gc, uc, yc));
        // SAFETY: the chunks cover y and silu_mul_into writes every element.
        Ok((CpuStorage::F32(unsafe { assume_init(y) }), l1.shape().clone()))
    }

    fn bwd(&self, g: &Tensor, u: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let n = g.elem_count();
        let (mut dg, mut du) = (uninit(n), uninit(n));
        with_data(self.name(), [g, u, dy], |[g, u, dy]| {
            if g.len() != n || u.len() != n || dy.len() != n {
                candle_core::bail!("fused-silu-mul: gradient of {} values for inputs of {} and {}", dy.len(), g.len(), u.len());
            }
            const C: usize = 16384;
            dg.par_chunks_mut(C)
                .zip(du.par_chunks_mut(C))
                .zip(g.par_chunks(C).zip(u.par_chunks(C)).zip(dy.par_chunks(C)))
                .for_each(|((dgc, duc), ((gc, uc), yc))| super::fastmath::silu_mul_grad(gc, uc, yc, dgc, duc));
            Ok(())
        })?;
        // SAFETY: the chunks of n equal-length slices cover dg and du, and silu_mul_grad writes
        // every element.
        let (dg, du) = unsafe { (assume_init(dg), assume_init(du)) };
        Ok((Some(tensor(dg, g.shape())?), Some(tensor(du, u.shape())?)))
    }
}

/// silu(g) * u for contiguous f32 CPU tensors of one shape.
pub fn silu_mul(g: &Tensor, u: &Tensor) -> Result<Tensor> {
    g.contiguous()?.apply_op2(&u.contiguous()?, SiluMul)
}

// ---------------------------------------------------------------------------------------------
// Residual sum: y = a + b; backward: da = db = dy.
// ---------------------------------------------------------------------------------------------

struct Add;

impl CustomOp2 for Add {
    fn name(&self) -> &'static str {
        "fused-add"
    }

    /// On rayon's pool, where the neighbouring kernels run: candle's own add splits its work over
    /// a barrier pool of its own threads, and on 2 cores handing the cores from one pool to the
    /// other and back cost about as much as the add.
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (a, b) = (slice(self.name(), s1, l1)?, slice(self.name(), s2, l2)?);
        if l1.shape() != l2.shape() {
            candle_core::bail!("fused-add: shapes {:?} and {:?} differ", l1.shape(), l2.shape());
        }
        let mut y = uninit(a.len());
        const C: usize = 16384;
        y.par_chunks_mut(C).zip(a.par_chunks(C)).zip(b.par_chunks(C)).for_each(|((yc, ac), bc)| {
            for ((yi, ai), bi) in yc.iter_mut().zip(ac).zip(bc) {
                yi.write(ai + bi);
            }
        });
        // SAFETY: the chunks of three equal-length slices cover y; each element is written.
        Ok((CpuStorage::F32(unsafe { assume_init(y) }), l1.shape().clone()))
    }

    fn bwd(&self, _a: &Tensor, _b: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(dy.clone()), Some(dy.clone())))
    }
}

/// a + b for contiguous f32 CPU tensors of one shape.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.contiguous()?.apply_op2(&b.contiguous()?, Add)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{check_rms_norm, compare};
    use super::*;
    use candle_core::Device;

    #[test]
    fn rms_norm_matches_composed_ops() -> Result<()> {
        check_rms_norm(rms_norm)
    }

    #[test]
    fn add_matches_composed_ops() -> Result<()> {
        let dev = Device::Cpu;
        let a = Tensor::randn(0f32, 1., (5, 7000), &dev)?;
        let b = Tensor::randn(0f32, 1., (5, 7000), &dev)?;
        compare(&[a, b], |t| add(&t[0], &t[1]), |t| &t[0] + &t[1], 1e-6)
    }

    #[test]
    fn silu_mul_matches_composed_ops() -> Result<()> {
        let dev = Device::Cpu;
        let g = (Tensor::randn(0f32, 1., (5, 7000), &dev)? * 4.0)?;
        let u = Tensor::randn(0f32, 1., (5, 7000), &dev)?;
        compare(&[g, u], |t| silu_mul(&t[0], &t[1]), |t| t[0].silu()? * &t[1], 1e-5)
    }
}
