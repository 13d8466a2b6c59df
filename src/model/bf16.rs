//! bf16 products for the frozen matrices on CPUs with AVX512_BF16 (`vdpbf16ps`, Zen 4 and later,
//! Cooper Lake and Sapphire Rapids), f32 accumulation.
//!
//! `vdpbf16ps acc, a, b` adds, in each of its 16 f32 lanes l, a[2l] b[2l] + a[2l+1] b[2l+1], where
//! a and b hold 32 bf16 values. The products of two bf16 numbers (8-bit significands) are exact in
//! f32, so the only roundings are the operands' (to bf16, round to nearest even) and the f32
//! accumulation: the same error model as an f32 GEMM on operands rounded to bf16, at twice the
//! products per instruction of an f32 FMA.
//!
//! # Layout (one copy of W, used both ways)
//! W (d_out x d_in) is stored in 2 x 2 blocks: element (o, i) of W at
//!     ((i / 2) * (o_pad / 2) + o / 2) * 4 + 2 (i % 2) + (o % 2),
//! i.e. block (o/2, i/2) holds [W(2q, 2p), W(2q+1, 2p), W(2q, 2p+1), W(2q+1, 2p+1)], blocks of one
//! column pair p consecutive over q. d_out is padded with zeros to a multiple of 32, d_in to 16.
//! - Forward, y = x W^T (`forward`): a 64-byte load at (p, q..q+8) is 16 outputs' pairs
//!   (W(o, 2p), W(o, 2p+1)) once the two middle words of each block are swapped (one `vpshufb`);
//!   each row's pair (x(m, 2p), x(m, 2p+1)) of the bf16 input is one 32-bit broadcast. Output
//!   tiles of 8 rows x 32 columns.
//! - Backward, dx = dy W (`backward`): the pair (W(2q, i), W(2q+1, i)) is one 32-bit broadcast,
//!   and dy is repacked as pairs along o for 16 rows at a time; the accumulators hold dx^T
//!   (16 columns i x 16 rows m) and are transposed in registers before the store.
//!
//! Activations are rounded to bf16 (`vcvtneps2bf16`: round to nearest even; it reads denormal
//! inputs, below 1.2e-38, as zero) for each product; the weights once, at packing.

use super::SendPtr;
use half::bf16;
use rayon::prelude::*;

/// Whether this CPU runs the bf16 kernels (AVX512_BF16 with AVX512BW), and the AVX2 switch is off.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        !super::isa::avx2_forced() && is_x86_feature_detected!("avx512bf16") && is_x86_feature_detected!("avx512bw") && is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn round_up(x: usize, m: usize) -> usize {
    x.div_ceil(m) * m
}

/// A frozen matrix W (d_out x d_in) in bf16, packed as in the module documentation.
pub struct PackedBf16 {
    pub d_out: usize,
    pub d_in: usize,
    o_pad: usize,
    i_pad: usize,
    /// bf16 bits.
    data: Vec<u16>,
}

/// Output rows and columns of the forward micro-tile; rows of the backward micro-tile (also its columns).
const FWD_ROWS: usize = 8;
const FWD_COLS: usize = 32;
const BWD_TILE: usize = 16;
/// Rows and columns a parallel task covers (several micro-tiles, so that the W panel is reused from cache).
const TASK_ROWS: usize = 64;
const TASK_COLS: usize = 64;

impl PackedBf16 {
    /// Packs a row-major (d_out, d_in) f32 matrix, rounding each entry to bf16 (nearest even).
    pub fn pack(w: &[f32], d_out: usize, d_in: usize) -> Self {
        assert_eq!(w.len(), d_out * d_in, "bf16 pack: {} values for {d_out} x {d_in}", w.len());
        let (o_pad, i_pad) = (round_up(d_out.max(1), FWD_COLS), round_up(d_in.max(1), BWD_TILE));
        let mut data = vec![0u16; o_pad * i_pad];
        for o in 0..d_out {
            for i in 0..d_in {
                data[Self::index(o_pad, o, i)] = bf16::from_f32(w[o * d_in + i]).to_bits();
            }
        }
        Self { d_out, d_in, o_pad, i_pad, data }
    }

    #[inline]
    fn index(o_pad: usize, o: usize, i: usize) -> usize {
        ((i / 2) * (o_pad / 2) + o / 2) * 4 + 2 * (i % 2) + (o % 2)
    }

