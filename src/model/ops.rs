//! Differentiable building blocks whose backward passes candle would otherwise get wrong or slow.
//!
//! STACK-NOTES.md, traps 1 and 2: candle's fast `rms_norm`, `rope` and `softmax_last_dim` have no
//! backward (gradients vanish silently), and a plain `matmul` against a frozen weight makes
//! backprop compute dL/dW for that weight, which nobody needs. The functions here are either
//! composed of candle ops that carry a backward, or custom ops whose `bwd` returns only dL/dx.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, D};

/// y = x W^T for a frozen W (d_out x d_in): forward as a matmul, backward returns only
/// dL/dx = dL/dy W. The weight never receives a gradient (it is not a variable and
/// the op does not expose it to the graph).
struct FrozenMatmul {
    /// (d_out, d_in), contiguous.
    weight: Tensor,
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        // Rebuild a tensor view of the input (a copy of n * d_in floats, negligible against the
        // n * d_in * d_out multiply-adds) and let candle's gemm do the product.
        let dims = layout.shape().dims().to_vec();
        let x = match storage {
            CpuStorage::F32(v) => {
                let (start, end) = layout
                    .contiguous_offsets()
                    .ok_or_else(|| candle_core::Error::Msg("frozen-matmul: input not contiguous".into()))?;
                Tensor::from_slice(&v[start..end], dims.as_slice(), &candle_core::Device::Cpu)?
            }
            _ => candle_core::bail!("frozen-matmul: only f32 on the CPU path"),
        };
        let d_in = *dims.last().unwrap_or(&0);
        let n = x.elem_count() / d_in.max(1);
        let y = x.reshape((n, d_in))?.matmul(&self.weight.t()?)?;
        let d_out = self.weight.dim(0)?;
        let mut out_dims = dims;
        *out_dims.last_mut().expect("rank >= 1") = d_out;
        let (st, l) = y.storage_and_layout();
        let out = match &*st {
            candle_core::Storage::Cpu(CpuStorage::F32(v)) => {
                let (s, e) = l.contiguous_offsets().expect("fresh matmul output is contiguous");
                CpuStorage::F32(v[s..e].to_vec())
            }
            _ => candle_core::bail!("frozen-matmul: unexpected storage"),
        };
        Ok((out, Shape::from(out_dims)))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        // dL/dx = dL/dy W, shape (..., d_in). Through `frozen_linear` again would be pointless
        // (no graph is built in backward), so a plain matmul.
        let dims = grad_res.dims().to_vec();
        let d_out = *dims.last().unwrap_or(&0);
        let n = grad_res.elem_count() / d_out.max(1);
        let dx = grad_res.reshape((n, d_out))?.matmul(&self.weight)?;
        let mut in_dims = dims;
        *in_dims.last_mut().expect("rank >= 1") = self.weight.dim(1)?;
        Ok(Some(dx.reshape(in_dims)?))
    }
}

/// x (..., d_in) times a frozen weight (d_out, d_in) transposed: (..., d_out).
/// On the CPU the weight gets no gradient (custom op). On other devices this falls back to a
/// broadcast matmul: correct gradients for x, but dL/dW is computed and thrown away.
pub fn frozen_linear(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        x.contiguous()?.apply_op1_arc(std::sync::Arc::new(Box::new(FrozenMatmul {
            weight: weight.clone(),
        })))
    } else {
        x.broadcast_matmul(&weight.t()?)
    }
}

/// RMSNorm with a backward pass: x / sqrt(mean(x^2) + eps) * w  (w a frozen scale).
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    let inv = (ms + eps)?.sqrt()?.recip()?;
    x.broadcast_mul(&inv)?.broadcast_mul(weight)
}

/// Rotary embedding in the Hugging Face ("rotate half") layout, with a backward pass.
/// x: (b, heads, t, head_dim); cos, sin: (t, head_dim / 2).
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    candle_nn::rotary_emb::rope_slow(x, cos, sin)
}

/// Softmax over the last dimension, with a backward pass.
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::softmax(x, D::Minus1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn frozen_linear_matches_matmul_and_gives_input_gradient_only() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1., (5, 3), &dev)?;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (2, 4, 3), &dev)?)?;
        let y = frozen_linear(x.as_tensor(), &w)?;
        let y_ref = x.as_tensor().broadcast_matmul(&w.t()?)?;
        let diff = (&y - &y_ref)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "forward differs by {diff}");
        // Gradient of sum(y * c) w.r.t. x is c W, computed independently.
        let c = Tensor::randn(0f32, 1., (2, 4, 5), &dev)?;
        let g = (y * &c)?.sum_all()?.backward()?;
        let gx = g.get(x.as_tensor()).expect("x has a gradient");
        let expect = c.broadcast_matmul(&w)?;
        let diff = (gx - expect)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "input gradient differs by {diff}");
        assert!(g.get(&w).is_none(), "the frozen weight must not receive a gradient");
        Ok(())
    }
}
