//! Differentiable building blocks whose backward passes candle would otherwise get wrong or slow.
//!
//! STACK-NOTES.md, traps 1 and 2: candle's fast `rms_norm`, `rope` and `softmax_last_dim` have no
//! backward (gradients vanish silently), and a plain `matmul` against a frozen weight makes
//! backprop compute dL/dW for that weight, which nobody needs. The functions here are either
//! composed of candle ops that carry a backward, or custom ops whose `bwd` returns only dL/dx.

use super::frozen::Frozen;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, CustomOp1, DType, Layout, Result, Shape, Tensor, D};
use std::sync::Arc;

/// y = x W^T for a frozen W (d_out x d_in): forward as a matmul, backward returns only
/// dL/dx = dL/dy W. The weight never receives a gradient (it is not a variable and
/// the op does not expose it to the graph).
///
/// W may be stored in bf16 / f16 (`Llama::cast_frozen`, for a GPU): x is then rounded to W's
/// dtype for the product, which cuBLAS accumulates in f32, and y comes back in x's dtype (f32),
/// so everything downstream (the LoRA path, the curvature) stays f32.
struct FrozenMatmul {
    /// (d_out, d_in), contiguous.
    weight: Tensor,
    /// Through the back end's own matmul even on the CPU: the code path a GPU runs
    /// (`with_gpu_path`), instead of the gemm call on the storages.
    via_backend: bool,
}

impl FrozenMatmul {
    /// (rows n, d_in, d_out, output shape) for an input of shape (..., d_in).
    fn dims(&self, layout: &Layout) -> Result<(usize, usize, usize, Shape)> {
        let (d_out, d_in) = self.weight.dims2()?;
        let mut out_dims = layout.shape().dims().to_vec();
        if out_dims.last() != Some(&d_in) {
            candle_core::bail!("frozen-matmul: input {:?} does not end in the weight's {d_in}", out_dims);
        }
        let n = layout.shape().elem_count() / d_in.max(1);
        *out_dims.last_mut().expect("rank >= 1") = d_out;
        Ok((n, d_in, d_out, Shape::from(out_dims)))
    }