    /// W as rounded, row-major f32 (d_out, d_in).
    pub fn to_f32(&self) -> Vec<f32> {
        let mut w = vec![0f32; self.d_out * self.d_in];
        for o in 0..self.d_out {
            for i in 0..self.d_in {
                w[o * self.d_in + i] = bf16::from_bits(self.data[Self::index(self.o_pad, o, i)]).to_f32();
            }
        }
        w
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        2 * self.data.len()
    }

    /// y (n x d_out) = x (n x d_in) W^T, x rounded to bf16. Needs `available()`.
    pub fn forward(&self, x: &[f32], n: usize) -> Vec<f32> {
        assert!(available(), "bf16 kernels need AVX512_BF16");
        assert_eq!(x.len(), n * self.d_in, "bf16 forward: input of {} values is not {n} rows of {}", x.len(), self.d_in);
        let mut y = vec![0f32; n * self.d_out];
        if n == 0 || self.d_out == 0 {
            return y;
        }
        #[cfg(target_arch = "x86_64")]
        {
            // x in bf16, rows padded to i_pad (zeros) and to a multiple of FWD_ROWS.
            let n_pad = round_up(n, FWD_ROWS);
            let mut xb = vec![0u16; n_pad * self.i_pad];
            xb.par_chunks_mut(self.i_pad).zip(x.par_chunks(self.d_in)).for_each(|(dst, src)| {
                // SAFETY: `available()` checked the CPU features above; dst holds at least src.len() values.
                unsafe { avx512::round_row(src, dst) }
            });
            let out = SendPtr(y.as_mut_ptr());
            let (row_tasks, col_tasks) = (n.div_ceil(TASK_ROWS), self.d_out.div_ceil(TASK_COLS));
            (0..row_tasks * col_tasks).into_par_iter().for_each(|t| {
                let (m0, o0) = ((t / col_tasks) * TASK_ROWS, (t % col_tasks) * TASK_COLS);
                let out = &out;
                // SAFETY: tasks write disjoint (row, column) ranges of y, all inside it (checked in the kernel).
                unsafe { avx512::forward_task(self, &xb, n, m0, o0, out.0) }
            });
        }
        y
    }

