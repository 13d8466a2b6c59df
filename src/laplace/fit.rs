//! The Laplace stage of an experiment: curvature over the training set, prior precision, the
//! validation spectral cache and prior curve, and the test predictive for Laplace-LoRA and LLLA.

use super::curvature;
use super::jacobian::{self, Functional, Group};
use super::marglik;
use super::posterior::Posterior;
use super::prior;
use super::spectral::{SpectralEntry, SpectralGrid, SpectralWeights};
use super::{subset_blocks, LaplaceConfig, PriorMean, PriorMethod, Subset};
use crate::calibration;
use crate::lora::LoraSet;
use crate::model::Llama;
use crate::train::Encoded;
use anyhow::Result;
use serde::Serialize;
use std::sync::atomic::AtomicBool;

/// Progress of the stage, for events.
pub enum FitProgress {
    Message(String),
    Step { phase: &'static str, done: usize, total: usize },
}

/// One row of `prior_curve.csv`.
#[derive(Clone, Debug, Serialize)]
pub struct CurvePoint {
    pub delta: f64,
    pub log_marglik: f64,
    pub val_nll: f64,
    pub val_ece: f64,
}

pub struct LaplaceResult {
    pub posterior: Posterior,
    /// Prior precision per posterior block (Laplace-LoRA).
    pub deltas: Vec<f64>,
    pub log_marglik: f64,
    /// Indices of the LLLA blocks in the posterior, their deltas and log marginal likelihood;
    /// None where LLLA cannot be carved out (the full structure over every block).
    pub llla: Option<(Vec<usize>, Vec<f64>, f64)>,
    pub curve: Vec<CurvePoint>,
    /// Per test example: mu, Sigma_f (Laplace-LoRA), Sigma_f (LLLA), spectral cache (Laplace-LoRA).
    pub test: Vec<Functional>,
    pub test_probs: Vec<Vec<f64>>,
    pub llla_probs: Option<Vec<Vec<f64>>>,
    pub grid: SpectralGrid,
    pub seconds_curvature: f64,
    pub seconds_per_test_example: f64,
    /// The MAP answer logits of the training examples (the curvature pass's forward).
    pub train_logits: Vec<Vec<f64>>,
}

pub use super::predictive::{predict, Predictor};

/// Validation NLL and ECE at a scalar delta, from the spectral caches.
fn val_metrics(val: &[Functional], group: usize, labels: &[usize], delta: f64, grid: &SpectralGrid, cfg: &LaplaceConfig) -> calibration::Metrics {
    let wts = SpectralWeights::new(grid, delta);
    let probs: Vec<Vec<f64>> = val
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let cov = f.spectral[group].sigma_f_with(&wts);
            cfg.predictor().apply(i, &f.mu, &cov)
        })
        .collect();
    calibration::metrics(&probs, labels)
}

/// The posterior of `cfg.subset` at the MAP adapters `lora`: the curvature over `train`, its
/// eigendecompositions, and the distance from the initialisation (the adapter as initialised
/// with the training seed `cfg.seed`: A_0 random, B_0 = 0) for the prior centred there and for
/// laplace.json; with it the MAP answer logits of every training example, from the curvature
/// pass's forward ([`curvature::Curvature::map_logits`]). None on a cancel.
#[allow(clippy::too_many_arguments)]
pub fn fit_posterior(
    model: &Llama,
    lora: &LoraSet,
    train: &[Encoded],
    answer_ids: &[u32],
    pad: u32,
    batch_size: usize,
    cfg: &LaplaceConfig,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Option<(Posterior, Vec<Vec<f64>>)>> {
    let blocks = subset_blocks(lora, cfg.subset);
    let Some(mut curv) = curvature::collect(model, lora, &blocks, train, answer_ids, pad, batch_size, cfg, cancel, progress)? else {
        return Ok(None);
    };
    let map_logits = std::mem::take(&mut curv.map_logits);
    let mut post = Posterior::from_curvature(curv, lora)?;
    let init = LoraSet::new(lora.config.clone(), &model.lora_dims(), lora.answer_token_ids.clone(), cfg.seed, model.device())?;
    post.set_init(lora, &init)?;
    Ok(Some((post, map_logits)))
}

/// The delta of the prior grid with the lowest validation NLL under the run's predictive, from
/// the validation spectral caches of `group`.
pub fn grid_search(val: &[Functional], group: usize, labels: &[usize], grid: &SpectralGrid, cfg: &LaplaceConfig) -> f64 {
    marglik::log_grid(cfg.delta_min, cfg.delta_max, cfg.grid_points)
        .iter()
        .map(|&d| (d, val_metrics(val, group, labels, d, grid, cfg).nll))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|x| x.0)
        .unwrap_or(1.0)
}

