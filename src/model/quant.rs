//! Frozen matrices kept in a GGUF block format (QLoRA-style: `model.dtype = "keep"` or `"q8_0"`),
//! multiplied by dequantizing tiles on the fly, on the CPU.
//!
//! A row of W (d_out x d_in) is d_in / B blocks of `type_size` bytes (B = 32 for Q4_0..Q8_0, 256
//! for the K-quants), so a run of whole rows, or of whole blocks within every row, dequantizes on
//! its own (candle's `GgmlType::to_float`, llama.cpp's decoders).
//! - Forward, y = x W^T: parallel over panels of `PANEL_ROWS` rows of W; each task dequantizes its
//!   panel to f32 (PANEL_ROWS x d_in, in cache) and multiplies it into its columns of y.
//! - Backward, dx = dy W: parallel over column blocks of W (a multiple of B columns); each task
//!   walks down the rows in chunks, dequantizes the chunk's slice of its columns and accumulates
//!   dy[:, chunk] times it into its columns of dx.
//! Every weight is dequantized once a product (twice a step: forward and dL/dx); the arithmetic is
//! f32 on the dequantized values, so the result equals dequantize-then-f32-matmul up to f32
//! summation order.

use super::SendPtr;
use anyhow::{bail, Result};
use candle_core::quantized::k_quants::{self, GgmlType};
use candle_core::quantized::GgmlDType;
use rayon::prelude::*;

/// Rows of W per forward task.
const PANEL_ROWS: usize = 64;
/// Rows of W per backward chunk.
const CHUNK_ROWS: usize = 256;
/// Columns of W per backward task (a multiple of every block size).
const BWD_COLS: usize = 256;

/// A frozen matrix in a GGUF block format.
pub struct QuantMatrix {
    pub d_out: usize,
    pub d_in: usize,
    pub dtype: GgmlDType,
    /// Bytes of one row.
    row_bytes: usize,
    /// The blocks, row after row, in a u32 buffer (the block structs need 2- or 4-byte alignment).
    data: Vec<u32>,
}

/// The block types a frozen matrix may be kept in.
pub fn keepable(dtype: GgmlDType) -> bool {
    use GgmlDType::*;
    matches!(dtype, Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2K | Q3K | Q4K | Q5K | Q6K)
}

/// View of `bytes` as blocks of `T`.
fn blocks<T: GgmlType>(bytes: &[u8]) -> &[T] {
    let size = std::mem::size_of::<T>();
    assert!(bytes.len() % size == 0 && (bytes.as_ptr() as usize) % std::mem::align_of::<T>() == 0, "misaligned quantized blocks");
    // SAFETY: the block types are plain data (repr(C) structs of u8, i8 and f16 fields; every bit
    // pattern is a value), the length is a whole number of blocks and the alignment was checked.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const T, bytes.len() / size) }
}

fn to_float_as<T: GgmlType>(bytes: &[u8], out: &mut [f32]) {
    T::to_float(blocks::<T>(bytes), out)
}

impl QuantMatrix {
    /// From the raw bytes of a (d_out, d_in) tensor in `dtype` (GGUF order: row after row).
    pub fn from_bytes(bytes: &[u8], dtype: GgmlDType, d_out: usize, d_in: usize) -> Result<Self> {
        if !keepable(dtype) {
            bail!("{dtype:?} is not a block format that can be kept");
        }
        let bs = dtype.block_size();
        if d_in % bs != 0 {
            bail!("a row of {d_in} values is not whole {dtype:?} blocks of {bs}");
        }
        let row_bytes = d_in / bs * dtype.type_size();
        if bytes.len() != d_out * row_bytes {
            bail!("{} bytes for a {d_out} x {d_in} {dtype:?} matrix, expected {}", bytes.len(), d_out * row_bytes);
        }
        let mut data = vec![0u32; bytes.len().div_ceil(4)];
        // SAFETY: data holds at least bytes.len() bytes.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), data.as_mut_ptr() as *mut u8, bytes.len()) };
        Ok(Self { d_out, d_in, dtype, row_bytes, data })
    }

    /// Quantizes a row-major f32 (d_out, d_in) matrix to Q8_0 (blocks of 32 values, one f16 scale:
    /// the largest magnitude / 127, values rounded to i8).
    pub fn quantize_q8_0(w: &[f32], d_out: usize, d_in: usize) -> Result<Self> {
        if d_in % k_quants::QK8_0 != 0 || w.len() != d_out * d_in {
            bail!("Q8_0 needs rows of a multiple of 32 values ({d_out} x {d_in}, {} values)", w.len());
        }
        let mut q = vec![k_quants::BlockQ8_0::zeros(); w.len() / k_quants::QK8_0];
        q.par_chunks_mut(d_in / k_quants::QK8_0).zip(w.par_chunks(d_in)).for_each(|(qr, wr)| k_quants::BlockQ8_0::from_float(wr, qr));
        // SAFETY: plain-data blocks viewed as their bytes.
        let bytes = unsafe { std::slice::from_raw_parts(q.as_ptr() as *const u8, std::mem::size_of_val(q.as_slice())) };
        Self::from_bytes(bytes, GgmlDType::Q8_0, d_out, d_in)
    }

