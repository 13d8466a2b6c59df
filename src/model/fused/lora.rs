//! A frozen projection and its LoRA adapter as one op of (x, A, B):
//!
//! ```text
//! y = x W^T + s (x_m A^T) B^T,    x_m = x ⊙ m  (m the dropout mask scaled by 1 / (1 - p), or 1)
//! ```
//!
//! with x (N, d_in), W (d_out, d_in) frozen, A (r, d_in), B (d_out, r), s = alpha / r.
//! Backward, with dy = dL/dy (N, d_out), u = x_m A^T (N, r) and g = dy B (N, r):
//!
//! ```text
//! dx = dy W + m ⊙ (s g A),    dA = s g^T x_m,    dB = s dy^T u.
//! ```
//!
//! Composed from candle ops the adapter is seven graph nodes (two transposes, two matmuls, the
//! scale, the sum with the frozen product and the frozen product itself), each a pass over an
//! (N, d_out) or (N, d_in) tensor forward and more backward, and gemm calls whose packing and
//! thread split cost more than the r = 8 columns of arithmetic. Here the rank-r work rides along
//! the frozen product's rows in one parallel pass each way (`perf` on the bench step: the
//! composed adapter took ~11 ms of a 0.19 s forward pass).
//!
//! Determinism: dA and dB are summed per chunk of `ROWS` rows and the chunks' partial sums added
//! in chunk order, so the result does not depend on the thread count or on work stealing.

use super::{dot, slice, tensor, with_data};
use crate::model::frozen::Frozen;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::{Arc, OnceLock};

/// Rows per parallel task and per partial sum of dA, dB.
const ROWS: usize = 32;

struct LoraLinear {
    frozen: Frozen,
    scale: f32,
    /// (N * d_in) dropout multipliers (0 or 1 / (1 - p)), or none.
    mask: Option<Arc<Vec<f32>>>,
    /// u = x_m A^T (N, r) from the forward pass, for dB in the backward pass(es) (as the composed
    /// ops keep their intermediate product): recomputing it read all of x again, one more pass
    /// over an (N, d_in) tensor per backward pass.
    u: OnceLock<Vec<f32>>,
}

/// The adapter's shapes, checked against the frozen matrix.
struct Dims {
    n: usize,
    d_in: usize,
    d_out: usize,
    r: usize,
}

impl LoraLinear {
    fn dims(&self, x: &Shape, a: &Shape, b: &Shape) -> Result<Dims> {
        let (d_out, d_in) = self.frozen.dims();
        let (r, a_in) = a.dims2()?;
        let (b_out, b_r) = b.dims2()?;
        if x.dims().last() != Some(&d_in) || a_in != d_in || b_out != d_out || b_r != r {
            candle_core::bail!("lora-linear: x {:?}, A {:?}, B {:?} do not fit a frozen {d_out} x {d_in}", x.dims(), a.dims(), b.dims());
        }
        let n = x.elem_count() / d_in.max(1);
        if self.mask.as_ref().is_some_and(|m| m.len() != n * d_in) {
            candle_core::bail!("lora-linear: dropout mask of the wrong size");
        }
        Ok(Dims { n, d_in, d_out, r })
    }

    fn out_shape(x: &Shape, d_out: usize) -> Shape {
        let mut dims = x.dims().to_vec();
        *dims.last_mut().expect("rank >= 1") = d_out;
        Shape::from(dims)
    }

    /// Row m of x_m: x's row, times the mask's row when there is one (into `buf`).
    fn masked_row<'a>(&self, x: &'a [f32], m: usize, d_in: usize, buf: &'a mut [f32]) -> &'a [f32] {
        let row = &x[m * d_in..][..d_in];
        match &self.mask {
            None => row,
            Some(mask) => {
                for ((o, xi), mi) in buf.iter_mut().zip(row).zip(&mask[m * d_in..][..d_in]) {
                    *o = xi * mi;
                }
                buf
            }
        }
    }
}

/// B^T (r, d_out) from B (d_out, r), each value times `c`.
fn transposed(b: &[f32], d_out: usize, r: usize, c: f32) -> Vec<f32> {
    let mut bt = vec![0f32; r * d_out];
    for o in 0..d_out {
        for j in 0..r {
            bt[j * d_out + o] = c * b[o * r + j];
        }
    }
    bt
}

