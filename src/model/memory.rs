//! What a run will need in memory, before it starts: the frozen weights in the chosen storage,
//! the activations a LoRA step keeps for its backward pass at the batch and prompt length, the
//! Laplace factors at the rank and low-rank threshold, and the curvature/Jacobian passes. `run`
//! and the setup panel state it and refuse a run that cannot fit instead of being killed.
//!
//! The counts (f32 activations, f64 Kronecker factors) follow the code:
//! - weights: `Llama::from_tensors` keeps every tensor in f32; `cast_frozen` re-stores the seven
//!   projections of each block and the LM head (a tied head becomes a copy) in the chosen dtype.
//!   A GGUF is dequantized whole to f32 first, so loading peaks at the f32 model plus the cast.
//! - activations of one block per token (floats): the block input and its norm, q, k, v, the
//!   attention output, the o and down outputs, gate and up (the fused kernels recompute the rest),
//!   plus two (heads x T) attention matrices per token (scores and probabilities). The backward
//!   pass holds the gradients of about one block on top.
//! - Laplace: per LoRA matrix two Kronecker factors (input and output side), dense `n^2` f64 when
//!   the side is at most the threshold, else `n x k` f64 (top-k); their eigenbases as much again.
//!   The curvature pass runs the training batch with every adapted input recorded (`Tap`).
//! The constants were checked against measured peak RSS (README, "Memory"); the estimate is a
//! guide with a stated error, not a bound.

use super::inspect::ModelInfo;
use super::Config;
use crate::lora::Target;

/// How the frozen projection matrices are stored (`model.dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightStorage {
    F32,
    Half,
    /// GGUF Q8_0 blocks: 34 bytes per 32 weights.
    Q8_0,
    /// The GGUF's own block types (bytes from its tensor list).
    Keep,
}

impl WeightStorage {
    /// `model.dtype`: "f32", "bf16", "f16", "q8_0", "keep".
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "float32" => Some(Self::F32),
            "bf16" | "bfloat16" | "f16" | "float16" => Some(Self::Half),
            "q8_0" => Some(Self::Q8_0),
            "keep" => Some(Self::Keep),
            _ => None,
        }
    }
}

/// The settings of a run that decide its memory.
#[derive(Debug, Clone)]
pub struct Plan {
    pub storage: WeightStorage,
    pub batch: usize,
    /// Tokens of the longest prompt (padded batches are this long).
    pub seq_len: usize,
    pub rank: usize,
    pub targets: Vec<Target>,
    /// K, the answer classes.
    pub classes: usize,
    /// Whether the Laplace stage runs, its structure ("kron", "diag", "full") and factor limits.
    pub laplace: bool,
    pub structure: String,
    pub low_rank_threshold: usize,
    pub low_rank_k: usize,
}

/// Bytes, by part.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Estimate {
    /// Frozen weights as kept for the run.
    pub weights: u64,
    /// The peak while loading (a GGUF is dequantized to f32 before the cast).
    pub loading: u64,
    /// Activations and gradients of one LoRA training step.
    pub step: u64,
    /// The Laplace curvature / Jacobian passes (activations with every adapted input recorded).
    pub laplace_pass: u64,
    /// Kronecker factors and their eigenbases (or the diagonal / full curvature).
    pub laplace_factors: u64,
    /// The program itself, its libraries, the tokenizer, data and allocator slack.
    pub base: u64,
    /// The largest of the phases: what the run needs.
    pub peak: u64,
}

/// Measured on the default model (README, "Memory"): RSS of the program with the tokenizer and a
/// sample dataset loaded, before the model.
const BASE_BYTES: u64 = 160 << 20;

/// Matrices of the LoRA targets: (d_in, d_out) of each adapted projection, all blocks.
fn adapted(cfg: &Config, targets: &[Target], classes: usize) -> Vec<(u64, u64)> {
    let (h, f) = (cfg.hidden_size as u64, cfg.intermediate_size as u64);
    let q = (cfg.num_attention_heads * cfg.head_dim) as u64;
    let kv = (cfg.num_key_value_heads * cfg.head_dim) as u64;
    let mut out = Vec::new();
    for t in targets {
        let io = match t {
            Target::QProj => (h, q),
            Target::KProj | Target::VProj => (h, kv),
            Target::OProj => (q, h),
            Target::GateProj | Target::UpProj => (h, f),
            Target::DownProj => (f, h),
            Target::LmHead => {
                out.push((h, classes as u64));
                continue;
            }
        };
        out.extend(std::iter::repeat_n(io, cfg.num_hidden_layers));
    }
    out
}

fn factor_bytes(side: u64, threshold: u64, k: u64) -> u64 {
    if side <= threshold {
        side * side * 8
    } else {
        side * k.min(side) * 8 + k * 8
    }
}