    /// dx (n x d_in) = dy (n x d_out) W, dy rounded to bf16. Needs `available()`.
    pub fn backward(&self, dy: &[f32], n: usize) -> Vec<f32> {
        assert!(available(), "bf16 kernels need AVX512_BF16");
        assert_eq!(dy.len(), n * self.d_out, "bf16 backward: gradient of {} values is not {n} rows of {}", dy.len(), self.d_out);
        let mut dx = vec![0f32; n * self.d_in];
        if n == 0 || self.d_in == 0 {
            return dx;
        }
        #[cfg(target_arch = "x86_64")]
        {
            // dy repacked per tile of 16 rows: [tile][q][row 16][pair 2], zeros beyond n and d_out.
            let qd = self.o_pad / 2;
            let tiles = n.div_ceil(BWD_TILE);
            let mut dyp = vec![0u16; tiles * qd * BWD_TILE * 2];
            dyp.par_chunks_mut(qd * BWD_TILE * 2).enumerate().for_each(|(tile, dst)| {
                let rows = (n - tile * BWD_TILE).min(BWD_TILE);
                let src = &dy[tile * BWD_TILE * self.d_out..][..rows * self.d_out];
                // SAFETY: features checked above; sizes as allocated.
                unsafe { avx512::pack_pairs(src, rows, self.d_out, dst) }
            });
            let out = SendPtr(dx.as_mut_ptr());
            let (row_tasks, col_tasks) = (n.div_ceil(TASK_ROWS), self.d_in.div_ceil(TASK_COLS));
            (0..row_tasks * col_tasks).into_par_iter().for_each(|t| {
                let (m0, i0) = ((t / col_tasks) * TASK_ROWS, (t % col_tasks) * TASK_COLS);
                let out = &out;
                // SAFETY: tasks write disjoint (row, column) ranges of dx, all inside it.
                unsafe { avx512::backward_task(self, &dyp, n, m0, i0, out.0) }
            });
        }
        dx
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{PackedBf16, BWD_TILE, FWD_COLS, FWD_ROWS, TASK_COLS, TASK_ROWS};
    use std::arch::x86_64::*;

    /// dst[..src.len()] = bf16(src) (nearest even), the rest of dst zero.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx512vl")]
    pub unsafe fn round_row(src: &[f32], dst: &mut [u16]) {
        let n = src.len();
        let mut i = 0;
        while i + 16 <= n {
            let v = _mm512_loadu_ps(src.as_ptr().add(i));
            _mm256_storeu_si256(dst.as_mut_ptr().add(i) as *mut __m256i, std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(v)));
            i += 16;
        }
        if i < n {
            let mask: u16 = (1u32 << (n - i)).wrapping_sub(1) as u16;
            let v = _mm512_maskz_loadu_ps(mask, src.as_ptr().add(i));
            let h = std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(v));
            _mm256_mask_storeu_epi16(dst.as_mut_ptr().add(i) as *mut i16, mask, h);
        }
        dst[n..].fill(0);
    }

    /// dst [q][row 16][pair] = bf16(src[row, 2q + s]) for `rows` rows of `cols` values; zeros elsewhere.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx512vl")]
    pub unsafe fn pack_pairs(src: &[f32], rows: usize, cols: usize, dst: &mut [u16]) {
        dst.fill(0);
        let mut row_bf = vec![0u16; cols + 16];
        for r in 0..rows {
            round_row(&src[r * cols..][..cols], &mut row_bf);
            // (row r, q) pair = 32 bits at [q][r].
            let pairs = row_bf.as_ptr() as *const u32;
            let d = dst.as_mut_ptr() as *mut u32;
            for q in 0..cols.div_ceil(2) {
                *d.add(q * BWD_TILE + r) = *pairs.add(q);
            }
        }
    }

    /// Output rows m0..m0+TASK_ROWS (< n) and columns o0..o0+TASK_COLS (< d_out) of y = x W^T.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx512vl")]
    pub unsafe fn forward_task(w: &PackedBf16, xb: &[u16], n: usize, m0: usize, o0: usize, y: *mut f32) {
        let qd = w.o_pad / 2;
        let p_end = w.d_in.div_ceil(2);
        // Within each 64-bit block [W(2q,i0), W(2q+1,i0), W(2q,i1), W(2q+1,i1)] -> [W(2q,i0), W(2q,i1), W(2q+1,i0), W(2q+1,i1)].
        let swap = _mm512_set_epi8(
            15, 14, 11, 10, 13, 12, 9, 8, 7, 6, 3, 2, 5, 4, 1, 0, 15, 14, 11, 10, 13, 12, 9, 8, 7, 6, 3, 2, 5, 4, 1, 0, 15, 14, 11, 10, 13, 12, 9, 8, 7, 6, 3,
            2, 5, 4, 1, 0, 15, 14, 11, 10, 13, 12, 9, 8, 7, 6, 3, 2, 5, 4, 1, 0,
        );
        let o_end = (o0 + TASK_COLS).min(w.d_out);
        let m_end = (m0 + TASK_ROWS).min(n);
        let wp = w.data.as_ptr();
        let xp = xb.as_ptr();
        let mut oc = o0;
        while oc < o_end {
            let mut mr = m0;
            while mr < m_end {
                let mut acc = [[_mm512_setzero_ps(); 2]; FWD_ROWS];
                // Rows past n read the zero padding of xb.
                let rows: [*const u32; FWD_ROWS] = std::array::from_fn(|r| xp.add((mr + r) * w.i_pad) as *const u32);
                for p in 0..p_end {
                    let base = wp.add((p * qd + oc / 2) * 4);
                    let w0 = _mm512_shuffle_epi8(_mm512_loadu_si512(base as *const __m512i), swap);
                    let w1 = _mm512_shuffle_epi8(_mm512_loadu_si512(base.add(32) as *const __m512i), swap);
                    let (w0, w1): (__m512bh, __m512bh) = (std::mem::transmute(w0), std::mem::transmute(w1));
                    for r in 0..FWD_ROWS {
                        let xv: __m512bh = std::mem::transmute(_mm512_set1_epi32(*rows[r].add(p) as i32));
                        acc[r][0] = _mm512_dpbf16_ps(acc[r][0], w0, xv);
                        acc[r][1] = _mm512_dpbf16_ps(acc[r][1], w1, xv);
                    }
                }
                super::super::f32pack::avx512::store_tile(&acc, y, w.d_out, mr, m_end, oc, o_end);
                mr += FWD_ROWS;
            }
            oc += FWD_COLS;
        }
    }

    /// Rows m0..m0+TASK_ROWS (< n) and columns i0..i0+TASK_COLS (< d_in) of dx = dy W.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx512vl")]
    pub unsafe fn backward_task(w: &PackedBf16, dyp: &[u16], n: usize, m0: usize, i0: usize, dx: *mut f32) {
        let qd = w.o_pad / 2;
        let q_end = w.d_out.div_ceil(2);
        let i_end = (i0 + TASK_COLS).min(w.d_in);
        let m_end = (m0 + TASK_ROWS).min(n);
        let wp = w.data.as_ptr();
        let mut ic = i0;
        while ic < i_end {
            // Where the pair (W(2q, i), W(2q+1, i)) of column i = ic + j sits for q = 0.
            let cols: [*const u32; BWD_TILE] = std::array::from_fn(|j| {
                let i = ic + j; // < i_pad: padded columns hold zeros
                wp.add((i / 2) * qd * 4 + 2 * (i % 2)) as *const u32
            });
            let mut mr = m0;
            while mr < m_end {
                let tile = mr / BWD_TILE;
                let dp = dyp.as_ptr().add(tile * qd * BWD_TILE * 2);
                let mut acc = [_mm512_setzero_ps(); BWD_TILE];
                for q in 0..q_end {
                    let v: __m512bh = std::mem::transmute(_mm512_loadu_si512(dp.add(q * BWD_TILE * 2) as *const __m512i));
                    for j in 0..BWD_TILE {
                        // Block (q, p) is 2 u32 further for each q.
                        let wv: __m512bh = std::mem::transmute(_mm512_set1_epi32(*cols[j].add(2 * q) as i32));
                        acc[j] = _mm512_dpbf16_ps(acc[j], v, wv);
                    }
                }
                // acc[j][l] = dx(mr + l, ic + j): transpose to rows of dx.
                let rows = transpose16(acc);
                let cnt = (i_end - ic).min(16);
                let mask: u16 = if cnt == 16 { u16::MAX } else { ((1u32 << cnt) - 1) as u16 };
                for (l, row) in rows.iter().enumerate() {
                    let m = mr + l;
                    if m >= m_end {
                        break;
                    }
                    _mm512_mask_storeu_ps(dx.add(m * w.d_in + ic), mask, *row);
                }
                mr += BWD_TILE;
            }
            ic += BWD_TILE;
        }
    }

    /// The transpose of a 16 x 16 f32 matrix held as 16 rows: out[l][j] = r[j][l].
    #[target_feature(enable = "avx512f")]
    pub unsafe fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
        // 32-bit interleave of row pairs: t[2k] = (r[2k][0], r[2k+1][0], r[2k][1], r[2k+1][1]) per 128-bit lane.
        let mut t = [_mm512_setzero_ps(); 16];
        for k in 0..8 {
            t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
            t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
        }
        // 64-bit: u[4g + c] holds, in 128-bit lane L, column 4L + c of rows 4g..4g+4.
        let mut u = [_mm512_setzero_ps(); 16];
        for g in 0..4 {
            let (a0, a1, b0, b1) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
            u[4 * g] = _mm512_shuffle_ps::<0x44>(a0, b0);
            u[4 * g + 1] = _mm512_shuffle_ps::<0xEE>(a0, b0);
            u[4 * g + 2] = _mm512_shuffle_ps::<0x44>(a1, b1);
            u[4 * g + 3] = _mm512_shuffle_ps::<0xEE>(a1, b1);
        }
        // 128-bit lanes, rows 0-7 and 8-15: v[h*8 + c] = columns (c, c + 8) for c < 4,
        // v[h*8 + 4 + c] = columns (c + 4, c + 12), each as (rows 4h'..) pairs.
        let mut v = [_mm512_setzero_ps(); 16];
        for h in 0..2 {
            for c in 0..4 {
                let (a, b) = (u[8 * h + c], u[8 * h + 4 + c]);
                v[8 * h + c] = _mm512_shuffle_f32x4::<0x88>(a, b);
                v[8 * h + 4 + c] = _mm512_shuffle_f32x4::<0xDD>(a, b);
            }
        }
        let mut out = [_mm512_setzero_ps(); 16];
        for c in 0..8 {
            out[c] = _mm512_shuffle_f32x4::<0x88>(v[c], v[8 + c]);
            out[c + 8] = _mm512_shuffle_f32x4::<0xDD>(v[c], v[8 + c]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{check_product as check, product_reference, transpose, values};
    use super::*;

    /// bf16 rounding (nearest, ties to even) by bit arithmetic, written apart from `half` so that the
    /// reference does not share the kernel's rounding code. Finite inputs only.
    fn round_bf16(x: f32) -> f64 {
        let b = x.to_bits();
        let lsb = (b >> 16) & 1;
        let r = b.wrapping_add(0x7fff + lsb) & 0xffff_0000;
        f32::from_bits(r) as f64
    }

    fn reference(x: &[f32], w: &[f32], n: usize, d_out: usize, d_in: usize) -> (Vec<f64>, Vec<f64>) {
        product_reference(x, w, n, d_out, d_in, round_bf16)
    }

    /// Awkward shapes: tails of every tile (rows 1, 7, 9, 17, 70; d_out and d_in odd, below and
    /// above one tile, not multiples of 16 or 32) and the model's own sizes.
    const SHAPES: &[(usize, usize, usize)] =
        &[(1, 1, 1), (7, 3, 5), (9, 33, 17), (17, 31, 65), (70, 97, 130), (16, 32, 16), (64, 192, 576), (33, 576, 1536), (5, 1536, 576)];

    #[test]
    fn forward_and_backward_match_f64_with_bf16_operands() {
        if !available() {
            eprintln!("SKIPPED: this CPU has no AVX512_BF16 (the bf16 kernels are not used here)");
            return;
        }
        for &(n, d_out, d_in) in SHAPES {
            let w = values(d_out * d_in, 1 + n as u64);
            let x = values(n * d_in, 2 + d_out as u64);
            let dy = values(n * d_out, 3 + d_in as u64);
            let packed = PackedBf16::pack(&w, d_out, d_in);
            // Forward: y = x W^T.
            let (want, scale) = reference(&x, &w, n, d_out, d_in);
            // The products of bf16 operands are exact in f32: d_in roundings, the additions'.
            check(&packed.forward(&x, n), &want, &scale, d_in, &format!("forward {n}x{d_in} -> {d_out}"));
            // Backward: dx = dy W = dy (W^T)^T, i.e. the reference with W^T (d_in x d_out).
            let wt = transpose(&w, d_out, d_in);
            let (want, scale) = reference(&dy, &wt, n, d_in, d_out);
            check(&packed.backward(&dy, n), &want, &scale, d_out, &format!("backward {n}x{d_out} -> {d_in}"));
        }
    }

    /// The packing keeps every entry (rounded), and the reference's rounding agrees with `half`'s
    /// on ties, on values next to ties and at large and small magnitudes.
    #[test]
    fn packing_round_trips_and_rounding_is_nearest_even() {
        let w = values(13 * 7, 9);
        let p = PackedBf16::pack(&w, 13, 7);
        for (a, b) in p.to_f32().iter().zip(&w) {
            assert_eq!(*a as f64, round_bf16(*b));
        }
        // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: even (1.0). 1 + 3 * 2^-8 ties up to 1 + 2^-6.
        for (x, want) in
            [(1.0 + 2f32.powi(-8), 1.0), (1.0 + 3.0 * 2f32.powi(-8), 1.0 + 2f32.powi(-6)), (1.0 + 2f32.powi(-8) + 2f32.powi(-20), 1.0 + 2f32.powi(-7))]
        {
            assert_eq!(round_bf16(x), want as f64, "{x}");
            assert_eq!(bf16::from_f32(x).to_f32(), want, "{x}");
        }
        for x in values(5000, 11) {
            assert_eq!(round_bf16(x), bf16::from_f32(x).to_f32() as f64, "{x}");
        }
    }

    #[test]
    fn transpose16_is_a_transpose() {
        if !available() {
            eprintln!("SKIPPED: this CPU has no AVX512_BF16");
            return;
        }
        #[cfg(target_arch = "x86_64")]
        unsafe {
            use std::arch::x86_64::*;
            let m: Vec<f32> = (0..256).map(|v| v as f32).collect();
            let rows: [__m512; 16] = std::array::from_fn(|j| _mm512_loadu_ps(m.as_ptr().add(16 * j)));
            let t = avx512::transpose16(rows);
            for (l, row) in t.iter().enumerate() {
                let got: [f32; 16] = std::mem::transmute(*row);
                let want: Vec<f32> = (0..16).map(|j| m[16 * j + l]).collect();
                assert_eq!(got.to_vec(), want, "row {l}");
            }
        }
    }
}
