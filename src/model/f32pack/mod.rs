//! f32 products for the frozen matrices with W packed once, at load, for AVX-512F.
//!
//! Why not gemm: gemm packs W's panels again on every call, and on the short batches of real
//! prompts (4 x 33 tokens on the yesno sample: 132 rows) the packing and gemm's split over two
//! threads cost as much as the arithmetic. Measured on Zen 5 (2 cores), one block's products on
//! 128 rows: gemm 168-224 GFLOP/s against 538-613 GFLOP/s for the bf16 kernels of `bf16.rs`, which
//! pack W once; perf put gemm's packing at 13% of a 4 x 32 step, its microkernel at 31%. The same
//! scheme in f32 (FMA, no rounding of the operands) is what this file does.
//!
//! # Layout (one copy of W, used both ways)
//! W (d_out x d_in) in panels of 32 outputs: element (o, i) at
//!     ((o / 32) * d_in + i) * 32 + o % 32,
//! i.e. panel p is the row-major (d_in x 32) block W^T[:, 32p..32p + 32]; d_out is padded with zero
//! rows to a multiple of 32. The same bytes as W, plus the padding.
//! - Forward, y = x W^T (`forward`): tiles of 12 rows x 32 outputs; for each i, two 16-lane loads
//!   of the panel's row i and one broadcast of x(m, i) for each of the 12 rows: 24 FMAs for 14
//!   loads, 24 accumulators in registers.
//! - Backward, dx = dy W (`backward`): dx^T = W^T dy^T, vectorised over rows m. dy is repacked as
//!   dy^T in tiles of 32 rows ([tile][o][32]); for each o, two 16-lane loads of dy^T and a
//!   broadcast of W(o, i) for 12 columns i (12 floats 32 apart in the panel): 24 FMAs, 24
//!   accumulators holding dx(m, i) for 32 rows x 12 columns, written transposed.
//!
//! Each output is one f32 FMA chain over the inner dimension in index order: the error model of
//! any f32 GEMM (a different summation order than gemm's blocked one, nothing else).
//!
//! A matrix's panels need not be its own: an MLP's gate and up are stacked panel by panel into one
//! matrix and each kept as a view of every other panel of it (`swiglu.rs`), the same bytes once.

use super::SendPtr;
use rayon::prelude::*;
use std::sync::Arc;

mod swiglu;
pub use swiglu::SwigluPacked;

/// Whether this CPU runs the packed kernels (AVX-512F) and the AVX2 switch is off.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        !super::isa::avx2_forced() && is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Outputs of a panel; rows of a forward tile; columns and rows of a backward tile.
const PANEL: usize = 32;
const FWD_ROWS: usize = 12;
const BWD_COLS: usize = 12;
const BWD_ROWS: usize = 32;
/// Rows and columns a parallel task covers: small enough that a 132-row product of a 192-wide
/// matrix still splits into more tasks than threads, large enough to reuse a panel from cache.
const TASK_ROWS: usize = 24;
const TASK_COLS: usize = 64;
const BWD_TASK_ROWS: usize = 64;
const BWD_TASK_COLS: usize = 48;

/// 64 bytes, aligned: a panel row's 16-lane halves load from one cache line each.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// A frozen matrix W (d_out x d_in) in f32, packed as in the module documentation: its panel p
/// at panel `first + p * step` of `data` (0 and 1 for a matrix of its own; two matrices stacked
/// panel by panel share `data`, see `swiglu.rs`).
pub struct PackedF32 {
    pub d_out: usize,
    pub d_in: usize,
    panels: usize,
    data: Arc<Vec<Line>>,
    first: usize,
    step: usize,
}

impl PackedF32 {
    /// Packs a row-major (d_out, d_in) f32 matrix (exactly: no rounding).
    pub fn pack(w: &[f32], d_out: usize, d_in: usize) -> Self {
        assert_eq!(w.len(), d_out * d_in, "f32 pack: {} values for {d_out} x {d_in}", w.len());
        let panels = d_out.div_ceil(PANEL);
        let mut data = vec![Line([0.0; 16]); (panels * d_in * PANEL).div_ceil(16)];
        let flat = Self::flat_mut(&mut data);
        for o in 0..d_out {
            for i in 0..d_in {
                flat[Self::index(d_in, o, i)] = w[o * d_in + i];
            }
        }
        Self { d_out, d_in, panels, data: Arc::new(data), first: 0, step: 1 }
    }