    /// y = x W^T through the back end's matmul (cuBLAS on a GPU) in W's dtype. x is contiguous
    /// (`frozen_linear` makes it so) from its layout's offset on; W^T is W's layout transposed,
    /// which cuBLAS reads as a transposed operand without a copy.
    fn fwd_backend<S: BackendStorage>(&self, x: &S, xl: &Layout, w: &S, wl: &Layout) -> Result<(S, Shape)> {
        let (n, d_in, d_out, shape) = self.dims(xl)?;
        if !xl.is_contiguous() {
            candle_core::bail!("frozen-matmul: input is not contiguous");
        }
        let x2 = Layout::contiguous_with_offset((n, d_in), xl.start_offset());
        let wt = wl.transpose(0, 1)?; // (d_in, d_out), strides (1, d_in)
        let (wdt, xdt) = (w.dtype(), x.dtype());
        let y = if wdt == xdt {
            x.matmul(w, (1, n, d_out, d_in), &x2, &wt)?
        } else {
            let xc = x.to_dtype(&x2, wdt)?;
            let y = xc.matmul(w, (1, n, d_out, d_in), &Layout::contiguous((n, d_in)), &wt)?;
            y.to_dtype(&Layout::contiguous((n, d_out)), xdt)?
        };
        Ok((y, shape))
    }
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (st, wl) = self.weight.storage_and_layout();
        let candle_core::Storage::Cpu(ws) = &*st else {
            candle_core::bail!("frozen-matmul: weight not on the CPU");
        };
        if self.via_backend || ws.dtype() != DType::F32 || storage.dtype() != DType::F32 {
            return self.fwd_backend(storage, layout, ws, wl);
        }
        // gemm straight on the input's and the weight's storage into the output buffer: no copy
        // of x or y (they were two extra passes over every activation).
        let x = super::fused::slice(self.name(), storage, layout)?;
        let w = super::fused::slice(self.name(), ws, wl)?;
        let (n, d_in, d_out, shape) = self.dims(layout)?;
        Ok((CpuStorage::F32(dense_product(w, d_out, d_in, x, n, false)), shape))
    }

    /// The GPU path: one cuBLAS call, and no dL/dW in backward (a plain matmul's backward would
    /// compute it and throw it away: a third of the frozen layers' work).
    fn cuda_fwd(&self, storage: &CudaStorage, layout: &Layout) -> Result<(CudaStorage, Shape)> {
        let (st, wl) = self.weight.storage_and_layout();
        match &*st {
            candle_core::Storage::Cuda(ws) => self.fwd_backend(storage, layout, ws, wl),
            _ => candle_core::bail!("frozen-matmul: weight not on the GPU"),
        }
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        // dL/dx = dL/dy W, shape (..., d_in), in W's dtype and back (as in forward). Through
        // `frozen_linear` again would be pointless (no graph is built in backward), so a plain
        // product: gemm on the storages on the CPU in f32 (as forward), the back end's matmul elsewhere.
        let dims = grad_res.dims().to_vec();
        let d_out = *dims.last().unwrap_or(&0);
        let n = grad_res.elem_count() / d_out.max(1);
        let mut in_dims = dims;
        *in_dims.last_mut().expect("rank >= 1") = self.weight.dim(1)?;
        if grad_res.device().is_cpu() && !self.via_backend && self.weight.dtype() == DType::F32 && grad_res.dtype() == DType::F32 {
            let g = grad_res.contiguous()?;
            let dx = {
                let (st, l) = g.storage_and_layout();
                let candle_core::Storage::Cpu(s) = &*st else { candle_core::bail!("frozen-matmul: gradient not on the CPU") };
                dense_rows(&self.weight, super::fused::slice(self.name(), s, l)?, n, true)?
            };
            return Tensor::from_vec(dx, in_dims, grad_res.device()).map(Some);
        }
        let g = grad_res.reshape((n, d_out))?;
        let dx = g.to_dtype(self.weight.dtype())?.matmul(&self.weight)?.to_dtype(grad_res.dtype())?;
        Ok(Some(dx.reshape(in_dims)?))
    }
}

/// On the CPU, with W (d_out, d_in) row-major f32: y (n, d_out) = x (n, d_in) W^T (`transposed`
/// false), or dx (n, d_in) = dy (n, d_out) W (`transposed` true), one gemm call split over the
/// threads (through `isa::gemm_f32`, so the AVX2 switch reaches it).
pub(crate) fn dense_product(w: &[f32], d_out: usize, d_in: usize, x: &[f32], n: usize, transposed: bool) -> Vec<f32> {
    let threads = candle_core::utils::get_num_threads();
    let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    if transposed {
        // dx (n, d_in) = dy (n, d_out) W, W read row-major (d_out, d_in).
        let mut dx = vec![0f32; n * d_in];
        super::fused::mm(&mut dx, false, 1.0, (n, d_in, d_out), x, (d_out, 1), w, (d_in, 1), par);
        dx
    } else {
        // y (n, d_out) = x (n, d_in) W^T, W^T read from W (d_out, d_in) with strides (1, d_in).
        let mut y = vec![0f32; n * d_out];
        super::fused::mm(&mut y, false, 1.0, (n, d_out, d_in), x, (d_in, 1), w, (1, d_in), par);
        y
    }
}

/// `dense_product` for a contiguous f32 CPU weight tensor.
pub(crate) fn dense_rows(w: &Tensor, x: &[f32], n: usize, transposed: bool) -> Result<Vec<f32>> {
    let (d_out, d_in) = w.dims2()?;
    let (st, wl) = w.storage_and_layout();
    let candle_core::Storage::Cpu(ws) = &*st else { candle_core::bail!("frozen-matmul: weight not on the CPU") };
    let wv = super::fused::slice("frozen-matmul", ws, wl)?;
    if x.len() != n * if transposed { d_out } else { d_in } {
        candle_core::bail!("frozen-matmul: {} values are not {n} rows of the product's input", x.len());
    }
    Ok(dense_product(wv, d_out, d_in, x, n, transposed))
}

