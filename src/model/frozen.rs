//! The frozen matrices' storage (`model.dtype`, `bench --dtype`) and their product y = x W^T with
//! a backward pass that returns only dL/dx (STACK-NOTES.md, trap 2).
//!
//! - `f32`: on a CPU with AVX-512F (the AVX2 switch off), packed once for the kernels of
//!   `f32pack/`; elsewhere a candle tensor, gemm (`ops::frozen_linear`) or the GPU's matmul.
//! - `bf16`: on a CPU with AVX512_BF16, packed bf16 and `vdpbf16ps` (`bf16.rs`); elsewhere a bf16
//!   candle tensor (cuBLAS on a GPU; candle's generic conversion on other CPUs, slow).
//! - `f16`: an f16 candle tensor (for a GPU).
//! - `q8_0`, `keep`: GGUF blocks dequantized tile by tile (`quant.rs`), on the CPU.
//! - `auto` (the default): `f32` (`FrozenDtype::resolve`: bf16 changes what fine-tuning learns by
//!   more than a reordering of the f32 sums does, README "Speed").
//!
//! LoRA matrices, norms, the embedding, the answer rows of the LM head and the curvature stay f32.

use super::bf16::PackedBf16;
use super::f32pack::PackedF32;
use super::quant::QuantMatrix;
use anyhow::{bail, Result};
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};
use std::sync::Arc;

/// What `model.dtype` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrozenDtype {
    /// f32 for now (`resolve`); the name stays for a default chosen by measurement.
    Auto,
    F32,
    Bf16,
    F16,
    /// Requantized to Q8_0 at load, dequantized tile by tile.
    Q8_0,
    /// The GGUF's own block formats, dequantized tile by tile.
    Keep,
}

impl FrozenDtype {
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Self::Auto,
            "f32" | "float32" => Self::F32,
            "bf16" | "bfloat16" => Self::Bf16,
            "f16" | "float16" => Self::F16,
            "q8_0" | "q8" => Self::Q8_0,
            "keep" => Self::Keep,
            other => bail!("unknown dtype {other:?}; expected \"auto\", \"f32\", \"bf16\", \"f16\", \"q8_0\" or \"keep\""),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
            Self::Q8_0 => "q8_0",
            Self::Keep => "keep",
        }
    }

    /// `Auto` made concrete for `device`: f32 everywhere for now. The bf16 kernels are faster
    /// (1.6-1.9x the step on a Zen 5 with AVX512_BF16) but fine-tuning through them moved the
    /// compare4 sample's MAP accuracy from 0.55 (f32) to 0.36 at the same seed; over five seeds
    /// bf16 moved accuracy by up to 0.19 and MAP NLL by up to 0.74 where f32 in another summation
    /// order (the AVX2 kernels) moved them by 0.01 and 0.02 (2026-12-02, README "Floors, real
    /// lengths, bf16"): a different computation, so bf16 is asked for by name.
    pub fn resolve(self, _device: &Device) -> Self {
        match self {
            Self::Auto => Self::F32,
            d => d,
        }
    }

    /// Whether the matrices stay in block format (the loader must not dequantize them).
    pub fn is_quantized(self) -> bool {
        matches!(self, Self::Q8_0 | Self::Keep)
    }
}

/// A frozen matrix W (d_out x d_in).
#[derive(Clone)]
pub enum Frozen {
    /// A candle tensor (f32, or bf16 / f16 for a GPU), contiguous.
    Dense(Tensor),
    /// f32 packed for the AVX-512F kernels.
    F32Packed(Arc<PackedF32>),
    /// bf16 packed for the AVX512_BF16 kernels.
    Bf16(Arc<PackedBf16>),
    /// GGUF blocks.
    Quant(Arc<QuantMatrix>),
}

impl Frozen {
    /// (d_out, d_in)
    pub fn dims(&self) -> (usize, usize) {
        match self {
            Self::Dense(t) => t.dims2().unwrap_or((0, 0)),
            Self::F32Packed(p) => (p.d_out, p.d_in),
            Self::Bf16(p) => (p.d_out, p.d_in),
            Self::Quant(q) => (q.d_out, q.d_in),
        }
    }