/// dst += c src, elementwise.
#[inline]
fn axpy(dst: &mut [f32], c: f32, src: &[f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += c * s;
    }
}

/// The rank-r pieces, each one pass over a row of length d with the r rows of `m` (r x d) in
/// cache: AVX-512F where the packed kernels run (`f32pack::available`), plain loops elsewhere
/// (the portable build vectorises those with SSE2 only).
mod rank {
    use super::{axpy, dot};

    /// Rows `outer` adds at once.
    pub const GROUP: usize = 4;

    fn wide() -> bool {
        crate::model::f32pack::available()
    }

    /// out[j] = c (x . m[j]), j < r.
    pub fn dots(x: &[f32], m: &[f32], c: f32, out: &mut [f32]) {
        let d = x.len();
        #[cfg(target_arch = "x86_64")]
        if wide() {
            // SAFETY: AVX-512F checked; the slices bound every access (asserted inside).
            return unsafe { avx512::dots(x, m, c, out) };
        }
        for (j, o) in out.iter_mut().enumerate() {
            *o = c * dot(x, &m[j * d..][..d]);
        }
    }

    /// y += sum_j c[j] m[j].
    pub fn combine(y: &mut [f32], c: &[f32], m: &[f32]) {
        let d = y.len();
        #[cfg(target_arch = "x86_64")]
        if wide() {
            // SAFETY: as `dots`.
            return unsafe { avx512::combine(y, c, m) };
        }
        for (j, cj) in c.iter().enumerate() {
            axpy(y, *cj, &m[j * d..][..d]);
        }
    }

