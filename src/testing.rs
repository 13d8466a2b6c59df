//! Tiny random-weight models written to disk, for tests and demos that must not need the real
//! model (brute-force checks, GUI tests). Not a test double: these are real checkpoints in the
//! Hugging Face and GGUF formats that the ordinary loaders read.

use crate::model::gguf::permute_for_gguf;
use anyhow::{anyhow, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// A small llama configuration as `config.json` text.
pub fn tiny_config_json(vocab: usize, hidden: usize, layers: usize, heads: usize, kv_heads: usize, qkv_bias: bool) -> String {
    serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": if qkv_bias { "qwen2" } else { "llama" },
        "hidden_size": hidden,
        "intermediate_size": hidden * 2 + 8,
        "vocab_size": vocab,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 512,
        "tie_word_embeddings": false,
        "bos_token_id": 1,
        "eos_token_id": 2
    })
    .to_string()
}

/// The vocabulary of the tiny word-level tokenizer: specials, letters, answer words and a few
/// prompt words. Every entry is one token, so " A", " True" etc. are single tokens.
pub fn tiny_vocab() -> Vec<String> {
    let mut v: Vec<String> = ["[UNK]", "<s>", "</s>", "Answer:", "Question:", "True", "False", "yes", "no", "A", "B", "C", "D", "E", "F", "G", "H"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for w in "the a is of which what number largest smallest first word animal red blue green cat dog sun moon one two three four five six seven eight nine ten . , ? _ option".split(' ') {
        v.push(w.to_string());
    }
    while v.len() < 64 {
        let n = v.len();
        v.push(format!("w{n}"));
    }
    v
}

/// A word-level tokenizer (whitespace pre-tokenizer) over `tiny_vocab()`.
pub fn tiny_tokenizer() -> Result<tokenizers::Tokenizer> {
    use tokenizers::models::wordlevel::WordLevel;
    use tokenizers::pre_tokenizers::whitespace::WhitespaceSplit;
    let vocab: HashMap<String, u32> = tiny_vocab().into_iter().enumerate().map(|(i, w)| (w, i as u32)).collect();
    let model = WordLevel::builder().vocab(vocab.into_iter().collect()).unk_token("[UNK]".into()).build().map_err(|e| anyhow!("{e}"))?;
    let mut tok = tokenizers::Tokenizer::new(model);
    tok.with_pre_tokenizer(Some(WhitespaceSplit));
    Ok(tok)
}

/// Writes `tiny_tokenizer()` as a `tokenizer.json`.
pub fn write_tiny_tokenizer(path: &Path) -> Result<()> {
    tiny_tokenizer()?.save(path, false).map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// Random weights for a config (seeded), under Hugging Face names.
pub fn random_weights(cfg: &crate::model::Config, seed: u64) -> Result<HashMap<String, Tensor>> {
    let dev = Device::Cpu;
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut rand = |shape: &[usize], scale: f32| -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect();
        Ok(Tensor::from_vec(v, shape, &dev)?)
    };
    let (h, f, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let q_out = cfg.num_attention_heads * cfg.head_dim;
    let kv_out = cfg.num_key_value_heads * cfg.head_dim;
    let mut w = HashMap::new();
    let s = 1.0 / (h as f32).sqrt() * 1.7;
    w.insert("model.embed_tokens.weight".into(), rand(&[v, h], 1.0)?);
    w.insert("lm_head.weight".into(), rand(&[v, h], s)?);
    w.insert("model.norm.weight".into(), (rand(&[h], 0.2)? + 1.0)?);
    for i in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{i}");
        for (name, shape) in [
            ("self_attn.q_proj", [q_out, h]),
            ("self_attn.k_proj", [kv_out, h]),
            ("self_attn.v_proj", [kv_out, h]),
            ("self_attn.o_proj", [h, q_out]),
            ("mlp.gate_proj", [f, h]),
            ("mlp.up_proj", [f, h]),
            ("mlp.down_proj", [h, f]),
        ] {
            w.insert(format!("{p}.{name}.weight"), rand(&shape, 1.0 / (shape[1] as f32).sqrt() * 1.7)?);
        }
        if cfg.qkv_bias {
            w.insert(format!("{p}.self_attn.q_proj.bias"), rand(&[q_out], 0.1)?);
            w.insert(format!("{p}.self_attn.k_proj.bias"), rand(&[kv_out], 0.1)?);
            w.insert(format!("{p}.self_attn.v_proj.bias"), rand(&[kv_out], 0.1)?);
        }
        w.insert(format!("{p}.input_layernorm.weight"), (rand(&[h], 0.2)? + 1.0)?);
        w.insert(format!("{p}.post_attention_layernorm.weight"), (rand(&[h], 0.2)? + 1.0)?);
    }
    Ok(w)
}

/// Writes a complete tiny Hugging Face folder (config.json, model.safetensors, tokenizer.json)
/// and returns its weights. Vocabulary 64, hidden 32, 2 layers, 4 heads, 2 kv heads.
pub fn write_tiny_hf_model(dir: &Path, seed: u64, qkv_bias: bool) -> Result<HashMap<String, Tensor>> {
    std::fs::create_dir_all(dir)?;
    let json = tiny_config_json(tiny_vocab().len(), 32, 2, 4, 2, qkv_bias);
    std::fs::write(dir.join("config.json"), &json)?;
    let cfg = crate::model::Config::from_hf_str(&json)?;
    let w = random_weights(&cfg, seed)?;
    candle_core::safetensors::save(&w, dir.join("model.safetensors"))?;
    write_tiny_tokenizer(&dir.join("tokenizer.json"))?;
    Ok(w)
}

/// Writes the same weights as a llama-architecture GGUF (f32 tensors, q/k permuted the way
/// llama.cpp's converter does), with a `tokenizer.json` beside it.
pub fn write_tiny_gguf(path: &Path, cfg: &crate::model::Config, w: &HashMap<String, Tensor>) -> Result<()> {
    use candle_core::quantized::gguf_file::Value;
    use candle_core::quantized::{GgmlDType, QTensor};
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let mut put = |name: String, t: &Tensor| -> Result<()> {
        tensors.push((name, QTensor::quantize(&t.to_dtype(DType::F32)?, GgmlDType::F32)?));
        Ok(())
    };
    put("token_embd.weight".into(), &w["model.embed_tokens.weight"])?;
    put("output.weight".into(), &w["lm_head.weight"])?;
    put("output_norm.weight".into(), &w["model.norm.weight"])?;
    for i in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{i}");
        put(format!("blk.{i}.attn_q.weight"), &permute_for_gguf(&w[&format!("{p}.self_attn.q_proj.weight")], cfg.num_attention_heads)?)?;
        put(format!("blk.{i}.attn_k.weight"), &permute_for_gguf(&w[&format!("{p}.self_attn.k_proj.weight")], cfg.num_key_value_heads)?)?;
        put(format!("blk.{i}.attn_v.weight"), &w[&format!("{p}.self_attn.v_proj.weight")])?;
        put(format!("blk.{i}.attn_output.weight"), &w[&format!("{p}.self_attn.o_proj.weight")])?;
        put(format!("blk.{i}.ffn_gate.weight"), &w[&format!("{p}.mlp.gate_proj.weight")])?;
        put(format!("blk.{i}.ffn_up.weight"), &w[&format!("{p}.mlp.up_proj.weight")])?;
        put(format!("blk.{i}.ffn_down.weight"), &w[&format!("{p}.mlp.down_proj.weight")])?;
        put(format!("blk.{i}.attn_norm.weight"), &w[&format!("{p}.input_layernorm.weight")])?;
        put(format!("blk.{i}.ffn_norm.weight"), &w[&format!("{p}.post_attention_layernorm.weight")])?;
    }
    let md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String("llama".into())),
        ("llama.block_count".into(), Value::U32(cfg.num_hidden_layers as u32)),
        ("llama.embedding_length".into(), Value::U32(cfg.hidden_size as u32)),
        ("llama.feed_forward_length".into(), Value::U32(cfg.intermediate_size as u32)),
        ("llama.attention.head_count".into(), Value::U32(cfg.num_attention_heads as u32)),
        ("llama.attention.head_count_kv".into(), Value::U32(cfg.num_key_value_heads as u32)),
        ("llama.rope.freq_base".into(), Value::F32(cfg.rope_theta as f32)),
        ("llama.attention.layer_norm_rms_epsilon".into(), Value::F32(cfg.rms_norm_eps as f32)),
        ("llama.context_length".into(), Value::U32(cfg.max_position_embeddings as u32)),
    ];
    let mut f = std::fs::File::create(path)?;
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    candle_core::quantized::gguf_file::write(&mut f, &md_refs, &t_refs)?;
    write_tiny_tokenizer(&path.with_file_name("tokenizer.json"))?;
    Ok(())
}

