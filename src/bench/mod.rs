//! `laplace-lora bench`: timings of the pipeline's phases on the default model, as medians over
//! repeats after a warm-up. Speed targets are ratios to the PyTorch reference measured in the
//! same run (benches/reference/), never timed assertions in tests.
//!
//! # Shapes and inputs (the reference in `benches/reference/reference.py` builds the same)
//!
//! - Example `i` is a prompt of T token ids (`--seq-len`, default [`SEQ_LEN`] = 64), token `t` being
//!   `(i * 7919 + t * 104729) % vocab` ([`synthetic_ids`]); its label is `i % 4`; every example has
//!   all K = 4 choices. The answer tokens are the vocabulary ids 330, 331, 332, 333
//!   ([`answer_ids`]); the answer logits f(x) in R^4 are read at the last position.
//! - LoRA: r = 8, alpha = 16, dropout 0, on q_proj and v_proj of every block (no LM head),
//!   P = 30 x (8 x 576 + 576 x 8 + 8 x 576 + 192 x 8) = 460,800 parameters for SmolLM2-135M.
//! - `lora_step_s`: one step (forward to the answer logits, mean cross-entropy against the labels,
//!   backward, AdamW lr 1e-4) on examples 0..B as one batch of B x T (`--batch`, default
//!   [`BATCH`] = 4), adapters as initialised (A random, B = 0).
//! - `kfac_per_example_s`: the curvature pass (`laplace::curvature::collect`: KFAC, exact GGN with
//!   K backward passes, positions "expand", every LoRA matrix of the subset "all") over training
//!   examples 0..N (default N = 8, batches of B), divided by N. `kfac_decompose_s`: the
//!   eigendecomposition of every Kronecker factor afterwards (`Posterior::from_curvature`), once per
//!   fit (laplace-torch's `fit` ends with the same decomposition).
//! - `predictive_per_example_s`: per test example (ids 1000..1000 + M, default M = 8, batches of B):
//!   the Jacobian of the 4 answer logits with respect to every LoRA parameter, Sigma_f = J Sigma J^T
//!   (`laplace::jacobian::functional`, exact, prior precision 1) and the probit predictive, from the
//!   posterior fitted in the same repeat. Raw Jacobians, K backward passes, as laplace-torch
//!   computes them (the pipeline's shift-invariant predictives take the centred ones, K - 1).
//! - The Laplace phases run with deterministic adapters ([`deterministic_lora`]):
//!   `A[j, i] = (((j * d_in + i) * 37 % 101) / 50 - 1) / sqrt(d_in)` and
//!   `B[o, j] = 0.01 * (((o * 8 + j) * 53 % 97) / 48 - 1)`, so that no factor is zero.
//! - `prior_recompute_ms`: Sigma_f and the probit predictive of 1,000 cached examples (K = 4)
//!   recomputed from the spectral cache at a new prior precision.
//! - `peak_rss_mib`: the peak resident set of the LoRA step phase (the peak is reset after the
//!   model is loaded, so it is the loaded model plus the step's working set);
//!   `peak_rss_laplace_mib`: the same for the two Laplace phases.
//! - Floors ([`floor`]): each phase's FLOPs at these shapes over the frozen products' GEMM rate
//!   measured first on the same rows; `*_floor_x` is the measured time over that floor.

use crate::laplace::curvature;
use crate::laplace::fit::predict;
use crate::laplace::jacobian::{self, Group};
use crate::laplace::posterior::Posterior;
use crate::laplace::spectral::SpectralGrid;
use crate::laplace::{subset_blocks, CurvatureKind, LaplaceConfig, Positions, PredictiveKind, Structure, Subset};
use crate::lora::{LoraConfig, LoraSet, Target};
use crate::model::{Batch, LoadedModel};
use crate::optim::{FlatAdamW, ParamsAdamW};
use crate::train::{loss_and_grads, Encoded};
use anyhow::Result;
use candle_core::Tensor;
use serde::Serialize;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

pub mod floor;

/// Batch and prompt length of every phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub batch: usize,
    pub seq_len: usize,
}

