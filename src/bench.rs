//! `laplace-lora bench`: timings of the pipeline's phases on the default model, as medians over
//! repeats after a warm-up. Speed targets are ratios to the PyTorch reference measured in the
//! same run (benches/), never timed assertions in tests.

use crate::lora::{LoraConfig, LoraSet, Target};
use crate::model::{Batch, LoadedModel};
use crate::train::loss_and_grads;
use anyhow::Result;
use candle_core::Tensor;
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// One LoRA step (forward, backward, AdamW), batch 4 x 64 tokens, r = 8 on q and v.
    pub lora_step_s: f64,
    pub lora_step_repeats: usize,
    /// Recomputing Sigma_f and the probit predictive of 1,000 cached examples (K = 4) at a new
    /// prior precision (the slider), in milliseconds.
    pub prior_recompute_ms: f64,
    pub threads: usize,
    pub peak_rss_mib: f64,
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) }
}

/// Peak resident set size of this process (Linux `VmHWM`), in MiB; NaN where unknown.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Median seconds of one LoRA step at batch 4 x 64 tokens (r = 8 on q and v).
pub fn lora_step(m: &LoadedModel, repeats: usize, on_rep: &mut dyn FnMut(usize, f64)) -> Result<f64> {
    let dev = m.model.device().clone();
    let answer: Vec<u32> = (0..4).map(|i| 330 + i).collect();
    let lora = LoraSet::new(
        LoraConfig { rank: 8, alpha: 16.0, dropout: 0.0, targets: vec![Target::QProj, Target::VProj] },
        &m.model.lora_dims(),
        answer.clone(),
        0,
        &dev,
    )?;
    let vocab = m.model.cfg.vocab_size as u32;
    let prompts: Vec<Vec<u32>> = (0..4u32).map(|b| (0..64u32).map(|t| (b * 7919 + t * 104_729) % vocab).collect()).collect();
    let refs: Vec<&[u32]> = prompts.iter().map(|p| p.as_slice()).collect();
    let batch = Batch::new(&refs, &[4; 4], 4, 0, &dev)?;
    let labels = Tensor::new(&[0u32, 1, 2, 3], &dev)?;
    let mut opt = AdamW::new(lora.vars(), ParamsAdamW { lr: 1e-4, weight_decay: 0.0, ..Default::default() })?;
    let mut times = Vec::new();
    for rep in 0..=repeats {
        let t0 = std::time::Instant::now();
        let (_, _, grads) = loss_and_grads(&m.model, &lora, &batch, &labels, &answer, None)?;
        opt.step(&grads)?;
        let dt = t0.elapsed().as_secs_f64();
        if rep > 0 {
            times.push(dt); // rep 0 is the warm-up
        }
        on_rep(rep, dt);
    }
    Ok(median(times))
}
