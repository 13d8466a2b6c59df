//! Causal self-attention core with rotary embeddings and grouped KV heads, in the projections'
//! own layout: q (B*T, H*hd), k and v (B*T, Hkv*hd), output (B*T, H*hd). For query head h (kv head
//! g = h / (H / Hkv)) of sequence b:
//!   q~ = R_t q_t, k~ = R_t k_t (rotate-half rotary, angle table per position t),
//!   S = c q~ k~^T + M (c = hd^-1/2, M = 0 where key j <= query i within the window, else -inf),
//!   P = softmax_rows(S), O = P V.
//! Backward (dO given), with D_i = sum_j P_ij dP_ij:
//!   dP = dO V^T, dS = P (dP - D), dq~ = c dS k~, dk~ += c dS^T q~, dV += P^T dO,
//!   dq = R_t^T dq~, dk = R_t^T dk~   (R_t orthogonal: its transpose is the rotation by -angle).
//! P is kept from the forward pass for the backward pass(es) when it is small ([`KEEP_BYTES`]:
//! short prompts, where recomputing q k^T and the softmax was ~1% of a 4 x 64 step), and recomputed
//! there otherwise (its size grows as T^2: 5 MiB a layer at 4 x 256 tokens).
//!
//! # Only the visible part of S
//! M is -inf above the diagonal (and before the window), so P there is exactly zero and every
//! product with P or dS there adds zeros. The queries are cut into tiles of [`QUERY_TILE`] rows;
//! tile i0..i1 is scored only against keys lo..i1 (lo = the first key its first query may see),
//! so q k^T, P V, dO V^T, dS k, dS^T q and P^T dO cost (T^2 + T Q) / 2 multiply-adds per head
//! instead of T^2 (Q the tile: at T = 256, Q = 32, 56%; with a window w << T about T (w + Q)).
//! Inside a tile the keys a query may not see are stored as zeros, as before.

use super::{assume_init, mm, slice, tensor, uninit, with_data, ONE_THREAD};
use crate::model::SendPtr;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Query rows a tile. Smaller tiles skip more of the masked triangle (the tile's own square is
/// half masked) but give gemm thinner products; 16, 32 and 64 measured within noise of each
/// other at 256 tokens, all faster than one tile (README).
const QUERY_TILE: usize = 32;

/// The most bytes of P (every sequence's and head's score buffers) an op keeps for its backward
/// pass: 4 x 64 tokens of the default model keep 0.4 MiB a layer, 4 x 128 1.4 MiB, 4 x 256 (5.3 MiB) recompute.
const KEEP_BYTES: usize = 2 << 20;

#[derive(Clone, Copy, Debug)]
struct AttnDims {
    b: usize,
    t: usize,
    heads: usize,
    kv_heads: usize,
    hd: usize,
    window: usize,
}

/// Query rows i0..i1 against keys lo..i1: a row-major (i1 - i0) x (i1 - lo) block of S (or P,
/// dP, dS) at offset `at` of a head's score buffer.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Tile {
    i0: usize,
    i1: usize,
    lo: usize,
    at: usize,
}

impl Tile {
    fn rows(&self) -> usize {
        self.i1 - self.i0
    }
    fn keys(&self) -> usize {
        self.i1 - self.lo
    }
}

/// The tiles of T queries (`size` rows each, the last one shorter) and the length of the score
/// buffer that holds them all.
fn tiles(t: usize, window: usize, size: usize) -> (Vec<Tile>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    let mut i0 = 0;
    while i0 < t {
        let i1 = (i0 + size.max(1)).min(t);
        let lo = (i0 + 1).saturating_sub(window);
        let tile = Tile { i0, i1, lo, at };
        at += tile.rows() * tile.keys();
        out.push(tile);
        i0 = i1;
    }
    (out, at)
}

struct Attention {
    dims: AttnDims,
    /// cos and sin of the rotary angles: (t, hd / 2) each, row-major.
    cos: Vec<f32>,
    sin: Vec<f32>,
    tiles: Vec<Tile>,
    /// Floats of one head's score buffer (all tiles).
    scores: usize,
    /// Whether the forward pass keeps P in `kept` (its size within the limit it was given).
    keep: bool,
    /// P of every (sequence, head), [(b * heads + h) * scores ..][..scores], from the forward pass.
    kept: std::sync::OnceLock<Vec<f32>>,
}

