//! Before `laplace-lora run` starts its pipeline: what the run will need in memory
//! (`model::memory`) against what the machine has, and a clear refusal instead of being killed
//! part-way (`--ignore-memory` runs it anyway); and about how long it will take.

use crate::experiment::{self, ExperimentConfig};
use crate::lora::Target;
use crate::model::{self, inspect, memory, ModelFiles};
use anyhow::{bail, Result};

/// The memory plan of an experiment, with the longest tokenized prompt and K from its data.
pub fn plan(cfg: &ExperimentConfig, seq_len: usize, classes: usize) -> Result<memory::Plan> {
    // "auto" is decided as the loader decides it (f32 for now).
    let dtype = model::parse_frozen_dtype(&cfg.model.dtype)?;
    let dtype = if cfg.model.device.trim().eq_ignore_ascii_case("cpu") { dtype.resolve(&candle_core::Device::Cpu) } else { dtype };
    let storage = memory::WeightStorage::parse(dtype.name()).unwrap_or(memory::WeightStorage::F32);
    Ok(memory::Plan {
        storage,
        batch: cfg.train.batch_size,
        seq_len,
        rank: cfg.lora.rank,
        targets: cfg.lora.targets.iter().map(|t| Target::parse(t)).collect::<Result<_>>()?,
        classes,
        laplace: cfg.laplace.enabled,
        structure: cfg.laplace.structure.clone(),
        low_rank_threshold: cfg.laplace.low_rank_threshold,
        low_rank_k: cfg.laplace.low_rank_k,
    })
}

/// Estimates the run's memory, prints it, and refuses when it exceeds what is available
/// (unless `ignore`). Reads the model's headers, tokenizer and the data; loads no weights.
pub fn check(cfg: &ExperimentConfig, files: &ModelFiles, ignore: bool) -> Result<()> {
    let info = inspect::inspect(files)?;
    let tok = model::load_tokenizer(files)?;
    let data = experiment::prepare_data(cfg, &tok)?;
    let seq_len = data.train.iter().chain(&data.validation).chain(&data.test).map(|e| e.ids.len()).max().unwrap_or(1);
    let plan = plan(cfg, seq_len, data.answer_ids.len())?;
    let est = memory::estimate(&info.config, Some(&info), &plan);
    let avail = memory::available_bytes();
    eprintln!(
        "memory: {} for batch {} x {} tokens (the longest prompt){}",
        est.summary(),
        plan.batch,
        plan.seq_len,
        avail.map(|a| format!("; {} available", memory::gib(a))).unwrap_or_default()
    );
    if info.config.hidden_size > 0 && cfg.model.device.trim().eq_ignore_ascii_case("cpu") {
        // The rate of the storage the run will use (packed f32 where AVX-512F is, bf16, blocks).
        let dtype = crate::model::parse_frozen_dtype(&cfg.model.dtype).unwrap_or(crate::model::frozen::FrozenDtype::Auto).resolve(&candle_core::Device::Cpu);
        let store = |f: crate::model::frozen::Frozen| f.convert(dtype, &candle_core::Device::Cpu);
        let rate = crate::bench::floor::gemm_rate(&info.config, 256, store, 0.05).unwrap_or(0.0);
        if rate > 0.0 {
            let mean_len = data.train.iter().chain(&data.test).map(|e| e.ids.len()).sum::<usize>() as f64 / (data.train.len() + data.test.len()).max(1) as f64;
            let n_eval = data.test.len() + data.eval.iter().map(|e| e.encoded.len()).sum::<usize>();
            let t = time_estimate(cfg, &info.config, mean_len, data.answer_ids.len(), data.train.len(), data.validation.len(), n_eval, rate);
            eprintln!("time: {}", t.summary());
        }
    }
    if let Some(a) = avail {
        if est.peak > a {
            let advice = "lower train.batch_size or train.max_length, set model.dtype = \"bf16\", adapt fewer targets, or lower laplace.low_rank_threshold";
            if ignore {
                eprintln!("warning: the run may not fit ({} needed, {} available); running anyway (--ignore-memory)", memory::gib(est.peak), memory::gib(a));
            } else {
                bail!(
                    "this run needs about {} of memory but {} is available, so the system would likely kill it part-way. To fit: {advice}. \
                     The estimate is a guide (README, \"Memory\"); pass --ignore-memory to run it anyway",
                    memory::gib(est.peak),
                    memory::gib(a)
                );
            }
        }
    }
    Ok(())
}

/// A run's time by phase, from the arithmetic of each phase (`bench::floor::flops`, the counts a
/// dense implementation does) at the GEMM rate measured on the model's own projection shapes just
/// before, times [`OVERHEAD`]: a guide, not a promise.
#[derive(Debug, Clone, Copy)]
pub struct TimeEstimate {
    pub train_s: f64,
    pub laplace_s: f64,
    pub eval_s: f64,
    pub gflops: f64,
}

/// Measured run time over (the phases' counted FLOPs / the GEMM rate measured before the run), on
/// the 2-core AMD EPYC (Zen 5) this was written on, 2026-12-02: the compare4 sample run with every
/// method 1,127 s against 1,440 s counted at the 72 GFLOP/s measured before it (0.78); the yesno
/// run with the default methods ~95 s against 120 s at 177 GFLOP/s (0.79). Below 1 because the
/// counts are a dense implementation's (full T x T attention, every position through the KFAC
/// factors) and the kernels skip some of it.
pub const OVERHEAD: f64 = 0.8;

