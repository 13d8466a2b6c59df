//! Helpers for the kernel tests of `fused.rs` and `fast.rs`: both are checked against the
//! composed candle-op forms (`ops::*_composed`), whose autograd is independent of the
//! hand-written backward passes.

use super::ops::{attention_composed, rms_norm_composed, AttnShape};
use candle_core::{Device, Result, Tensor, Var};

pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
}

/// Values and input gradients of `under_test` and `reference`, through a random linear
/// read-out; gradients relative to the reference's largest entry (at least 1).
pub fn compare(inputs: &[Tensor], under_test: impl Fn(&[Tensor]) -> Result<Tensor>, reference: impl Fn(&[Tensor]) -> Result<Tensor>, tol: f32) -> Result<()> {
    let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let yf = under_test(&ts)?;
    let yc = reference(&ts)?;
    assert_eq!(yf.dims(), yc.dims());
    let d = max_diff(&yf, &yc);
    assert!(d < tol, "forward differs by {d}");
    let r = Tensor::randn(0f32, 1., yf.shape(), &Device::Cpu)?;
    let gf = (yf * &r)?.sum_all()?.backward()?;
    let gc = (yc * &r)?.sum_all()?.backward()?;
    for (i, t) in ts.iter().enumerate() {
        let (a, b) = (gf.get(t).expect("gradient under test"), gc.get(t).expect("reference gradient"));
        let scale = b.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0);
        let d = max_diff(a, b) / scale;
        assert!(d < tol, "gradient of input {i} differs by {d} (relative to {scale})");
    }
    Ok(())
}

/// Rotary tables (T, hd/2) with base 10000.
pub fn rotary(t: usize, hd: usize) -> Result<(Tensor, Tensor)> {
    let half = hd / 2;
    let a: Vec<f32> = (0..t).flat_map(|p| (0..half).map(move |i| p as f32 * 10000f32.powf(-((2 * i) as f32) / hd as f32))).collect();
    let a = Tensor::from_vec(a, (t, half), &Device::Cpu)?;
    Ok((a.cos()?, a.sin()?))
}

/// The additive causal mask (T, T) with a sliding window (usize::MAX for none).
pub fn causal_mask(t: usize, win: usize, dev: &Device) -> Result<Tensor> {
    let m: Vec<f32> = (0..t).flat_map(|i| (0..t).map(move |j| if j <= i && i - j < win { 0.0 } else { f32::NEG_INFINITY })).collect();
    Tensor::from_vec(m, (t, t), dev)
}

/// An RMSNorm (x, w, eps) against `ops::rms_norm_composed`: a (37, 40) input of scale 3.
pub fn check_rms_norm(f: impl Fn(&Tensor, &Tensor, f64) -> Result<Tensor>) -> Result<()> {
    let dev = Device::Cpu;
    let x = (Tensor::randn(0f32, 1., (37, 40), &dev)? * 3.0)?;
    let w = Tensor::randn(1f32, 0.3, 40, &dev)?;
    compare(&[x], |t| f(&t[0], &w, 1e-5), |t| rms_norm_composed(&t[0], &w, 1e-5), 1e-5)
}

/// An attention with `ops::attention`'s arguments against `ops::attention_composed`: grouped KV
/// heads (rep 3 as in the default model), multi-head, a sliding window, one head; values and
/// the three input gradients to 2e-5.
pub fn check_attention(f: impl Fn(&Tensor, &Tensor, &Tensor, &(Tensor, Tensor), &Tensor, AttnShape) -> Result<Tensor>) -> Result<()> {
    let dev = Device::Cpu;
    // (b, t, heads, kv_heads, hd, window)
    for &(b, t, h, hkv, hd, win) in &[(2, 11, 6, 2, 8, usize::MAX), (3, 9, 4, 4, 6, 3), (1, 5, 1, 1, 4, usize::MAX), (2, 17, 9, 3, 16, 7)] {
        let q = Tensor::randn(0f32, 1., (b * t, h * hd), &dev)?;
        let k = Tensor::randn(0f32, 1., (b * t, hkv * hd), &dev)?;
        let v = Tensor::randn(0f32, 1., (b * t, hkv * hd), &dev)?;
        let rot = rotary(t, hd)?;
        let mask = causal_mask(t, win, &dev)?;
        let shape = AttnShape { batch: b, seq: t, heads: h, kv_heads: hkv, window: win };
        compare(&[q, k, v], |x| f(&x[0], &x[1], &x[2], &rot, &mask, shape), |x| attention_composed(&x[0], &x[1], &x[2], &rot, &mask, shape), 2e-5)?;
    }
    Ok(())
}
