//! A LoRA-capable decoder for the llama family (Llama, Mistral, Qwen2, SmolLM), on candle.
//!
//! Weights are kept in the Hugging Face layout (GGUF's rotary permutation of q and k is undone at
//! load time, see `gguf.rs`), so that LoRA adapters trained here are PEFT adapters of the HF model.
//! The frozen weights never receive gradients (`ops::frozen_linear`); the LoRA matrices of a
//! `LoraSet` do. For classification only the final hidden state at the last real position is
//! pushed through the LM head, and only through the K answer rows (DESIGN.md section 2).

use super::config::Config;
use super::f32pack::{self, PackedF32, SwigluPacked};
use super::frozen::{Frozen, FrozenDtype};
use super::fused::swiglu_mlp;
use super::ops::{add, attention, frozen_linear, last_query_attention, lora_linear, masked_input, rms_norm, silu_mul, AttnShape};
use super::prefix::{self, PrefixLayout};
use crate::lora::{LoraDropout, LoraSet, Target};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor, D};
use std::collections::HashMap;
use std::sync::Arc;

thread_local! {
    static FULL_LAST_BLOCK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the last block computed at every position on this thread (the tests' reference).
pub fn with_full_last_block<R>(f: impl FnOnce() -> R) -> R {
    let before = FULL_LAST_BLOCK.with(|c| c.replace(true));
    let r = f();
    FULL_LAST_BLOCK.with(|c| c.set(before));
    r
}

/// Whether `last_hidden` may run the last block on the read rows only: not under
/// [`with_full_last_block`], and not with LAPLACE_LORA_FULL_LAST_BLOCK=1 (to measure what it saves).
fn last_block_pruned() -> bool {
    static ENV_FULL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    !FULL_LAST_BLOCK.with(|c| c.get()) && !*ENV_FULL.get_or_init(|| std::env::var("LAPLACE_LORA_FULL_LAST_BLOCK").is_ok_and(|v| v == "1"))
}

/// A frozen linear map with an optional LoRA slot.
struct Proj {
    /// (d_out, d_in), in its storage (`frozen.rs`).
    weight: Frozen,
    /// (d_out)
    bias: Option<Tensor>,
    target: Target,
}

struct Block {
    input_norm: Tensor,
    q: Proj,
    k: Proj,
    v: Proj,
    o: Proj,
    post_norm: Tensor,
    gate: Proj,
    up: Proj,
    down: Proj,
    /// Gate and up stacked, with down, for the fused MLP (`fused::swiglu_mlp`): f32 packed on a
    /// CPU with the kernels, f a multiple of 32. `gate` and `up` then hold views of the stack.
    swiglu: Option<Arc<SwigluPacked>>,
}

pub struct Llama {
    pub cfg: Config,
    /// (vocab, hidden)
    embed: Tensor,
    blocks: Vec<Block>,
    final_norm: Tensor,
    /// (vocab, hidden); the embedding matrix when tied.
    lm_head: Tensor,
    device: Device,
}

/// A right-padded batch of prompts. Right padding keeps rotary positions 0..T for every
/// prompt, and the causal mask keeps pads out of every real position.
pub struct Batch {
    /// (B, T) u32
    pub input_ids: Tensor,
    /// Number of real tokens of each prompt.
    pub lengths: Vec<usize>,
    /// (B, K) additive mask: 0 for real choices, -1e9 for choices an item does not have.
    pub choice_mask: Option<Tensor>,
}

impl Batch {
    /// Builds a batch from token ids; `num_choices[b]` of the K answer slots are real.
    pub fn new(prompts: &[&[u32]], num_choices: &[usize], k: usize, pad_id: u32, device: &Device) -> Result<Self> {
        let t = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
        if t == 0 || prompts.iter().any(|p| p.is_empty()) {
            bail!("cannot build a batch with an empty prompt");
        }
        let mut ids = Vec::with_capacity(prompts.len() * t);
        for p in prompts {
            ids.extend_from_slice(p);
            ids.extend(std::iter::repeat_n(pad_id, t - p.len()));
        }
        let input_ids = Tensor::from_vec(ids, (prompts.len(), t), device)?;
        let choice_mask = if num_choices.iter().all(|&n| n == k) {
            None
        } else {
            let m: Vec<f32> = num_choices.iter().flat_map(|&n| (0..k).map(move |j| if j < n { 0.0 } else { -1e9 })).collect();
            Some(Tensor::from_vec(m, (prompts.len(), k), device)?)
        };
        Ok(Self { input_ids, lengths: prompts.iter().map(|p| p.len()).collect(), choice_mask })
    }
}

/// Optional state for a forward pass: the adapters, training-time dropout, and a tap that
/// records what the Laplace curvature and Jacobians need.
pub struct ForwardOpts<'a> {
    pub lora: Option<&'a LoraSet>,
    pub dropout: Option<&'a mut LoraDropout>,
    pub tap: Option<&'a mut Tap>,
    /// (B*T, hidden), added to the input embeddings: a zero `Var` whose gradient is dL/de_t
    /// (token saliency, `saliency.rs`), or a finite perturbation (its check).
    pub embed_shift: Option<&'a Tensor>,
    /// A pass nobody differentiates (evaluation): the adapters enter detached, so candle records
    /// no graph and every activation is freed once the next layer has read it, instead of the
    /// whole pass's activations living until its logits are dropped.
    pub no_grad: bool,
}

impl<'a> ForwardOpts<'a> {
    pub fn new(lora: Option<&'a LoraSet>) -> Self {
        Self { lora, dropout: None, tap: None, embed_shift: None, no_grad: false }
    }
}

/// What one adapted projection saw in a forward pass: its input a_t at every position and a zero
/// "probe" variable added to its output y_t. After a backward pass the probe's gradient is
/// e_t = dL/dy_t per position, which per-position KFAC factors and per-example Jacobians need
/// (candle's gradient of B or A alone is already summed over positions; MATH.md section 2).
pub struct TapEntry {
    /// Index into `LoraSet::layers`.
    pub layer: usize,
    /// (N, d_in): N = B * T rows for block projections, B rows for the LM head. Detached.
    pub input: Tensor,
    /// (N, d_out) zeros; d_out = K for the LM head.
    pub probe: candle_core::Var,
}

#[derive(Default)]
pub struct Tap {
    pub entries: Vec<TapEntry>,
}

impl Tap {
    fn record(&mut self, layer: usize, input: &Tensor, y: Tensor) -> Result<Tensor> {
        let probe = candle_core::Var::zeros(y.shape(), y.dtype(), y.device())?;
        let out = (y + probe.as_tensor())?;
        self.entries.push(TapEntry { layer, input: input.detach(), probe });
        Ok(out)
    }
}

impl Llama {
    /// Builds the model from f32 tensors named as in Hugging Face checkpoints
    /// (`model.layers.{i}.self_attn.q_proj.weight`, ...).
    pub fn from_tensors(cfg: Config, w: HashMap<String, Tensor>, device: &Device) -> Result<Self> {
        Self::from_parts(cfg, w, HashMap::new(), device)
    }

    /// As `from_tensors`, with some projection matrices already in a frozen storage (`frozen`,
    /// same names; the GGUF loader's kept blocks): those are used as they are.
    pub fn from_parts(cfg: Config, mut w: HashMap<String, Tensor>, mut frozen: HashMap<String, Frozen>, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let mut take = |name: &str| -> Result<Tensor> {
            let t = w.remove(name).ok_or_else(|| anyhow!("weight {name} is missing from the checkpoint"))?;
            Ok(t.to_dtype(DType::F32)?.to_device(device)?.contiguous()?)
        };
        let embed = take("model.embed_tokens.weight")?;
        let (vocab, hidden) = embed.dims2()?;
        if hidden != cfg.hidden_size || vocab != cfg.vocab_size {
            bail!("embed_tokens is {vocab}x{hidden}, config says {}x{}", cfg.vocab_size, cfg.hidden_size);
        }
        let q_out = cfg.num_attention_heads * cfg.head_dim;
        let kv_out = cfg.num_key_value_heads * cfg.head_dim;
        let mut blocks = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let mut proj = |name: &str, target: Target, shape: (usize, usize), bias: bool| -> Result<Proj> {
                let key = format!("{p}.{name}.weight");
                let weight = match frozen.remove(&key) {
                    Some(f) => f,
                    None => Frozen::Dense(take(&key)?),
                };
                if weight.dims() != shape {
                    bail!("{p}.{name}.weight has shape {:?}, expected {:?}", weight.dims(), shape);
                }
                let bias = if bias { Some(take(&format!("{p}.{name}.bias"))?) } else { None };
                Ok(Proj { weight, bias, target })
            };
            let h = cfg.hidden_size;
            let f = cfg.intermediate_size;
            let b = cfg.qkv_bias;
            let q = proj("self_attn.q_proj", Target::QProj, (q_out, h), b)?;
            let k = proj("self_attn.k_proj", Target::KProj, (kv_out, h), b)?;
            let v = proj("self_attn.v_proj", Target::VProj, (kv_out, h), b)?;
            let o = proj("self_attn.o_proj", Target::OProj, (h, q_out), false)?;
            let gate = proj("mlp.gate_proj", Target::GateProj, (f, h), false)?;
            let up = proj("mlp.up_proj", Target::UpProj, (f, h), false)?;
            let down = proj("mlp.down_proj", Target::DownProj, (h, f), false)?;
            let input_norm = take(&format!("{p}.input_layernorm.weight"))?;
            let post_norm = take(&format!("{p}.post_attention_layernorm.weight"))?;
            blocks.push(Block { input_norm, q, k, v, o, post_norm, gate, up, down, swiglu: None });
        }
        let final_norm = take("model.norm.weight")?;
        let lm_head = if cfg.tie_word_embeddings {
            embed.clone()
        } else {
            match take("lm_head.weight") {
                Ok(t) => t,
                Err(_) => embed.clone(), // some checkpoints tie without saying so
            }
        };
        Ok(Self { cfg, embed, blocks, final_norm, lm_head, device: device.clone() })
    }

    /// Stores the frozen projection matrices as `dtype` (`frozen.rs`; `auto` is resolved for the
    /// model's device). On a GPU the LM head follows a half-precision dtype (cuBLAS's tensor cores
    /// for the full-vocabulary product); on the CPU it stays f32 (only its K answer rows are used in
    /// training). The embedding, norms, biases and LoRA matrices stay f32. Returns the dtype used.
    pub fn cast_frozen(&mut self, dtype: FrozenDtype) -> Result<FrozenDtype> {
        let dtype = dtype.resolve(&self.device);
        for b in &mut self.blocks {
            for p in [&mut b.q, &mut b.k, &mut b.v, &mut b.o, &mut b.gate, &mut b.up, &mut b.down] {
                p.weight = p.weight.convert(dtype, &self.device).with_context(|| format!("frozen matrices as {}", dtype.name()))?;
            }
            b.swiglu = None;
            if let (Frozen::F32Packed(g), Frozen::F32Packed(u), Frozen::F32Packed(d)) = (&b.gate.weight, &b.up.weight, &b.down.weight) {
                if let Some((gate_up, gate, up)) = PackedF32::stack_pair(g, u) {
                    b.swiglu = Some(Arc::new(SwigluPacked { gate_up, down: d.clone() }));
                    (b.gate.weight, b.up.weight) = (Frozen::F32Packed(Arc::new(gate)), Frozen::F32Packed(Arc::new(up)));
                }
            }
        }
        if !self.device.is_cpu() {
            let head = match dtype {
                FrozenDtype::Bf16 => DType::BF16,
                FrozenDtype::F16 => DType::F16,
                _ => DType::F32,
            };
            self.lm_head = self.lm_head.to_dtype(head)?;
        }
        Ok(dtype)
    }

    /// How many blocks run their MLP as one fused op when it carries no adapter (`cast_frozen`).
    pub fn fused_mlp_blocks(&self) -> usize {
        self.blocks.iter().filter(|b| b.swiglu.is_some()).count()
    }

    /// The frozen projections' storage ("f32", "bf16", "q4k", or a mix such as "q4k+q6k") and
    /// their bytes.
    pub fn frozen_storage(&self) -> (String, usize) {
        let mut kinds: Vec<String> = Vec::new();
        let mut bytes = 0;
        for b in &self.blocks {
            for p in [&b.q, &b.k, &b.v, &b.o, &b.gate, &b.up, &b.down] {
                let k = p.weight.kind();
                if !kinds.contains(&k) {
                    kinds.push(k);
                }
                bytes += p.weight.bytes();
            }
        }
        (kinds.join("+"), bytes)
    }

    /// The input embeddings of token ids: (N, hidden).
    pub fn embeddings(&self, ids: &[u32]) -> Result<Tensor> {
        let ids = Tensor::from_vec(ids.to_vec(), ids.len(), &self.device)?;
        Ok(self.embed.index_select(&ids, 0)?)
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn lora_dims(&self) -> crate::lora::Dims {
        crate::lora::Dims {
            num_layers: self.cfg.num_hidden_layers,
            hidden: self.cfg.hidden_size,
            q_out: self.cfg.num_attention_heads * self.cfg.head_dim,
            kv_out: self.cfg.num_key_value_heads * self.cfg.head_dim,
            intermediate: self.cfg.intermediate_size,
        }
    }

    /// Rotary tables for positions 0..t: (t, head_dim / 2) each.
    fn rotary(&self, t: usize) -> Result<(Tensor, Tensor)> {
        let inv = self.cfg.rope_inv_freq();
        let half = inv.len();
        let mut angles = Vec::with_capacity(t * half);
        for pos in 0..t {
            angles.extend(inv.iter().map(|f| pos as f32 * f));
        }
        let a = Tensor::from_vec(angles, (t, half), &self.device)?;
        Ok((a.cos()?, a.sin()?))
    }

    /// Additive causal mask (t, t): 0 where key <= query (and within the sliding window), -inf elsewhere.
    fn causal_mask(&self, t: usize) -> Result<Tensor> {
        let win = self.cfg.sliding_window.unwrap_or(usize::MAX);
        let m: Vec<f32> = (0..t).flat_map(|i| (0..t).map(move |j| if j <= i && i - j < win { 0.0 } else { f32::NEG_INFINITY })).collect();
        Ok(Tensor::from_vec(m, (t, t), &self.device)?)
    }

    fn proj(&self, x: &Tensor, p: &Proj, layer: usize, opts: &mut ForwardOpts) -> Result<Tensor> {
        // x: (N, d_in) -> (N, d_out)
        let adapter = opts.lora.and_then(|set| set.index_of(layer, p.target).map(|idx| (set, idx)));
        let Some((set, idx)) = adapter else {
            let y = p.weight.linear(x)?;
            return Ok(match &p.bias {
                Some(b) => y.broadcast_add(b)?,
                None => y,
            });
        };
        // x W^T + s ((x ⊙ mask) A^T) B^T, one op on the CPU (`fused/lora.rs`)
        let l = &set.layers[idx];
        let (a, b) = l.weights(opts.no_grad);
        let mask = opts.dropout.as_deref_mut().and_then(|d| d.mask(x.elem_count())).map(Arc::new);
        let mut y = lora_linear(x, &p.weight, &a, &b, set.scale(), mask.clone())?;
        if let Some(bias) = &p.bias {
            y = y.broadcast_add(bias)?;
        }
        if let Some(tap) = opts.tap.as_deref_mut() {
            y = tap.record(idx, &masked_input(x, mask.as_deref().map(Vec::as_slice))?, y)?;
        }
        Ok(y)
    }

    #[allow(clippy::too_many_arguments)]
    fn block(
        &self,
        i: usize,
        x: &Tensor,
        b: usize,
        t: usize,
        rot: &(Tensor, Tensor),
        mask: &Tensor,
        rows: PrefixLayout,
        opts: &mut ForwardOpts,
    ) -> Result<Tensor> {
        let blk = &self.blocks[i];
        let c = &self.cfg;
        // x: (B*T, hidden), or (P + B*S, hidden) with a shared prefix (`prefix.rs`)
        let n = rms_norm(x, &blk.input_norm, c.rms_norm_eps)?;
        let q = self.proj(&n, &blk.q, i, opts)?; // (B*T, h*hd)
        let k = self.proj(&n, &blk.k, i, opts)?; // (B*T, hkv*hd)
        let v = self.proj(&n, &blk.v, i, opts)?;
        let shape = self.attn_shape(b, t);
        let o = match rows {
            PrefixLayout::Plain => attention(&q, &k, &v, rot, mask, shape)?, // (B*T, h*hd)
            PrefixLayout::Prefixed { p, b, s } => {
                // The prefix as a sequence of its own, then every suffix over its keys.
                let part = |x: &Tensor, at: usize, len: usize| x.narrow(0, at, len);
                let rot_p = (rot.0.narrow(0, 0, p)?, rot.1.narrow(0, 0, p)?);
                let mask_p = mask.narrow(0, 0, p)?.narrow(1, 0, p)?;
                let (k_p, v_p) = (part(&k, 0, p)?, part(&v, 0, p)?);
                let o_p = attention(&part(&q, 0, p)?, &k_p, &v_p, &rot_p, &mask_p, AttnShape { batch: 1, seq: p, ..shape })?;
                let o_s = prefix::suffix_attention(&part(&q, p, b * s)?, &part(&k, p, b * s)?, &part(&v, p, b * s)?, &k_p, &v_p, rot, (p, b, s), shape)?;
                Tensor::cat(&[o_p, o_s], 0)?
            }
        };
        let x = add(x, &self.proj(&o, &blk.o, i, opts)?)?;
        self.mlp_residual(i, &x, opts)
    }

    /// The attention's shapes for B sequences of T tokens.
    fn attn_shape(&self, b: usize, t: usize) -> AttnShape {
        let c = &self.cfg;
        AttnShape { batch: b, seq: t, heads: c.num_attention_heads, kv_heads: c.num_key_value_heads, window: c.sliding_window.unwrap_or(usize::MAX) }
    }

    /// Block `i` when only the rows `last` (r T + l_r - 1, one per prompt) of its output are read:
    /// keys and values from every position, the queries, o_proj and the MLP on those B rows. Its
    /// output there equals `block`'s (the other rows feed nothing after the last block); the saving
    /// is (1 - 1/T) of the block's q, o and MLP products, forward and backward. Returns (B, hidden).
    #[allow(clippy::too_many_arguments)]
    fn last_block(
        &self,
        i: usize,
        x: &Tensor,
        b: usize,
        t: usize,
        rot: &(Tensor, Tensor),
        last: &Tensor,
        lengths: &[usize],
        opts: &mut ForwardOpts,
    ) -> Result<Tensor> {
        let blk = &self.blocks[i];
        let c = &self.cfg;
        // x: (B*T, hidden)
        let n = rms_norm(x, &blk.input_norm, c.rms_norm_eps)?;
        let k = self.proj(&n, &blk.k, i, opts)?; // (B*T, hkv*hd)
        let v = self.proj(&n, &blk.v, i, opts)?;
        let q = self.proj(&n.index_select(last, 0)?, &blk.q, i, opts)?; // (B, h*hd)
        let o = last_query_attention(&q, &k, &v, rot, lengths, self.attn_shape(b, t))?; // (B, h*hd)
        let x = add(&x.index_select(last, 0)?, &self.proj(&o, &blk.o, i, opts)?)?; // (B, hidden)
        self.mlp_residual(i, &x, opts)
    }

    /// The second half of block `i`: x + down(silu(gate(n)) * up(n)), n = RMSNorm(x). As one op
    /// (`fused::swiglu_mlp`) where the three projections are packed for it, carry no adapter and
    /// the packed kernels are on (the AVX2 switch may have turned them off since loading).
    fn mlp_residual(&self, i: usize, x: &Tensor, opts: &mut ForwardOpts) -> Result<Tensor> {
        let blk = &self.blocks[i];
        let n = rms_norm(x, &blk.post_norm, self.cfg.rms_norm_eps)?;
        let adapted = |t: Target| opts.lora.is_some_and(|set| set.index_of(i, t).is_some());
        if let Some(packed) =
            blk.swiglu.as_ref().filter(|_| f32pack::available() && ![Target::GateProj, Target::UpProj, Target::DownProj].into_iter().any(adapted))
        {
            return Ok(add(x, &swiglu_mlp(&n, packed)?)?);
        }
        let g = self.proj(&n, &blk.gate, i, opts)?;
        let u = self.proj(&n, &blk.up, i, opts)?;
        let m = self.proj(&silu_mul(&g, &u)?, &blk.down, i, opts)?;
        Ok(add(x, &m)?)
    }

    /// Final-normed hidden state at the last real position of each prompt: (B, hidden).
    pub fn last_hidden(&self, input_ids: &Tensor, lengths: &[usize], opts: &mut ForwardOpts) -> Result<Tensor> {
        let (b, t) = input_ids.dims2()?;
        if lengths.len() != b || lengths.iter().any(|&l| l == 0 || l > t) {
            bail!("batch lengths {lengths:?} do not fit input of shape ({b}, {t})");
        }
        // A pass nobody differentiates runs the tokens every row shares once (`prefix.rs`);
        // not under dropout, whose masks differ between rows (p = 0 is no dropout).
        let no_dropout = opts.dropout.as_ref().is_none_or(|d| d.p <= 0.0);
        let p = if opts.no_grad && opts.tap.is_none() && no_dropout && opts.embed_shift.is_none() && self.cfg.sliding_window.is_none() && prefix::enabled() {
            prefix::common_prefix(&input_ids.to_vec2::<u32>()?, lengths)
        } else {
            0
        };
        let (rows, ids) = if p >= prefix::MIN_PREFIX {
            let s = t - p;
            let ids = Tensor::cat(&[input_ids.get(0)?.narrow(0, 0, p)?, input_ids.narrow(1, p, s)?.flatten_all()?], 0)?;
            (PrefixLayout::Prefixed { p, b, s }, ids)
        } else {
            (PrefixLayout::Plain, input_ids.flatten_all()?)
        };
        let mut x = self.embed.index_select(&ids, 0)?; // (B*T, hidden), or (P + B*S, hidden)
        if let Some(shift) = opts.embed_shift {
            x = (x + shift)?;
        }
        let rot = self.rotary(t)?;
        let mask = self.causal_mask(t)?;
        // The last block computes only the rows read below (`last_block`); not under a tap (KFAC's
        // per-position factors read every position's input), under dropout (its masks are drawn
        // per element of the input) or with a shared prefix.
        let pruned = matches!(rows, PrefixLayout::Plain) && opts.tap.is_none() && no_dropout && !self.blocks.is_empty() && last_block_pruned();
        let full = if pruned { self.blocks.len() - 1 } else { self.blocks.len() };
        for i in 0..full {
            x = self.block(i, &x, b, t, &rot, &mask, rows, opts).with_context(|| format!("block {i}"))?;
        }
        // Row r's last real position l_r - 1: at r * T + l_r - 1, or at l_r - 1 - P in its
        // suffix, which starts at P + r * S.
        let last: Vec<u32> = lengths
            .iter()
            .enumerate()
            .map(|(r, &l)| match rows {
                PrefixLayout::Plain => (r * t + l - 1) as u32,
                PrefixLayout::Prefixed { s, .. } => (r * s + l - 1) as u32,
            })
            .collect();
        let last = Tensor::from_vec(last, b, &self.device)?;
        let x = if pruned {
            self.last_block(full, &x, b, t, &rot, &last, lengths, opts).with_context(|| format!("block {full}"))?
        } else {
            x.index_select(&last, 0)?
        }; // (B, hidden)
        Ok(rms_norm(&x, &self.final_norm, self.cfg.rms_norm_eps)?)
    }

    /// Logits of the K answer tokens at the last real position: (B, K). Masked choices get -1e9.
    pub fn answer_logits(&self, batch: &Batch, answer_ids: &[u32], opts: &mut ForwardOpts) -> Result<Tensor> {
        let h = self.last_hidden(&batch.input_ids, &batch.lengths, opts)?;
        let ids = Tensor::from_vec(answer_ids.to_vec(), answer_ids.len(), &self.device)?;
        let w = self.lm_head.index_select(&ids, 0)?; // (K, hidden)
        let mut f = frozen_linear(&h, &w)?;
        if let Some(set) = opts.lora {
            if let Some(idx) = set.head_index() {
                let l = &set.layers[idx];
                if set.answer_token_ids != answer_ids {
                    bail!("the LM-head adapter was made for answer tokens {:?}, not {:?}", set.answer_token_ids, answer_ids);
                }
                // s * (h A^T) B_ans^T with B_ans the K answer rows: (B, K)
                let (a, b) = l.weights(opts.no_grad);
                let u = h.matmul(&a.t()?)?;
                f = (f + (u.matmul(&b.t()?)? * set.scale())?)?;
                if let Some(tap) = opts.tap.as_deref_mut() {
                    f = tap.record(idx, &h, f)?;
                }
            }
        }
        if let Some(m) = &batch.choice_mask {
            f = (f + m)?;
        }
        Ok(f)
    }

    /// Full-vocabulary next-token logits after the last token of each prompt: (B, vocab).
    /// For generation checks only; training never computes these.
    pub fn next_token_logits(&self, input_ids: &Tensor, lengths: &[usize], lora: Option<&LoraSet>) -> Result<Tensor> {
        let mut opts = ForwardOpts::new(lora);
        let h = self.last_hidden(input_ids, lengths, &mut opts)?;
        Ok(frozen_linear(&h, &self.lm_head)?)
    }

    /// Greedy argmax of the next token for one prompt.
    pub fn greedy_next(&self, prompt: &[u32]) -> Result<u32> {
        let ids = Tensor::from_vec(prompt.to_vec(), (1, prompt.len()), &self.device)?;
        let logits = self.next_token_logits(&ids, &[prompt.len()], None)?;
        Ok(logits.squeeze(0)?.argmax(D::Minus1)?.to_scalar::<u32>()?)
    }
}
