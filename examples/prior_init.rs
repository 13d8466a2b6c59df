//! Analysis helper: the scalar marginal-likelihood prior precision with the prior centred at zero
//! (MATH.md) and at the LoRA initialisation (A_0 random, B_0 = 0), and the test metrics of each
//! from the run's spectral cache. Usage: prior_init RUN_DIR
use laplace_lora::calibration;
use laplace_lora::experiment::ExperimentConfig;
use laplace_lora::laplace::posterior::{block_values, Posterior, PosteriorMeta};
use laplace_lora::laplace::{cache, fit, marglik};
use laplace_lora::lora::LoraSet;
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let run = PathBuf::from(std::env::args().nth(1).unwrap());
    let cfg = ExperimentConfig::from_file(&run.join("config.toml"))?;
    let files = laplace_lora::model::resolve_model(&cfg.model.source, &mut |_| {})?;
    let m = laplace_lora::model::LoadedModel::load(&files, &candle_core::Device::Cpu)?;
    let adapter = laplace_lora::peft::load(&run.join("adapter"), m.model.cfg.num_hidden_layers, None, &candle_core::Device::Cpu)?;
    let init = LoraSet::new(cfg.lora.to_config()?, &m.model.lora_dims(), adapter.answer_token_ids.clone(), cfg.train.seed, &candle_core::Device::Cpu)?;
    let lj: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("laplace/laplace.json"))?)?;
    let meta: PosteriorMeta = serde_json::from_value(lj["posterior"].clone())?;
    let (post, _) = Posterior::load(&run.join("laplace/posterior.safetensors"), &meta)?;
    let all: Vec<usize> = (0..post.blocks.len()).collect();
    let c = cache::load_cache(&run.join("laplace/spectral_cache.safetensors"))?;
    let labels: Vec<usize> = std::fs::read_to_string(run.join("predictions.jsonl"))?
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["label"].as_u64().unwrap() as usize)
        .collect();
    let mut s0 = post.spectra(&all);
    let mut s1 = post.spectra(&all);
    let (mut a_sq, mut a_moved, mut b_sq) = (0.0, 0.0, 0.0);
    for (j, &b) in post.blocks.iter().enumerate() {
        let th = block_values(&adapter, b)?;
        let t0 = block_values(&init, b)?;
        let moved: f64 = th.iter().zip(&t0).map(|(x, y)| (x - y) * (x - y)).sum();
        let sq: f64 = th.iter().map(|x| x * x).sum();
        if matches!(b.mat, laplace_lora::laplace::Mat::A) {
            a_sq += sq;
            a_moved += moved
        } else {
            b_sq += sq
        }
        s0[j].theta_sq = sq;
        s1[j].theta_sq = moved;
    }
    println!("|A|^2 = {a_sq:.2}, |A - A_0|^2 = {a_moved:.4}, |B|^2 = {b_sq:.2}");
    for (name, s) in [("zero mean", &s0), ("init mean", &s1)] {
        let d = marglik::optimize_scalar_delta(post.log_lik, s, cfg.laplace.delta_min, cfg.laplace.delta_max);
        let dl = marglik::optimize_per_layer_delta(post.log_lik, s, cfg.laplace.delta_min, cfg.laplace.delta_max);
        let p = fit::recompute(&c.entries, &c.mus, d, &c.grid, &cache::run_predictor(&run));
        let mm = calibration::metrics(&p, &labels);
        let (lo, hi) = dl.iter().fold((f64::INFINITY, 0f64), |(a, b), &x| (a.min(x), b.max(x)));
        println!(
            "{name}: scalar delta {d:.4}: acc {:.3} ece {:.3} nll {:.3} brier {:.3}; per-matrix deltas {lo:.3}..{hi:.3}",
            mm.accuracy, mm.ece, mm.nll, mm.brier
        );
    }
    Ok(())
}