impl Default for Shape {
    fn default() -> Self {
        Self { batch: BATCH, seq_len: SEQ_LEN }
    }
}

/// Tokens per example by default.
pub const SEQ_LEN: usize = 64;
/// Examples per batch in every phase by default.
pub const BATCH: usize = 4;
/// Answer classes.
pub const K: usize = 4;
/// LoRA rank (alpha = 2 r).
pub const RANK: usize = 8;
/// Test examples are numbered from here (training examples from 0).
pub const TEST_OFFSET: usize = 1000;

/// The default model's shapes (SmolLM2-135M-Instruct's `config.json`), for `bench --synthetic`.
pub const SMOLLM2_135M_CONFIG: &str = r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "hidden_size": 576, "intermediate_size": 1536, "vocab_size": 49152, "num_hidden_layers": 30,
  "num_attention_heads": 9, "num_key_value_heads": 3, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
  "max_position_embeddings": 8192, "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 2}"#;

/// A model of the shapes of a Hugging Face `config.json` (`config_json`, named `name`) with
/// seeded random weights, built in memory (`bench --synthetic` with `SMOLLM2_135M_CONFIG`,
/// `--synthetic-config`): the phases' timings depend on the shapes only, so a machine that
/// cannot fetch or receive a model (the GPU machine sees no network and takes 64 MiB of files)
/// can still be measured.
pub fn synthetic_model_of(config_json: &str, name: &str, device: &candle_core::Device) -> Result<LoadedModel> {
    let cfg = crate::model::Config::from_hf_str(config_json)?;
    let answer = answer_ids();
    if answer.iter().any(|&a| a as usize >= cfg.vocab_size) {
        anyhow::bail!("the synthetic model's vocabulary ({}) must hold the bench's answer ids {answer:?}", cfg.vocab_size);
    }
    let w = crate::testing::random_weights(&cfg, 7)?;
    let model = crate::model::Llama::from_tensors(cfg, w, device)?;
    let tokenizer = crate::testing::tiny_tokenizer()?; // the phases feed token ids, never text
    Ok(LoadedModel { model, tokenizer, path: std::path::PathBuf::from(format!("synthetic ({name} shapes, random weights)")) })
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// One LoRA step (forward, backward, AdamW), batch 4 x 64 tokens, r = 8 on q and v.
    pub lora_step_s: f64,
    /// The KFAC curvature pass (exact GGN, positions "expand"), per training example.
    pub kfac_per_example_s: f64,
    /// Eigendecomposition of all Kronecker factors after the pass, once per fit.
    pub kfac_decompose_s: f64,
    /// Jacobians of the K answer logits, Sigma_f = J Sigma J^T and the probit predictive, per test example.
    pub predictive_per_example_s: f64,
    /// Recomputing Sigma_f and the probit predictive of 1,000 cached examples (K = 4) at a new
    /// prior precision (the slider), in milliseconds.
    pub prior_recompute_ms: f64,
    /// Peak RSS of the LoRA step phase (model loaded + step), MiB.
    pub peak_rss_mib: f64,
    /// Peak RSS of the KFAC and predictive phases, MiB.
    pub peak_rss_laplace_mib: f64,
    pub threads: usize,
    /// The device the model ran on ("cpu", "cuda", ...).
    pub device: String,
    /// The frozen matrices' storage ("f32", "bf16", "f16", "q8_0", or a GGUF's block types).
    pub frozen_dtype: String,
    /// Bytes of the frozen projection matrices, MiB.
    pub frozen_mib: f64,
    /// The CPU and the vector paths in use (`model::isa::describe`).
    pub cpu: String,
    /// "avx512", "avx2" (native or forced by `--cpu avx2`), "baseline".
    pub f32_path: String,
    /// GEMM rate of the frozen products (forward and dL/dx, every projection shape, B x T rows) in
    /// f32 and, where the CPU has it, with the bf16 kernels; GFLOP/s.
    pub gemm_f32_gflops: f64,
    pub gemm_bf16_gflops: Option<f64>,
    /// FLOPs of the phases ([`floor::flops`]).
    pub flops: floor::Flops,
    /// The rate the floors are taken at: the frozen storage's own (bf16 kernels for bf16, f32 else).
    pub floor_gflops: f64,
    /// Measured time / (FLOPs / floor rate) of the step, the KFAC pass and the predictive.
    pub lora_step_floor_x: f64,
    pub kfac_floor_x: f64,
    pub predictive_floor_x: f64,
    /// Off the CPU: `device_check`'s relative differences to the CPU (logits, LoRA gradients).
    pub check_logits_rel: Option<f64>,
    pub check_grads_rel: Option<f64>,
    /// Timed LoRA steps (after one warm-up).
    pub repeats: usize,
    /// Timed repeats of the Laplace phases (after one warm-up).
    pub laplace_repeats: usize,
    pub kfac_examples: usize,
    pub predictive_examples: usize,
    pub batch: usize,
    pub seq_len: usize,
    pub k: usize,
    pub rank: usize,
    pub alpha: f64,
    pub targets: Vec<String>,
    pub lora_params: usize,
    pub model: String,
    /// UTC, `YYYY-mm-ddTHH:MM:SSZ`.
    pub date: String,
    pub implementation: String,
}

