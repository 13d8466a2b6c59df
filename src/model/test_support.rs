//! Helpers for the kernel tests of `fused.rs` and `fast.rs`: both are checked against the
//! composed candle-op forms (`ops::*_composed`), whose autograd is independent of the
//! hand-written backward passes.

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