#[allow(clippy::too_many_arguments)]
pub fn fit(
    model: &Llama,
    lora: &LoraSet,
    train: &[Encoded],
    validation: &[Encoded],
    test: &[Encoded],
    answer_ids: &[u32],
    pad: u32,
    batch_size: usize,
    cfg: &LaplaceConfig,
    cancel: &AtomicBool,
    report: &mut dyn FnMut(FitProgress),
) -> Result<Option<LaplaceResult>> {
    cfg.validate()?;
    let blocks = subset_blocks(lora, cfg.subset);
    report(FitProgress::Message(format!(
        "curvature: {:?} {:?} over {} LoRA matrices ({:?} positions)",
        cfg.structure,
        cfg.curvature,
        blocks.len(),
        cfg.positions
    )));
    let t0 = std::time::Instant::now();
    let Some((post, train_logits)) = fit_posterior(model, lora, train, answer_ids, pad, batch_size, cfg, cancel, &mut |d, t| {
        report(FitProgress::Step { phase: "curvature", done: d, total: t })
    })?
    else {
        return Ok(None);
    };
    let seconds_curvature = t0.elapsed().as_secs_f64();
    if post.clamped > 0 {
        report(FitProgress::Message(format!(
            "{} curvature eigenvalues at round-off level below zero clamped to 0 (factors are rank-deficient when there are fewer examples than dimensions)",
            post.clamped
        )));
    }
    let all: Vec<usize> = (0..post.blocks.len()).collect();
    let llla_idx: Option<Vec<usize>> = if post.full.is_some() && cfg.subset == Subset::All {
        None
    } else {
        let lb = subset_blocks(lora, Subset::LastLayer);
        Some(all.iter().copied().filter(|&i| lb.contains(&post.blocks[i])).collect())
    };
    let grid = SpectralGrid::for_deltas(cfg.delta_min, cfg.delta_max, 200);
    // The run's predictive decides which Jacobians it needs: centred ones, one backward pass
    // fewer an example, unless it reads each class's own variance.
    let rows = jacobian::Rows::for_predictive(cfg.predictive);
    let mut spectral_groups = vec![all.clone()];
    if let Some(l) = &llla_idx {
        spectral_groups.push(l.clone());
    }
    // Validation spectral caches: the prior curve, and the grid search.
    let Some(val) =
        jacobian::functional(model, lora, &post, validation, answer_ids, pad, batch_size, rows, &[], &spectral_groups, &grid, cancel, &mut |d, t| {
            report(FitProgress::Step { phase: "validation jacobians", done: d, total: t })
        })?
    else {
        return Ok(None);
    };
    let val_labels: Vec<usize> = validation.iter().map(|e| e.label).collect();
    let deltas_grid = marglik::log_grid(cfg.delta_min, cfg.delta_max, cfg.grid_points);
    // The marginal likelihood (curve, reported value) with the prior mean the method uses.
    let prior_mean = match cfg.prior {
        PriorMethod::Marglik { mean, .. } => mean,
        _ => PriorMean::Zero,
    };
    let curve: Vec<CurvePoint> = deltas_grid
        .iter()
        .map(|&d| {
            let m = val_metrics(&val, 0, &val_labels, d, &grid, cfg);
            CurvePoint { delta: d, log_marglik: prior::log_marglik(&post, &all, prior_mean, &vec![d; post.blocks.len()]), val_nll: m.nll, val_ece: m.ece }
        })
        .collect();
    let choose = |idx: &[usize], group: usize| -> Vec<f64> {
        match &cfg.prior {
            PriorMethod::Marglik { mean, groups } => prior::marglik_deltas(&post, idx, *mean, *groups, cfg.delta_min, cfg.delta_max),
            PriorMethod::Fixed(d) => post.block_deltas(idx, &vec![*d; post.spectra(idx).len()]),
            PriorMethod::Grid => {
                let best = grid_search(&val, group, &val_labels, &grid, cfg);
                post.block_deltas(idx, &vec![best; post.spectra(idx).len()])
            }
        }
    };
    let deltas = choose(&all, 0);
    let lml = |idx: &[usize], d: &[f64]| -> f64 { prior::log_marglik(&post, idx, prior_mean, d) };
    let log_marglik = lml(&all, &deltas);
    let llla = llla_idx.as_ref().map(|l| {
        let d = choose(l, 1);
        let v = lml(l, &d);
        (l.clone(), d, v)
    });
    report(FitProgress::Message(format!(
        "prior precision {} (log marginal likelihood {:.2}){}",
        summarize(&deltas),
        log_marglik,
        llla.as_ref().map(|(_, d, v)| format!("; LLLA {} ({v:.2})", summarize(d))).unwrap_or_default()
    )));
    // Test: exact Sigma_f for both, and the spectral cache for the prior slider.
    let mut exact = vec![Group { blocks: all.clone(), deltas: deltas.clone() }];
    if let Some((l, d, _)) = &llla {
        exact.push(Group { blocks: l.clone(), deltas: d.clone() });
    }
    let t1 = std::time::Instant::now();
    let Some(test_f) =
        jacobian::functional(model, lora, &post, test, answer_ids, pad, batch_size, rows, &exact, std::slice::from_ref(&all), &grid, cancel, &mut |d, t| {
            report(FitProgress::Step { phase: "test jacobians", done: d, total: t })
        })?
    else {
        return Ok(None);
    };
    let seconds_per_test_example = t1.elapsed().as_secs_f64() / test.len().max(1) as f64;
    let probs_of = |g: usize| -> Vec<Vec<f64>> { test_f.iter().enumerate().map(|(i, f)| cfg.predictor().apply(i, &f.mu, &f.sigma[g])).collect() };
    let test_probs = probs_of(0);
    let llla_probs = llla.as_ref().map(|_| probs_of(1));
    Ok(Some(LaplaceResult {
        posterior: post,
        deltas,
        log_marglik,
        llla,
        curve,
        test: test_f,
        test_probs,
        llla_probs,
        grid,
        seconds_curvature,
        seconds_per_test_example,
        train_logits,
    }))
}

fn summarize(d: &[f64]) -> String {
    let v: Vec<f64> = d.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return "-".into();
    }
    let (lo, hi) = v.iter().fold((f64::INFINITY, 0f64), |(a, b), &x| (a.min(x), b.max(x)));
    if (hi / lo - 1.0).abs() < 1e-9 {
        format!("{lo:.4}")
    } else {
        format!("{lo:.4}..{hi:.4} (per layer)")
    }
}

/// Recomputes every cached example's predictive at a new scalar delta (the prior slider): the
/// per-bin weights are shared, so Sigma_f is a few thousand multiply-adds an example; the
/// examples run in parallel. Monte Carlo uses `samples` draws seeded by the example's index, as
/// in the fit.
pub fn recompute(entries: &[SpectralEntry], mus: &[Vec<f64>], delta: f64, grid: &SpectralGrid, predictor: &Predictor) -> Vec<Vec<f64>> {
    use rayon::prelude::*;
    let wts = SpectralWeights::new(grid, delta);
    entries.par_iter().zip(mus.par_iter()).enumerate().map(|(i, (e, mu))| predictor.apply(i, mu, &e.sigma_f_with(&wts))).collect()
}
