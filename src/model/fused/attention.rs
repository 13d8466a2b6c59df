//! Causal self-attention core with rotary embeddings and grouped KV heads, in the projections'
//! own layout: q (B*T, H*hd), k and v (B*T, Hkv*hd), output (B*T, H*hd). For query head h (kv head
//! g = h / (H / Hkv)) of sequence b:
//!   q~ = R_t q_t, k~ = R_t k_t (rotate-half rotary, angle table per position t),
//!   S = c q~ k~^T + M (c = hd^-1/2, M = 0 where key j <= query i within the window, else -inf),
//!   P = softmax_rows(S), O = P V.
//! Backward (dO given), with D_i = sum_j P_ij dP_ij:
//!   dP = dO V^T, dS = P (dP - D), dq~ = c dS k~, dk~ += c dS^T q~, dV += P^T dO,
//!   dq = R_t^T dq~, dk = R_t^T dk~   (R_t orthogonal: its transpose is the rotation by -angle).
//! P is recomputed in the backward pass rather than kept from the forward.
//!
//! # Only the visible part of S
//! M is -inf above the diagonal (and before the window), so P there is exactly zero and every
//! product with P or dS there adds zeros. The queries are cut into tiles of [`QUERY_TILE`] rows;
//! tile i0..i1 is scored only against keys lo..i1 (lo = the first key its first query may see),
//! so q k^T, P V, dO V^T, dS k, dS^T q and P^T dO cost (T^2 + T Q) / 2 multiply-adds per head
//! instead of T^2 (Q the tile: at T = 256, Q = 32, 56%; with a window w << T about T (w + Q)).
//! Inside a tile the keys a query may not see are stored as zeros, as before.

use super::{dot, mm, slice, tensor, with_data, ONE_THREAD};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Query rows a tile. Smaller tiles skip more of the masked triangle (the tile's own square is
/// half masked) but give gemm thinner products; 16, 32 and 64 measured within noise of each
/// other at 256 tokens, all faster than one tile (README).
const QUERY_TILE: usize = 32;

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
}

impl Attention {
    fn new(dims: AttnDims, cos: Vec<f32>, sin: Vec<f32>, tile: usize) -> Self {
        let (tiles, scores) = tiles(dims.t, dims.window, tile);
        Attention { dims, cos, sin, tiles, scores }
    }

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
                let mut p = vec![0f32; self.scores];
                self.probabilities(&qr, &kr, &mut p);
                let mut o = vec![0f32; t * hd];
                for tl in &self.tiles {
                    let pt = &p[tl.at..][..tl.rows() * tl.keys()];
                    mm(&mut o[tl.i0 * hd..], false, 1.0, (tl.rows(), hd, tl.keys()), pt, (tl.keys(), 1), &vv[tl.lo * hd..], (hd, 1), ONE_THREAD);
                }
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
                    let (mut p, mut ds) = (vec![0f32; self.scores], vec![0f32; self.scores]);
                    for r in 0..rep {
                        let h = g * rep + r;
                        self.gather(q, heads, bi, h, true, &mut qr);
                        self.gather(dout, heads, bi, h, false, &mut go);
                        self.probabilities(&qr, &kr, &mut p);
                        let dqr = &mut dq[r * t * hd..][..t * hd];
                        for tl in &self.tiles {
                            let (m, nk) = (tl.rows(), tl.keys());
                            let (pt, dst) = (&p[tl.at..][..m * nk], &mut ds[tl.at..][..m * nk]);
                            let (q_t, go_t) = (&qr[tl.i0 * hd..], &go[tl.i0 * hd..]);
                            // dP = dO V^T, then dS = c P (dP - D) in place.
                            mm(dst, false, 1.0, (m, nk, hd), go_t, (hd, 1), &vv[tl.lo * hd..], (1, hd), ONE_THREAD);
                            for (pr, dr) in pt.chunks_exact(nk).zip(dst.chunks_exact_mut(nk)) {
                                let d_i = dot(pr, dr);
                                for (dij, pij) in dr.iter_mut().zip(pr) {
                                    *dij = c * pij * (*dij - d_i);
                                }
                            }
                            mm(&mut dqr[tl.i0 * hd..], false, 1.0, (m, hd, nk), dst, (nk, 1), &kr[tl.lo * hd..], (hd, 1), ONE_THREAD); // dq~ = dS k~
                            mm(&mut dkr[tl.lo * hd..], true, 1.0, (nk, hd, m), dst, (1, nk), q_t, (hd, 1), ONE_THREAD); // dk~ += dS^T q~
                            mm(&mut dv[tl.lo * hd..], true, 1.0, (nk, hd, m), pt, (1, nk), go_t, (hd, 1), ONE_THREAD);
                            // dV += P^T dO
                        }
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
    attention_tiled(q, k, v, cos, sin, (b, t, heads, kv_heads, window), QUERY_TILE)
}

/// [`attention`] with query tiles of `tile` rows (the tests run many tiles on short sequences).
fn attention_tiled(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    (b, t, heads, kv_heads, window): (usize, usize, usize, usize, usize),
    tile: usize,
) -> Result<Tensor> {
    let hd = q.dim(candle_core::D::Minus1)? / heads.max(1);
    let op = Attention::new(AttnDims { b, t, heads, kv_heads, hd, window }, cos.flatten_all()?.to_vec1::<f32>()?, sin.flatten_all()?.to_vec1::<f32>()?, tile);
    q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, op)
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
    /// span many tiles, with and without a window, and the last tile is short.
    #[test]
    fn attention_in_small_tiles_matches_composed_ops() -> Result<()> {
        for tile in [1, 4, 5] {
            check_attention(|q, k, v, rot, _mask, s| attention_tiled(q, k, v, &rot.0, &rot.1, (s.batch, s.seq, s.heads, s.kv_heads, s.window), tile))?;
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