    /// m[j] += c_k[j] x_k for every j, for the rows k in order (up to [`GROUP`] of them; every x_k
    /// of one length, every c_k of length r). Row after row, as one `axpy` each would add them, but
    /// m's rows are loaded and stored once for the group instead of once a row (the load and store
    /// per multiply-add were most of the adapters' backward time in `perf`).
    pub fn outer(m: &mut [f32], c: &[&[f32]], x: &[&[f32]]) {
        assert!(c.len() == x.len() && c.len() <= GROUP, "outer: {} coefficient rows for {} input rows", c.len(), x.len());
        let Some(d) = x.first().map(|x| x.len()) else { return };
        let r = c[0].len();
        assert!(x.iter().all(|x| x.len() == d) && c.iter().all(|c| c.len() == r) && m.len() >= r * d);
        #[cfg(target_arch = "x86_64")]
        if wide() {
            // SAFETY: as `dots`.
            return unsafe { avx512::outer(m, c, x) };
        }
        for (ck, xk) in c.iter().zip(x) {
            for (j, cj) in ck.iter().enumerate() {
                axpy(&mut m[j * d..][..d], *cj, xk);
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    pub(super) mod avx512 {
        use std::arch::x86_64::*;

        /// Lanes i..i + 16 of d: all, or a mask for the tail.
        #[inline(always)]
        fn mask(i: usize, d: usize) -> __mmask16 {
            let left = d - i;
            if left >= 16 {
                u16::MAX
            } else {
                ((1u32 << left) - 1) as u16
            }
        }

        #[target_feature(enable = "avx512f")]
        pub unsafe fn dots(x: &[f32], m: &[f32], c: f32, out: &mut [f32]) {
            let (d, r) = (x.len(), out.len());
            assert!(m.len() >= r * d);
            for j0 in (0..r).step_by(8) {
                let js = (r - j0).min(8);
                let mut acc = [_mm512_setzero_ps(); 8];
                let mut i = 0;
                while i < d {
                    let k = mask(i, d);
                    let xv = _mm512_maskz_loadu_ps(k, x.as_ptr().add(i));
                    for (jj, a) in acc.iter_mut().enumerate().take(js) {
                        *a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, m.as_ptr().add((j0 + jj) * d + i)), xv, *a);
                    }
                    i += 16;
                }
                for jj in 0..js {
                    out[j0 + jj] = c * _mm512_reduce_add_ps(acc[jj]);
                }
            }
        }

        #[target_feature(enable = "avx512f")]
        pub unsafe fn combine(y: &mut [f32], c: &[f32], m: &[f32]) {
            let (d, r) = (y.len(), c.len());
            assert!(m.len() >= r * d);
            let mut i = 0;
            while i < d {
                let k = mask(i, d);
                let mut yv = _mm512_maskz_loadu_ps(k, y.as_ptr().add(i));
                for (j, cj) in c.iter().enumerate() {
                    yv = _mm512_fmadd_ps(_mm512_set1_ps(*cj), _mm512_maskz_loadu_ps(k, m.as_ptr().add(j * d + i)), yv);
                }
                _mm512_mask_storeu_ps(y.as_mut_ptr().add(i), k, yv);
                i += 16;
            }
        }

        /// As the plain `outer`: per 16 lanes of m's row j, one load, the rows' FMAs in row order, one store.
        #[target_feature(enable = "avx512f")]
        pub unsafe fn outer(m: &mut [f32], c: &[&[f32]], x: &[&[f32]]) {
            match c.len().min(x.len()) {
                0 => {}
                1 => outer_n::<1>(m, c, x),
                2 => outer_n::<2>(m, c, x),
                3 => outer_n::<3>(m, c, x),
                _ => outer_n::<4>(m, c, x),
            }
        }

        /// `outer` for exactly N rows (a constant, so that the rows' inputs and coefficients stay in registers).
        #[target_feature(enable = "avx512f")]
        unsafe fn outer_n<const N: usize>(m: &mut [f32], c: &[&[f32]], x: &[&[f32]]) {
            let (d, r) = (x[0].len(), c[0].len());
            assert!(c.len() >= N && x.len() >= N && m.len() >= r * d && (0..N).all(|k| x[k].len() == d && c[k].len() == r));
            let xp: [*const f32; N] = std::array::from_fn(|k| x[k].as_ptr());
            for j in 0..r {
                let cj: [__m512; N] = std::array::from_fn(|k| _mm512_set1_ps(*c[k].get_unchecked(j)));
                let row = m.as_mut_ptr().add(j * d);
                let mut i = 0;
                while i < d {
                    let k = mask(i, d);
                    let mut acc = _mm512_maskz_loadu_ps(k, row.add(i));
                    for n in 0..N {
                        acc = _mm512_fmadd_ps(cj[n], _mm512_maskz_loadu_ps(k, xp[n].add(i)), acc);
                    }
                    _mm512_mask_storeu_ps(row.add(i), k, acc);
                    i += 16;
                }
            }
        }
    }
}

impl CustomOp3 for LoraLinear {
    fn name(&self) -> &'static str {
        "fused-lora-linear"
    }

    fn cpu_fwd(&self, sx: &CpuStorage, lx: &Layout, sa: &CpuStorage, la: &Layout, sb: &CpuStorage, lb: &Layout) -> Result<(CpuStorage, Shape)> {
        let Dims { n, d_in, d_out, r } = self.dims(lx.shape(), la.shape(), lb.shape())?;
        let (x, a, b) = (slice(self.name(), sx, lx)?, slice(self.name(), sa, la)?, slice(self.name(), sb, lb)?);
        let mut y = self.frozen.forward_rows(x, n).map_err(candle_core::Error::wrap)?;
        // y[m] += sum_j u[m, j] (s B^T)[j], u[m, j] = x_m[m] . A[j]
        let sbt = transposed(b, d_out, r, self.scale);
        let mut u = vec![0f32; n * r];
        y.par_chunks_mut(ROWS * d_out).zip(u.par_chunks_mut(ROWS * r)).enumerate().for_each(|(c, (yc, uc))| {
            let mut buf = vec![0f32; if self.mask.is_some() { d_in } else { 0 }];
            for (k, (yr, ur)) in yc.chunks_exact_mut(d_out).zip(uc.chunks_exact_mut(r)).enumerate() {
                let xr = self.masked_row(x, c * ROWS + k, d_in, &mut buf);
                rank::dots(xr, a, 1.0, ur);
                rank::combine(yr, ur, &sbt);
            }
        });
        // An op runs forward once (a second set would be ignored, and the first is the right one).
        let _ = self.u.set(u);
        Ok((CpuStorage::F32(y), Self::out_shape(lx.shape(), d_out)))
    }

