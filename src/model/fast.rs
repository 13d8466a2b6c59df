//! The GPU path of the decoder's non-linear pieces: candle's own fast kernels (RMSNorm, rotary
//! embedding, softmax; one launch each on CUDA) for the forward pass, with hand-written backward
//! passes attached by `with_grad`, since those kernels carry none (STACK-NOTES.md, trap 1).
//!
//! Why: at the default model's sizes a GPU step is bound by kernel launches, not arithmetic
//! (H200: 0.148 s a step for ~6,000 launches, PyTorch 0.132 s), and the composed forms
//! (`ops::*_composed`) spend 5-8 launches forward and twice that backward on each of these.
//! The same code runs on the CPU (candle has CPU versions of the kernels), where
//! `ops::with_gpu_path` selects it so that tests check it against the composed forms.

use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::{CpuStorage, CudaStorage, CustomOp2, Layout, Result, Shape, Tensor, D};
use std::sync::Arc;

type Backward = dyn Fn(&Tensor) -> Result<Tensor> + Send + Sync;

/// Forward: a copy of `y` (a value computed from x by kernels without a backward pass).
/// Backward: dL/dx = `bwd`(dL/dy); y itself gets nothing.
struct WithGrad {
    bwd: Box<Backward>,
}

/// A fresh contiguous copy of (s, l): the op's output must be storage of its own.
fn copy<S: BackendStorage>(s: &S, l: &Layout) -> Result<(S, Shape)>
where
    S::Device: BackendDevice<Storage = S>,
{
    // SAFETY: every element of `dst` is written by copy_strided_src before it is read.
    let mut dst = unsafe { s.device().alloc_uninit(l.shape(), s.dtype())? };
    s.copy_strided_src(&mut dst, 0, l)?;
    Ok((dst, l.shape().clone()))
}

impl CustomOp2 for WithGrad {
    fn name(&self) -> &'static str {
        "with-grad"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, y: &CpuStorage, yl: &Layout) -> Result<(CpuStorage, Shape)> {
        copy(y, yl)
    }

    fn cuda_fwd(&self, _: &CudaStorage, _: &Layout, y: &CudaStorage, yl: &Layout) -> Result<(CudaStorage, Shape)> {
        copy(y, yl)
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some((self.bwd)(grad_res)?), None))
    }
}

/// `y` (computed from `x` without a graph) as a node of x's graph whose backward is `bwd`.
pub fn with_grad(x: &Tensor, y: Tensor, bwd: impl Fn(&Tensor) -> Result<Tensor> + Send + Sync + 'static) -> Result<Tensor> {
    x.apply_op2_arc(&y.detach(), Arc::new(Box::new(WithGrad { bwd: Box::new(bwd) })))
}

/// RMSNorm y = x r w, r = (mean(x^2) + eps)^(-1/2) per row. Backward (w frozen):
/// dL/dx = r (g w - x r^2 mean(g w x)), from dr/dx_j = -r^3 x_j / n.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let x = x.contiguous()?;
    let y = candle_nn::ops::rms_norm(&x.detach(), w, eps as f32)?;
    let (xd, w) = (x.detach(), w.clone());
    with_grad(&x, y, move |g| {
        let gw = g.broadcast_mul(&w)?;
        let r = (xd.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
        let m = (&gw * &xd)?.mean_keepdim(D::Minus1)?;
        (gw - xd.broadcast_mul(&(r.sqr()? * m)?)?)?.broadcast_mul(&r)
    })
}

/// Rotary embedding ("rotate half" layout) of x (B, T, H, hd) with cos, sin (T, hd/2). Each pair
/// (x_i, x_{i+hd/2}) is rotated by the angle of position t; the transpose of a rotation is the
/// rotation by minus that angle, so the backward pass is the same kernel with sin negated.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let x = x.contiguous()?;
    let y = candle_nn::rotary_emb::rope_thd(&x.detach(), cos, sin)?;
    let (cos, sin) = (cos.clone(), sin.clone());
    with_grad(&x, y, move |g| candle_nn::rotary_emb::rope_thd(&g.contiguous()?, &cos, &sin.neg()?))
}

