//! The MLP's frozen half, y = (silu(x W_g^T) ⊙ (x W_u^T)) W_d^T, with the gate fused into the
//! products around it (`fused::swiglu_mlp` is the op; it serves blocks whose gate, up and down
//! projections carry no adapter, the paper's configurations).
//!
//! Gate and up are stacked panel by panel into one matrix W_gu (2f x h): panel 2p is gate's
//! panel p, 2p + 1 up's, so one forward task of 64 outputs holds gate's and up's columns
//! 32p..32p + 32 of its rows, and applies the gate to them while they are in cache:
//!
//! ```text
//! gu = x W_gu^T (n x 2f, interleaved by 32 columns),   h = silu(g) ⊙ u,   y = h W_d^T.
//! ```
//!
//! Backward, dy given: dh = dy W_d, then (per element) dg = dh u s (1 + g (1 - s)), du = dh silu(g)
//! with s the logistic of g, and dx = [dg du] W_gu = dg W_g + du W_u as one product over 2f. The
//! down product's tasks hold dh transposed (32 rows a vector) and write dg, du straight into the
//! dy^T tiles the stacked product reads: no dh buffer, no separate gate pass and no transpose of
//! dg, du, and one dx product and buffer instead of two and their sum. The separate matrices
//! remain as views of the stack (the same bytes), for blocks with adapters there.

use super::{available, avx512, Line, PackedF32, SendPtr, BWD_ROWS, BWD_TASK_COLS, BWD_TASK_ROWS, PANEL, TASK_COLS, TASK_ROWS};
use crate::model::fastmath::silu_mul_body;
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::sync::Arc;

const _: () = assert!(TASK_COLS == 2 * PANEL, "a forward task holds one gate panel and its up panel");

/// The stacked gate/up matrix and the down matrix of one block.
pub struct SwigluPacked {
    /// W_gu (2f x h), gate and up interleaved by panel.
    pub gate_up: PackedF32,
    /// W_d (h x f).
    pub down: Arc<PackedF32>,
}

impl PackedF32 {
    /// Gate and up (f x h each, f a multiple of 32) stacked panel by panel, and each as a view of
    /// the stack (to replace the originals: no second copy). None if the shapes do not allow it.
    pub fn stack_pair(gate: &PackedF32, up: &PackedF32) -> Option<(PackedF32, PackedF32, PackedF32)> {
        if gate.d_out != up.d_out || gate.d_in != up.d_in || !gate.d_out.is_multiple_of(PANEL) || gate.d_out == 0 || gate.d_in == 0 {
            return None;
        }
        let (panels, d_in) = (gate.panels, gate.d_in);
        let per = d_in * PANEL; // floats a panel
        let mut data = vec![Line([0.0; 16]); (2 * panels * per).div_ceil(16)];
        let flat = Self::flat_mut(&mut data);
        for p in 0..panels {
            flat[2 * p * per..][..per].copy_from_slice(&gate.flat()[gate.panel_at(p)..][..per]);
            flat[(2 * p + 1) * per..][..per].copy_from_slice(&up.flat()[up.panel_at(p)..][..per]);
        }
        let data = Arc::new(data);
        let view = |first: usize, step: usize, d_out: usize, panels: usize| PackedF32 { d_out, d_in, panels, data: data.clone(), first, step };
        Some((view(0, 1, 2 * gate.d_out, 2 * panels), view(0, 2, gate.d_out, panels), view(1, 2, gate.d_out, panels)))
    }
}

/// Floats after each row of gu (n x 2f): with rows 2f floats apart (a multiple of 4 KiB for the
/// default model), the 32 rows of a tile fell into one set of the L1 cache, and the down product's
/// epilogue, which reads g and u down a column, missed on every read.
const GU_PAD: usize = 16;

/// h = silu(g) ⊙ u on rows `rows`, columns 32p..32p + 32, from the stacked product's output gu
/// (rows `ld` floats apart) into h (n x f), and the row's padding after 2f zeroed: in cache, just
/// written by the task's product, and compiled for AVX-512 here (a call per 32 values through the
/// dispatching `silu_mul_into` cost more than the values).
///
/// # Safety
/// AVX-512F; gu and h hold those rows; no other thread writes these slots of gu and h.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gate_rows(gu: *mut f32, h: *mut f32, rows: std::ops::Range<usize>, (f, ld): (usize, usize), p: usize) {
    for m in rows {
        let g = std::slice::from_raw_parts(gu.add(m * ld + TASK_COLS * p), 2 * PANEL);
        let hr = std::slice::from_raw_parts_mut(h.add(m * f + PANEL * p) as *mut MaybeUninit<f32>, PANEL);
        silu_mul_body(&g[..PANEL], &g[PANEL..], hr);
        if p == 0 {
            std::slice::from_raw_parts_mut(gu.add(m * ld + 2 * f), ld - 2 * f).fill(0.0);
        }
    }
}

