//! MAP fine-tuning of the LoRA adapters: AdamW on the K-way cross-entropy of the answer logits,
//! linear warm-up then linear decay, global gradient-norm clipping, deterministic for a seed.

use crate::lora::{LoraDropout, LoraSet};
use crate::model::{Batch, ForwardOpts, Llama};
use crate::optim::{FlatAdamW, ParamsAdamW};
use anyhow::{bail, Result};
use candle_core::Tensor;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};

/// A tokenized classification example.
#[derive(Clone, Debug)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub label: usize,
    pub num_choices: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub seed: u64,
    /// Fraction of the steps spent warming the learning rate up linearly from 0.
    pub warmup_ratio: f64,
    /// Clip the global L2 norm of the LoRA gradient to this value (0 disables clipping).
    pub max_grad_norm: f64,
    /// Prompts longer than this many tokens keep their last `max_length` tokens.
    pub max_length: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self { epochs: 3, batch_size: 4, learning_rate: 5e-4, weight_decay: 0.0, seed: 0, warmup_ratio: 0.1, max_grad_norm: 1.0, max_length: 512 }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            bail!("train.batch_size must be at least 1 (got 0)");
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            bail!("train.learning_rate must be a positive number (got {})", self.learning_rate);
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            bail!("train.weight_decay must be >= 0 (got {})", self.weight_decay);
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            bail!("train.warmup_ratio must be in [0, 1) (got {})", self.warmup_ratio);
        }
        if !(self.max_grad_norm.is_finite() && self.max_grad_norm >= 0.0) {
            bail!("train.max_grad_norm must be >= 0 (got {})", self.max_grad_norm);
        }
        if self.max_length < 8 {
            bail!("train.max_length must be at least 8 tokens (got {})", self.max_length);
        }
        Ok(())
    }
}

/// Learning rate at step `t` (0-based) of `total`: linear warm-up over `warmup` steps, then linear
/// decay to 0 at `total`.
pub fn lr_at(base: f64, t: usize, total: usize, warmup: usize) -> f64 {
    if t < warmup {
        base * (t + 1) as f64 / warmup as f64
    } else {
        let rest = (total - warmup).max(1) as f64;
        base * (1.0 - (t - warmup) as f64 / rest).max(0.0)
    }
}

/// What the loop reports as it goes.
#[derive(Clone, Debug, Serialize)]
pub struct StepReport {
    pub step: usize,
    pub total_steps: usize,
    pub epoch: usize,
    pub loss: f64,
    pub batch_accuracy: f64,
    pub learning_rate: f64,
    pub grad_norm: f64,
    pub seconds: f64,
}

/// Batches of indices, shuffled per epoch with the seed; within groups of eight batches the
/// examples are ordered by length so that little padding is computed.
pub fn epoch_batches(lengths: &[usize], batch_size: usize, seed: u64, epoch: usize) -> Vec<Vec<usize>> {
    let mut idx: Vec<usize> = (0..lengths.len()).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64));
    idx.shuffle(&mut rng);
    let group = batch_size * 8;
    for chunk in idx.chunks_mut(group) {
        chunk.sort_by_key(|&i| lengths[i]);
    }
    let mut batches: Vec<Vec<usize>> = idx.chunks(batch_size).map(|c| c.to_vec()).collect();
    batches.shuffle(&mut rng);
    batches
}

/// Tokens a batch of an evaluation pass (`predict_logits_with`, no graph kept) may hold: short
/// prompts are grouped into larger batches, whose products run closer to the GEMM rate (at 64
/// tokens x 8 items the frozen products reach ~350 GFLOP/s on Zen 5, at 256 x 4 ~370, at 33 x 8
/// well below), while one batch's activations stay bounded. The tapped passes (curvature,
/// Jacobians) keep the evaluation batch: grouped this way on yesno their projections took twice
/// as long and their peak memory doubled.
pub const PASS_TOKENS: usize = 1024;

/// At most this many items a batch of such a pass.
pub const PASS_MAX_ITEMS: usize = 64;