    fn bytes_all(&self) -> &[u8] {
        // SAFETY: the u32 buffer viewed as bytes, within its length.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr() as *const u8, self.d_out * self.row_bytes) }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.d_out * self.row_bytes
    }

    /// Rows `rows` (each whole) reordered: row r of the result is row `order[r]` of self (the
    /// rotary un-permutation of q and k, which moves whole rows).
    pub fn permute_rows(&self, order: &[usize]) -> Result<Self> {
        if order.len() != self.d_out || order.iter().any(|&r| r >= self.d_out) {
            bail!("row order of {} entries for {} rows", order.len(), self.d_out);
        }
        let src = self.bytes_all();
        let mut out = Vec::with_capacity(src.len());
        for &r in order {
            out.extend_from_slice(&src[r * self.row_bytes..][..self.row_bytes]);
        }
        Self::from_bytes(&out, self.dtype, self.d_out, self.d_in)
    }

    /// Dequantizes columns [c0, c0 + out_cols) (block-aligned) of rows [r0, r1) into `out`,
    /// row-major with `out_cols` values a row.
    pub fn dequantize_into(&self, r0: usize, r1: usize, c0: usize, out_cols: usize, out: &mut [f32]) {
        let bs = self.dtype.block_size();
        assert!(c0 % bs == 0 && out_cols % bs == 0 && c0 + out_cols <= self.d_in && r1 <= self.d_out && out.len() >= (r1 - r0) * out_cols);
        let (ts, all) = (self.dtype.type_size(), self.bytes_all());
        for (k, r) in (r0..r1).enumerate() {
            let bytes = &all[r * self.row_bytes + c0 / bs * ts..][..out_cols / bs * ts];
            let dst = &mut out[k * out_cols..][..out_cols];
            use GgmlDType::*;
            match self.dtype {
                Q4_0 => to_float_as::<k_quants::BlockQ4_0>(bytes, dst),
                Q4_1 => to_float_as::<k_quants::BlockQ4_1>(bytes, dst),
                Q5_0 => to_float_as::<k_quants::BlockQ5_0>(bytes, dst),
                Q5_1 => to_float_as::<k_quants::BlockQ5_1>(bytes, dst),
                Q8_0 => to_float_as::<k_quants::BlockQ8_0>(bytes, dst),
                Q2K => to_float_as::<k_quants::BlockQ2K>(bytes, dst),
                Q3K => to_float_as::<k_quants::BlockQ3K>(bytes, dst),
                Q4K => to_float_as::<k_quants::BlockQ4K>(bytes, dst),
                Q5K => to_float_as::<k_quants::BlockQ5K>(bytes, dst),
                Q6K => to_float_as::<k_quants::BlockQ6K>(bytes, dst),
                other => unreachable!("{other:?} is refused in from_bytes"),
            }
        }
    }

    /// W as row-major f32 (d_out, d_in).
    pub fn to_f32(&self) -> Vec<f32> {
        let mut w = vec![0f32; self.d_out * self.d_in];
        w.par_chunks_mut(PANEL_ROWS * self.d_in).enumerate().for_each(|(t, dst)| {
            let r0 = t * PANEL_ROWS;
            self.dequantize_into(r0, (r0 + PANEL_ROWS).min(self.d_out), 0, self.d_in, dst)
        });
        w
    }

    /// y (n x d_out) = x (n x d_in) W^T.
    pub fn forward(&self, x: &[f32], n: usize) -> Vec<f32> {
        assert_eq!(x.len(), n * self.d_in, "quantized forward: input of {} values is not {n} rows of {}", x.len(), self.d_in);
        let mut y = vec![0f32; n * self.d_out];
        if n == 0 {
            return y;
        }
        let out = SendPtr(y.as_mut_ptr());
        (0..self.d_out.div_ceil(PANEL_ROWS)).into_par_iter().for_each_init(Vec::new, |tile, t| {
            let (r0, r1) = (t * PANEL_ROWS, ((t + 1) * PANEL_ROWS).min(self.d_out));
            tile.resize((r1 - r0) * self.d_in, 0f32);
            self.dequantize_into(r0, r1, 0, self.d_in, tile);
            let out = &out;
            // y[:, r0..r1] = x tile^T: dst (n x (r1 - r0)) at column r0 of y, row stride d_out; the
            // tile (rows r, d_in) read transposed. SAFETY: tasks write disjoint columns of y.
            unsafe {
                super::isa::gemm_f32(
                    super::isa::avx2_forced(),
                    n,
                    r1 - r0,
                    self.d_in,
                    out.0.add(r0),
                    1,
                    self.d_out as isize,
                    false,
                    x.as_ptr(),
                    1,
                    self.d_in as isize,
                    tile.as_ptr(),
                    self.d_in as isize,
                    1,
                    1.0,
                    gemm::Parallelism::None,
                );
            }
        });
        y
    }