    #[inline]
    fn index(d_in: usize, o: usize, i: usize) -> usize {
        ((o / PANEL) * d_in + i) * PANEL + o % PANEL
    }

    /// Offset in floats of panel p in `data`.
    #[inline]
    fn panel_at(&self, p: usize) -> usize {
        (self.first + p * self.step) * self.d_in * PANEL
    }

    fn flat_mut(data: &mut [Line]) -> &mut [f32] {
        // SAFETY: Line is 16 f32 with no padding (repr(C), size 64 = 16 * 4).
        unsafe { std::slice::from_raw_parts_mut(data.as_mut_ptr() as *mut f32, data.len() * 16) }
    }

    fn flat_ref(data: &[Line]) -> &[f32] {
        // SAFETY: as `flat_mut`.
        unsafe { std::slice::from_raw_parts(data.as_ptr() as *const f32, data.len() * 16) }
    }

    fn flat(&self) -> &[f32] {
        Self::flat_ref(&self.data)
    }

    /// W as row-major f32 (d_out, d_in).
    pub fn to_f32(&self) -> Vec<f32> {
        let flat = self.flat();
        let mut w = vec![0f32; self.d_out * self.d_in];
        for o in 0..self.d_out {
            let panel = &flat[self.panel_at(o / PANEL)..][..self.d_in * PANEL];
            for i in 0..self.d_in {
                w[o * self.d_in + i] = panel[i * PANEL + o % PANEL];
            }
        }
        w
    }

    /// Bytes of this matrix's panels (of a stacked pair, each its own half).
    pub fn bytes(&self) -> usize {
        4 * self.panels * self.d_in * PANEL
    }

    /// y (n x d_out) = x (n x d_in) W^T. Without AVX-512F (or with the AVX2 switch on) through
    /// gemm on the unpacked matrix.
    pub fn forward(&self, x: &[f32], n: usize) -> Vec<f32> {
        assert_eq!(x.len(), n * self.d_in, "f32 forward: input of {} values is not {n} rows of {}", x.len(), self.d_in);
        if n == 0 || self.d_out == 0 || self.d_in == 0 {
            return vec![0f32; n * self.d_out];
        }
        if !available() {
            return super::ops::dense_product(&self.to_f32(), self.d_out, self.d_in, x, n, false);
        }
        // Not zeroed first: the tasks write every element (a zero fill is a pass over y: 1% of a
        // 4 x 64 step in `perf`).
        let mut y: Vec<f32> = Vec::with_capacity(n * self.d_out);
        #[cfg(target_arch = "x86_64")]
        {
            let out = SendPtr(y.as_mut_ptr());
            let (row_tasks, col_tasks) = (n.div_ceil(TASK_ROWS), self.d_out.div_ceil(TASK_COLS));
            (0..row_tasks * col_tasks).into_par_iter().for_each(|t| {
                let (m0, o0) = ((t / col_tasks) * TASK_ROWS, (t % col_tasks) * TASK_COLS);
                let out = &out;
                // SAFETY: `available()` checked AVX-512F; tasks write disjoint (row, column) ranges of y.
                unsafe { avx512::forward_task(self, x, n, m0, o0, out.0, self.d_out) }
            });
            // SAFETY: the tasks cover rows 0..n and outputs 0..d_out: every element is written.
            unsafe { y.set_len(n * self.d_out) };
        }
        y
    }

    /// dx (n x d_in) = dy (n x d_out) W. Without AVX-512F through gemm, as `forward`.
    pub fn backward(&self, dy: &[f32], n: usize) -> Vec<f32> {
        assert_eq!(dy.len(), n * self.d_out, "f32 backward: gradient of {} values is not {n} rows of {}", dy.len(), self.d_out);
        if n == 0 || self.d_out == 0 || self.d_in == 0 {
            return vec![0f32; n * self.d_in];
        }
        if !available() {
            return super::ops::dense_product(&self.to_f32(), self.d_out, self.d_in, dy, n, true);
        }
        self.backward_tiles(&self.transposed_tiles(dy, n), n)
    }