impl Attention {
    fn new(dims: AttnDims, cos: Vec<f32>, sin: Vec<f32>, tile: usize, keep_bytes: usize) -> Self {
        let (tiles, scores) = tiles(dims.t, dims.window, tile);
        let keep = dims.b * dims.heads * scores * std::mem::size_of::<f32>() <= keep_bytes;
        Attention { dims, cos, sin, tiles, scores, keep, kept: std::sync::OnceLock::new() }
    }

    /// Rows t = 0..T of sequence b, head `head`, of a (B*T, n_heads*hd) buffer into `out` (T, hd),
    /// rotated by each position's rotary angle (q and k; V and dO are read in place).
    fn gather_rotated(&self, src: &[f32], n_heads: usize, b: usize, head: usize, out: &mut [f32]) {
        let AttnDims { t, hd, .. } = self.dims;
        let first = (b * t * n_heads + head) * hd;
        assert!(src.len() >= first + (t - 1) * n_heads * hd + hd && out.len() >= t * hd);
        rows::gather_rotated(src, first, n_heads * hd, (t, hd), (&self.cos, &self.sin), out);
    }

    /// The inverse of `gather_rotated`: `src` (T, hd) into rows t = 0..T of sequence b, head `head`, of the
    /// (B*T, n_heads*hd) buffer at `dst`, rotated back (R^T) if `rotate`.
    ///
    /// # Safety
    /// `dst` must hold B*T*n_heads*hd floats, and no other thread may write these rows' hd-wide
    /// slots of `head` at the same time.
    unsafe fn scatter(&self, src: &[f32], dst: &SendPtr, n_heads: usize, b: usize, head: usize, rotate: bool) {
        let AttnDims { t, hd, .. } = self.dims;
        let first = (b * t * n_heads + head) * hd;
        assert!(src.len() >= t * hd);
        // SAFETY: passed on from the caller.
        unsafe { rows::scatter(src, dst.0, first, n_heads * hd, (t, hd), rotate.then_some((&self.cos, &self.sin))) }
    }

