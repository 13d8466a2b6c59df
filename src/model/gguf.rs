//! Loading a llama-family GGUF file: metadata to `Config`, tensors dequantized to f32 under their
//! Hugging Face names, and q/k un-permuted back to the HF rotary layout.
//!
//! llama.cpp's converter permutes the rows of q_proj and k_proj of llama-architecture models so that
//! the rotary embedding can be applied to interleaved pairs (x0, x1), (x2, x3), ...; within a head
//! HF row s * hd/2 + j (s in {0, 1}, j < hd/2) becomes GGUF row 2 j + s. Undoing it lets the model use
//! the HF "rotate half" rotary and makes our LoRA matrices PEFT-compatible with the HF checkpoint.

use super::config::Config;
use super::frozen::{Frozen, FrozenDtype};
use super::quant::QuantMatrix;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

pub struct GgufModel {
    pub config: Config,
    pub tensors: HashMap<String, Tensor>,
    pub metadata: HashMap<String, Value>,
}

pub fn read_content(path: &Path) -> Result<(Content, std::fs::File)> {
    let mut file = std::fs::File::open(path).with_context(|| format!("opening GGUF file {}", path.display()))?;
    let content = Content::read(&mut file).map_err(|e| anyhow!("{} is not a readable GGUF file ({e}); is it truncated or not a GGUF?", path.display()))?;
    Ok((content, file))
}

fn meta<'a>(m: &'a HashMap<String, Value>, key: &str) -> Result<&'a Value> {
    m.get(key).ok_or_else(|| anyhow!("GGUF metadata key {key} is missing"))
}

fn meta_usize(m: &HashMap<String, Value>, key: &str) -> Result<usize> {
    let v = meta(m, key)?;
    let n = v
        .to_u64()
        .or_else(|_| v.to_u32().map(u64::from))
        .or_else(|_| v.to_i32().map(|x| x as u64))
        .or_else(|_| v.to_i64().map(|x| x as u64))
        .map_err(|_| anyhow!("GGUF metadata key {key} is not an integer"))?;
    Ok(n as usize)
}

fn meta_f64(m: &HashMap<String, Value>, key: &str) -> Option<f64> {
    let v = m.get(key)?;
    v.to_f32().map(f64::from).or_else(|_| v.to_f64()).ok()
}

/// Undo llama.cpp's rotary permutation of q/k rows (see the module comment). Works for a weight
/// (rows, d_in) and for a bias (rows).
fn unpermute(t: &Tensor, n_head: usize) -> Result<Tensor> {
    let dims = t.dims().to_vec();
    let rows = dims[0];
    let rest: usize = dims[1..].iter().product();
    let hd = rows / n_head;
    // GGUF (n_head, hd/2, 2, rest) -> HF (n_head, 2, hd/2, rest)
    let x = t.reshape((n_head, hd / 2, 2, rest))?.transpose(1, 2)?.contiguous()?;
    Ok(x.reshape(dims)?)
}

