//! BLoB: Bayesian low-rank adaptation by backpropagation (Wang, Shi, Han, Metaxas & Wang,
//! NeurIPS 2024). A mean-field Gaussian q(A) = N(M, diag(sigma^2)) over every entry of the LoRA A
//! matrices, sigma = softplus(rho); B stays deterministic. Trained on the ELBO
//!
//!   L = E_q[NLL(batch)] + pi_i KL(q(A) || N(0, beta^2 I)),
//!
//! the expectation by one reparameterised draw A = M + sigma * eps per step (eps ~ N(0, I), the
//! same draw for the whole batch: plain Bayes by backprop, without the BLoB code's flipout signs,
//! which only reduce the gradient's variance). As in the BLoB code, the two terms take separate
//! steps: AdamW on the NLL over (M, B, rho) with the run's schedule and clipping, then plain SGD
//! on the weighted KL over (M, rho) with `kl_learning_rate` on the same schedule. The gradients
//! through the draw follow the chain rule by hand: dL/dM = dL/dA, dL/drho = dL/dA * eps *
//! sigmoid(rho); per entry KL = ln(beta / sigma) + (sigma^2 + M^2) / (2 beta^2) - 1/2, so
//! dKL/dM = M / beta^2 and dKL/dsigma = -1/sigma + sigma / beta^2.
//!
//! The KL weight follows the BLoB code's re-weighting: a period of T = floor(100 N^(pi/gamma) /
//! batch_size) steps (N training items, gamma = 8), and at step s with i = s mod T (T when 0)
//! pi_i = 2^i / (2^(T+1) - 1): the KL weight grows geometrically through each period.
//! Prediction averages the probabilities of `samples` draws of A (0: from the mean M).

use super::settings::BlobSettings;
use super::{Context, EvalSet, Method, SetPrediction};
use crate::experiment::Stage;
use crate::lora::LoraSet;
use crate::train::{StepHook, TrainConfig, TrainOutcome};
use anyhow::{Context as _, Result};
use candle_core::{backprop::GradStore, Tensor, Var};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

/// softplus(x) = ln(1 + e^x), stably.
fn softplus(x: &Tensor) -> Result<Tensor> {
    // max(x, 0) + ln(1 + e^-|x|)
    Ok((x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?)?)
}

fn sigmoid(x: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::sigmoid(x)?)
}

/// The variational posterior: the mean M and rho of every A (in `LoraSet::layers` order) and the
/// adapter holding B (its A is working storage for the current draw).
pub struct BlobPosterior {
    pub mean: Vec<Var>,
    pub rho: Vec<Var>,
    pub lora: LoraSet,
}

impl BlobPosterior {
    /// sigma = softplus(rho) of layer l.
    pub fn sigma(&self, l: usize) -> Result<Tensor> {
        softplus(self.rho[l].as_tensor())
    }

    /// Puts a draw of A into the adapter (`eps` = None: the mean).
    fn set_draw(&self, eps: Option<&[Tensor]>) -> Result<()> {
        for (l, layer) in self.lora.layers.iter().enumerate() {
            let a = match eps {
                Some(e) => (self.mean[l].as_tensor() + (self.sigma(l)? * &e[l])?)?,
                None => self.mean[l].as_tensor().copy()?,
            };
            layer.a.set(&a)?;
        }
        Ok(())
    }
}

/// Switches for the tests against MAP: sigma forced to 0 (A = M, rho untouched) and the KL
/// weight multiplied by `kl_scale`.
#[derive(Clone, Copy, Debug)]
pub struct BlobTrainOpts {
    pub zero_std: bool,
    pub kl_scale: f64,
}

impl Default for BlobTrainOpts {
    fn default() -> Self {
        BlobTrainOpts { zero_std: false, kl_scale: 1.0 }
    }
}

struct Hook<'a> {
    post: &'a BlobPosterior,
    s: &'a BlobSettings,
    opts: BlobTrainOpts,
    rng: rand::rngs::StdRng,
    eps: Vec<Tensor>,
    period: usize,
}

impl Hook<'_> {
    /// pi_i of the module doc at step `step` (counted from 1), as 2^(i - T - 1) / (1 - 2^-(T+1))
    /// so that a long period does not overflow.
    fn kl_weight(&self, step: usize) -> f64 {
        let t = self.period.max(1);
        let i = match step % t {
            0 => t,
            r => r,
        };
        2f64.powi(i as i32 - t as i32 - 1) / (1.0 - 2f64.powi(-(t as i32) - 1))
    }
}