/// The default model if it is already on this machine (env `LAPLACE_LORA_MODEL`, else the cache);
/// never fetches. Tests that need the real model skip when this is None.
pub fn default_model_if_present() -> Option<crate::model::ModelFiles> {
    if let Ok(p) = std::env::var("LAPLACE_LORA_MODEL") {
        let p = std::path::PathBuf::from(p);
        if p.exists() {
            return crate::model::resolve_model(&p.to_string_lossy(), &mut |_| {}).ok();
        }
    }
    let found = crate::model::source::cached(crate::model::source::DEFAULT_MODEL);
    if found.is_none() && std::env::var_os("LAPLACE_LORA_REQUIRE_MODEL").is_some() {
        // CI fetches the model first and sets this, so a missing model fails instead of skipping.
        panic!("LAPLACE_LORA_REQUIRE_MODEL is set but the default model is not in the cache");
    }
    found
}

/// An experiment configuration (TOML) for a tiny model on the compare4 sample data: LoRA rank 2,
/// batches of 4, 8 validation and 12 test items. Shared by the tests that run the pipeline.
pub fn tiny_experiment_toml(model: &Path, max_train: usize, epochs: usize, seed: u64) -> String {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample_data").join("compare4");
    format!(
        r#"[model]
source = "{}"
[data]
train = "{}"
validation = "{}"
test = "{}"
max_train = {max_train}
max_validation = 8
max_test = 12
[lora]
rank = 2
alpha = 4
[train]
epochs = {epochs}
batch_size = 4
seed = {seed}
"#,
        model.display(),
        d.join("train.jsonl").display(),
        d.join("validation.jsonl").display(),
        d.join("test.jsonl").display()
    )
}

/// A tiny byte-level BPE tokenizer (GPT-2 style, like SmolLM2's), as `tokenizer.json` text: " A",
/// " B", " True" are single tokens; " C" becomes two ("Ġ", "C"); "Ġ" marks a leading space. The
/// letters of "Answer:" are in the vocabulary too.
pub const TINY_BPE_TOKENIZER_JSON: &str = r#"{
  "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
  "normalizer": null,
  "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
  "post_processor": null, "decoder": null,
  "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": {"Ġ": 0, "A": 1, "B": 2, "C": 3, "T": 4, "r": 5, "u": 6, "e": 7,
                      "ĠA": 8, "ĠB": 9, "Tr": 10, "ue": 11, "True": 12, "ĠTrue": 13,
                      "n": 14, "s": 15, "w": 16, ":": 17},
            "merges": ["Ġ A", "Ġ B", "T r", "u e", "Tr ue", "Ġ True"]}
}"#;
