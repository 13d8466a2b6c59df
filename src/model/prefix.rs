//! The shared-prefix forward of an evaluation pass.
//!
//! Every prompt of a task starts with the same instruction ("Answer the question with only True
//! or False: ", "Select one of the choices that answers the following question: ": ~10 of
//! yesno's ~35 tokens, ~11 of ARC's ~100). Batches are right-padded, so those tokens sit at
//! positions 0..P of every row, and under causal attention a row's first P positions see only
//! each other: their hidden states, keys and values are the same in every row. A pass nobody
//! differentiates (`ForwardOpts::no_grad`; no tap, no dropout (p = 0 is none), no embedding
//! shift) computes them once, as a sequence of its own, and runs each row's suffix (positions
//! P..T) against the one copy of the prefix's keys and values:
//!
//!   rows of a block: [prefix (P) ; suffix of row 0 (S) ; ... ; suffix of row B-1 (S)],  S = T - P,
//!   attention of suffix query i of row b:  keys = prefix keys 0..P (all visible)
//!                                               ++ row b's suffix keys P..P+i (causal),
//!
//! the same sums as the full causal attention over positions 0..T (the rotary angle of each
//! position is its absolute one). The projections, norms and MLP then cost P + B S rows instead of
//! B T. Checked against the plain forward in `tests/shared_prefix.rs`. Training steps keep the
//! plain forward: with the composed suffix attention below and its backward they were no faster
//! (README, "Less arithmetic in every run"); a fused suffix attention would change that.

use super::ops::AttnShape;
use anyhow::Result;
use candle_core::{Tensor, D};
use std::cell::Cell;
use std::sync::OnceLock;

/// Below this many shared tokens the split is not worth its extra attention call.
pub const MIN_PREFIX: usize = 4;

thread_local! {
    static OFF: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with the shared-prefix forward off on this thread (the tests' reference).
pub fn without_shared_prefix<R>(f: impl FnOnce() -> R) -> R {
    let before = OFF.with(|c| c.replace(true));
    let r = f();
    OFF.with(|c| c.set(before));
    r
}

/// Whether the shared-prefix forward may be used: not under [`without_shared_prefix`], and not
/// with LAPLACE_LORA_SHARED_PREFIX=0 (to measure what it saves).
pub fn enabled() -> bool {
    static ENV_OFF: OnceLock<bool> = OnceLock::new();
    !OFF.with(|c| c.get()) && !*ENV_OFF.get_or_init(|| std::env::var("LAPLACE_LORA_SHARED_PREFIX").is_ok_and(|v| v == "0"))
}

/// The number of leading tokens every row of a right-padded batch shares, at most the shortest
/// prompt's length - 1 (every row keeps its last real position in its own suffix); 0 for a batch
/// of one row.
pub fn common_prefix(ids: &[Vec<u32>], lengths: &[usize]) -> usize {
    let Some(first) = ids.first() else { return 0 };
    if ids.len() < 2 {
        return 0;
    }
    let cap = lengths.iter().copied().min().unwrap_or(0).saturating_sub(1);
    (0..cap).take_while(|&j| ids.iter().all(|r| r[j] == first[j])).count()
}

/// Where a block's rows are: one (B*T) matrix, or the shared prefix's P rows followed by each
/// row's S suffix rows.
#[derive(Clone, Copy, Debug)]
pub enum PrefixLayout {
    Plain,
    Prefixed { p: usize, b: usize, s: usize },
}

/// Attention of every row's suffix queries (positions P..P+S) over the shared prefix's keys and
/// values (one copy, positions 0..P) and the row's own suffix keys (causal), from candle ops.
/// q_s (B*S, H*hd), k_s and v_s (B*S, Hkv*hd), k_p and v_p (P, Hkv*hd), all unrotated; `rot` the
/// rotary tables of positions 0..P+S. Returns (B*S, H*hd).
#[allow(clippy::too_many_arguments)]
pub fn suffix_attention(
    q_s: &Tensor,
    k_s: &Tensor,
    v_s: &Tensor,
    k_p: &Tensor,
    v_p: &Tensor,
    rot: &(Tensor, Tensor),
    (p, b, s): (usize, usize, usize),
    shape: AttnShape,
) -> Result<Tensor> {
    let (h, hkv) = (shape.heads, shape.kv_heads);
    let hd = q_s.dim(D::Minus1)? / h;
    let (cos_p, sin_p) = (rot.0.narrow(0, 0, p)?, rot.1.narrow(0, 0, p)?);
    let (cos_s, sin_s) = (rot.0.narrow(0, p, s)?, rot.1.narrow(0, p, s)?);
    let heads = |x: &Tensor, rows: usize, len: usize, n: usize| -> Result<Tensor> { Ok(x.reshape((rows, len, n, hd))?.transpose(1, 2)?.contiguous()?) };
    let q = candle_nn::rotary_emb::rope_slow(&heads(q_s, b, s, h)?, &cos_s, &sin_s)?; // (B, H, S, hd)
    let k_own = candle_nn::rotary_emb::rope_slow(&heads(k_s, b, s, hkv)?, &cos_s, &sin_s)?; // (B, Hkv, S, hd)
    let k_pre = candle_nn::rotary_emb::rope_slow(&heads(k_p, 1, p, hkv)?, &cos_p, &sin_p)?; // (1, Hkv, P, hd)
    let v_own = heads(v_s, b, s, hkv)?;
    let v_pre = heads(v_p, 1, p, hkv)?;
    let k = Tensor::cat(&[k_pre.broadcast_as((b, hkv, p, hd))?, k_own], 2)?; // (B, Hkv, T, hd)
    let v = Tensor::cat(&[v_pre.broadcast_as((b, hkv, p, hd))?, v_own], 2)?;
    let k = candle_transformers::utils::repeat_kv(k, h / hkv)?.contiguous()?; // (B, H, T, hd)
    let v = candle_transformers::utils::repeat_kv(v, h / hkv)?.contiguous()?;
    // Query i (position P + i) sees every prefix key and suffix keys 0..=i.
    let mask: Vec<f32> = (0..s).flat_map(|i| (0..p + s).map(move |j| if j < p || j - p <= i { 0.0 } else { f32::NEG_INFINITY })).collect();
    let mask = Tensor::from_vec(mask, (s, p + s), q_s.device())?;
    let att = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?; // (B, H, S, T)
    let att = candle_nn::ops::softmax_last_dim(&att.broadcast_add(&mask)?)?;
    Ok(att.matmul(&v)?.transpose(1, 2)?.reshape((b * s, h * hd))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_prefix_stops_at_the_first_difference_and_keeps_a_suffix_token() {
        let ids = vec![vec![1, 2, 3, 4, 5, 0], vec![1, 2, 3, 9, 5, 6]];
        assert_eq!(common_prefix(&ids, &[5, 6]), 3);
        // Identical prompts: the last token stays in each row's suffix.
        let same = vec![vec![1, 2, 3], vec![1, 2, 3]];
        assert_eq!(common_prefix(&same, &[3, 3]), 2);
        // The shortest prompt caps it: a 2-token row leaves at most 1 shared.
        let short = vec![vec![1, 2, 0, 0], vec![1, 2, 3, 4]];
        assert_eq!(common_prefix(&short, &[2, 4]), 1);
        assert_eq!(common_prefix(&ids[..1], &[5]), 0);
    }
}