/// The decoder configuration a GGUF's metadata and tensor list describe (no tensor is read).
pub fn read_config(content: &Content, path: &Path) -> Result<Config> {
    let md = &content.metadata;
    let arch = meta(md, "general.architecture")?.to_string().map_err(|_| anyhow!("general.architecture is not a string"))?.clone();
    if !matches!(arch.as_str(), "llama" | "qwen2") {
        bail!("{}: GGUF architecture {arch:?} is not supported; this workbench trains llama-family models (llama, qwen2)", path.display());
    }
    let key = |k: &str| format!("{arch}.{k}");
    let heads = meta_usize(md, &key("attention.head_count"))?;
    let kv_heads = meta_usize(md, &key("attention.head_count_kv")).unwrap_or(heads);
    let hidden = meta_usize(md, &key("embedding_length"))?;
    let embd_info = content.tensor_infos.get("token_embd.weight").ok_or_else(|| anyhow!("{}: tensor token_embd.weight is missing", path.display()))?;
    let vocab = embd_info.shape.dims()[0].max(embd_info.shape.dims().get(1).copied().unwrap_or(0));
    let vocab = if embd_info.shape.dims().len() == 2 && embd_info.shape.dims()[1] == hidden { embd_info.shape.dims()[0] } else { vocab };
    let config = Config {
        model_type: if arch == "qwen2" { "qwen2".into() } else { "llama".into() },
        hidden_size: hidden,
        intermediate_size: meta_usize(md, &key("feed_forward_length"))?,
        vocab_size: vocab,
        num_hidden_layers: meta_usize(md, &key("block_count"))?,
        num_attention_heads: heads,
        num_key_value_heads: kv_heads,
        head_dim: meta_usize(md, &key("attention.key_length")).unwrap_or(hidden / heads.max(1)),
        rms_norm_eps: meta_f64(md, &key("attention.layer_norm_rms_epsilon")).unwrap_or(1e-5),
        rope_theta: meta_f64(md, &key("rope.freq_base")).unwrap_or(10_000.0),
        rope_scaling: None,
        max_position_embeddings: meta_usize(md, &key("context_length")).unwrap_or(4096),
        tie_word_embeddings: !content.tensor_infos.contains_key("output.weight"),
        qkv_bias: arch == "qwen2" || content.tensor_infos.contains_key("blk.0.attn_q.bias"),
        sliding_window: None,
    };
    config.validate().with_context(|| format!("{}: inconsistent GGUF metadata", path.display()))?;
    Ok(config)
}

pub fn load(path: &Path, device: &Device) -> Result<GgufModel> {
    Ok(load_impl(path, device, None)?.0)
}

/// As `load`, with the projection matrices (q, k, v, o, gate, up, down) kept in block format
/// (`dtype` "keep": each in the file's own type where it is a block type; "q8_0": requantized to
/// Q8_0 one tensor at a time) and returned apart, under their Hugging Face names. The rest
/// (embedding, norms, biases, LM head) is dequantized to f32 as by `load`.
pub fn load_kept(path: &Path, device: &Device, dtype: FrozenDtype) -> Result<(GgufModel, HashMap<String, Frozen>)> {
    load_impl(path, device, Some(dtype))
}

/// Whether a Hugging Face tensor name is one of the frozen projection matrices.
fn is_projection(hf: &str) -> bool {
    ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"].iter().any(|p| hf.ends_with(&format!("{p}.weight")))
}

/// The row order of `unpermute` for a (rows, ...) tensor of `n_head` heads: HF row
/// h hd + s hd/2 + j comes from GGUF row h hd + 2 j + s.
fn unpermute_order(rows: usize, n_head: usize) -> Vec<usize> {
    let hd = rows / n_head.max(1);
    (0..rows)
        .map(|r| {
            let (h, within) = (r / hd, r % hd);
            let (s, j) = (within / (hd / 2), within % (hd / 2));
            h * hd + 2 * j + s
        })
        .collect()
}