    /// Softmax rows of c q~ k~^T under the mask, tile by tile into `p` (`scores` floats); the
    /// keys of a tile that a query may not see are zero.
    fn probabilities(&self, q: &[f32], k: &[f32], p: &mut [f32]) {
        let hd = self.dims.hd;
        let c = 1.0 / (hd as f32).sqrt();
        for tl in &self.tiles {
            let nk = tl.keys();
            let pt = &mut p[tl.at..][..tl.rows() * nk];
            mm(pt, false, c, (tl.rows(), nk, hd), &q[tl.i0 * hd..], (hd, 1), &k[tl.lo * hd..], (1, hd), ONE_THREAD);
            for i in tl.i0..tl.i1 {
                let row = &mut pt[(i - tl.i0) * nk..][..nk];
                // The keys query i may see (j <= i, i - j < window: M above) are one run lo..=i
                // (the config refuses window 0, so the run holds at least key i). Only the run
                // is exponentiated and summed; the masked keys' terms are exact zeros, so leaving
                // them out changes no sum or maximum.
                let lo = (i + 1).saturating_sub(self.dims.window);
                let (before, rest) = row.split_at_mut(lo - tl.lo);
                let (run, after) = rest.split_at_mut(i + 1 - lo);
                super::super::fastmath::softmax_in_place(run);
                before.fill(0.0);
                after.fill(0.0);
            }
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
        // One task per (sequence, kv head), as in the backward pass: k~ rotated once for its `rep`
        // query heads; each head's O (T, hd) written straight into its slots of the output (no
        // serial copy after the parallel part).
        let mut out = uninit(b * t * heads * hd);
        let dst = SendPtr(out.as_mut_ptr() as *mut f32);
        // P of task (bi, g)'s query heads: the `rep` score buffers from (bi * heads + g * rep) * scores.
        let mut kept = if self.keep { uninit(b * heads * self.scores) } else { Vec::new() };
        let kept_at = SendPtr(kept.as_mut_ptr() as *mut f32);
        (0..b * kv_heads).into_par_iter().for_each(|task| {
            let (bi, g) = (task / kv_heads, task % kv_heads);
            let kept_at = &kept_at;
            let (mut qr, mut kr) = (vec![0f32; t * hd], vec![0f32; t * hd]);
            self.gather_rotated(k, kv_heads, bi, g, &mut kr);
            // V is read in place (rows kv_heads * hd apart): only q and k need rotating.
            let (vv, vs) = (&v[(bi * t * kv_heads + g) * hd..], kv_heads * hd);
            let mut own = if self.keep { Vec::new() } else { vec![0f32; self.scores] };
            for h in g * rep..(g + 1) * rep {
                self.gather_rotated(q, heads, bi, h, &mut qr);
                let p: &mut [f32] = if self.keep {
                    // SAFETY: `kept` holds B*H score buffers; this task alone writes the buffers of
                    // its query heads in sequence bi, and `probabilities` writes all of each.
                    unsafe { std::slice::from_raw_parts_mut(kept_at.0.add((bi * heads + h) * self.scores), self.scores) }
                } else {
                    &mut own
                };
                self.probabilities(&qr, &kr, p);
                // O = P V tile by tile into qr's buffer (q~ is not needed any more).
                let o = &mut qr;
                for tl in &self.tiles {
                    let pt = &p[tl.at..][..tl.rows() * tl.keys()];
                    mm(&mut o[tl.i0 * hd..], false, 1.0, (tl.rows(), hd, tl.keys()), pt, (tl.keys(), 1), &vv[tl.lo * vs..], (vs, 1), ONE_THREAD);
                }
                // SAFETY: `out` holds B*T*H*hd floats; task (bi, g) alone writes the slots of its
                // query heads in sequence bi.
                unsafe { self.scatter(o, &dst, heads, bi, h, false) };
            }
        });
        if self.keep {
            // SAFETY: every (sequence, head)'s score buffer was written in full (`probabilities`).
            // An op runs forward once (a second set would be ignored, and the first is the right one).
            let _ = self.kept.set(unsafe { assume_init(kept) });
        }
        // SAFETY: the tasks cover every (sequence, kv head) and so every query head, each writing
        // all T rows of its slots.
        Ok((CpuStorage::F32(unsafe { assume_init(out) }), Shape::from((b * t, heads * hd))))
    }

    fn bwd(&self, q: &Tensor, k: &Tensor, v: &Tensor, _res: &Tensor, d_out: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let AttnDims { b, t, heads, kv_heads, hd, .. } = self.dims;
        let rep = heads / kv_heads;
        let c = 1.0 / (hd as f32).sqrt();
        let name = self.name();
        let (mut dq, mut dk, mut dv) = (uninit(b * t * heads * hd), uninit(b * t * kv_heads * hd), uninit(b * t * kv_heads * hd));
        let (dq_at, dk_at, dv_at) = (SendPtr(dq.as_mut_ptr() as *mut f32), SendPtr(dk.as_mut_ptr() as *mut f32), SendPtr(dv.as_mut_ptr() as *mut f32));
        // One task per (sequence, kv head): it owns dk and dv of that head, and dq of its `rep`
        // query heads, and writes them into their slots of the outputs itself.
        with_data(name, [q, k, v, d_out], |[q, k, v, dout]| {
            self.check(q.len(), k.len(), v.len())?;
            if dout.len() != q.len() {
                candle_core::bail!("fused-attention: output gradient of {} values for {} queries", dout.len(), q.len());
            }
            let kept = self.kept.get().filter(|p| p.len() == b * heads * self.scores);
            (0..b * kv_heads).into_par_iter().for_each(|task| {
                let (bi, g) = (task / kv_heads, task % kv_heads);
                let mut kr = vec![0f32; t * hd];
                self.gather_rotated(k, kv_heads, bi, g, &mut kr);
                // V and dO are read in place (rows kv_heads * hd and heads * hd apart).
                let (vv, vs, os) = (&v[(bi * t * kv_heads + g) * hd..], kv_heads * hd, heads * hd);
                let (mut dkr, mut dvv, mut dqr) = (vec![0f32; t * hd], vec![0f32; t * hd], vec![0f32; t * hd]);
                let mut qr = vec![0f32; t * hd];
                let (mut own, mut ds) = (vec![0f32; if kept.is_some() { 0 } else { self.scores }], vec![0f32; self.scores]);
                for r in 0..rep {
                    let h = g * rep + r;
                    self.gather_rotated(q, heads, bi, h, &mut qr);
                    let go = &dout[(bi * t * heads + h) * hd..];
                    let p: &[f32] = match kept {
                        Some(all) => &all[(bi * heads + h) * self.scores..][..self.scores],
                        None => {
                            self.probabilities(&qr, &kr, &mut own);
                            &own
                        }
                    };
                    for tl in &self.tiles {
                        let (m, nk) = (tl.rows(), tl.keys());
                        let (pt, dst) = (&p[tl.at..][..m * nk], &mut ds[tl.at..][..m * nk]);
                        let (q_t, go_t) = (&qr[tl.i0 * hd..], &go[tl.i0 * os..]);
                        // dP = dO V^T, then dS = c P (dP - D) in place.
                        mm(dst, false, 1.0, (m, nk, hd), go_t, (os, 1), &vv[tl.lo * vs..], (1, vs), ONE_THREAD);
                        rows::softmax_grad(pt, dst, nk, c);
                        mm(&mut dqr[tl.i0 * hd..], false, 1.0, (m, hd, nk), dst, (nk, 1), &kr[tl.lo * hd..], (hd, 1), ONE_THREAD); // dq~ = dS k~
                        mm(&mut dkr[tl.lo * hd..], true, 1.0, (nk, hd, m), dst, (1, nk), q_t, (hd, 1), ONE_THREAD); // dk~ += dS^T q~
                        mm(&mut dvv[tl.lo * hd..], true, 1.0, (nk, hd, m), pt, (1, nk), go_t, (os, 1), ONE_THREAD);
                        // dV += P^T dO
                    }
                    // SAFETY: the outputs hold B*T*H*hd and B*T*Hkv*hd floats; task (bi, g)
                    // alone writes the slots of kv head g and of its query heads in sequence bi.
                    unsafe { self.scatter(&dqr, &dq_at, heads, bi, h, true) }; // dq = R^T dq~
                }
                // SAFETY: as above.
                unsafe {
                    self.scatter(&dkr, &dk_at, kv_heads, bi, g, true); // dk = R^T dk~
                    self.scatter(&dvv, &dv_at, kv_heads, bi, g, false);
                }
            });
            Ok(())
        })?;
        // SAFETY: the tasks cover every (sequence, kv head) and so every query head (h = g rep + r),
        // each writing all T rows of its slots.
        let (dq, dk, dv) = unsafe { (assume_init(dq), assume_init(dk), assume_init(dv)) };
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
    attention_tiled(q, k, v, cos, sin, (b, t, heads, kv_heads, window), QUERY_TILE, KEEP_BYTES)
}

/// [`attention`] with query tiles of `tile` rows (the tests run many tiles on short sequences) and
/// P kept for the backward pass up to `keep_bytes` (0: always recomputed).
#[allow(clippy::too_many_arguments)]
fn attention_tiled(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    (b, t, heads, kv_heads, window): (usize, usize, usize, usize, usize),
    tile: usize,
    keep_bytes: usize,
) -> Result<Tensor> {
    let hd = q.dim(candle_core::D::Minus1)? / heads.max(1);
    let op = Attention::new(
        AttnDims { b, t, heads, kv_heads, hd, window },
        cos.flatten_all()?.to_vec1::<f32>()?,
        sin.flatten_all()?.to_vec1::<f32>()?,
        tile,
        keep_bytes,
    );
    q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

/// Copying a head's rows between the projections' (B*T, heads*hd) layout and a (T, hd) buffer,
/// rotating on the way in (q, k) and, where asked, back on the way out (rotate half: pairs
/// (i, i + hd/2) turned by the position's angle, or back by its negative), compiled for the widest
/// vector path as `fused::wide` is: the portable build's loop was SSE2, and the copy and the
/// rotation were two passes.
mod rows {
    /// (cos, sin) tables, (T, hd/2) each: rotate on the way out, or (None) copy.
    type Angles<'a> = Option<(&'a [f32], &'a [f32])>;

    /// out = x turned by +angle (sign 1) or -angle (sign -1): one row of hd.
    #[inline(always)]
    fn turn(x: &[f32], out: &mut [f32], cos: &[f32], sin: &[f32], sign: f32) {
        let half = cos.len();
        // Every slice exactly `half` long, so that the loop has no bounds checks (and vectorises).
        let (sin, x1, x2) = (&sin[..half], &x[..half], &x[half..2 * half]);
        let (o1, o2) = out[..2 * half].split_at_mut(half);
        for i in 0..half {
            let s = sign * sin[i];
            o1[i] = x1[i] * cos[i] - x2[i] * s;
            o2[i] = x2[i] * cos[i] + x1[i] * s;
        }
    }

    #[inline(always)]
    fn gather_body(src: &[f32], first: usize, stride: usize, (t, hd): (usize, usize), (cos, sin): (&[f32], &[f32]), out: &mut [f32]) {
        for pos in 0..t {
            let (x, o) = (&src[first + pos * stride..][..hd], &mut out[pos * hd..][..hd]);
            turn(x, o, &cos[pos * hd / 2..][..hd / 2], &sin[pos * hd / 2..][..hd / 2], 1.0);
        }
    }

    /// # Safety
    /// As `scatter`.
    #[inline(always)]
    unsafe fn scatter_body(src: &[f32], dst: *mut f32, first: usize, stride: usize, (t, hd): (usize, usize), angles: Angles) {
        for pos in 0..t {
            let x = &src[pos * hd..][..hd];
            // SAFETY: the caller guarantees the row is inside `dst` and written by this thread only.
            let o = unsafe { std::slice::from_raw_parts_mut(dst.add(first + pos * stride), hd) };
            match angles {
                Some((cos, sin)) => turn(x, o, &cos[pos * hd / 2..][..hd / 2], &sin[pos * hd / 2..][..hd / 2], -1.0),
                None => o.copy_from_slice(x),
            }
        }
    }

    /// dS = c P (dP - D) in place over rows of nk (D_i = sum_j P_ij dP_ij).
    #[inline(always)]
    fn softmax_grad_body(p: &[f32], ds: &mut [f32], nk: usize, c: f32) {
        for (pr, dr) in p.chunks_exact(nk).zip(ds.chunks_exact_mut(nk)) {
            let d_i = super::super::dot(pr, dr);
            for (dij, pij) in dr.iter_mut().zip(pr) {
                *dij = c * pij * (*dij - d_i);
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn softmax_grad_avx512(p: &[f32], ds: &mut [f32], nk: usize, c: f32) {
        softmax_grad_body(p, ds, nk, c)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn softmax_grad_avx2(p: &[f32], ds: &mut [f32], nk: usize, c: f32) {
        softmax_grad_body(p, ds, nk, c)
    }

    /// The softmax's backward on a tile: ds holds dP = dO V^T on entry, c P (dP - D) on return.
    pub fn softmax_grad(p: &[f32], ds: &mut [f32], nk: usize, c: f32) {
        #[cfg(target_arch = "x86_64")]
        match crate::model::isa::f32_path() {
            // SAFETY: the path says the CPU has these features.
            "avx512" => return unsafe { softmax_grad_avx512(p, ds, nk, c) },
            "avx2" => return unsafe { softmax_grad_avx2(p, ds, nk, c) },
            _ => {}
        }
        softmax_grad_body(p, ds, nk, c)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn gather_avx512(src: &[f32], first: usize, stride: usize, dims: (usize, usize), angles: (&[f32], &[f32]), out: &mut [f32]) {
        gather_body(src, first, stride, dims, angles, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn gather_avx2(src: &[f32], first: usize, stride: usize, dims: (usize, usize), angles: (&[f32], &[f32]), out: &mut [f32]) {
        gather_body(src, first, stride, dims, angles, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn scatter_avx512(src: &[f32], dst: *mut f32, first: usize, stride: usize, dims: (usize, usize), angles: Angles) {
        unsafe { scatter_body(src, dst, first, stride, dims, angles) }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn scatter_avx2(src: &[f32], dst: *mut f32, first: usize, stride: usize, dims: (usize, usize), angles: Angles) {
        unsafe { scatter_body(src, dst, first, stride, dims, angles) }
    }

    /// out (T, hd) row pos = src[first + pos stride..][..hd] turned by position pos's angle.
    pub fn gather_rotated(src: &[f32], first: usize, stride: usize, dims: (usize, usize), angles: (&[f32], &[f32]), out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        match crate::model::isa::f32_path() {
            // SAFETY: the path says the CPU has these features.
            "avx512" => return unsafe { gather_avx512(src, first, stride, dims, angles, out) },
            "avx2" => return unsafe { gather_avx2(src, first, stride, dims, angles, out) },
            _ => {}
        }
        gather_body(src, first, stride, dims, angles, out)
    }

    /// dst[first + pos stride..][..hd] = src (T, hd) row pos, turned back by position pos's angle
    /// if `angles` is given.
    ///
    /// # Safety
    /// Those T rows of hd floats must lie inside `dst`'s allocation, and no other thread may
    /// access them meanwhile.
    pub unsafe fn scatter(src: &[f32], dst: *mut f32, first: usize, stride: usize, dims: (usize, usize), angles: Angles) {
        #[cfg(target_arch = "x86_64")]
        match crate::model::isa::f32_path() {
            // SAFETY: the path says the CPU has these features; the rest from the caller.
            "avx512" => return unsafe { scatter_avx512(src, dst, first, stride, dims, angles) },
            "avx2" => return unsafe { scatter_avx2(src, dst, first, stride, dims, angles) },
            _ => {}
        }
        unsafe { scatter_body(src, dst, first, stride, dims, angles) }
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::test_support::{check_attention, rotary};
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn attention_matches_composed_ops_with_grouped_heads_and_window() -> Result<()> {
        check_attention(|q, k, v, rot, _mask, s| attention(q, k, v, &rot.0, &rot.1, s.batch, s.seq, s.heads, s.kv_heads, s.window))
    }

    /// The same comparison with tiles of 1, 4 and 5 queries, so that the shapes' 5 to 17 tokens
    /// span many tiles, with and without a window, and the last tile is short; with P kept from
    /// the forward pass (these shapes' default) and recomputed in the backward pass.
    #[test]
    fn attention_in_small_tiles_matches_composed_ops() -> Result<()> {
        for tile in [1, 4, 5, QUERY_TILE] {
            for keep in [KEEP_BYTES, 0] {
                check_attention(|q, k, v, rot, _mask, s| {
                    attention_tiled(q, k, v, &rot.0, &rot.1, (s.batch, s.seq, s.heads, s.kv_heads, s.window), tile, keep)
                })?;
            }
        }
        Ok(())
    }

    /// Every key a query may see lies in its tile's key range, the tiles partition the queries,
    /// and their blocks lie end to end in the score buffer.
    #[test]
    fn tiles_hold_every_visible_key_once() {
        for (t, window, size) in [(1, usize::MAX, 32), (256, usize::MAX, 32), (70, usize::MAX, 32), (17, 3, 4), (17, 7, 5), (9, 1, 2), (300, 40, 32)] {
            let (ts, len) = tiles(t, window, size);
            let (mut next_row, mut next_at) = (0, 0);
            for tl in &ts {
                assert_eq!((tl.i0, tl.at), (next_row, next_at), "t {t} window {window} size {size}: {tl:?}");
                assert!(tl.rows() >= 1 && tl.rows() <= size);
                for i in tl.i0..tl.i1 {
                    let first = (i + 1).saturating_sub(window);
                    assert!(first >= tl.lo && i < tl.i1, "query {i} sees keys {first}..={i} outside {tl:?}");
                }
                next_row = tl.i1;
                next_at += tl.rows() * tl.keys();
            }
            assert_eq!((next_row, next_at), (t, len));
        }
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
