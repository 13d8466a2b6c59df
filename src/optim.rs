//! AdamW over all LoRA matrices at once, as one flat vector.
//!
//! The update is candle-nn's and PyTorch's `AdamW` (decoupled weight decay, bias-corrected
//! moments; Loshchilov & Hutter 2019):
//!   m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2,
//!   theta <- theta (1 - lr wd) - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).
//! candle-nn runs it matrix by matrix: ~18 kernels for each of the 120 LoRA matrices of the
//! default model (r = 8 on q and v), ~2,000 launches a step, about a third of a GPU step's
//! launches. Here the gradients are gathered into one vector (one copy each), updated with ~12
//! kernels, and written back (one copy each); the gradient norm for clipping is one reduction.

use anyhow::{bail, Result};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

pub use candle_nn::ParamsAdamW;

pub struct FlatAdamW {
    vars: Vec<Var>,
    /// First and second moments, (P,) each.
    m: Tensor,
    v: Tensor,
    /// Steps taken.
    t: i32,
    pub params: ParamsAdamW,
}

impl FlatAdamW {
    pub fn new(vars: Vec<Var>, params: ParamsAdamW) -> Result<Self> {
        let Some(first) = vars.first() else { bail!("AdamW over no parameters") };
        let n: usize = vars.iter().map(|v| v.elem_count()).sum();
        let (dt, dev) = (first.dtype(), first.device().clone());
        if vars.iter().any(|v| v.dtype() != dt || !v.device().same_device(&dev)) {
            bail!("AdamW: the parameters differ in dtype or device");
        }
        let m = Tensor::zeros(n, dt, &dev)?;
        Ok(Self { vars, v: m.clone(), m, t: 0, params })
    }

    pub fn set_learning_rate(&mut self, lr: f64) {
        self.params.lr = lr;
    }

    /// Every parameter's gradient, flattened and concatenated in `vars` order: (P,). A parameter
    /// the backward pass did not reach gets zeros (every LoRA matrix is reached in this program;
    /// PyTorch would skip it, here its moments decay and weight decay still applies).
    pub fn flat_grad(&self, grads: &GradStore) -> Result<Tensor> {
        let parts = self
            .vars
            .iter()
            .map(|v| match grads.get(v.as_tensor()) {
                Some(g) => g.flatten_all(),
                None => v.as_tensor().zeros_like()?.flatten_all(),
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// One AdamW update with the flat gradient `g` (P,).
    pub fn step_flat(&mut self, g: &Tensor) -> Result<()> {
        let p = &self.params;
        self.t += 1;
        let theta = Tensor::cat(&self.vars.iter().map(|v| v.as_tensor().flatten_all()).collect::<candle_core::Result<Vec<_>>>()?, 0)?;
        self.m = ((&self.m * p.beta1)? + (g * (1.0 - p.beta1))?)?;
        self.v = ((&self.v * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
        let m_hat = (&self.m * (1.0 / (1.0 - p.beta1.powi(self.t))))?;
        let v_hat = (&self.v * (1.0 / (1.0 - p.beta2.powi(self.t))))?;
        let step = (m_hat / (v_hat.sqrt()? + p.eps)?)?;
        let theta = ((theta * (1.0 - p.lr * p.weight_decay))? - (step * p.lr)?)?;
        let mut off = 0;
        for var in &self.vars {
            let n = var.elem_count();
            var.set(&theta.narrow(0, off, n)?.reshape(var.shape())?)?;
            off += n;
        }
        Ok(())
    }

    /// One AdamW update with the gradients of a backward pass.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        let g = self.flat_grad(grads)?;
        self.step_flat(&g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::Optimizer;

    /// Three parameters of different shapes with values from a fixed formula.
    fn vars(seed: u64) -> Result<Vec<Var>> {
        let dev = Device::Cpu;
        let vals = |n: usize, k: u64| -> Vec<f32> { (0..n as u64).map(|i| (((i + 1) * (seed + k) * 37 % 101) as f32) / 50.0 - 1.0).collect() };
        Ok(vec![Var::from_vec(vals(12, 1), (3, 4), &dev)?, Var::from_vec(vals(5, 2), 5, &dev)?, Var::from_vec(vals(8, 3), (2, 2, 2), &dev)?])
    }

    /// A gradient store with g = 2 theta + c (a quadratic loss), and the loss's gradients.
    fn grads(vs: &[Var], c: f64) -> Result<GradStore> {
        let loss = vs.iter().map(|v| Ok((v.as_tensor().sqr()? + (v.as_tensor() * c)?)?.sum_all()?)).collect::<Result<Vec<_>>>()?;
        let total = loss.iter().skip(1).try_fold(loss[0].clone(), |a, b| a + b)?;
        Ok(total.backward()?)
    }

    fn flat(vs: &[Var]) -> Vec<f32> {
        vs.iter().flat_map(|v| v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect()
    }

    /// Step 1 in closed form: m_hat = g and v_hat = g^2, so theta1 = theta0 (1 - lr wd) - lr g / (|g| + eps).
    #[test]
    fn first_step_matches_the_closed_form() -> Result<()> {
        let vs = vars(1)?;
        let p = ParamsAdamW { lr: 0.05, weight_decay: 0.1, ..Default::default() };
        let mut opt = FlatAdamW::new(vs.clone(), p.clone())?;
        let g = grads(&vs, 0.3)?;
        let theta0 = flat(&vs);
        opt.step(&g)?;
        for (t0, t1) in theta0.iter().zip(flat(&vs)) {
            let gi = 2.0 * t0 + 0.3;
            let want = t0 * (1.0 - 0.05 * 0.1) - 0.05 * gi / (gi.abs() + 1e-8);
            assert!((t1 - want).abs() < 1e-6, "{t1} vs {want}");
        }
        Ok(())
    }

    /// Ten steps with a changing learning rate against candle-nn's AdamW from the same start:
    /// the same f32 arithmetic per element, 1e-6.
    #[test]
    fn matches_candle_nn_adamw_over_several_steps() -> Result<()> {
        let (a, b) = (vars(2)?, vars(2)?);
        let p = ParamsAdamW { lr: 0.02, weight_decay: 0.01, ..Default::default() };
        let mut ours = FlatAdamW::new(a.clone(), p.clone())?;
        let mut theirs = candle_nn::AdamW::new(b.clone(), p)?;
        for step in 0..10 {
            let lr = 0.02 * (1.0 - step as f64 / 20.0);
            ours.set_learning_rate(lr);
            theirs.set_learning_rate(lr);
            ours.step(&grads(&a, -0.7)?)?;
            theirs.step(&grads(&b, -0.7)?)?;
        }
        let (x, y) = (flat(&a), flat(&b));
        assert!(x.iter().zip(&y).all(|(p, q)| (p - q).abs() < 1e-6), "{x:?} vs {y:?}");
        assert!(x.iter().zip(flat(&vars(2)?)).any(|(p, q)| (p - q).abs() > 1e-2), "the parameters moved");
        Ok(())
    }
}