    /// Storage name for reports: "f32", "bf16", "f16", or the block type ("q4k", ...).
    pub fn kind(&self) -> String {
        match self {
            Self::Dense(t) => format!("{:?}", t.dtype()).to_lowercase(),
            Self::F32Packed(_) => "f32".into(),
            Self::Bf16(_) => "bf16".into(),
            Self::Quant(q) => format!("{:?}", q.dtype).to_lowercase(),
        }
    }

    /// Bytes the matrix holds.
    pub fn bytes(&self) -> usize {
        match self {
            Self::Dense(t) => t.elem_count() * t.dtype().size_in_bytes(),
            Self::F32Packed(p) => p.bytes(),
            Self::Bf16(p) => p.bytes(),
            Self::Quant(q) => q.bytes(),
        }
    }

    /// W as a contiguous f32 tensor on `device`.
    pub fn to_f32(&self, device: &Device) -> Result<Tensor> {
        let (d_out, d_in) = self.dims();
        Ok(match self {
            Self::Dense(t) => t.to_dtype(DType::F32)?.to_device(device)?,
            Self::F32Packed(p) => Tensor::from_vec(p.to_f32(), (d_out, d_in), device)?,
            Self::Bf16(p) => Tensor::from_vec(p.to_f32(), (d_out, d_in), device)?,
            Self::Quant(q) => Tensor::from_vec(q.to_f32(), (d_out, d_in), device)?,
        })
    }