    fn bwd(&self, x: &Tensor, a: &Tensor, b: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Dims { n, d_in, d_out, r } = self.dims(x.shape(), a.shape(), b.shape())?;
        let s = self.scale;
        with_data(self.name(), [x, a, b, dy], |[xv, av, bv, dyv]| {
            let bt = transposed(bv, d_out, r, 1.0); // row j: B's column j
                                                    // dx = dy W (only if x is part of the graph: layer 0's input is not).
            let mut dx = if x.track_op() { Some(self.frozen.backward_rows(dyv, n).map_err(candle_core::Error::wrap)?) } else { None };
            let cached_u = self.u.get().filter(|u| u.len() == n * r);
            // Per chunk of rows: g and u, dx += m ⊙ (s g A), and the chunk's partial dA, dB^T, these
            // a group of rows at a time (`rank::outer`).
            let chunk = |c: usize, dxc: Option<&mut [f32]>| -> (Vec<f32>, Vec<f32>) {
                const G: usize = rank::GROUP;
                /// One group's rows (of x_m, dy, s g or s u).
                type Rows<'a> = [&'a [f32]; G];
                let (mut da, mut dbt) = (vec![0f32; r * d_in], vec![0f32; r * d_out]);
                let width = if self.mask.is_some() { d_in } else { 0 };
                // The group's rows of x_m (`masked_row`), and s g A before the mask goes on it.
                let (mut bufs, mut sga): ([Vec<f32>; G], Vec<f32>) = (std::array::from_fn(|_| vec![0f32; width]), vec![0f32; width]);
                let (mut sg, mut su) = (vec![0f32; G * r], vec![0f32; G * r]);
                let rows = (n - c * ROWS).min(ROWS);
                let mut dxc = dxc;
                for k0 in (0..rows).step_by(G) {
                    let (group, m0) = ((rows - k0).min(G), c * ROWS + k0);
                    let mut xs: Rows = [&[]; G];
                    for (k, buf) in bufs.iter_mut().take(group).enumerate() {
                        xs[k] = self.masked_row(xv, m0 + k, d_in, buf);
                    }
                    for (k, (sgk, suk)) in sg.chunks_exact_mut(r).zip(su.chunks_exact_mut(r)).enumerate().take(group) {
                        let m = m0 + k;
                        rank::dots(&dyv[m * d_out..][..d_out], &bt, s, sgk);
                        if let Some(dxc) = dxc.as_deref_mut() {
                            let dxr = &mut dxc[(k0 + k) * d_in..][..d_in];
                            match &self.mask {
                                None => rank::combine(dxr, sgk, av),
                                Some(mask) => {
                                    sga.fill(0.0);
                                    rank::combine(&mut sga, sgk, av);
                                    for ((d, v), mi) in dxr.iter_mut().zip(&sga).zip(&mask[m * d_in..][..d_in]) {
                                        *d += v * mi;
                                    }
                                }
                            }
                        }
                        match cached_u {
                            Some(u) => suk.iter_mut().zip(&u[m * r..][..r]).for_each(|(o, v)| *o = s * v),
                            None => rank::dots(xs[k], av, s, suk),
                        }
                    }
                    let (mut dys, mut sgs, mut sus): (Rows, Rows, Rows) = ([&[]; G], [&[]; G], [&[]; G]);
                    for k in 0..group {
                        (dys[k], sgs[k], sus[k]) = (&dyv[(m0 + k) * d_out..][..d_out], &sg[k * r..][..r], &su[k * r..][..r]);
                    }
                    rank::outer(&mut da, &sgs[..group], &xs[..group]);
                    rank::outer(&mut dbt, &sus[..group], &dys[..group]);
                }
                (da, dbt)
            };
            let chunks = n.div_ceil(ROWS);
            let parts: Vec<(Vec<f32>, Vec<f32>)> = match dx.as_mut() {
                Some(dx) => dx.par_chunks_mut(ROWS * d_in).enumerate().map(|(c, dxc)| chunk(c, Some(dxc))).collect(),
                None => (0..chunks).into_par_iter().map(|c| chunk(c, None)).collect(),
            };
            // The chunks' partial sums in chunk order; dB from dB^T.
            let (mut da, mut dbt) = (vec![0f32; r * d_in], vec![0f32; r * d_out]);
            for (pa, pb) in &parts {
                axpy(&mut da, 1.0, pa);
                axpy(&mut dbt, 1.0, pb);
            }
            let db = transposed(&dbt, r, d_out, 1.0);
            let dx = dx.map(|v| tensor(v, x.shape())).transpose()?;
            Ok((dx, Some(tensor(da, a.shape())?), Some(tensor(db, b.shape())?)))
        })
    }
}