/// x (..., d_in) times a frozen weight (d_out, d_in) transposed: (..., d_out), in x's dtype
/// whatever W's. On the CPU and on CUDA the weight gets no gradient (custom op). On Metal this
/// falls back to a broadcast matmul: correct gradients for x, but dL/dW is computed and thrown away.
pub fn frozen_linear(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() || x.device().is_cuda() {
        let via_backend = !x.device().is_cpu() || gpu_path_forced();
        x.contiguous()?.apply_op1_arc(std::sync::Arc::new(Box::new(FrozenMatmul { weight: weight.clone(), via_backend })))
    } else {
        x.to_dtype(weight.dtype())?.broadcast_matmul(&weight.t()?)?.to_dtype(x.dtype())
    }
}

/// y = x W^T + s ((x ⊙ mask) A^T) B^T: a frozen projection W with its LoRA adapter (A, B),
/// scale s, and dropout multipliers on the adapter's input (one per element of x) when training
/// with dropout. One op on the CPU (`fused/lora.rs`), composed candle ops elsewhere.
pub fn lora_linear(x: &Tensor, w: &Frozen, a: &Tensor, b: &Tensor, scale: f64, mask: Option<Arc<Vec<f32>>>) -> Result<Tensor> {
    if fusable(x) && w.rows_on_cpu() {
        return super::fused::lora_linear(x, w, a, b, scale, mask);
    }
    let u = masked_input(x, mask.as_deref().map(Vec::as_slice))?.matmul(&a.t()?)?; // (N, r)
    w.linear(x)? + (u.matmul(&b.t()?)? * scale)?
}

/// x ⊙ m: an adapter's input under dropout (m one multiplier per element of x), or x itself.
pub fn masked_input(x: &Tensor, mask: Option<&[f32]>) -> Result<Tensor> {
    match mask {
        Some(m) => x * Tensor::from_slice(m, x.shape(), x.device())?,
        None => Ok(x.clone()),
    }
}

/// RMSNorm with a backward pass: x / sqrt(mean(x^2) + eps) * w  (w a frozen scale).
/// One fused pass on the CPU (`fused/`), candle's kernel with a hand-written backward on a GPU
/// (`fast.rs`), composed candle ops elsewhere.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    if fusable(x) {
        return super::fused::rms_norm(x, weight, eps);
    }
    if fast(x) {
        return super::fast::rms_norm(x, weight, eps);
    }
    rms_norm_composed(x, weight, eps)
}

/// The fused kernels serve f32 tensors on the CPU (unless `with_gpu_path` says otherwise).
fn fusable(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == candle_core::DType::F32 && !gpu_path_forced()
}

/// `fast.rs` serves CUDA, and the CPU under `with_gpu_path` (its tests); Metal keeps the
/// composed forms (`with_grad` has no Metal forward, and nobody has run it there).
fn fast(x: &Tensor) -> bool {
    x.device().is_cuda() || x.device().is_cpu()
}

thread_local! {
    static GPU_PATH: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread runs as a GPU would (`with_gpu_path`).
pub fn gpu_path_forced() -> bool {
    GPU_PATH.with(|c| c.get())
}

/// Runs `f` on this thread as a GPU would: its ops (`fast.rs`, the frozen matmul through the back
/// end's matmul) instead of the fused CPU kernels, and the Laplace passes' backward columns
/// stacked (`laplace::curvature::column_reps`), so that tests on the CPU can check that path.
pub fn with_gpu_path<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            GPU_PATH.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(GPU_PATH.with(|c| c.replace(true)));
    f()
}

/// RMSNorm from candle ops (their autograd gives the backward pass).
pub(crate) fn rms_norm_composed(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    let inv = (ms + eps)?.sqrt()?.recip()?;
    x.broadcast_mul(&inv)?.broadcast_mul(weight)
}

/// a + b (the residual stream), with a backward pass.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if fusable(a) && a.shape() == b.shape() && b.dtype() == a.dtype() {
        return super::fused::add(a, b);
    }
    a + b
}

/// silu(g) * u, the SwiGLU gate, with a backward pass.
pub fn silu_mul(g: &Tensor, u: &Tensor) -> Result<Tensor> {
    if fusable(g) {
        return super::fused::silu_mul(g, u);
    }
    g.silu()? * u
}