    /// The matrix stored as `dtype` (concrete: not `Auto`). f32 / bf16 / f16 from any storage;
    /// q8_0 from any storage (requantized); `keep` leaves blocks as they are (what the GGUF loader
    /// kept) and anything else f32.
    pub fn convert(&self, dtype: FrozenDtype, device: &Device) -> Result<Self> {
        let (d_out, d_in) = self.dims();
        Ok(match dtype {
            FrozenDtype::Auto => bail!("convert: resolve `auto` first"),
            FrozenDtype::F32 if device.is_cpu() && super::f32pack::available() => match self {
                Self::F32Packed(_) => self.clone(),
                _ => Self::F32Packed(Arc::new(PackedF32::pack(&self.to_f32(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?, d_out, d_in))),
            },
            FrozenDtype::F32 => Self::Dense(self.to_f32(device)?.contiguous()?),
            FrozenDtype::Bf16 if device.is_cpu() && super::bf16::available() => match self {
                Self::Bf16(_) => self.clone(),
                _ => Self::Bf16(Arc::new(PackedBf16::pack(&self.to_f32(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?, d_out, d_in))),
            },
            FrozenDtype::Bf16 => Self::Dense(self.to_f32(device)?.to_dtype(DType::BF16)?.contiguous()?),
            FrozenDtype::F16 => Self::Dense(self.to_f32(device)?.to_dtype(DType::F16)?.contiguous()?),
            FrozenDtype::Q8_0 | FrozenDtype::Keep if !device.is_cpu() => {
                bail!("model.dtype = \"{}\" runs on the CPU only for now", dtype.name())
            }
            FrozenDtype::Q8_0 => match self {
                Self::Quant(q) if q.dtype == candle_core::quantized::GgmlDType::Q8_0 => self.clone(),
                _ => Self::Quant(Arc::new(QuantMatrix::quantize_q8_0(&self.to_f32(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?, d_out, d_in)?)),
            },
            // What the loader kept in blocks stays so; a matrix the file held in f32 / f16 stays f32.
            FrozenDtype::Keep => match self {
                Self::Quant(_) => self.clone(),
                _ => self.convert(FrozenDtype::F32, device)?,
            },
        })
    }

    /// Whether `forward_rows` / `backward_rows` serve this matrix (CPU storage, f32 if dense).
    pub fn rows_on_cpu(&self) -> bool {
        match self {
            Self::Dense(t) => t.device().is_cpu() && t.dtype() == DType::F32,
            _ => true,
        }
    }

    /// y (n x d_out) = x (n x d_in) W^T on raw rows, on the CPU (f32 dense or packed, bf16 packed, blocks).
    pub fn forward_rows(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        Ok(match self {
            Self::Dense(w) => super::ops::dense_rows(w, x, n, false)?,
            Self::F32Packed(p) => p.forward(x, n),
            Self::Bf16(p) => p.forward(x, n),
            Self::Quant(q) => q.forward(x, n),
        })
    }

    /// dx (n x d_in) = dy (n x d_out) W on raw rows, on the CPU.
    pub fn backward_rows(&self, dy: &[f32], n: usize) -> Result<Vec<f32>> {
        Ok(match self {
            Self::Dense(w) => super::ops::dense_rows(w, dy, n, true)?,
            Self::F32Packed(p) => p.backward(dy, n),
            Self::Bf16(p) => p.backward(dy, n),
            Self::Quant(q) => q.backward(dy, n),
        })
    }

    /// y (..., d_out) = x (..., d_in) W^T in x's dtype (f32); W gets no gradient.
    pub fn linear(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Dense(w) => super::ops::frozen_linear(x, w),
            Self::F32Packed(p) => apply(x, Kernel::F32Packed(p.clone())),
            Self::Bf16(p) => apply(x, Kernel::Bf16(p.clone())),
            Self::Quant(q) => apply(x, Kernel::Quant(q.clone())),
        }
    }
}

/// The CPU kernels behind `Frozen::F32Packed`, `Frozen::Bf16` and `Frozen::Quant`.
#[derive(Clone)]
enum Kernel {
    F32Packed(Arc<PackedF32>),
    Bf16(Arc<PackedBf16>),
    Quant(Arc<QuantMatrix>),
}

impl Kernel {
    fn dims(&self) -> (usize, usize) {
        match self {
            Self::F32Packed(p) => (p.d_out, p.d_in),
            Self::Bf16(p) => (p.d_out, p.d_in),
            Self::Quant(q) => (q.d_out, q.d_in),
        }
    }
    fn forward(&self, x: &[f32], n: usize) -> Vec<f32> {
        match self {
            Self::F32Packed(p) => p.forward(x, n),
            Self::Bf16(p) => p.forward(x, n),
            Self::Quant(q) => q.forward(x, n),
        }
    }
    fn backward(&self, dy: &[f32], n: usize) -> Vec<f32> {
        match self {
            Self::F32Packed(p) => p.backward(dy, n),
            Self::Bf16(p) => p.backward(dy, n),
            Self::Quant(q) => q.backward(dy, n),
        }
    }
}

fn apply(x: &Tensor, k: Kernel) -> candle_core::Result<Tensor> {
    if !x.device().is_cpu() || x.dtype() != DType::F32 {
        candle_core::bail!("packed frozen matrices (f32, bf16, quantized) take f32 inputs on the CPU");
    }
    x.contiguous()?.apply_op1_arc(Arc::new(Box::new(KernelMatmul(k))))
}

/// y = x W^T through a `Kernel`; backward dL/dx = dL/dy W through the same kernel.
struct KernelMatmul(Kernel);

/// (rows, output shape) for an input (..., d_in) and a last dimension `d_to`.
fn rows_and_shape(dims: &[usize], d_from: usize, d_to: usize) -> candle_core::Result<(usize, Shape)> {
    if dims.last() != Some(&d_from) {
        candle_core::bail!("frozen product: input {dims:?} does not end in {d_from}");
    }
    let mut out = dims.to_vec();
    *out.last_mut().expect("rank >= 1") = d_to;
    Ok((dims.iter().product::<usize>() / d_from.max(1), Shape::from(out)))
}

impl CustomOp1 for KernelMatmul {
    fn name(&self) -> &'static str {
        "frozen-kernel-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = super::fused::slice(self.name(), storage, layout)?;
        let (d_out, d_in) = self.0.dims();
        let (n, shape) = rows_and_shape(layout.shape().dims(), d_in, d_out)?;
        Ok((CpuStorage::F32(self.0.forward(x, n)), shape))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (d_out, d_in) = self.0.dims();
        let (n, shape) = rows_and_shape(grad_res.dims(), d_out, d_in)?;
        let g = grad_res.contiguous()?;
        let dx = {
            let (st, l) = g.storage_and_layout();
            let candle_core::Storage::Cpu(s) = &*st else {
                candle_core::bail!("frozen product: gradient not on the CPU");
            };
            self.0.backward(super::fused::slice(self.name(), s, l)?, n)
        };
        Ok(Some(Tensor::from_vec(dx, shape, &Device::Cpu)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    #[test]
    fn parses_every_dtype_and_refuses_others() {
        for (s, d) in [
            ("auto", FrozenDtype::Auto),
            ("F32", FrozenDtype::F32),
            ("bf16", FrozenDtype::Bf16),
            ("f16", FrozenDtype::F16),
            ("q8_0", FrozenDtype::Q8_0),
            ("keep", FrozenDtype::Keep),
        ] {
            assert_eq!(FrozenDtype::parse(s).unwrap(), d);
        }
        let e = FrozenDtype::parse("int4").unwrap_err().to_string();
        assert!(e.contains("int4") && e.contains("q8_0"), "{e}");
        assert_eq!(FrozenDtype::Auto.resolve(&Device::Cpu), FrozenDtype::F32);
    }

    /// Through the graph: every storage gives the forward and the input gradient of the f32 product
    /// of its own (rounded / dequantized) W, and W gets no gradient. Tolerances relative to the
    /// largest entry: bf16 4e-3 (x is rounded to bf16 as well: 2^-8), q8_0 and f32 1e-5 (the same
    /// dequantized W, f32 summation order).
    #[test]
    fn every_storage_differentiates_through_its_own_weights() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1., (40, 64), &dev)?;
        let dense = Frozen::Dense(w.clone());
        let mut kinds = vec![(FrozenDtype::F32, 1e-5f32), (FrozenDtype::Q8_0, 1e-5)];
        if super::super::bf16::available() {
            kinds.push((FrozenDtype::Bf16, 4e-3));
        }
        for (dt, tol) in kinds {
            let f = dense.convert(dt, &dev)?;
            let wr = f.to_f32(&dev)?;
            let x = Var::from_tensor(&Tensor::randn(0f32, 1., (3, 5, 64), &dev)?)?;
            let y = f.linear(x.as_tensor())?;
            assert_eq!(y.dims(), &[3, 5, 40]);
            let y_ref = x.as_tensor().broadcast_matmul(&wr.t()?)?;
            let rel = |a: &Tensor, b: &Tensor| -> Result<f32> { Ok((a - b)?.abs()?.max_all()?.to_scalar::<f32>()? / b.abs()?.max_all()?.to_scalar::<f32>()?) };
            assert!(rel(&y, &y_ref)? < tol, "{dt:?}: forward");
            let c = Tensor::randn(0f32, 1., (3, 5, 40), &dev)?;
            let g = (y * &c)?.sum_all()?.backward()?;
            let gx = g.get(x.as_tensor()).expect("x has a gradient");
            assert!(rel(gx, &c.broadcast_matmul(&wr)?)? < tol, "{dt:?}: input gradient");
        }
        // A dense matrix under `keep` is stored as f32 is: packed where the kernels run.
        let kept = dense.convert(FrozenDtype::Keep, &dev)?;
        if super::super::f32pack::available() {
            assert!(matches!(kept, Frozen::F32Packed(_)), "f32 on AVX-512F is packed");
            assert!(matches!(dense.convert(FrozenDtype::F32, &dev)?, Frozen::F32Packed(_)));
        } else {
            assert!(matches!(kept, Frozen::Dense(_)), "keep leaves a dense matrix dense");
        }
        assert_eq!(kept.to_f32(&dev)?.flatten_all()?.to_vec1::<f32>()?, w.flatten_all()?.to_vec1::<f32>()?, "f32 storage is exact");
        Ok(())
    }
}