impl StepHook for Hook<'_> {
    fn vars(&self, lora: &LoraSet) -> Vec<Var> {
        // (M, B) per layer in LoraSet::vars order, then rho: with sigma forced to 0 this is the
        // MAP run's optimiser exactly.
        let mut v: Vec<Var> = lora.layers.iter().zip(&self.post.mean).flat_map(|(l, m)| [m.clone(), l.b.clone()]).collect();
        if !self.opts.zero_std {
            v.extend(self.post.rho.iter().cloned());
        }
        v
    }

    fn before(&mut self, lora: &LoraSet, _step: usize) -> Result<()> {
        self.eps.clear();
        for l in &lora.layers {
            let n = l.a.elem_count();
            let e: Vec<f32> = (0..n).map(|_| self.rng.sample::<f32, _>(rand_distr::StandardNormal)).collect();
            self.eps.push(Tensor::from_vec(e, l.a.shape(), l.a.device())?);
        }
        if self.opts.zero_std {
            self.post.set_draw(None)
        } else {
            self.post.set_draw(Some(&self.eps))
        }
    }

    fn grads(&mut self, lora: &LoraSet, grads: &mut GradStore) -> Result<()> {
        for (l, layer) in lora.layers.iter().enumerate() {
            let Some(g) = grads.remove(layer.a.as_tensor()) else { continue };
            if !self.opts.zero_std {
                let g_rho = ((&g * &self.eps[l])? * sigmoid(self.post.rho[l].as_tensor())?)?;
                grads.insert(self.post.rho[l].as_tensor(), g_rho);
            }
            grads.insert(self.post.mean[l].as_tensor(), g);
        }
        Ok(())
    }

    fn after(&mut self, _lora: &LoraSet, step: usize, _total: usize, lr_factor: f64) -> Result<()> {
        let w = self.kl_weight(step + 1) * self.opts.kl_scale;
        if w == 0.0 {
            return Ok(());
        }
        let lr = self.s.kl_learning_rate * lr_factor * w;
        let beta2 = self.s.prior_std * self.s.prior_std;
        for l in 0..self.post.mean.len() {
            let m = self.post.mean[l].as_tensor();
            self.post.mean[l].set(&(m - (m * (lr / beta2))?)?)?;
            if !self.opts.zero_std {
                let rho = self.post.rho[l].as_tensor();
                let sigma = softplus(rho)?;
                // dKL/drho = (-1/sigma + sigma/beta^2) sigmoid(rho)
                let g = ((sigma.recip()?.neg()? + (&sigma / beta2)?)? * sigmoid(rho)?)?;
                self.post.rho[l].set(&(rho - (g * lr)?)?)?;
            }
        }
        Ok(())
    }
}

/// Trains BLoB's posterior on the run's training split (same initialisation, batches and
/// schedule as the MAP run; the seed is the run's). None on a cancel.
pub fn train_blob(cx: &Context, s: &BlobSettings, opts: BlobTrainOpts) -> Result<Option<BlobPosterior>> {
    let lcfg = cx.cfg.lora.to_config()?;
    let seed = cx.cfg.train.seed;
    let lora = LoraSet::new(lcfg, &cx.model.lora_dims(), cx.data.answer_ids.clone(), seed, cx.model.device())?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0xb10b);
    let mut mean = Vec::new();
    let mut rho = Vec::new();
    for l in &lora.layers {
        mean.push(Var::from_tensor(&l.a.as_tensor().copy()?)?);
        // sigma_0 = r^2, r ~ U(eps/sqrt 2, eps) (the BLoB code's init), then rho = softplus^-1.
        let n = l.a.elem_count();
        let e = s.init_eps;
        let r: Vec<f32> = (0..n)
            .map(|_| {
                let r = rng.random_range(e / std::f64::consts::SQRT_2..e);
                let sigma = r * r;
                (sigma.exp_m1()).ln() as f32
            })
            .collect();
        rho.push(Var::from_tensor(&Tensor::from_vec(r, l.a.shape(), l.a.device())?)?);
    }
    let post = BlobPosterior { mean, rho, lora };
    let n = cx.data.train.len() as f64;
    let period = (100.0 * n.powf(std::f64::consts::PI / s.gamma) / cx.cfg.train.batch_size as f64).floor() as usize;
    let mut hook = Hook { post: &post, s, opts, rng: rand::rngs::StdRng::seed_from_u64(seed ^ 0xe95), eps: Vec::new(), period };
    let tcfg: TrainConfig = cx.cfg.train.clone();
    cx.message(Stage::Train, format!("blob: training the Gaussian over A ({} parameters, KL period {period} steps)", post.lora.num_params()))?;
    let outcome = cx.train_lora(&post.lora, &tcfg, Some(&mut hook))?;
    Ok(match outcome {
        TrainOutcome::Finished => {
            post.set_draw(None)?;
            Some(post)
        }
        TrainOutcome::Cancelled { .. } => None,
    })
}