pub fn estimate(cfg: &Config, info: Option<&ModelInfo>, plan: &Plan) -> Estimate {
    let (h, f, v) = (cfg.hidden_size as u64, cfg.intermediate_size as u64, cfg.vocab_size as u64);
    let q = (cfg.num_attention_heads * cfg.head_dim) as u64;
    let kv = (cfg.num_key_value_heads * cfg.head_dim) as u64;
    let layers = cfg.num_hidden_layers as u64;
    let proj = layers * (2 * h * q + 2 * h * kv + 3 * h * f);
    let head = v * h;
    let small = layers * (2 * h + if cfg.qkv_bias { q + 2 * kv } else { 0 }) + h;
    let embed = v * h;
    let f32_all = 4 * (embed + proj + small + if cfg.tie_word_embeddings { 0 } else { head });
    let stored = |bytes_per_weight: f64| ((proj + head) as f64 * bytes_per_weight) as u64;
    let frozen = match plan.storage {
        WeightStorage::F32 => 4 * (proj + head),
        WeightStorage::Half => stored(2.0),
        WeightStorage::Q8_0 => stored(34.0 / 32.0),
        // The file's blocks less its embedding and its F32 norms; a tied head is the embedding's blocks.
        WeightStorage::Keep => match info {
            Some(i) => {
                let rest = i.stored_bytes().saturating_sub(i.embedding_bytes + 4 * small);
                rest + if cfg.tie_word_embeddings { i.embedding_bytes } else { 0 }
            }
            None => stored(34.0 / 32.0),
        },
    };
    // The embedding (and norms, biases) stay f32; a tied head is the embedding itself in f32.
    let tied_f32 = plan.storage == WeightStorage::F32 && cfg.tie_word_embeddings;
    let weights = 4 * (embed + small) + if tied_f32 { 4 * proj } else { frozen };
    let loading = match plan.storage {
        WeightStorage::F32 => f32_all,
        WeightStorage::Half => f32_all + frozen,
        // Kept quantized: streamed tensor by tensor, never the f32 model whole.
        WeightStorage::Q8_0 | WeightStorage::Keep => weights + 4 * embed.max(h * f),
    };

    // One block's activations per token, and the attention matrices (scores, probabilities).
    let (b, t) = (plan.batch as u64, plan.seq_len as u64);
    let n = b * t;
    // Calibrated (README, "Memory"): the fused RMSNorm, SwiGLU and attention kernels keep
    // fewer intermediates than the unfused count above (6h + 3q + 4kv + 3f).
    let per_token = 4 * h + 2 * q + 2 * kv + 2 * f;
    let attn = 2 * b * cfg.num_attention_heads as u64 * t * t;
    let block = 4 * (n * per_token + attn);
    let lora: u64 = adapted(cfg, &plan.targets, plan.classes).iter().map(|&(i, o)| plan.rank as u64 * (i + o)).sum();
    // LoRA weights, their gradients and two AdamW moments.
    let lora_bytes = 4 * 4 * lora;
    // Activations of every block, one block's gradients, the embedding rows gathered.
    let step = layers * block + 2 * block + 4 * n * h + lora_bytes;

    let (laplace_pass, laplace_factors) = if plan.laplace {
        let mats = adapted(cfg, &plan.targets, plan.classes);
        // Recorded inputs and per-position output gradients of every adapted projection.
        let tap: u64 = mats.iter().map(|&(i, o)| 4 * n * (i + plan.rank as u64) + 4 * n * (o + plan.rank as u64)).sum();
        let (th, k) = (plan.low_rank_threshold as u64, plan.low_rank_k as u64);
        let r = plan.rank as u64;
        let factors: u64 = match plan.structure.as_str() {
            // Diagonal: one f64 per parameter, for the curvature and the posterior.
            "diag" => 2 * 8 * lora,
            // Full: a dense P x P matrix and its factorisation.
            "full" => 2 * 8 * lora * lora,
            // KFAC: A (r x d_in) has factors d_in and r, B (d_out x r) has r and d_out; each
            // factor and its eigenbasis.
            _ => mats.iter().map(|&(i, o)| 2 * (factor_bytes(i, th, k) + factor_bytes(o, th, k) + 2 * factor_bytes(r, th, k))).sum(),
        };
        // The forward graph is kept across the K backward passes, each with its own gradients
        // (about a step's worth again), plus the recorded inputs.
        (2 * step + tap, factors)
    } else {
        (0, 0)
    };
    let base = BASE_BYTES;
    let run = weights + step.max(laplace_pass + laplace_factors);
    Estimate { weights, loading, step, laplace_pass, laplace_factors, base, peak: base + loading.max(run) }
}

/// Memory this machine can give a new process now (`MemAvailable` of /proc/meminfo), if known.
pub fn available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

