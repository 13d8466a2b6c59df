//! Which way of choosing the prior precision calibrates best, measured on a finished run (the
//! README's "Choosing the prior precision"): one curvature fit at the run's adapter, every
//! marginal-likelihood variant (prior mean zero or the initialisation; one delta, one for A and
//! one for B, or one per LoRA matrix) and the validation grid search, each judged by the test
//! metrics of its predictive. The test Jacobians are computed once, with every variant's deltas
//! as one exact group.

use super::fit::{fit_posterior, grid_search};
use super::jacobian::{functional, Group, Rows};
use super::posterior::Posterior;
use super::spectral::SpectralGrid;
use super::{prior, DeltaGroups, LaplaceConfig, PriorMean, PriorMethod};
use crate::calibration::{self, Metrics};
use crate::lora::LoraSet;
use crate::model::Llama;
use crate::train::Encoded;
use anyhow::{Context, Result};
use serde::Serialize;
use std::sync::atomic::AtomicBool;

#[derive(Clone, Debug, Serialize)]
pub struct PriorStudyRow {
    pub method: String,
    /// The smallest and largest per-block delta (equal for a scalar prior).
    pub delta_min: f64,
    pub delta_max: f64,
    /// log Z at these deltas, with the variant's prior mean (grid: the zero-mean prior).
    pub log_marglik: f64,
    /// gamma = sum lambda / (lambda + delta) over every block.
    pub effective_params: f64,
    pub test: Metrics,
}

/// Every variant of [`PriorMethod`] except fixed numbers, in a stable order.
pub fn variants() -> Vec<PriorMethod> {
    let mut v = vec![PriorMethod::Grid];
    for mean in [PriorMean::Zero, PriorMean::Init] {
        for groups in [DeltaGroups::Scalar, DeltaGroups::Ab, DeltaGroups::Layer] {
            v.push(PriorMethod::Marglik { mean, groups });
        }
    }
    v
}

#[allow(clippy::too_many_arguments)]
pub fn prior_study(
    model: &Llama,
    lora: &LoraSet,
    train: &[Encoded],
    validation: &[Encoded],
    test: &[Encoded],
    answer_ids: &[u32],
    pad: u32,
    batch_size: usize,
    cfg: &LaplaceConfig,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<Vec<PriorStudyRow>> {
    let cancel = AtomicBool::new(false);
    let post: Posterior =
        fit_posterior(model, lora, train, answer_ids, pad, batch_size, cfg, &cancel, &mut |d, t| progress("curvature", d, t))?.context("cancelled")?.0;
    let all: Vec<usize> = (0..post.blocks.len()).collect();
    let grid = SpectralGrid::for_deltas(cfg.delta_min, cfg.delta_max, 200);
    let val = functional(
        model,
        lora,
        &post,
        validation,
        answer_ids,
        pad,
        batch_size,
        Rows::for_predictive(cfg.predictive),
        &[],
        &[all.clone()],
        &grid,
        &cancel,
        &mut |d, t| progress("validation jacobians", d, t),
    )?
    .context("cancelled")?;
    let val_labels: Vec<usize> = validation.iter().map(|e| e.label).collect();
    let methods = variants();
    let deltas: Vec<Vec<f64>> = methods
        .iter()
        .map(|m| match m {
            PriorMethod::Grid => vec![grid_search(&val, 0, &val_labels, &grid, cfg); all.len()],
            PriorMethod::Marglik { mean, groups } => prior::marglik_deltas(&post, &all, *mean, *groups, cfg.delta_min, cfg.delta_max),
            PriorMethod::Fixed(d) => vec![*d; all.len()],
        })
        .collect();
    let groups: Vec<Group> = deltas.iter().map(|d| Group { blocks: all.clone(), deltas: d.clone() }).collect();
    let fs =
        functional(model, lora, &post, test, answer_ids, pad, batch_size, Rows::for_predictive(cfg.predictive), &groups, &[], &grid, &cancel, &mut |d, t| {
            progress("test jacobians", d, t)
        })?
        .context("cancelled")?;
    let labels: Vec<usize> = test.iter().map(|e| e.label).collect();
    let predictor = cfg.predictor();
    Ok(methods
        .iter()
        .zip(&deltas)
        .enumerate()
        .map(|(g, (m, d))| {
            let probs: Vec<Vec<f64>> = fs.iter().enumerate().map(|(i, f)| predictor.apply(i, &f.mu, &f.sigma[g])).collect();
            let mean = match m {
                PriorMethod::Marglik { mean, .. } => *mean,
                _ => PriorMean::Zero,
            };
            let (lo, hi) = d.iter().fold((f64::INFINITY, 0f64), |(a, b), &x| (a.min(x), b.max(x)));
            PriorStudyRow {
                method: m.name(),
                delta_min: lo,
                delta_max: hi,
                log_marglik: prior::log_marglik(&post, &all, mean, d),
                effective_params: prior::report(&post, &all, d).effective_params,
                test: calibration::metrics(&probs, &labels),
            }
        })
        .collect())
}