/// y = x W^T + s ((x ⊙ mask) A^T) B^T for contiguous f32 CPU tensors (see the module docs); the
/// frozen W gets no gradient, x, A and B do.
pub fn lora_linear(x: &Tensor, frozen: &Frozen, a: &Tensor, b: &Tensor, scale: f64, mask: Option<Arc<Vec<f32>>>) -> Result<Tensor> {
    let op = LoraLinear { frozen: frozen.clone(), scale: scale as f32, mask, u: OnceLock::new() };
    x.contiguous()?.apply_op3_arc(&a.contiguous()?, &b.contiguous()?, Arc::new(Box::new(op)))
}

#[cfg(test)]
mod tests {
    use super::super::super::test_support::compare;
    use super::*;
    use candle_core::{Device, Var};

    /// The composed form, independent of the op: (x W^T) + s ((x ⊙ m) A^T) B^T through candle's
    /// matmuls and their autograd, W a constant (no gradient asked of it).
    fn composed(x: &Tensor, w: &Tensor, a: &Tensor, b: &Tensor, s: f64, mask: Option<&[f32]>) -> Result<Tensor> {
        let xin = match mask {
            Some(m) => (x * Tensor::from_slice(m, x.shape(), x.device())?)?,
            None => x.clone(),
        };
        x.matmul(&w.t()?)? + (xin.matmul(&a.t()?)?.matmul(&b.t()?)? * s)?
    }

    /// Every frozen storage the op serves on a CPU (f32 dense, packed where AVX-512F is), 70 rows
    /// (two full chunks and a tail), with and without a dropout mask: values and the gradients
    /// of x, A and B within 1e-5 of the composed form (f32, different summation orders).
    #[test]
    fn matches_composed_ops() -> Result<()> {
        let dev = Device::Cpu;
        let (n, d_in, d_out, r) = (70, 96, 40, 8);
        let w = Tensor::randn(0f32, 0.1, (d_out, d_in), &dev)?;
        let x = Tensor::randn(0f32, 1., (n, d_in), &dev)?;
        let a = Tensor::randn(0f32, 0.1, (r, d_in), &dev)?;
        let b = Tensor::randn(0f32, 0.1, (d_out, r), &dev)?;
        let mask: Vec<f32> = (0..n * d_in).map(|i| if (i * 7919) % 10 < 2 { 0.0 } else { 1.25 }).collect();
        let mut storages = vec![Frozen::Dense(w.clone())];
        if crate::model::f32pack::available() {
            storages.push(Frozen::F32Packed(Arc::new(crate::model::f32pack::PackedF32::pack(&w.flatten_all()?.to_vec1()?, d_out, d_in))));
        }
        for frozen in &storages {
            for m in [None, Some(&mask)] {
                let arc = m.map(|m| Arc::new(m.clone()));
                compare(
                    &[x.clone(), a.clone(), b.clone()],
                    |t| lora_linear(&t[0], frozen, &t[1], &t[2], 2.0, arc.clone()),
                    |t| composed(&t[0], &w, &t[1], &t[2], 2.0, m.map(|m| m.as_slice())),
                    1e-5,
                )?;
            }
        }
        Ok(())
    }