pub struct Blob {
    s: BlobSettings,
    post: Option<BlobPosterior>,
    train_seconds: f64,
}

impl Blob {
    pub fn new(s: BlobSettings) -> Self {
        Blob { s, post: None, train_seconds: 0.0 }
    }

    /// From `methods/blob/adapter` (A = the mean M, and B) and `methods/blob/rho.safetensors`.
    pub fn restore(s: BlobSettings, cx: &Context) -> Result<Self> {
        let dir = cx.run_dir.join("methods").join("blob");
        let lora = cx.load_adapter(&dir.join("adapter"))?;
        let path = dir.join("rho.safetensors");
        let t = candle_core::safetensors::load(&path, cx.model.device()).with_context(|| format!("reading {}", path.display()))?;
        let mut mean = Vec::new();
        let mut rho = Vec::new();
        for l in &lora.layers {
            mean.push(Var::from_tensor(&l.a.as_tensor().copy()?)?);
            let name = l.module_path();
            let r = t.get(&name).with_context(|| format!("{}: no rho for {name}", path.display()))?;
            rho.push(Var::from_tensor(r)?);
        }
        Ok(Blob { s, post: Some(BlobPosterior { mean, rho, lora }), train_seconds: 0.0 })
    }
}

impl Method for Blob {
    fn name(&self) -> &'static str {
        "blob"
    }

    fn prepare(&mut self, cx: &Context) -> Result<bool> {
        let t0 = std::time::Instant::now();
        let Some(p) = train_blob(cx, &self.s, BlobTrainOpts::default())? else { return Ok(false) };
        self.post = Some(p);
        self.train_seconds = t0.elapsed().as_secs_f64();
        Ok(true)
    }

    fn predict(&mut self, cx: &Context, set: &EvalSet) -> Result<Option<SetPrediction>> {
        let post = self.post.as_ref().context("BLoB predicts before it was trained")?;
        if self.s.samples == 0 {
            post.set_draw(None)?;
            return Ok(cx.logits(Stage::Evaluate, Some(&post.lora), None, set.data)?.map(SetPrediction::from_logits));
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(cx.cfg.train.seed ^ 0x5a3e);
        let mut members = Vec::with_capacity(self.s.samples);
        for _ in 0..self.s.samples {
            let eps: Vec<Tensor> = post
                .lora
                .layers
                .iter()
                .map(|l| {
                    let e: Vec<f32> = (0..l.a.elem_count()).map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal)).collect();
                    Tensor::from_vec(e, l.a.shape(), l.a.device())
                })
                .collect::<candle_core::Result<_>>()?;
            post.set_draw(Some(&eps))?;
            let Some(l) = cx.logits(Stage::Evaluate, Some(&post.lora), None, set.data)? else { return Ok(None) };
            members.push(l);
        }
        post.set_draw(None)?;
        Ok(Some(SetPrediction::from_member_logits(&members)))
    }

    fn train_seconds(&self) -> f64 {
        self.train_seconds
    }

    fn details(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("samples".into(), self.s.samples.into());
        m.insert("prior_std".into(), self.s.prior_std.into());
        if let Some(p) = &self.post {
            // The posterior's mean standard deviation over every A entry: how much spread it learnt.
            let (mut s, mut n) = (0.0, 0usize);
            for l in 0..p.rho.len() {
                if let Ok(sig) = p.sigma(l).and_then(|t| Ok(t.sum_all()?.to_scalar::<f32>()?)) {
                    s += sig as f64;
                    n += p.rho[l].elem_count();
                }
            }
            m.insert("mean_sigma".into(), (s / n.max(1) as f64).into());
        }
        m
    }

    fn save(&self, cx: &Context) -> Result<()> {
        let Some(p) = &self.post else { return Ok(()) };
        p.set_draw(None)?;
        let dir = cx.method_dir("blob")?;
        cx.save_adapter(&p.lora, &dir.join("adapter"))?;
        let t: HashMap<String, Tensor> = p.lora.layers.iter().zip(&p.rho).map(|(l, r)| (l.module_path(), r.as_tensor().clone())).collect();
        let tmp = dir.join("rho.safetensors.tmp");
        candle_core::safetensors::save(&t, &tmp)?;
        std::fs::rename(&tmp, dir.join("rho.safetensors"))?;
        Ok(())
    }
}