/// Softmax over the last dimension. Backward: dL/ds = p (g - sum(g p)).
pub fn softmax_last_dim(s: &Tensor) -> Result<Tensor> {
    let s = s.contiguous()?;
    let p = candle_nn::ops::softmax_last_dim(&s.detach())?;
    let pd = p.clone();
    with_grad(&s, p, move |g| {
        let gp = (g * &pd)?;
        let sum = gp.sum_keepdim(D::Minus1)?;
        gp - pd.broadcast_mul(&sum)?
    })
}

/// Causal self-attention as `ops::attention` (same arguments and layouts) from the pieces above
/// and candle's matmuls. The `rep = H / Hkv` query heads that share KV head j are consecutive
/// (Hugging Face's `repeat_kv` order), so q viewed as (B, Hkv, rep*T, hd) meets each KV head
/// once in a batched matmul and the KV heads are never repeated (two copies fewer each way).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, rot: &(Tensor, Tensor), mask: &Tensor, s: super::ops::AttnShape) -> Result<Tensor> {
    let super::ops::AttnShape { batch: b, seq: t, heads: h, kv_heads: hkv, .. } = s;
    let hd = q.dim(D::Minus1)? / h;
    let rep = h / hkv;
    let q = rope(&q.reshape((b, t, h, hd))?, &rot.0, &rot.1)?.transpose(1, 2)?.contiguous()?; // (B, H, T, hd)
    let k = rope(&k.reshape((b, t, hkv, hd))?, &rot.0, &rot.1)?.transpose(1, 2)?.contiguous()?; // (B, Hkv, T, hd)
    let v = v.reshape((b, t, hkv, hd))?.transpose(1, 2)?.contiguous()?; // (B, Hkv, T, hd)
    let att = (q.reshape((b, hkv, rep * t, hd))?.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?; // (B, Hkv, rep*T, T)
    let p = softmax_last_dim(&att.reshape((b, h, t, t))?.broadcast_add(mask)?)?; // (B, H, T, T)
    let o = p.reshape((b, hkv, rep * t, t))?.matmul(&v)?; // (B, Hkv, rep*T, hd)
    o.reshape((b, h, t, hd))?.transpose(1, 2)?.reshape((b * t, h * hd)) // (B*T, H*hd)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{causal_mask, check_attention, check_rms_norm, compare, rotary};
    use super::*;
    use candle_core::Device;

    #[test]
    fn rms_norm_matches_composed_ops() -> Result<()> {
        check_rms_norm(rms_norm)
    }

    #[test]
    fn softmax_matches_composed_ops_with_masked_entries() -> Result<()> {
        let dev = Device::Cpu;
        let s = (Tensor::randn(0f32, 1., (2, 3, 9, 9), &dev)? * 3.0)?.broadcast_add(&causal_mask(9, 4, &dev)?)?;
        compare(&[s], |t| softmax_last_dim(&t[0]), |t| candle_nn::ops::softmax(&t[0], D::Minus1), 1e-5)
    }

    #[test]
    fn rope_matches_composed_ops() -> Result<()> {
        let dev = Device::Cpu;
        let (b, t, h, hd) = (2, 7, 3, 8);
        let x = Tensor::randn(0f32, 1., (b, t, h, hd), &dev)?;
        let (cos, sin) = rotary(t, hd)?;
        let composed = |x: &Tensor| -> Result<Tensor> {
            let y = candle_nn::rotary_emb::rope_slow(&x.transpose(1, 2)?.contiguous()?, &cos, &sin)?;
            y.transpose(1, 2)
        };
        compare(&[x], |t| rope(&t[0], &cos, &sin), |t| composed(&t[0]), 1e-5)
    }

    #[test]
    fn attention_matches_composed_ops_with_grouped_heads_and_window() -> Result<()> {
        check_attention(attention)
    }
}