    /// An input outside the graph (layer 0's) gets no gradient and A, B still do; the result
    /// does not depend on the thread count (partial sums in chunk order).
    #[test]
    fn untracked_input_and_thread_count() -> Result<()> {
        let dev = Device::Cpu;
        let (n, d_in, d_out, r) = (100, 64, 48, 4);
        let w = Frozen::Dense(Tensor::randn(0f32, 0.1, (d_out, d_in), &dev)?);
        let x = Tensor::randn(0f32, 1., (n, d_in), &dev)?;
        let (a, b) = (Var::randn(0f32, 0.1, (r, d_in), &dev)?, Var::randn(0f32, 0.1, (d_out, r), &dev)?);
        let readout = Tensor::randn(0f32, 1., (n, d_out), &dev)?;
        let grads = |threads: usize| -> Result<(Vec<f32>, Vec<f32>, bool)> {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
            pool.install(|| {
                let y = lora_linear(&x, &w, a.as_tensor(), b.as_tensor(), 2.0, None)?;
                let g = (y * &readout)?.sum_all()?.backward()?;
                let da = g.get(a.as_tensor()).expect("dA").flatten_all()?.to_vec1()?;
                let db = g.get(b.as_tensor()).expect("dB").flatten_all()?.to_vec1()?;
                Ok((da, db, g.get(&x).is_some()))
            })
        };
        let (one, four) = (grads(1)?, grads(4)?);
        assert!(!one.2, "x is not part of the graph");
        assert_eq!((one.0, one.1), (four.0, four.1), "bitwise the same on 1 and 4 threads");
        Ok(())
    }

    /// The AVX-512 pieces against the plain loops (the portable path), lengths with and
    /// without a tail, r from 1 to 11 (one and two groups of eight accumulators).
    #[test]
    fn rank_pieces_match_plain_loops() {
        #[cfg(target_arch = "x86_64")]
        if crate::model::f32pack::available() {
            for (d, r) in [(16, 1), (40, 8), (96, 11), (5, 3)] {
                let x: Vec<f32> = (0..d).map(|i| ((i * 37 % 11) as f32 - 5.0) / 3.0).collect();
                let m: Vec<f32> = (0..r * d).map(|i| ((i * 53 % 17) as f32 - 8.0) / 7.0).collect();
                let c: Vec<f32> = (0..r).map(|j| j as f32 - 2.5).collect();
                let (mut w, mut p) = (vec![0f32; r], vec![0f32; r]);
                // SAFETY: AVX-512F checked above.
                unsafe { rank::avx512::dots(&x, &m, 0.5, &mut w) };
                for j in 0..r {
                    p[j] = 0.5 * super::dot(&x, &m[j * d..][..d]);
                }
                let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| (a - b).abs() <= 1e-5 * (1.0 + b.abs()));
                assert!(close(&w, &p), "dots d {d} r {r}: {w:?} vs {p:?}");
                let (mut yw, mut yp) = (x.clone(), x.clone());
                unsafe { rank::avx512::combine(&mut yw, &c, &m) };
                (0..r).for_each(|j| super::axpy(&mut yp, c[j], &m[j * d..][..d]));
                assert!(close(&yw, &yp), "combine d {d} r {r}");
                // Groups of 1 to 4 rows: each row's coefficients and input differ.
                for rows in 1..=rank::GROUP {
                    let cs: Vec<Vec<f32>> = (0..rows).map(|k| c.iter().map(|v| v * (k as f32 + 1.0) - k as f32).collect()).collect();
                    let xs: Vec<Vec<f32>> = (0..rows).map(|k| x.iter().rev().map(|v| v + k as f32 / 4.0).collect()).collect();
                    let (cr, xr): (Vec<&[f32]>, Vec<&[f32]>) = cs.iter().map(|v| v.as_slice()).zip(xs.iter().map(|v| v.as_slice())).unzip();
                    let (mut mw, mut mp) = (m.clone(), m.clone());
                    unsafe { rank::avx512::outer(&mut mw, &cr, &xr) };
                    for k in 0..rows {
                        (0..r).for_each(|j| super::axpy(&mut mp[j * d..][..d], cs[k][j], &xs[k]));
                    }
                    assert!(close(&mw, &mp), "outer d {d} r {r} rows {rows}");
                }
            }
        }
    }
}