impl SwigluPacked {
    /// f, the gate's width.
    pub fn width(&self) -> usize {
        self.gate_up.d_out / 2
    }

    /// Floats from one row of gu to the next.
    pub fn gu_stride(&self) -> usize {
        2 * self.width() + GU_PAD
    }

    /// (gu, h) for x (n x h): gu = x W_gu^T (n rows of 2f, interleaved as W_gu's rows, `gu_stride`
    /// floats apart), h = silu(g) ⊙ u (n x f). The packed kernels only (`available`): where they
    /// are off, the model takes the separate projections (`Llama::mlp_residual`).
    pub fn forward(&self, x: &[f32], n: usize) -> (Vec<f32>, Vec<f32>) {
        let (f, ld, w) = (self.width(), self.gu_stride(), &self.gate_up);
        assert_eq!(x.len(), n * w.d_in, "swiglu forward: input of {} values is not {n} rows of {}", x.len(), w.d_in);
        assert!(available(), "swiglu forward: the packed kernels are off (AVX-512F, no AVX2 switch)");
        let (mut gu, mut h): (Vec<f32>, Vec<f32>) = (Vec::with_capacity(n * ld), Vec::with_capacity(n * f));
        #[cfg(target_arch = "x86_64")]
        {
            let (gu_at, h_at) = (SendPtr(gu.as_mut_ptr()), SendPtr(h.as_mut_ptr()));
            let (row_tasks, pairs) = (n.div_ceil(TASK_ROWS), f / PANEL);
            (0..row_tasks * pairs).into_par_iter().for_each(|t| {
                let (m0, p) = ((t / pairs) * TASK_ROWS, t % pairs);
                let (gu_at, h_at) = (&gu_at, &h_at);
                // SAFETY: AVX-512F checked; task (rows m0.., pair p) alone writes columns 64p..64p + 64
                // of those rows of gu (and their padding if p = 0), which the forward task writes in
                // full before they are read, and h's columns 32p..32p + 32.
                unsafe {
                    avx512::forward_task(w, x, n, m0, TASK_COLS * p, gu_at.0, ld);
                    gate_rows(gu_at.0, h_at.0, m0..(m0 + TASK_ROWS).min(n), (f, ld), p);
                }
            });
            // SAFETY: the tasks cover every row and every pair of panels: all of gu (padding
            // included) and h written.
            unsafe {
                gu.set_len(n * ld);
                h.set_len(n * f);
            }
        }
        (gu, h)
    }

    /// dx (n x h) for the output gradient dy (n x h), given the forward pass's gu (`available` only).
    pub fn backward(&self, dy: &[f32], n: usize, gu: &[f32]) -> Vec<f32> {
        let (f, ld, down) = (self.width(), self.gu_stride(), &self.down);
        assert!(dy.len() == n * down.d_out && gu.len() == n * ld && down.d_in == f, "swiglu backward: sizes do not match");
        assert!(available(), "swiglu backward: the packed kernels are off (AVX-512F, no AVX2 switch)");
        let tiles = n.div_ceil(BWD_ROWS);
        let mut dgut: Vec<Line> = Vec::with_capacity(tiles * 2 * f * BWD_ROWS / 16);
        #[cfg(target_arch = "x86_64")]
        {
            let dyt = down.transposed_tiles(dy, n);
            let dyt = PackedF32::flat_ref(&dyt);
            let dst = SendPtr(dgut.as_mut_ptr() as *mut f32);
            let (row_tasks, col_tasks) = (n.div_ceil(BWD_TASK_ROWS), f.div_ceil(BWD_TASK_COLS));
            (0..row_tasks * col_tasks).into_par_iter().for_each(|t| {
                let (m0, i0) = ((t / col_tasks) * BWD_TASK_ROWS, (t % col_tasks) * BWD_TASK_COLS);
                let dst = &dst;
                // SAFETY: AVX-512F checked; task (rows m0.., columns i0..) alone writes the tile
                // slots of those rows' tiles for gate and up rows of those columns.
                unsafe { avx512::backward_task(down, dyt, n, m0, i0, avx512::BwdOut::Swiglu { gu, ld, dst: dst.0 }) }
            });
            // SAFETY: every tile's 2f slots of 32 were written (each column's gate and up slot by
            // the task of its rows and column, rows past n as zeros).
            unsafe { dgut.set_len(tiles * 2 * f * BWD_ROWS / 16) };
        }
        self.gate_up.backward_tiles(&dgut, n)
    }
}
