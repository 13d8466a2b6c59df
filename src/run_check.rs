//! Before `laplace-lora run` starts its pipeline: what the run will need in memory
//! (`model::memory`) against what the machine has, and a clear refusal instead of being killed
//! part-way (`--ignore-memory` runs it anyway).

use crate::experiment::{self, ExperimentConfig};
use crate::lora::Target;
use crate::model::{self, inspect, memory, ModelFiles};
use anyhow::{bail, Result};

/// The memory plan of an experiment, with the longest tokenized prompt and K from its data.
pub fn plan(cfg: &ExperimentConfig, seq_len: usize, classes: usize) -> Result<memory::Plan> {
    // "auto" is decided as the loader decides it (bf16 on a CPU with AVX512_BF16, else f32).
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