    /// dy^T per tile of 32 rows: [tile][o][row 32], zeros beyond n and d_out (o < panels * 32),
    /// transposed 16 x 16 in registers (the scalar strided copy was 3% of a 4 x 64 step).
    /// AVX-512F only (`available`).
    fn transposed_tiles(&self, dy: &[f32], n: usize) -> Vec<Line> {
        let o_pad = self.panels * PANEL;
        let tiles = n.div_ceil(BWD_ROWS);
        let mut dyt: Vec<Line> = Vec::with_capacity(tiles * o_pad * 2);
        #[cfg(target_arch = "x86_64")]
        {
            assert!(available() && dy.len() >= n * self.d_out);
            let tile_ptr = SendPtr(dyt.as_mut_ptr() as *mut f32);
            (0..tiles).into_par_iter().for_each(|tile| {
                let rows = (n - tile * BWD_ROWS).min(BWD_ROWS);
                let tile_ptr = &tile_ptr;
                // SAFETY: AVX-512F checked; tile `tile` is the disjoint range [tile * o_pad * 32, + o_pad * 32)
                // of dyt's capacity, and rows `tile * 32..+ rows` of dy exist.
                unsafe {
                    avx512::transpose_tile(dy.as_ptr().add(tile * BWD_ROWS * self.d_out), self.d_out, rows, o_pad, tile_ptr.0.add(tile * o_pad * BWD_ROWS))
                }
            });
            // SAFETY: transpose_tile wrote all o_pad x 32 floats of every tile.
            unsafe { dyt.set_len(tiles * o_pad * 2) };
        }
        dyt
    }

    /// dx (n x d_in) = dy W from dy^T in the tiles of `transposed_tiles` (AVX-512F only).
    fn backward_tiles(&self, dyt: &[Line], n: usize) -> Vec<f32> {
        let mut dx: Vec<f32> = Vec::with_capacity(n * self.d_in);
        #[cfg(target_arch = "x86_64")]
        {
            assert!(available() && dyt.len() * 16 >= n.div_ceil(BWD_ROWS) * self.panels * PANEL * BWD_ROWS, "f32 backward: dy^T tiles too short");
            let out = SendPtr(dx.as_mut_ptr());
            let dyt = Self::flat_ref(dyt);
            let (row_tasks, col_tasks) = (n.div_ceil(BWD_TASK_ROWS), self.d_in.div_ceil(BWD_TASK_COLS));
            (0..row_tasks * col_tasks).into_par_iter().for_each(|t| {
                let (m0, i0) = ((t / col_tasks) * BWD_TASK_ROWS, (t % col_tasks) * BWD_TASK_COLS);
                let out = &out;
                // SAFETY: AVX-512F checked; tasks write disjoint (row, column) ranges of dx.
                unsafe { avx512::backward_task(self, dyt, n, m0, i0, avx512::BwdOut::Rows(out.0)) }
            });
            // SAFETY: the tasks cover rows 0..n and columns 0..d_in: every element is written.
            unsafe { dx.set_len(n * self.d_in) };
        }
        dx
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use super::{PackedF32, BWD_COLS, BWD_ROWS, BWD_TASK_COLS, BWD_TASK_ROWS, FWD_ROWS, PANEL, TASK_COLS, TASK_ROWS};
    use std::arch::x86_64::*;

    /// Rows m0..m0+TASK_ROWS (< n) and outputs o0..o0+TASK_COLS (< d_out) of y = x W^T, y's rows
    /// `ld` floats apart.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn forward_task(w: &PackedF32, x: &[f32], n: usize, m0: usize, o0: usize, y: *mut f32, ld: usize) {
        let d_in = w.d_in;
        let o_end = (o0 + TASK_COLS).min(w.d_out);
        let m_end = (m0 + TASK_ROWS).min(n);
        let wp = w.flat().as_ptr();
        let xp = x.as_ptr();
        let mut oc = o0;
        while oc < o_end {
            let panel = wp.add(w.panel_at(oc / PANEL));
            let mut mr = m0;
            while mr < m_end {
                // Rows past the task's end read the task's last row again; their sums are not stored.
                let rows: [*const f32; FWD_ROWS] = std::array::from_fn(|r| xp.add((mr + r).min(m_end - 1) * d_in));
                let mut acc = [[_mm512_setzero_ps(); 2]; FWD_ROWS];
                for i in 0..d_in {
                    let w0 = _mm512_load_ps(panel.add(i * PANEL));
                    let w1 = _mm512_load_ps(panel.add(i * PANEL + 16));
                    for r in 0..FWD_ROWS {
                        let xv = _mm512_set1_ps(*rows[r].add(i));
                        acc[r][0] = _mm512_fmadd_ps(w0, xv, acc[r][0]);
                        acc[r][1] = _mm512_fmadd_ps(w1, xv, acc[r][1]);
                    }
                }
                store_tile(&acc, y, ld, mr, m_end, oc, o_end);
                mr += FWD_ROWS;
            }
            oc += PANEL;
        }
    }