/// Batches of `order` (indices into `data`, sorted by prompt length) for a pass whose results do
/// not depend on how items are grouped: consecutive items, at least `min_items` a batch (the run's
/// evaluation batch), more while the batch, padded to its longest prompt, stays within
/// [`PASS_TOKENS`] tokens and [`PASS_MAX_ITEMS`] items.
pub fn pass_batches(data: &[Encoded], order: &[usize], min_items: usize) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    let mut longest = 0;
    for &i in order {
        let len = data[i].ids.len();
        let grown = (cur.len() + 1) * longest.max(len);
        if !cur.is_empty() && cur.len() >= min_items.max(1) && (grown > PASS_TOKENS || cur.len() >= PASS_MAX_ITEMS) {
            out.push(std::mem::take(&mut cur));
            longest = 0;
        }
        longest = longest.max(len);
        cur.push(i);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

pub fn make_batch(model: &Llama, data: &[Encoded], idx: &[usize], k: usize, pad: u32) -> Result<(Batch, Tensor)> {
    let prompts: Vec<&[u32]> = idx.iter().map(|&i| data[i].ids.as_slice()).collect();
    let nc: Vec<usize> = idx.iter().map(|&i| data[i].num_choices).collect();
    let batch = Batch::new(&prompts, &nc, k, pad, model.device())?;
    let labels: Vec<u32> = idx.iter().map(|&i| data[i].label as u32).collect();
    let labels = Tensor::from_vec(labels, idx.len(), model.device())?;
    Ok((batch, labels))
}

/// Mean cross-entropy of one batch and its gradient store (one forward, one backward).
pub fn loss_and_grads(
    model: &Llama,
    lora: &LoraSet,
    batch: &Batch,
    labels: &Tensor,
    answer_ids: &[u32],
    dropout: Option<&mut LoraDropout>,
) -> Result<(f64, f64, candle_core::backprop::GradStore)> {
    let mut opts = ForwardOpts { lora: Some(lora), dropout, tap: None, embed_shift: None, no_grad: false };
    let logits = model.answer_logits(batch, answer_ids, &mut opts)?;
    let loss = candle_nn::loss::cross_entropy(&logits, labels)?;
    let pred = logits.argmax(1)?.to_vec1::<u32>()?;
    let lab = labels.to_vec1::<u32>()?;
    let acc = pred.iter().zip(&lab).filter(|(a, b)| a == b).count() as f64 / lab.len() as f64;
    let value = loss.to_scalar::<f32>()? as f64;
    let grads = loss.backward()?;
    Ok((value, acc, grads))
}

pub enum TrainOutcome {
    Finished,
    Cancelled { at_step: usize },
}

/// Fine-tunes `lora` in place. `on_step` is called after every optimizer step; `on_epoch` after
/// every epoch (for a validation pass). A non-finite loss stops training before the step is
/// applied, so the adapters keep their last good values.
pub fn train(
    model: &Llama,
    lora: &LoraSet,
    data: &[Encoded],
    answer_ids: &[u32],
    pad: u32,
    cfg: &TrainConfig,
    cancel: &AtomicBool,
    on_step: &mut dyn FnMut(&StepReport),
    on_epoch: &mut dyn FnMut(usize, usize) -> Result<()>,
) -> Result<TrainOutcome> {
    train_with(model, lora, data, answer_ids, pad, cfg, None, cancel, on_step, on_epoch)
}

/// How a training method other than plain MAP changes the loop (BLoB: a sampled A each step,
/// the reparameterisation gradient, a KL step), leaving batches, schedule, clipping and AdamW as
/// they are.
pub trait StepHook {
    /// The variables AdamW updates, in the order of `LoraSet::vars` where they stand for those.
    fn vars(&self, lora: &LoraSet) -> Vec<candle_core::Var>;
    /// Before step `step`'s forward pass (e.g. draws the adapter's A).
    fn before(&mut self, lora: &LoraSet, step: usize) -> Result<()>;
    /// Maps the gradients of the forward's variables onto [`StepHook::vars`].
    fn grads(&mut self, lora: &LoraSet, grads: &mut candle_core::backprop::GradStore) -> Result<()>;
    /// After the AdamW step, with the schedule's learning-rate factor lr / base lr.
    fn after(&mut self, lora: &LoraSet, step: usize, total: usize, lr_factor: f64) -> Result<()>;
}

/// [`train`] with a [`StepHook`].
#[allow(clippy::too_many_arguments)]
pub fn train_with(
    model: &Llama,
    lora: &LoraSet,
    data: &[Encoded],
    answer_ids: &[u32],
    pad: u32,
    cfg: &TrainConfig,
    mut hook: Option<&mut dyn StepHook>,
    cancel: &AtomicBool,
    on_step: &mut dyn FnMut(&StepReport),
    on_epoch: &mut dyn FnMut(usize, usize) -> Result<()>,
) -> Result<TrainOutcome> {
    cfg.validate()?;
    if data.is_empty() {
        bail!("the training set is empty");
    }
    let k = answer_ids.len();
    let per_epoch = data.len().div_ceil(cfg.batch_size);
    let total = per_epoch * cfg.epochs;
    let warmup = ((total as f64) * cfg.warmup_ratio).ceil() as usize;
    let vars = match hook.as_deref() {
        Some(h) => h.vars(lora),
        None => lora.vars(),
    };
    let mut opt = FlatAdamW::new(vars, ParamsAdamW { lr: cfg.learning_rate, weight_decay: cfg.weight_decay, ..Default::default() })?;
    let mut dropout = LoraDropout::new(lora.config.dropout, cfg.seed);
    let lengths: Vec<usize> = data.iter().map(|e| e.ids.len()).collect();
    let mut step = 0;
    for epoch in 0..cfg.epochs {
        for idx in epoch_batches(&lengths, cfg.batch_size, cfg.seed, epoch) {
            if cancel.load(Ordering::Relaxed) {
                return Ok(TrainOutcome::Cancelled { at_step: step });
            }
            let t0 = std::time::Instant::now();
            let (batch, labels) = make_batch(model, data, &idx, k, pad)?;
            let d = if lora.config.dropout > 0.0 { Some(&mut dropout) } else { None };
            if let Some(h) = hook.as_deref_mut() {
                h.before(lora, step)?;
            }
            let (loss, acc, mut grads) = loss_and_grads(model, lora, &batch, &labels, answer_ids, d)?;
            if let Some(h) = hook.as_deref_mut() {
                h.grads(lora, &mut grads)?;
            }
            if !loss.is_finite() {
                bail!("training loss became {loss} at step {step} (epoch {epoch}); stopped before applying it, the adapter keeps its last good values. Try a smaller learning_rate");
            }
            let mut g = opt.flat_grad(&grads)?;
            let norm = g.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt() as f64;
            if !norm.is_finite() {
                bail!("gradient norm became {norm} at step {step}; stopped before applying it. Try a smaller learning_rate");
            }
            if cfg.max_grad_norm > 0.0 && norm > cfg.max_grad_norm {
                g = (g * (cfg.max_grad_norm / norm))?;
            }
            let lr = lr_at(cfg.learning_rate, step, total, warmup);
            opt.set_learning_rate(lr);
            opt.step_flat(&g)?;
            if let Some(h) = hook.as_deref_mut() {
                h.after(lora, step, total, lr / cfg.learning_rate)?;
            }
            step += 1;
            on_step(&StepReport {
                step,
                total_steps: total,
                epoch,
                loss,
                batch_accuracy: acc,
                learning_rate: lr,
                grad_norm: norm,
                seconds: t0.elapsed().as_secs_f64(),
            });
        }
        on_epoch(epoch, step)?;
    }
    Ok(TrainOutcome::Finished)
}

/// Answer logits of every example (masked choices as -inf), in the order of `data`. Batches are
/// formed over examples sorted by length to keep padding small.
pub fn predict_logits(
    model: &Llama,
    lora: Option<&LoraSet>,
    data: &[Encoded],
    answer_ids: &[u32],
    pad: u32,
    batch_size: usize,
    cancel: &AtomicBool,
    on_batch: &mut dyn FnMut(usize, usize),
) -> Result<Option<Vec<Vec<f64>>>> {
    predict_logits_with(model, lora, None, data, answer_ids, pad, batch_size, cancel, on_batch)
}

/// [`predict_logits`] with LoRA dropout active (MC dropout's stochastic passes): each batch draws
/// its masks from `dropout`'s seeded generator, in the order of the length-sorted batches.
#[allow(clippy::too_many_arguments)]
pub fn predict_logits_with(
    model: &Llama,
    lora: Option<&LoraSet>,
    mut dropout: Option<&mut LoraDropout>,
    data: &[Encoded],
    answer_ids: &[u32],
    pad: u32,
    batch_size: usize,
    cancel: &AtomicBool,
    on_batch: &mut dyn FnMut(usize, usize),
) -> Result<Option<Vec<Vec<f64>>>> {
    let k = answer_ids.len();
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.sort_by_key(|&i| data[i].ids.len());
    let mut out = vec![Vec::new(); data.len()];
    let mut done = 0;
    for idx in &pass_batches(data, &order, batch_size) {
        if cancel.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let (batch, _) = make_batch(model, data, idx, k, pad)?;
        let mut opts = ForwardOpts { lora, dropout: dropout.as_deref_mut(), tap: None, embed_shift: None, no_grad: true };
        let f = model.answer_logits(&batch, answer_ids, &mut opts)?.to_vec2::<f32>()?;
        for (row, &i) in f.into_iter().zip(idx) {
            out[i] = row.into_iter().enumerate().map(|(j, v)| if j < data[i].num_choices { v as f64 } else { f64::NEG_INFINITY }).collect();
        }
        done += idx.len();
        on_batch(done, data.len());
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        // 10 steps, 2 warm-up: 0.5, 1.0, then 1 - j/8 for j = 0..8.
        let lrs: Vec<f64> = (0..10).map(|t| lr_at(1.0, t, 10, 2)).collect();
        assert_eq!(lrs[0], 0.5);
        assert_eq!(lrs[1], 1.0);
        assert_eq!(lrs[2], 1.0);
        assert!((lrs[9] - 0.125).abs() < 1e-12);
    }

    #[test]
    fn batches_cover_every_example_once_and_are_seeded() {
        let lengths: Vec<usize> = (0..37).map(|i| (i * 7) % 13 + 1).collect();
        let a = epoch_batches(&lengths, 4, 3, 0);
        let mut all: Vec<usize> = a.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..37).collect::<Vec<_>>());
        assert_eq!(a, epoch_batches(&lengths, 4, 3, 0));
        assert_ne!(a, epoch_batches(&lengths, 4, 3, 1));
    }
}