/// Shapes of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub kv_heads: usize,
    /// Sliding window (usize::MAX for none).
    pub window: usize,
}

/// Causal self-attention with rotary embeddings (Hugging Face "rotate half" layout) and grouped
/// KV heads, with a backward pass. q: (B*T, H*hd); k, v: (B*T, Hkv*hd); cos, sin: (T, hd/2);
/// mask: the additive (T, T) causal mask (used by the composed form only). Returns (B*T, H*hd).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, rot: &(Tensor, Tensor), mask: &Tensor, s: AttnShape) -> Result<Tensor> {
    let AttnShape { batch: b, seq: t, heads: h, kv_heads: hkv, window } = s;
    if fusable(q) {
        return super::fused::attention(q, k, v, &rot.0, &rot.1, b, t, h, hkv, window);
    }
    if fast(q) {
        return super::fast::attention(q, k, v, rot, mask, s);
    }
    attention_composed(q, k, v, rot, mask, s)
}

/// Attention of one query per sequence: row r's query at position p_r = lengths[r] - 1 over that
/// sequence's keys 0..=p_r (those within the window). For the last block of a pass whose output is
/// read at each prompt's last position only (`Llama::last_block`). q: (B, H*hd) unrotated; k, v:
/// (B*T, Hkv*hd) unrotated; cos, sin: (T, hd/2). Returns (B, H*hd). Candle ops (with their
/// backward) on every device: B query rows cost little next to the full-length blocks.
pub fn last_query_attention(q: &Tensor, k: &Tensor, v: &Tensor, rot: &(Tensor, Tensor), lengths: &[usize], s: AttnShape) -> Result<Tensor> {
    let AttnShape { batch: b, seq: t, heads: h, kv_heads: hkv, window } = s;
    let hd = q.dim(D::Minus1)? / h;
    let (rep, half, dev) = (h / hkv, hd / 2, q.device());
    if lengths.len() != b || lengths.iter().any(|&l| l == 0 || l > t) {
        candle_core::bail!("last-query attention: lengths {lengths:?} do not fit {b} sequences of {t}");
    }
    let pos = Tensor::from_vec(lengths.iter().map(|&l| (l - 1) as u32).collect::<Vec<_>>(), b, dev)?;
    // q~ = R_p q: rotate half with each row's own angles, (B, 1, hd/2) against (B, H, hd).
    let (c, sn) = (rot.0.index_select(&pos, 0)?.unsqueeze(1)?, rot.1.index_select(&pos, 0)?.unsqueeze(1)?);
    let q = q.reshape((b, h, hd))?;
    let (q1, q2) = (q.narrow(D::Minus1, 0, half)?, q.narrow(D::Minus1, half, half)?);
    let q = Tensor::cat(&[(q1.broadcast_mul(&c)? - q2.broadcast_mul(&sn)?)?, (q2.broadcast_mul(&c)? + q1.broadcast_mul(&sn)?)?], D::Minus1)?;
    let q = q.reshape((b, hkv, rep, hd))?; // query head g rep + j reads kv head g
    let k = k.reshape((b, t, hkv, hd))?.transpose(1, 2)?.contiguous()?; // (B, Hkv, T, hd)
    let v = v.reshape((b, t, hkv, hd))?.transpose(1, 2)?.contiguous()?;
    let k = candle_nn::rotary_emb::rope_slow(&k, &rot.0, &rot.1)?;
    let att = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?; // (B, Hkv, rep, T)
    let mask: Vec<f32> = lengths.iter().flat_map(|&l| (0..t).map(move |j| if j < l && l - 1 - j < window { 0.0 } else { f32::NEG_INFINITY })).collect();
    let mask = Tensor::from_vec(mask, (b, 1, 1, t), dev)?;
    let att = candle_nn::ops::softmax(&att.broadcast_add(&mask)?, D::Minus1)?;
    att.matmul(&v)?.reshape((b, h * hd)) // (B, Hkv, rep, hd) -> (B, H*hd)
}