impl BenchReport {
    /// The table `bench` prints.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let mut row = |k: &str, v: String| s.push_str(&format!("{k:<26} {v:>12}\n"));
        row("phase", "value".into());
        row("lora_step_s", format!("{:.3}", self.lora_step_s));
        row("kfac_per_example_s", format!("{:.3}", self.kfac_per_example_s));
        row("kfac_decompose_s", format!("{:.3}", self.kfac_decompose_s));
        row("predictive_per_example_s", format!("{:.3}", self.predictive_per_example_s));
        row("prior_recompute_ms", format!("{:.2}", self.prior_recompute_ms));
        row("peak_rss_mib", format!("{:.0}", self.peak_rss_mib));
        row("peak_rss_laplace_mib", format!("{:.0}", self.peak_rss_laplace_mib));
        row("threads", format!("{}", self.threads));
        row("device", self.device.clone());
        row("frozen_dtype", self.frozen_dtype.clone());
        row("shape", format!("{} x {}", self.batch, self.seq_len));
        row("f32_path", self.f32_path.clone());
        row("gemm_f32_gflops", format!("{:.1}", self.gemm_f32_gflops));
        if let Some(r) = self.gemm_bf16_gflops {
            row("gemm_bf16_gflops", format!("{r:.1}"));
        }
        row("lora_step_floor_x", format!("{:.2}", self.lora_step_floor_x));
        row("kfac_floor_x", format!("{:.2}", self.kfac_floor_x));
        row("predictive_floor_x", format!("{:.2}", self.predictive_floor_x));
        if let (Some(l), Some(g)) = (self.check_logits_rel, self.check_grads_rel) {
            row("check_logits_rel", format!("{l:.1e}"));
            row("check_grads_rel", format!("{g:.1e}"));
        }
        s
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Peak resident set size of this process (Linux `VmHWM`), in MiB; NaN where unknown.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|kb| kb.parse::<f64>().ok()))
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Resets the peak RSS to the current RSS (Linux: `5` into `/proc/self/clear_refs`); false where
/// that is not possible (then `peak_rss_mib` keeps counting from the start of the process).
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// UTC now as `YYYY-mm-ddTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let s = crate::runio::utc_stamp(secs); // YYYYmmdd-HHMMSS
    format!("{}-{}-{}T{}:{}:{}Z", &s[0..4], &s[4..6], &s[6..8], &s[9..11], &s[11..13], &s[13..15])
}

/// The token ids of synthetic example `i`: `(i * 7919 + t * 104729) % vocab`, t = 0..len.
pub fn synthetic_ids(i: usize, vocab: usize, len: usize) -> Vec<u32> {
    (0..len).map(|t| ((i * 7919 + t * 104_729) % vocab) as u32).collect()
}