impl TimeEstimate {
    pub fn total(&self) -> f64 {
        self.train_s + self.laplace_s + self.eval_s
    }

    pub fn summary(&self) -> String {
        let m = |s: f64| if s < 90.0 { format!("{s:.0} s") } else { format!("{:.0} min", s / 60.0) };
        format!(
            "about {} (fine-tuning {}, Laplace {}, evaluation {}) at {:.0} GFLOP/s measured now; a guide",
            m(self.total()),
            m(self.train_s),
            m(self.laplace_s),
            m(self.eval_s),
            self.gflops
        )
    }
}

/// The time of `cfg`'s pipeline on `model` for prompts of `mean_len` tokens, K classes, the given
/// split sizes (`n_eval`: test plus every evaluation set) at `gflops`. Counts what each method
/// adds: MC dropout its own training unless `lora.dropout` is its p, and S passes; the deep
/// ensemble M - 1 trainings and M passes; the checkpoint ensemble M passes; BLoB one training and
/// S passes (or one at S = 0); the Laplace stage (laplace or llla) KFAC over the training split
/// and Jacobians over validation and the evaluation items.
#[allow(clippy::too_many_arguments)]
pub fn time_estimate(
    cfg: &ExperimentConfig,
    model: &model::Config,
    mean_len: f64,
    k: usize,
    n_train: usize,
    n_val: usize,
    n_eval: usize,
    gflops: f64,
) -> TimeEstimate {
    let b = cfg.train.batch_size.max(1);
    let f = crate::bench::floor::flops(model, b, mean_len.ceil().max(1.0) as usize, k.max(2), cfg.lora.rank);
    let per = |flop: f64| flop / (gflops * 1e9) * OVERHEAD;
    let forward_per_item = f.step / 2.0 / b as f64;
    let steps = n_train.div_ceil(b) * cfg.train.epochs;
    let ms = &cfg.methods;
    let methods = cfg.method_list();
    let has = |m: &str| methods.iter().any(|x| x == m);
    let mut trainings = 1.0;
    let mut passes = 2.0; // zero-shot and MAP (both also over the training split, below)
    if has("mc_dropout") {
        trainings += if (cfg.lora.dropout - ms.mc_dropout.p).abs() < 1e-12 { 0.0 } else { 1.0 };
        passes += ms.mc_dropout.samples as f64;
    }
    if has("deep_ensemble") {
        trainings += ms.deep_ensemble.members.saturating_sub(1) as f64;
        passes += ms.deep_ensemble.members as f64;
    }
    if has("checkpoint_ensemble") {
        passes += ms.checkpoint_ensemble.members as f64;
    }
    if has("blob") {
        trainings += 1.0;
        passes += ms.blob.samples.max(1) as f64;
    }
    let laplace =
        if has("laplace") || has("llla") { per(n_train as f64 * f.kfac_per_example + (n_val + n_eval) as f64 * f.predictive_per_example) } else { 0.0 };
    TimeEstimate {
        // Each training also evaluates the validation split after every epoch.
        train_s: per(trainings * (steps as f64 * f.step + (cfg.train.epochs * n_val) as f64 * forward_per_item)),
        laplace_s: laplace,
        eval_s: per((passes * n_eval as f64 + 2.0 * n_train as f64) * forward_per_item),
        gflops,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(methods: &[&str]) -> ExperimentConfig {
        let mut c = ExperimentConfig::from_toml_str(&crate::testing::tiny_experiment_toml(std::path::Path::new("m"), 8, 2, 0)).unwrap();
        c.methods.list = methods.iter().map(|m| m.to_string()).collect();
        c
    }

    /// Each method adds the trainings and passes it runs: a deep ensemble of 3 trains twice more,
    /// MC dropout trains again only when the run's own dropout is not its p, the checkpoint
    /// ensemble only evaluates; time is linear in the FLOP rate.
    #[test]
    fn each_method_adds_its_trainings_and_passes() {
        let m = crate::model::Config::from_hf_str(&crate::testing::tiny_config_json(64, 32, 2, 4, 2, false)).unwrap();
        let t = |c: &ExperimentConfig| time_estimate(c, &m, 40.0, 4, 64, 50, 100, 100.0);
        let base = t(&cfg(&["map"]));
        let deep = t(&cfg(&["map", "deep_ensemble"]));
        assert!((deep.train_s / base.train_s - 3.0).abs() < 1e-12, "{deep:?} vs {base:?}");
        assert!((deep.eval_s - base.eval_s) > 0.0);
        let mut c = cfg(&["map", "mc_dropout"]);
        assert!((t(&c).train_s / base.train_s - 2.0).abs() < 1e-12);
        c.lora.dropout = c.methods.mc_dropout.p;
        assert!((t(&c).train_s / base.train_s - 1.0).abs() < 1e-12, "the MAP adapter already has MC dropout's p");
        let ck = t(&cfg(&["map", "checkpoint_ensemble"]));
        assert_eq!(ck.train_s, base.train_s);
        assert!(ck.eval_s > base.eval_s && base.laplace_s == 0.0 && t(&cfg(&["map", "laplace"])).laplace_s > 0.0);
        let slow = time_estimate(&cfg(&["map"]), &m, 40.0, 4, 64, 50, 100, 50.0);
        assert!((slow.total() / base.total() - 2.0).abs() < 1e-12);
    }
}
