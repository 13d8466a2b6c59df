//! Token saliency: which prompt tokens drive an answer logit (gradient x input).
//!
//! For the answer logits f(E) of a prompt as a function of its input embeddings E = (e_1..e_T),
//! the saliency of token t for logit c is
//!   s_t(c) = e_t . df_c/de_t                                   (Simonyan et al. 2014; Shrikumar
//! et al. 2017's "gradient x input"),
//! the first-order change of f_c when token t's embedding is scaled from e_t towards zero: the
//! sum over t is the linear part of f_c(E) - f_c(0). Positive: the token raises the logit.
//!
//! Which logit. A softmax ignores a common shift of the K answer logits, so the raw f_c mixes "why
//! c" with "why any answer at all"; the centred logit f_c - mean_k f_k (what the Laplace kernel's
//! ranking uses too, `laplace::kernel`) says why c rather than the other choices. Both are linear
//! in the per-class scores, so all K rows are returned (one forward pass, K backward passes) and
//! the caller combines them: [`TokenSaliency::centred`].
//!
//! The gradient is taken at the MAP adapter: the linearised Laplace posterior's mean logits are
//! the MAP logits (MATH.md section 7), so this explains Laplace-LoRA's mean as well as MAP's.

use super::llama::{Batch, ForwardOpts, Llama};
use crate::lora::LoraSet;
use anyhow::{bail, Result};
use candle_core::{Tensor, Var};

/// Gradient x input of every answer logit over a prompt's tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenSaliency {
    /// The item's answer logits f (num_choices).
    pub logits: Vec<f64>,
    /// s[c][t] = e_t . df_c/de_t: num_choices rows of T.
    pub per_class: Vec<Vec<f64>>,
}

impl TokenSaliency {
    /// The most likely choice (argmax of the logits).
    pub fn predicted(&self) -> usize {
        self.logits.iter().enumerate().fold((0, f64::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0
    }

    /// s_t(c) - mean_k s_t(k): the saliency of the centred logit f_c - mean_k f_k.
    pub fn centred(&self, c: usize) -> Vec<f64> {
        let k = self.per_class.len() as f64;
        let t = self.per_class.first().map_or(0, |r| r.len());
        (0..t).map(|i| self.per_class[c][i] - self.per_class.iter().map(|r| r[i]).sum::<f64>() / k).collect()
    }
}

/// The answer logits of one prompt (num_choices) with `shift` (T, hidden) added to its input
/// embeddings; `None` for the unperturbed prompt.
pub fn answer_logits_shifted(
    model: &Llama,
    lora: Option<&LoraSet>,
    ids: &[u32],
    answer_ids: &[u32],
    num_choices: usize,
    shift: Option<&Tensor>,
) -> Result<Vec<f64>> {
    let f = forward(model, lora, ids, answer_ids, num_choices, shift)?;
    Ok(f.flatten_all()?.to_vec1::<f32>()?.into_iter().take(num_choices).map(f64::from).collect())
}

fn forward(model: &Llama, lora: Option<&LoraSet>, ids: &[u32], answer_ids: &[u32], num_choices: usize, shift: Option<&Tensor>) -> Result<Tensor> {
    let k = answer_ids.len();
    if num_choices == 0 || num_choices > k {
        bail!("the item has {num_choices} choices, the run {k} answer tokens");
    }
    let batch = Batch::new(&[ids], &[num_choices], k, 0, model.device())?;
    let mut opts = ForwardOpts::new(lora);
    opts.embed_shift = shift;
    model.answer_logits(&batch, answer_ids, &mut opts) // (1, K)
}

/// Gradient x input of each of the item's answer logits at the adapter `lora`.
pub fn token_saliency(model: &Llama, lora: Option<&LoraSet>, ids: &[u32], answer_ids: &[u32], num_choices: usize) -> Result<TokenSaliency> {
    // A zero shift whose gradient is df/de_t: the embedding matrix itself is frozen (no gradient).
    let e = model.embeddings(ids)?; // (T, hidden)
    let probe = Var::zeros(e.shape(), e.dtype(), e.device())?;
    let f = forward(model, lora, ids, answer_ids, num_choices, Some(probe.as_tensor()))?.squeeze(0)?; // (K)
    let logits: Vec<f64> = f.to_vec1::<f32>()?.into_iter().take(num_choices).map(f64::from).collect();
    let mut per_class = Vec::with_capacity(num_choices);
    for c in 0..num_choices {
        let grads = f.get(c)?.backward()?;
        let Some(g) = grads.get(probe.as_tensor()) else { bail!("no gradient reached the input embeddings") };
        // (T, hidden) . (T, hidden) summed over hidden: (T)
        let s = (g * &e)?.sum(1)?.to_vec1::<f32>()?;
        per_class.push(s.into_iter().map(f64::from).collect());
    }
    Ok(TokenSaliency { logits, per_class })
}