/// Synthetic examples `range` of `len` tokens (label `i % K`, all K choices).
pub fn synthetic_examples(range: std::ops::Range<usize>, vocab: usize, len: usize) -> Vec<Encoded> {
    range.map(|i| Encoded { ids: synthetic_ids(i, vocab, len), label: i % K, num_choices: K }).collect()
}

/// The K answer token ids: 330, 331, 332, 333.
pub fn answer_ids() -> Vec<u32> {
    (0..K as u32).map(|i| 330 + i).collect()
}

fn lora_config() -> LoraConfig {
    LoraConfig { rank: RANK, alpha: 2.0 * RANK as f64, dropout: 0.0, targets: vec![Target::QProj, Target::VProj] }
}

/// Adapters with deterministic, non-zero A and B (see the module documentation).
pub fn deterministic_lora(m: &LoadedModel) -> Result<LoraSet> {
    let dev = m.model.device().clone();
    let lora = LoraSet::new(lora_config(), &m.model.lora_dims(), answer_ids(), 0, &dev)?;
    for l in &lora.layers {
        let (r, d_in) = (l.a.dims()[0], l.a.dims()[1]);
        let bound = 1.0 / (d_in as f32).sqrt();
        let a: Vec<f32> = (0..r * d_in).map(|n| bound * (((n * 37) % 101) as f32 / 50.0 - 1.0)).collect();
        l.a.set(&Tensor::from_vec(a, (r, d_in), &dev)?)?;
        let d_out = l.b.dims()[0];
        let b: Vec<f32> = (0..d_out * r).map(|n| 0.01 * (((n * 53) % 97) as f32 / 48.0 - 1.0)).collect();
        l.b.set(&Tensor::from_vec(b, (d_out, r), &dev)?)?;
    }
    Ok(lora)
}

/// The LoRA step's batch: examples 0..B (B x T tokens, all K choices) and their labels.
fn step_batch(m: &LoadedModel, shape: Shape) -> Result<(Batch, Tensor)> {
    let dev = m.model.device();
    let vocab = m.model.cfg.vocab_size;
    let prompts: Vec<Vec<u32>> = (0..shape.batch).map(|b| synthetic_ids(b, vocab, shape.seq_len)).collect();
    let refs: Vec<&[u32]> = prompts.iter().map(|p| p.as_slice()).collect();
    let batch = Batch::new(&refs, &vec![K; shape.batch], K, 0, dev)?;
    let labels: Vec<u32> = (0..shape.batch).map(|b| (b % K) as u32).collect();
    Ok((batch, Tensor::new(labels.as_slice(), dev)?))
}

/// One LoRA step's answer logits (B x K, flattened) and LoRA gradients (each matrix flattened, in
/// `LoraSet::vars` order), with the deterministic adapters, on the model's device.
pub fn step_outputs(m: &LoadedModel) -> Result<(Vec<f32>, Vec<Vec<f32>>)> {
    let lora = deterministic_lora(m)?;
    let (batch, labels) = step_batch(m, Shape::default())?;
    let logits = m.model.answer_logits(&batch, &answer_ids(), &mut crate::model::ForwardOpts::new(Some(&lora)))?;
    let grads = candle_nn::loss::cross_entropy(&logits, &labels)?.backward()?;
    let g = lora
        .vars()
        .iter()
        .map(|v| match grads.get(v.as_tensor()) {
            Some(g) => Ok(g.flatten_all()?.to_vec1::<f32>()?),
            None => Ok(vec![0.0; v.elem_count()]),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((logits.flatten_all()?.to_vec1::<f32>()?, g))
}

/// max |a - b| / max |b|: the largest difference relative to the reference's scale.
fn rel_diff<'a>(a: impl IntoIterator<Item = &'a f32>, b: impl IntoIterator<Item = &'a f32> + Clone) -> f64 {
    let scale = b.clone().into_iter().fold(0f64, |m, &x| m.max((x as f64).abs())).max(1e-30);
    a.into_iter().zip(b).fold(0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs())) / scale
}