    /// dx (n x d_in) = dy (n x d_out) W.
    pub fn backward(&self, dy: &[f32], n: usize) -> Vec<f32> {
        assert_eq!(dy.len(), n * self.d_out, "quantized backward: gradient of {} values is not {n} rows of {}", dy.len(), self.d_out);
        let mut dx = vec![0f32; n * self.d_in];
        if n == 0 {
            return dx;
        }
        let out = SendPtr(dx.as_mut_ptr());
        (0..self.d_in.div_ceil(BWD_COLS)).into_par_iter().for_each_init(Vec::new, |tile, t| {
            let (c0, c1) = (t * BWD_COLS, ((t + 1) * BWD_COLS).min(self.d_in));
            let cols = c1 - c0;
            let mut r0 = 0;
            while r0 < self.d_out {
                let r1 = (r0 + CHUNK_ROWS).min(self.d_out);
                tile.resize((r1 - r0) * cols, 0f32);
                self.dequantize_into(r0, r1, c0, cols, tile);
                let out = &out;
                // dx[:, c0..c1] += dy[:, r0..r1] tile. SAFETY: tasks write disjoint columns of dx.
                unsafe {
                    super::isa::gemm_f32(
                        super::isa::avx2_forced(),
                        n,
                        cols,
                        r1 - r0,
                        out.0.add(c0),
                        1,
                        self.d_in as isize,
                        r0 > 0,
                        dy.as_ptr().add(r0),
                        1,
                        self.d_out as isize,
                        tile.as_ptr(),
                        1,
                        cols as isize,
                        1.0,
                        gemm::Parallelism::None,
                    );
                }
                r0 = r1;
            }
        });
        dx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len).map(|i| ((((i as u32).wrapping_mul(2654435761) ^ seed) % 2001) as f32 / 1000.0 - 1.0) * 0.7).collect()
    }

    /// For each kept type: a (d_out, d_in) matrix quantized by candle, its bytes kept, and the tiled
    /// products against dequantize-then-f32-matmul (candle's own dequantize and matmul, computed
    /// apart): forward and dL/dx agree to 1e-5 relative (f32 summation order; same dequantized
    /// values). Shapes: rows not a multiple of the panel or chunk (70, 300), columns one and several
    /// blocks of 256 (the K-quants' size), batch 1 and 37.
    #[test]
    fn tiled_products_match_dequantize_then_matmul_for_each_kept_type() -> anyhow::Result<()> {
        use GgmlDType::*;
        let dev = Device::Cpu;
        for dtype in [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2K, Q3K, Q4K, Q5K, Q6K] {
            for &(d_out, d_in, n) in &[(70usize, 256usize, 37usize), (300, 512, 1), (3, 768, 5)] {
                let w = Tensor::from_vec(values(d_out * d_in, 7), (d_out, d_in), &dev)?;
                let qt = QTensor::quantize(&w, dtype)?;
                let q = QuantMatrix::from_bytes(&qt.data()?, dtype, d_out, d_in)?;
                let wd = qt.dequantize(&dev)?; // candle's dequantization, the reference's W
                assert_eq!(q.to_f32(), wd.flatten_all()?.to_vec1::<f32>()?, "{dtype:?}: dequantized values");
                let x = Tensor::from_vec(values(n * d_in, 3), (n, d_in), &dev)?;
                let dy = Tensor::from_vec(values(n * d_out, 5), (n, d_out), &dev)?;
                let y_ref = x.matmul(&wd.t()?)?.flatten_all()?.to_vec1::<f32>()?;
                let dx_ref = dy.matmul(&wd)?.flatten_all()?.to_vec1::<f32>()?;
                let y = q.forward(&x.flatten_all()?.to_vec1::<f32>()?, n);
                let dx = q.backward(&dy.flatten_all()?.to_vec1::<f32>()?, n);
                for (what, got, want) in [("forward", y, y_ref), ("backward", dx, dx_ref)] {
                    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
                    let err = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
                    assert!(err < 1e-5, "{dtype:?} {d_out}x{d_in} batch {n}: {what} differs by {err:.2e} relative");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn q8_0_requantization_is_close_and_rows_permute() -> anyhow::Result<()> {
        let (d_out, d_in) = (5, 64);
        let w = values(d_out * d_in, 11);
        let q = QuantMatrix::quantize_q8_0(&w, d_out, d_in)?;
        // Q8_0: scale d = max|block| / 127 stored in f16 (relative error 2^-11), values q in
        // [-127, 127]: |error| <= d / 2 + 127 d 2^-11 per value, d <= 0.7 / 127 here.
        let d = 0.7f32 / 127.0;
        for (a, b) in q.to_f32().iter().zip(&w) {
            assert!((a - b).abs() <= d * (0.5 + 127.0 / 2048.0), "{a} vs {b}");
        }
        let p = q.permute_rows(&[4, 3, 2, 1, 0])?;
        let (a, b) = (q.to_f32(), p.to_f32());
        assert_eq!(&b[..d_in], &a[4 * d_in..]);
        assert!(QuantMatrix::quantize_q8_0(&w[..d_out * 60], d_out, 60).is_err(), "rows must be whole blocks");
        assert!(QuantMatrix::from_bytes(&[0u8; 10], GgmlDType::Q8_0, 1, 32).is_err(), "wrong byte count");
        Ok(())
    }
}