fn load_impl(path: &Path, device: &Device, kept_as: Option<FrozenDtype>) -> Result<(GgufModel, HashMap<String, Frozen>)> {
    let (content, mut file) = read_content(path)?;
    let config = read_config(&content, path)?;
    let (heads, kv_heads) = (config.num_attention_heads, config.num_key_value_heads);
    let arch = config.model_type.clone();
    let mut tensors = HashMap::new();
    let mut kept = HashMap::new();
    let permuted = arch == "llama";
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let Some(hf) = hf_name(name) else { continue };
        let q = content
            .tensor(&mut file, name, &Device::Cpu)
            .map_err(|e| anyhow!("{}: cannot read tensor {name} ({e}); the file may be truncated", path.display()))?;
        if let Some(dtype) = kept_as.filter(|_| is_projection(&hf)) {
            // Kept in blocks: rows move whole, so the rotary un-permutation is a row order.
            let (d_out, d_in) = q.shape().dims2().map_err(|e| anyhow!("{}: tensor {name} is not a matrix ({e})", path.display()))?;
            let heads_of = if hf.ends_with("q_proj.weight") {
                Some(heads)
            } else if hf.ends_with("k_proj.weight") {
                Some(kv_heads)
            } else {
                None
            };
            let order = heads_of.filter(|_| permuted).map(|h| unpermute_order(d_out, h));
            let frozen = if dtype == FrozenDtype::Keep && super::quant::keepable(q.dtype()) {
                let m = QuantMatrix::from_bytes(&q.data()?, q.dtype(), d_out, d_in).with_context(|| format!("{}: tensor {name}", path.display()))?;
                Some(match &order {
                    Some(o) => m.permute_rows(o)?,
                    None => m,
                })
            } else if dtype == FrozenDtype::Q8_0 {
                let mut t = q.dequantize(&Device::Cpu)?;
                if let Some(h) = heads_of.filter(|_| permuted) {
                    t = unpermute(&t, h)?;
                }
                let w = t.flatten_all()?.to_vec1::<f32>()?;
                Some(QuantMatrix::quantize_q8_0(&w, d_out, d_in).with_context(|| format!("{}: tensor {name} to Q8_0", path.display()))?)
            } else {
                None // not a block type ("keep" keeps it as f32, below)
            };
            if let Some(m) = frozen {
                kept.insert(hf, Frozen::Quant(std::sync::Arc::new(m)));
                continue;
            }
        }
        let mut t = q.dequantize(&Device::Cpu)?;
        if permuted && (hf.ends_with("q_proj.weight") || hf.ends_with("q_proj.bias")) {
            t = unpermute(&t, heads)?;
        } else if permuted && (hf.ends_with("k_proj.weight") || hf.ends_with("k_proj.bias")) {
            t = unpermute(&t, kv_heads)?;
        }
        tensors.insert(hf, t.to_device(device)?);
    }
    Ok((GgufModel { config, tensors, metadata: content.metadata }, kept))
}

/// GGUF tensor name -> Hugging Face name.
fn hf_name(gguf: &str) -> Option<String> {
    let direct = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(d) = direct {
        return Some(d.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (idx, tail) = rest.split_once('.')?;
    let idx: usize = idx.parse().ok()?;
    let (module, kind) = tail.rsplit_once('.')?;
    let hf = match module {
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        _ => return None,
    };
    Some(format!("model.layers.{idx}.{hf}.{kind}"))
}

/// The inverse of `unpermute`, for tests that write GGUF files the way llama.cpp does.
pub fn permute_for_gguf(t: &Tensor, n_head: usize) -> Result<Tensor> {
    let dims = t.dims().to_vec();
    let rest: usize = dims[1..].iter().product();
    let hd = dims[0] / n_head;
    let x = t.reshape((n_head, 2, hd / 2, rest))?.transpose(1, 2)?.contiguous()?;
    Ok(x.reshape(dims)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() -> Result<()> {
        // 2 heads of dim 4, rows numbered: HF row order 0..8.
        let t = Tensor::arange(0f32, 8., &Device::Cpu)?.reshape((8, 1))?;
        let g = permute_for_gguf(&t, 2)?;
        // llama.cpp: within a head, HF rows [0 1 | 2 3] (halves) interleave to [0 2 1 3].
        assert_eq!(g.flatten_all()?.to_vec1::<f32>()?, vec![0., 2., 1., 3., 4., 6., 5., 7.]);
        assert_eq!(unpermute(&g, 2)?.flatten_all()?.to_vec1::<f32>()?, (0..8).map(|x| x as f32).collect::<Vec<_>>());
        Ok(())
    }

    #[test]
    fn unpermute_order_moves_rows_as_unpermute_does() -> Result<()> {
        let t = Tensor::arange(0f32, 24., &Device::Cpu)?.reshape((12, 2))?; // 2 heads of dim 6
        let u = unpermute(&t, 2)?.to_vec2::<f32>()?;
        let rows = t.to_vec2::<f32>()?;
        let by_order: Vec<Vec<f32>> = unpermute_order(12, 2).iter().map(|&r| rows[r].clone()).collect();
        assert_eq!(u, by_order);
        Ok(())
    }

    #[test]
    fn maps_tensor_names() {
        assert_eq!(hf_name("blk.12.attn_q.weight").as_deref(), Some("model.layers.12.self_attn.q_proj.weight"));
        assert_eq!(hf_name("blk.0.ffn_norm.weight").as_deref(), Some("model.layers.0.post_attention_layernorm.weight"));
        assert_eq!(hf_name("rope_freqs.weight"), None);
    }
}