/// How far the model on its device is from the same model on the CPU in one LoRA step: the largest
/// relative differences of the answer logits and of the LoRA gradients (each relative to the CPU's
/// largest magnitude). What `bench --device cuda` prints before timing, so that a GPU run checks
/// its numbers too.
pub fn device_check(m: &LoadedModel, cpu: &LoadedModel) -> Result<(f64, f64)> {
    let (fd, gd) = step_outputs(m)?;
    let (fc, gc) = step_outputs(cpu)?;
    Ok((rel_diff(&fd, &fc), rel_diff(gd.iter().flatten(), gc.iter().flatten())))
}

/// Median seconds of one LoRA step at batch B x T tokens (r = 8 on q and v).
pub fn lora_step(m: &LoadedModel, shape: Shape, repeats: usize, on_rep: &mut dyn FnMut(usize, f64)) -> Result<f64> {
    let dev = m.model.device().clone();
    let answer = answer_ids();
    let lora = LoraSet::new(lora_config(), &m.model.lora_dims(), answer.clone(), 0, &dev)?;
    let (batch, labels) = step_batch(m, shape)?;
    let mut opt = FlatAdamW::new(lora.vars(), ParamsAdamW { lr: 1e-4, weight_decay: 0.0, ..Default::default() })?;
    let mut times = Vec::new();
    // LAPLACE_LORA_PROFILE=1: forward + backward and the optimizer timed apart (one more sync).
    let profile = std::env::var_os("LAPLACE_LORA_PROFILE").is_some();
    for rep in 0..=repeats {
        let t0 = Instant::now();
        let (_, _, grads) = loss_and_grads(&m.model, &lora, &batch, &labels, &answer, None)?;
        if profile {
            dev.synchronize()?;
            eprintln!("  step: forward + backward {:.4} s", t0.elapsed().as_secs_f64());
        }
        let t1 = Instant::now();
        opt.step(&grads)?;
        dev.synchronize()?; // a GPU queues the step's kernels: wait for them before reading the clock
        if profile {
            eprintln!("  step: optimizer {:.4} s", t1.elapsed().as_secs_f64());
        }
        let dt = t0.elapsed().as_secs_f64();
        if rep > 0 {
            times.push(dt); // rep 0 is the warm-up
        }
        on_rep(rep, dt);
    }
    Ok(median(times))
}

/// Medians of the Laplace phases.
#[derive(Debug, Clone)]
pub struct LaplaceTimes {
    pub kfac_per_example_s: f64,
    pub kfac_decompose_s: f64,
    pub predictive_per_example_s: f64,
    pub lora_params: usize,
}

/// One repeat of the Laplace phases, as `on_rep` sees it.
#[derive(Debug, Clone, Copy)]
pub struct LaplaceRep {
    pub rep: usize,
    pub kfac_s: f64,
    pub decompose_s: f64,
    pub predictive_s: f64,
}

