//! `laplace-lora check-model SOURCE`: what a model is and whether it works, before a run is
//! built on it: architecture, parameter count, quantization mix, the memory a default run will
//! need, the tokenizer, and a greedy continuation of a fixed prompt. With `--answer-logits DATA
//! --json OUT` it also writes each item's token ids and answer logits, which
//! `benches/reference/parity.py` compares with transformers on the same GGUF.

use anyhow::{Context, Result};
use laplace_lora::data;
use laplace_lora::experiment::{LaplaceSection, LoraSection};
use laplace_lora::lora::Target;
use laplace_lora::model::{self, inspect, memory, tokenizer, Batch, ForwardOpts, LoadedModel, ModelFiles};
use laplace_lora::train::TrainConfig;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

pub struct Args {
    pub dtype: String,
    pub prompt: String,
    pub tokens: usize,
    pub answer_logits: Option<PathBuf>,
    pub json: Option<PathBuf>,
    pub max_items: usize,
}

#[derive(Serialize)]
struct ItemLogits {
    id: String,
    prompt: String,
    ids: Vec<u32>,
    answer_labels: Vec<String>,
    answer_ids: Vec<u32>,
    answer_logits: Vec<f32>,
}

#[derive(Serialize)]
struct Report {
    model: String,
    dtype: String,
    items: Vec<ItemLogits>,
}

/// The memory a run with the default settings (batch 4, 128-token prompts, r = 8 on q_proj,
/// v_proj and the LM head, K = 4, KFAC) would need, for the check's summary.
pub fn default_plan(dtype: &str) -> memory::Plan {
    let (train, lora, laplace) = (TrainConfig::default(), LoraSection::default(), LaplaceSection::default());
    memory::Plan {
        storage: memory::WeightStorage::parse(dtype).unwrap_or(memory::WeightStorage::F32),
        batch: train.batch_size,
        seq_len: 128,
        rank: lora.rank,
        targets: vec![Target::QProj, Target::VProj, Target::LmHead],
        classes: 4,
        laplace: true,
        structure: laplace.structure.clone(),
        low_rank_threshold: laplace.low_rank_threshold,
        low_rank_k: laplace.low_rank_k,
    }
}

pub fn run(files: &ModelFiles, a: &Args) -> Result<i32> {
    let info = inspect::inspect(files)?;
    let c = &info.config;
    println!("model        {files}");
    println!(
        "architecture {} ({}): {} blocks, hidden {}, FFN {}, {} heads / {} KV heads of {}, vocabulary {}",
        c.model_type,
        info.container,
        c.num_hidden_layers,
        c.hidden_size,
        c.intermediate_size,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.head_dim,
        c.vocab_size
    );
    let mut extras = vec![format!("rope base {}", c.rope_theta), format!("RMS eps {:e}", c.rms_norm_eps)];
    if c.rope_scaling.is_some() {
        extras.push("llama3 rope scaling".into());
    }
    extras.push(if c.tie_word_embeddings { "LM head tied to the embedding".into() } else { "own LM head".into() });
    if c.qkv_bias {
        extras.push("qkv bias".into());
    }
    if let Some(w) = c.sliding_window {
        extras.push(format!("sliding window {w}"));
    }
    println!("             {}", extras.join(", "));
    println!("parameters   {:.1}M (the decoder; the file's tensors hold {:.1}M)", c.num_parameters() as f64 / 1e6, info.file_parameters as f64 / 1e6);
    println!("storage      {}", info.mix());
    println!("tokenizer    {}", info.tokenizer);
    let plan = default_plan(&a.dtype);
    let est = memory::estimate(c, Some(&info), &plan);
    println!("memory       a default run (batch {} x {} tokens, r = {}, dtype {}): {}", plan.batch, plan.seq_len, plan.rank, a.dtype, est.summary());
    if let Some(avail) = memory::available_bytes() {
        println!("             available now: {}", memory::gib(avail));
    }

    let started = Instant::now();
    let (m, _) = LoadedModel::load_as(files, &candle_core::Device::Cpu, model::parse_frozen_dtype(&a.dtype).context("--dtype")?)?;
    println!("loaded in    {:.1} s", started.elapsed().as_secs_f64());

    let mut ids = tokenizer::encode(&m.tokenizer, &a.prompt)?;
    let n0 = ids.len();
    let started = Instant::now();
    for _ in 0..a.tokens {
        let next = m.model.greedy_next(&ids)?;
        ids.push(next);
    }
    let dt = started.elapsed().as_secs_f64();
    let text = m.tokenizer.decode(&ids[n0..], false).map_err(anyhow::Error::msg)?;
    println!("greedy       {:?} -> {:?} ({} tokens, {:.2} s a token)", a.prompt, text, a.tokens, dt / a.tokens.max(1) as f64);

    if let Some(data_path) = &a.answer_logits {
        let items = data::load_items(data_path, data::Format::Auto)?;
        let items: Vec<_> = items.into_iter().take(a.max_items).collect();
        let mut out = Vec::with_capacity(items.len());
        for it in &items {
            let answer_ids = data::answer_token_ids(&m.tokenizer, &it.answer_labels).with_context(|| format!("item {}", it.id))?;
            let ids = tokenizer::encode(&m.tokenizer, &it.prompt)?;
            let k = answer_ids.len();
            let batch = Batch::new(&[&ids], &[k], k, 0, m.model.device())?;
            let f = m.model.answer_logits(&batch, &answer_ids, &mut ForwardOpts::new(None))?.squeeze(0)?.to_vec1::<f32>()?;
            println!("item {:<24} answer logits {:?}", it.id, f);
            out.push(ItemLogits { id: it.id.clone(), prompt: it.prompt.clone(), ids, answer_labels: it.answer_labels.clone(), answer_ids, answer_logits: f });
        }
        if let Some(p) = &a.json {
            let report = Report { model: files.path().display().to_string(), dtype: a.dtype.clone(), items: out };
            laplace_lora::runio::write_json_atomic(p, &report)?;
            println!("wrote {}", p.display());
        }
    }
    Ok(0)
}
