//! Helpers for the kernel tests of `fused/` and `fast.rs`: both are checked against the
//! composed candle-op forms (`ops::*_composed`), whose autograd is independent of the
//! hand-written backward passes. And for the packed products of `bf16.rs` and `f32pack/`:
//! an f64 reference with its error scale, awkward deterministic values.

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

/// y = round(x) round(W)^T in f64 for x (n x d_in) and W (d_out x d_in), and sum |products| per
/// entry (the scale of an f32 accumulation's rounding error). `round` is what the kernel does to
/// its operands first (bf16 rounding, or nothing).
pub fn product_reference(x: &[f32], w: &[f32], n: usize, d_out: usize, d_in: usize, round: impl Fn(f32) -> f64) -> (Vec<f64>, Vec<f64>) {
    let (mut y, mut s) = (vec![0f64; n * d_out], vec![0f64; n * d_out]);
    for m in 0..n {
        for o in 0..d_out {
            for i in 0..d_in {
                let p = round(x[m * d_in + i]) * round(w[o * d_in + i]);
                y[m * d_out + o] += p;
                s[m * d_out + o] += p.abs();
            }
        }
    }
    (y, s)
}

/// Checks an f32-accumulated product against the f64 reference: |error| <= roundings 2^-24 sum
/// |products| (Higham's bound for a recursive sum; `roundings` is how many f32 roundings each
/// output goes through).
pub fn check_product(got: &[f32], want: &[f64], scale: &[f64], roundings: usize, what: &str) {
    let tol = roundings as f64 * 2f64.powi(-24);
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (idx, ((g, w), s)) in got.iter().zip(want).zip(scale).enumerate() {
        let err = (*g as f64 - w).abs();
        assert!(err <= tol * s + 1e-30, "{what}: entry {idx}: got {g}, want {w} (error {err:.3e}, bound {:.3e})", tol * s);
    }
}

pub fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; a.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = a[r * cols + c];
        }
    }
    t
}

/// Deterministic values of both signs and several magnitudes (1, 0.01, 30), no zeros.
pub fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let u = ((s >> 33) as f64 / (1u64 << 31) as f64) * 2.0 - 1.0;
            let scale = [1.0, 0.01, 30.0][((s >> 20) % 3) as usize];
            (u * scale + 1e-3f64.copysign(u)) as f32
        })
        .collect()
}