/// The KFAC fit (exact GGN, expand, Kronecker) over `n_train` synthetic training examples and the
/// linearised predictive of `n_test` test examples, `repeats` times after one warm-up.
pub fn laplace_phases(
    m: &LoadedModel,
    shape: Shape,
    n_train: usize,
    n_test: usize,
    repeats: usize,
    on_rep: &mut dyn FnMut(LaplaceRep),
) -> Result<LaplaceTimes> {
    let lora = deterministic_lora(m)?;
    let vocab = m.model.cfg.vocab_size;
    let train = synthetic_examples(0..n_train, vocab, shape.seq_len);
    let test = synthetic_examples(TEST_OFFSET..TEST_OFFSET + n_test, vocab, shape.seq_len);
    let answer = answer_ids();
    let cfg = LaplaceConfig {
        subset: Subset::All,
        structure: Structure::Kron,
        curvature: CurvatureKind::Ggn,
        positions: Positions::Expand,
        predictive: PredictiveKind::Probit,
        ..LaplaceConfig::default()
    };
    let blocks = subset_blocks(&lora, cfg.subset);
    let cancel = AtomicBool::new(false);
    let grid = SpectralGrid::for_deltas(cfg.delta_min, cfg.delta_max, 200);
    let (mut kfac, mut dec, mut pred) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..=repeats {
        let t0 = Instant::now();
        let curv = curvature::collect(&m.model, &lora, &blocks, &train, &answer, 0, shape.batch, &cfg, &cancel, &mut |_, _| {})?.expect("not cancelled");
        let kfac_s = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let post = Posterior::from_curvature(curv, &lora)?;
        let decompose_s = t1.elapsed().as_secs_f64();
        let all: Vec<usize> = (0..post.blocks.len()).collect();
        let group = Group { blocks: all, deltas: vec![1.0; post.blocks.len()] };
        let t2 = Instant::now();
        let f =
            jacobian::functional(&m.model, &lora, &post, &test, &answer, 0, shape.batch, jacobian::Rows::Raw, &[group], &[], &grid, &cancel, &mut |_, _| {})?
                .expect("not cancelled");
        let probs: Vec<Vec<f64>> = f.iter().map(|e| predict(PredictiveKind::Probit, &e.mu, &e.sigma[0], 1, 0)).collect();
        let predictive_s = t2.elapsed().as_secs_f64();
        std::hint::black_box(probs);
        if rep > 0 {
            kfac.push(kfac_s / n_train as f64);
            dec.push(decompose_s);
            pred.push(predictive_s / n_test as f64);
        }
        on_rep(LaplaceRep { rep, kfac_s, decompose_s, predictive_s });
    }
    Ok(LaplaceTimes { kfac_per_example_s: median(kfac), kfac_decompose_s: median(dec), predictive_per_example_s: median(pred), lora_params: lora.num_params() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model small enough for a test with a vocabulary that holds the bench's answer ids.
    fn small_model() -> Result<LoadedModel> {
        let cfg = crate::model::Config::from_hf_str(&crate::testing::tiny_config_json(400, 32, 2, 4, 2, false))?;
        let w = crate::testing::random_weights(&cfg, 5)?;
        let model = crate::model::Llama::from_tensors(cfg, w, &candle_core::Device::Cpu)?;
        Ok(LoadedModel { model, tokenizer: crate::testing::tiny_tokenizer()?, path: "small".into() })
    }

    /// The check `bench --device` runs: zero against itself, and small but finite between the
    /// fused CPU kernels and the ops a GPU runs (`with_gpu_path`) (the same f32 arithmetic in another
    /// order: 1e-5 relative on logits, 1e-4 on gradients, as in tests/model_tiny.rs).
    #[test]
    fn device_check_compares_logits_and_gradients() -> Result<()> {
        let m = small_model()?;
        assert_eq!(device_check(&m, &m)?, (0.0, 0.0));
        let (f1, g1) = step_outputs(&m)?;
        let (f2, g2) = crate::model::ops::with_gpu_path(|| step_outputs(&m))?;
        assert_eq!((f1.len(), g1.len()), (BATCH * K, 2 * 2 * 2)); // 2 layers x (q, v) x (A, B)
        assert!(g1.iter().flatten().any(|&x| x != 0.0), "the adapters get gradients");
        let (l, g) = (rel_diff(&f1, &f2), rel_diff(g1.iter().flatten(), g2.iter().flatten()));
        assert!(l < 1e-5 && g < 1e-4, "fused vs GPU path: logits {l}, gradients {g}");
        // A planted difference shows.
        let mut f3 = f2.clone();
        f3[0] += 0.1 * f2.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(rel_diff(&f1, &f3) > 0.05);
        Ok(())
    }

    #[test]
    fn synthetic_ids_match_the_reference_formula() {
        // benches/reference/reference.py builds the same ids; example 0 and 1 of a 49152 vocabulary.
        let a = synthetic_ids(0, 49_152, SEQ_LEN);
        assert_eq!(&a[..3], &[0, 104_729 % 49_152, (2 * 104_729) % 49_152]);
        let b = synthetic_ids(1, 49_152, SEQ_LEN);
        assert_eq!(b[1], ((7919 + 104_729) % 49_152) as u32);
        assert_eq!(b.len(), SEQ_LEN);
        assert!(utc_now().ends_with('Z') && utc_now().len() == 20);
    }
}