/// `attention` from candle ops: heads transposed out, rotary, KV heads repeated, masked softmax,
/// weighted sum, transposed back.
pub(crate) fn attention_composed(q: &Tensor, k: &Tensor, v: &Tensor, rot: &(Tensor, Tensor), mask: &Tensor, s: AttnShape) -> Result<Tensor> {
    let AttnShape { batch: b, seq: t, heads: h, kv_heads: hkv, .. } = s;
    let hd = q.dim(D::Minus1)? / h;
    let q = q.reshape((b, t, h, hd))?.transpose(1, 2)?.contiguous()?; // (B, h, T, hd)
    let k = k.reshape((b, t, hkv, hd))?.transpose(1, 2)?.contiguous()?; // (B, hkv, T, hd)
    let v = v.reshape((b, t, hkv, hd))?.transpose(1, 2)?.contiguous()?;
    let q = candle_nn::rotary_emb::rope_slow(&q, &rot.0, &rot.1)?;
    let k = candle_nn::rotary_emb::rope_slow(&k, &rot.0, &rot.1)?;
    let k = candle_transformers::utils::repeat_kv(k, h / hkv)?.contiguous()?; // (B, h, T, hd)
    let v = candle_transformers::utils::repeat_kv(v, h / hkv)?.contiguous()?;
    let att = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?; // (B, h, T, T)
    let att = candle_nn::ops::softmax(&att.broadcast_add(mask)?, D::Minus1)?;
    att.matmul(&v)?.transpose(1, 2)?.reshape((b * t, h * hd)) // (B*T, h*hd)
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

    /// The path a GPU runs (the back end's matmul, `with_gpu_path`), with the weight stored in
    /// f32, bf16 and f16, on an input that starts inside its storage (a row slice): forward and
    /// input gradient against the plain matmul of the same rounded operands, computed in f32.
    /// The reference rounds x and W as the op does and multiplies in f32; the op's product comes
    /// out in W's dtype (as cuBLAS's does) before it returns to f32, so the tolerance relative to
    /// the largest entry is that rounding: f32 1e-5 (summation order), bf16 4e-3 (2^-8), f16 1e-3 (2^-10).
    #[test]
    fn frozen_linear_backend_path_in_each_dtype() -> Result<()> {
        let dev = Device::Cpu;
        let w32 = Tensor::randn(0f32, 1., (7, 6), &dev)?;
        let big = Tensor::randn(0f32, 1., (5, 6), &dev)?;
        let c = Tensor::randn(0f32, 1., (3, 7), &dev)?;
        for (dt, tol) in [(DType::F32, 1e-5), (DType::BF16, 4e-3), (DType::F16, 1e-3)] {
            let w = w32.to_dtype(dt)?;
            let x = Var::from_tensor(&big)?;
            let xs = x.as_tensor().narrow(0, 2, 3)?; // contiguous, start offset 12
            let y = with_gpu_path(|| frozen_linear(&xs, &w))?;
            assert_eq!(y.dtype(), DType::F32);
            let round = |t: &Tensor| t.to_dtype(dt)?.to_dtype(DType::F32);
            let wr = round(&w32)?;
            let y_ref = round(&big.narrow(0, 2, 3)?)?.matmul(&wr.t()?)?;
            let rel = |a: &Tensor, b: &Tensor| -> Result<f32> {
                let d = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
                Ok(d / b.abs()?.max_all()?.to_scalar::<f32>()?)
            };
            let e = rel(&y, &y_ref)?;
            assert!(e < tol, "{dt:?}: forward differs by {e}");
            let g = (y * &c)?.sum_all()?.backward()?;
            let gx = g.get(x.as_tensor()).expect("x has a gradient");
            // Rows 2..5 get round(c) W_r; rows 0..2 nothing.
            let expect = Tensor::cat(&[Tensor::zeros((2, 6), DType::F32, &dev)?, round(&c)?.matmul(&wr)?], 0)?;
            let e = rel(gx, &expect)?;
            assert!(e < tol, "{dt:?}: input gradient differs by {e}");
            assert!(g.get(&w).is_none(), "{dt:?}: the frozen weight must not receive a gradient");
        }
        Ok(())
    }
}