    /// Stores a register tile of 32 outputs: acc[r][v] lane l is y(mr + r, oc + 16 v + l) of the
    /// row-major y (rows of `ld` values); rows from `m_end` and outputs from `o_end` on are left out.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn store_tile(acc: &[[__m512; 2]], y: *mut f32, ld: usize, mr: usize, m_end: usize, oc: usize, o_end: usize) {
        for (r, a) in acc.iter().enumerate() {
            let m = mr + r;
            if m >= m_end {
                break;
            }
            for (v, av) in a.iter().enumerate() {
                let o = oc + 16 * v;
                if o >= o_end {
                    break;
                }
                let cnt = (o_end - o).min(16);
                let mask: u16 = if cnt == 16 { u16::MAX } else { ((1u32 << cnt) - 1) as u16 };
                _mm512_mask_storeu_ps(y.add(m * ld + o), mask, *av);
            }
        }
    }

    /// One tile of dy^T: dst[o * 32 + r] = src[r * ld + o] for r < rows (<= 32) and o < ld, zero
    /// for the other r < 32 and o < o_pad (a multiple of 16, >= ld): all 32 o_pad floats written.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn transpose_tile(src: *const f32, ld: usize, rows: usize, o_pad: usize, dst: *mut f32) {
        for r0 in (0..BWD_ROWS).step_by(16) {
            for o0 in (0..o_pad).step_by(16) {
                let cnt = ld.saturating_sub(o0).min(16);
                let mask: u16 = if cnt == 16 { u16::MAX } else { ((1u32 << cnt) - 1) as u16 };
                let block: [__m512; 16] = std::array::from_fn(|k| {
                    let r = r0 + k;
                    if r < rows && cnt > 0 {
                        _mm512_maskz_loadu_ps(mask, src.add(r * ld + o0))
                    } else {
                        _mm512_setzero_ps()
                    }
                });
                let cols = transpose16(block);
                for (k, c) in cols.iter().enumerate() {
                    _mm512_store_ps(dst.add((o0 + k) * BWD_ROWS + r0), *c);
                }
            }
        }
    }

    /// The 16 x 16 transpose of rows r[0..16]: out[j] lane i = r[i] lane j. Three stages of
    /// shuffles: 2 x 2 blocks of floats (unpack ps), of pairs (unpack pd), then of 128-bit lanes.
    #[target_feature(enable = "avx512f")]
    unsafe fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
        // u[4g + c], lane L: column 4L + c of rows 4g..4g+4.
        let mut u = [_mm512_setzero_ps(); 16];
        for g in 0..4 {
            let lo01 = _mm512_castps_pd(_mm512_unpacklo_ps(r[4 * g], r[4 * g + 1]));
            let hi01 = _mm512_castps_pd(_mm512_unpackhi_ps(r[4 * g], r[4 * g + 1]));
            let lo23 = _mm512_castps_pd(_mm512_unpacklo_ps(r[4 * g + 2], r[4 * g + 3]));
            let hi23 = _mm512_castps_pd(_mm512_unpackhi_ps(r[4 * g + 2], r[4 * g + 3]));
            u[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(lo01, lo23));
            u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(lo01, lo23));
            u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(hi01, hi23));
            u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(hi01, hi23));
        }
        // Column 4L + c gathers lane L of u[c], u[4 + c], u[8 + c], u[12 + c].
        let mut out = [_mm512_setzero_ps(); 16];
        for c in 0..4 {
            let even01 = _mm512_shuffle_f32x4::<0x88>(u[c], u[4 + c]); // lanes 0, 2 of groups 0, 1
            let odd01 = _mm512_shuffle_f32x4::<0xdd>(u[c], u[4 + c]); // lanes 1, 3
            let even23 = _mm512_shuffle_f32x4::<0x88>(u[8 + c], u[12 + c]);
            let odd23 = _mm512_shuffle_f32x4::<0xdd>(u[8 + c], u[12 + c]);
            out[c] = _mm512_shuffle_f32x4::<0x88>(even01, even23);
            out[8 + c] = _mm512_shuffle_f32x4::<0xdd>(even01, even23);
            out[4 + c] = _mm512_shuffle_f32x4::<0x88>(odd01, odd23);
            out[12 + c] = _mm512_shuffle_f32x4::<0xdd>(odd01, odd23);
        }
        out
    }

    /// Where a backward task's dx goes.
    #[derive(Clone, Copy)]
    pub enum BwdOut<'a> {
        /// Row-major dx (n x d_in).
        Rows(*mut f32),
        /// dx is dh, the gradient of the SwiGLU gate's output h = silu(g) u (n x f, `swiglu.rs`):
        /// dg and du go out as the dy^T tiles ([tile][o][32]) of the stacked gate/up matrix, whose
        /// row o is gate row c at (c / 32) 64 + c % 32 and up row c 32 further; g and u are read
        /// from `gu`, the stacked product's output (n rows `ld` floats apart, the same column order).
        Swiglu { gu: &'a [f32], ld: usize, dst: *mut f32 },
    }

    /// Rows m0..m0+BWD_TASK_ROWS (< n) and columns i0..i0+BWD_TASK_COLS (< d_in) of dx = dy W.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn backward_task(w: &PackedF32, dyt: &[f32], n: usize, m0: usize, i0: usize, out: BwdOut) {
        let d_in = w.d_in;
        let o_pad = w.panels * PANEL;
        let i_end = (i0 + BWD_TASK_COLS).min(d_in);
        let m_end = (m0 + BWD_TASK_ROWS).min(n);
        let wp = w.flat().as_ptr();
        let mut tmp = [[0f32; BWD_ROWS]; BWD_COLS];
        let mut ic = i0;
        while ic < i_end {
            // Column i = ic + j of a panel (W(o, i) for o < 32) at cols[j] + the panel's offset;
            // columns past the end read the last one again.
            let cols: [*const f32; BWD_COLS] = std::array::from_fn(|j| wp.add((ic + j).min(i_end - 1) * PANEL));
            let mut mr = m0;
            while mr < m_end {
                let tile = dyt.as_ptr().add((mr / BWD_ROWS) * o_pad * BWD_ROWS);
                let mut acc = [[_mm512_setzero_ps(); 2]; BWD_COLS];
                for p in 0..w.panels {
                    // Within panel p, o % 32 is the lane.
                    let poff = w.panel_at(p);
                    let dp = tile.add(p * PANEL * BWD_ROWS);
                    // The next panel's 12 columns (24 lines, contiguous) while this one is summed:
                    // panels are d_in * 128 bytes apart, a stride the hardware prefetcher misses.
                    if p + 1 < w.panels {
                        let next = cols[0].add(w.panel_at(p + 1)) as *const i8;
                        for c in 0..2 * BWD_COLS {
                            _mm_prefetch::<_MM_HINT_T0>(next.add(64 * c));
                        }
                    }
                    for l in 0..PANEL {
                        let d0 = _mm512_load_ps(dp.add(l * BWD_ROWS));
                        let d1 = _mm512_load_ps(dp.add(l * BWD_ROWS + 16));
                        for j in 0..BWD_COLS {
                            let wv = _mm512_set1_ps(*cols[j].add(poff + l));
                            acc[j][0] = _mm512_fmadd_ps(d0, wv, acc[j][0]);
                            acc[j][1] = _mm512_fmadd_ps(d1, wv, acc[j][1]);
                        }
                    }
                }
                // acc[j][v] lane s = dx(mr + 16 v + s, ic + j): through a small buffer, transposed.
                for (j, a) in acc.iter().enumerate() {
                    _mm512_storeu_ps(tmp[j].as_mut_ptr(), a[0]);
                    _mm512_storeu_ps(tmp[j].as_mut_ptr().add(16), a[1]);
                }
                let cols_here = (i_end - ic).min(BWD_COLS);
                let rows_here = BWD_ROWS.min(m_end - mr);
                match out {
                    BwdOut::Rows(dx) => {
                        for s in 0..rows_here {
                            let row = dx.add((mr + s) * d_in + ic);
                            for (j, t) in tmp.iter().enumerate().take(cols_here) {
                                *row.add(j) = t[s];
                            }
                        }
                    }
                    BwdOut::Swiglu { gu, ld, dst } => {
                        // Rows past n: dh is zero there (dy^T's padding), so dg = du = 0 in the
                        // tiles' padding rows, as the product needs; g and u there are set to
                        // zero rather than read past gu's end.
                        let tile_out = dst.add((mr / BWD_ROWS) * 2 * d_in * BWD_ROWS);
                        let (mut g, mut u) = ([0f32; BWD_ROWS], [0f32; BWD_ROWS]);
                        for (j, t) in tmp.iter().enumerate().take(cols_here) {
                            let c = ic + j;
                            let og = (c / PANEL) * 2 * PANEL + c % PANEL;
                            for s in 0..rows_here {
                                let row = &gu[(mr + s) * ld..][..2 * d_in];
                                (g[s], u[s]) = (row[og], row[og + PANEL]);
                            }
                            g[rows_here..].fill(0.0);
                            u[rows_here..].fill(0.0);
                            let slot = |o: usize| std::slice::from_raw_parts_mut(tile_out.add(o * BWD_ROWS) as *mut std::mem::MaybeUninit<f32>, BWD_ROWS);
                            crate::model::fastmath::silu_mul_grad_body(&g, &u, t, slot(og), slot(og + PANEL));
                        }
                    }
                }
                mr += BWD_ROWS;
            }
            ic += BWD_COLS;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{check_product as check, product_reference, transpose, values};
    use super::*;

    fn reference(x: &[f32], w: &[f32], n: usize, d_out: usize, d_in: usize) -> (Vec<f64>, Vec<f64>) {
        product_reference(x, w, n, d_out, d_in, |v| v as f64)
    }

    /// Tails of every tile and task (rows 1, 7, 13, 25, 33, 70, 132; d_out and d_in odd, below and
    /// above a panel, not multiples of 12, 16 or 32) and the default model's own sizes.
    const SHAPES: &[(usize, usize, usize)] =
        &[(1, 1, 1), (7, 3, 5), (13, 33, 17), (25, 31, 65), (33, 97, 130), (70, 64, 49), (12, 32, 12), (64, 192, 576), (132, 576, 1536), (5, 1536, 576)];

    #[test]
    fn forward_and_backward_match_f64() {
        if !available() {
            eprintln!("SKIPPED: this CPU has no AVX-512F (the packed f32 kernels are not used here)");
            return;
        }
        for &(n, d_out, d_in) in SHAPES {
            let w = values(d_out * d_in, 1 + n as u64);
            let x = values(n * d_in, 2 + d_out as u64);
            let dy = values(n * d_out, 3 + d_in as u64);
            let packed = PackedF32::pack(&w, d_out, d_in);
            let (want, scale) = reference(&x, &w, n, d_out, d_in);
            // An output is a chain of d_in FMAs, each rounded once: d_in roundings.
            check(&packed.forward(&x, n), &want, &scale, d_in, &format!("forward {n}x{d_in} -> {d_out}"));
            // dx = dy W = dy (W^T)^T: the reference with W^T (d_in x d_out).
            let (want, scale) = reference(&dy, &transpose(&w, d_out, d_in), n, d_in, d_out);
            check(&packed.backward(&dy, n), &want, &scale, d_out, &format!("backward {n}x{d_out} -> {d_in}"));
        }
    }

    /// No rows, no outputs or an empty inner dimension: zeros of the right length (an empty sum).
    #[test]
    fn degenerate_sizes_give_zeros() {
        let w = PackedF32::pack(&[], 3, 0);
        assert_eq!(w.forward(&[], 2), vec![0.0; 6]);
        assert_eq!(w.backward(&[1.0; 6], 2), Vec::<f32>::new());
        let w = PackedF32::pack(&values(12, 4), 3, 4);
        assert!(w.forward(&[], 0).is_empty() && w.backward(&[], 0).is_empty());
    }

    #[test]
    fn packing_round_trips_exactly() {
        for &(d_out, d_in) in &[(1, 1), (13, 7), (33, 5), (64, 3)] {
            let w = values(d_out * d_in, 9);
            let p = PackedF32::pack(&w, d_out, d_in);
            assert_eq!(p.to_f32(), w, "{d_out} x {d_in}");
        }
    }
}