pub fn gib(bytes: u64) -> String {
    let g = bytes as f64 / (1u64 << 30) as f64;
    if g >= 10.0 {
        format!("{g:.0} GiB")
    } else if g >= 1.0 {
        format!("{g:.1} GiB")
    } else {
        format!("{:.0} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

impl Estimate {
    /// One line: the peak and its largest parts.
    pub fn summary(&self) -> String {
        format!(
            "about {} (weights {}, loading peak {}, training step {}, Laplace passes {} + factors {})",
            gib(self.peak),
            gib(self.weights),
            gib(self.loading),
            gib(self.step),
            gib(self.laplace_pass),
            gib(self.laplace_factors)
        )
    }
}

/// For the setup panel: what a run of `plan` on the model at `source` will need, and (second)
/// what is available now. Read from the model's headers once per distinct input and remembered
/// (the first call for a model reads its header, tens of milliseconds; later frames cost a map
/// lookup). Nothing is fetched: a known model not yet on disk gets a note instead.
pub fn label_for(source: &str, plan: &Plan) -> (String, String) {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    let avail = available_bytes().map(|a| format!("{} available now", gib(a))).unwrap_or_default();
    let key = format!("{source}|{plan:?}");
    let mut map = CACHE.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    let label = map
        .entry(key)
        .or_insert_with(|| {
            let source = source.trim();
            let files =
                if std::path::Path::new(source).exists() { super::resolve_model(source, &mut |_| {}).ok() } else { super::source::cached_unverified(source) };
            match files.map(|f| super::inspect::inspect(&f)) {
                None => "memory: estimated once the model is on disk".to_string(),
                Some(Err(e)) => format!("memory: cannot read the model ({e:#})"),
                Some(Ok(info)) => {
                    let e = estimate(&info.config, Some(&info), plan);
                    let warn = if available_bytes().is_some_and(|a| e.peak > a) { " - more than is available" } else { "" };
                    format!("memory: about {} at {}-token prompts{warn}", gib(e.peak), plan.seq_len)
                }
            }
        })
        .clone();
    (label, avail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smollm() -> Config {
        Config::from_hf_str(crate::bench::SMOLLM2_135M_CONFIG).unwrap()
    }

    fn bench_plan() -> Plan {
        Plan {
            storage: WeightStorage::F32,
            batch: crate::bench::BATCH,
            seq_len: crate::bench::SEQ_LEN,
            rank: crate::bench::RANK,
            targets: vec![Target::QProj, Target::VProj],
            classes: crate::bench::K,
            laplace: true,
            structure: "kron".into(),
            low_rank_threshold: 1024,
            low_rank_k: 128,
        }
    }

    /// Qwen2.5-Coder-0.5B's shapes (its GGUF: 24 blocks, untied head, qkv bias).
    fn qwen05() -> Config {
        Config::from_hf_str(
            r#"{"model_type":"qwen2","hidden_size":896,"intermediate_size":4864,"vocab_size":151936,"num_hidden_layers":24,
            "num_attention_heads":14,"num_key_value_heads":2,"rope_theta":1000000.0,"tie_word_embeddings":false}"#,
        )
        .unwrap()
    }

    /// The estimate against peak RSS measured by `laplace-lora bench` (batch 4 x 64, r = 8 on
    /// q and v, K = 4, KFAC) on a 2-core AMD EPYC (family 26, Zen 5), 2026-12-01: the step phase (model
    /// loaded, LoRA steps) and the Laplace phase (curvature, eigendecomposition, predictive).
    /// SmolLM2-135M: 908 and 1875 MiB; Qwen2.5-Coder-0.5B: 3139 and 3988 MiB. Within 20%.
    #[test]
    fn estimate_is_within_a_fifth_of_measured_peak_rss() {
        for (name, cfg, step_mib, laplace_mib) in [("smollm2-135m", smollm(), 908.0, 1875.0), ("qwen2.5-0.5b", qwen05(), 3139.0, 3988.0)] {
            let e = estimate(&cfg, None, &bench_plan());
            let step = (e.base + e.weights + e.step) as f64 / (1u64 << 20) as f64;
            let lap = (e.base + e.weights + e.laplace_pass + e.laplace_factors) as f64 / (1u64 << 20) as f64;
            eprintln!("{name}: step phase {step:.0} MiB (measured {step_mib}), Laplace phase {lap:.0} MiB (measured {laplace_mib})");
            assert!((step / step_mib - 1.0).abs() < 0.2, "{name}: step phase estimated {step:.0} MiB, measured {step_mib}");
            assert!((lap / laplace_mib - 1.0).abs() < 0.2, "{name}: Laplace phase estimated {lap:.0} MiB, measured {laplace_mib}");
        }
    }
}
