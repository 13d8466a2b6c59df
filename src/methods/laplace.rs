//! Laplace-LoRA and last-layer Laplace (LLLA) as methods: one fit of the Laplace stage
//! (`laplace::fit`) serves both, LLLA being the last LoRA-carrying layer's blocks of the same
//! posterior with a prior of its own (MATH.md section 9). The predictive is the linearised one
//! with the run's predictor; on a set other than the fit's test split the Jacobians are computed
//! once for both methods.

use super::{Context, EvalSet, Method, SetPrediction, TRAIN_SPLIT};
use crate::experiment::Stage;
use crate::laplace::fit::{self, FitProgress, LaplaceResult};
use crate::laplace::jacobian::{functional, Functional, Group, Rows};
use crate::laplace::posterior::{Posterior, PosteriorMeta};
use crate::laplace::predictive::Predictor;
use crate::laplace::spectral::SpectralGrid;
use crate::laplace::{LaplaceConfig, Subset};
use crate::runio::{write_atomic, write_json_atomic};
use anyhow::{bail, Context as _, Result};
use std::collections::HashMap;
use std::path::Path;

/// What the two Laplace methods share.
#[derive(Default)]
pub struct Shared {
    pub fitted: Option<Fitted>,
    /// Per evaluation set: mu and exact Sigma_f of group 0 (Laplace-LoRA) and 1 (LLLA).
    functional: HashMap<String, Vec<Functional>>,
    /// Seconds of the fit (curvature, prior, validation and test Jacobians) and which method paid.
    fit_seconds: f64,
    fitted_by: Option<&'static str>,
}

/// A fitted posterior and its priors.
pub struct Fitted {
    pub posterior: Posterior,
    /// Prior precision per posterior block (Laplace-LoRA).
    pub deltas: Vec<f64>,
    /// LLLA's blocks (indices into the posterior) and their deltas.
    pub llla: Option<(Vec<usize>, Vec<f64>)>,
    pub predictor: Predictor,
    pub grid: SpectralGrid,
    pub log_marglik: f64,
}

impl Shared {
    /// Drops a set's cached Jacobian results (a set name used once, e.g. a user's question).
    pub fn forget(&mut self, set: &str) {
        self.functional.remove(set);
    }

    /// Writes Laplace-LoRA's spectral cache of an evaluation set (`dir/spectral_cache.safetensors`,
    /// the layout of `laplace/spectral_cache.safetensors` for the test split): the workbench's
    /// prior slider then recomputes that set's predictive at any delta as it does the test
    /// split's. False when the set has not been predicted.
    pub fn write_set_cache(&self, set: &str, dir: &Path) -> Result<bool> {
        let (Some(fs), Some(f)) = (self.functional.get(set), self.fitted.as_ref()) else { return Ok(false) };
        if fs.iter().any(|x| x.spectral.is_empty()) {
            return Ok(false);
        }
        std::fs::create_dir_all(dir)?;
        crate::laplace::cache::save_cache(
            &dir.join(SET_CACHE),
            &fs.iter().map(|x| x.spectral[0].clone()).collect::<Vec<_>>(),
            &fs.iter().map(|x| x.mu.clone()).collect::<Vec<_>>(),
            &f.grid,
        )?;
        Ok(true)
    }
}

/// The file name of an evaluation set's spectral cache in its folder `eval/NAME/`.
pub const SET_CACHE: &str = "spectral_cache.safetensors";

impl Fitted {
    fn groups(&self) -> Vec<Group> {
        let all: Vec<usize> = (0..self.posterior.blocks.len()).collect();
        let mut g = vec![Group { blocks: all, deltas: self.deltas.clone() }];
        if let Some((idx, d)) = &self.llla {
            g.push(Group { blocks: idx.clone(), deltas: d.clone() });
        }
        g
    }
}

pub struct LaplaceMethod {
    llla: bool,
    shared: super::LaplaceShared,
}

impl LaplaceMethod {
    pub fn new(llla: bool, shared: super::LaplaceShared) -> Self {
        LaplaceMethod { llla, shared }
    }

    /// From `laplace/posterior.safetensors` and `laplace/laplace.json` of a finished run.
    pub fn restore(llla: bool, cx: &Context, shared: super::LaplaceShared) -> Result<Self> {
        if shared.borrow().fitted.is_none() {
            let dir = cx.run_dir.join("laplace");
            let lj: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join("laplace.json")).with_context(|| format!("reading {}", dir.join("laplace.json").display()))?)?;
            let meta: PosteriorMeta = serde_json::from_value(lj["posterior"].clone()).context("laplace.json: posterior")?;
            let (posterior, deltas) = Posterior::load(&dir.join("posterior.safetensors"), &meta)?;
            let config: LaplaceConfig = serde_json::from_value(lj["config"].clone()).context("laplace.json: config")?;
            let llla = match lj.get("llla").filter(|v| !v.is_null()) {
                Some(l) => {
                    let names: Vec<String> = serde_json::from_value(l["blocks"].clone())?;
                    let per: Vec<f64> = serde_json::from_value(l["prior_precision_per_block"].clone())?;
                    let idx: Vec<usize> = names
                        .iter()
                        .map(|n| posterior.names.iter().position(|m| m == n).with_context(|| format!("laplace.json: LLLA block {n} is not in the posterior")))
                        .collect::<Result<_>>()?;
                    let mut d = vec![f64::NAN; posterior.blocks.len()];
                    for (&i, &v) in idx.iter().zip(&per) {
                        d[i] = v;
                    }
                    Some((idx, d))
                }
                None => None,
            };
            let grid: SpectralGrid = serde_json::from_value(lj["spectral_grid"].clone()).unwrap_or_default();
            let log_marglik = lj["log_marglik"].as_f64().unwrap_or(f64::NAN);
            shared.borrow_mut().fitted = Some(Fitted { posterior, deltas, llla, predictor: config.predictor(), grid, log_marglik });
        }
        if llla && shared.borrow().fitted.as_ref().is_some_and(|f| f.llla.is_none()) {
            bail!("this run's posterior has no LLLA part (a full-structure fit over every block)");
        }
        Ok(LaplaceMethod { llla, shared })
    }

    fn group(&self) -> usize {
        usize::from(self.llla)
    }
}

impl Method for LaplaceMethod {
    fn name(&self) -> &'static str {
        if self.llla {
            "llla"
        } else {
            "laplace"
        }
    }

    fn prepare(&mut self, cx: &Context) -> Result<bool> {
        if self.shared.borrow().fitted.is_some() {
            return Ok(true);
        }
        let mut lc = cx.cfg.laplace.to_config(cx.cfg.train.seed)?;
        if !cx.cfg.methods.has("laplace") {
            // LLLA alone: the last layer's posterior is all that is needed.
            lc.subset = Subset::LastLayer;
        }
        let t0 = std::time::Instant::now();
        let d = cx.data;
        let mut err = None;
        let result = fit::fit(cx.model, cx.map, &d.train, &d.validation, &d.test, &d.answer_ids, cx.pad, cx.eval_batch, &lc, cx.cancel, &mut |p| {
            let e = match p {
                FitProgress::Message(message) => crate::experiment::Event::Stage { stage: Stage::Laplace, message },
                FitProgress::Step { done, total, .. } => crate::experiment::Event::Progress { stage: Stage::Laplace, done: done as u64, total: total as u64 },
            };
            if let Err(e) = cx.emit(e) {
                err.get_or_insert(e);
            }
        })?;
        if let Some(e) = err {
            return Err(e);
        }
        let Some(r) = result else { return Ok(false) };
        write_laplace_files(cx.run_dir, &lc, &r)?;
        cx.emit(crate::experiment::Event::Artifact { path: "laplace/posterior.safetensors".into() })?;
        if r.train_logits.len() == d.train.len() && r.train_logits.iter().all(|l| !l.is_empty()) {
            // The curvature pass ran the MAP adapter over the training split: its logits serve
            // the split's MAP metrics (the pipeline asks for them after the methods).
            cx.map_logits.borrow_mut().entry(TRAIN_SPLIT.to_string()).or_insert_with(|| r.train_logits.clone());
        }
        let mut s = self.shared.borrow_mut();
        s.functional.insert("test".into(), r.test.clone());
        s.fit_seconds = t0.elapsed().as_secs_f64();
        s.fitted_by = Some(self.name());
        s.fitted = Some(Fitted {
            llla: r.llla.as_ref().map(|(i, d, _)| (i.clone(), d.clone())),
            posterior: r.posterior,
            deltas: r.deltas,
            predictor: lc.predictor(),
            grid: r.grid,
            log_marglik: r.log_marglik,
        });
        Ok(true)
    }

    fn predict(&mut self, cx: &Context, set: &EvalSet) -> Result<Option<SetPrediction>> {
        let g = self.group();
        if !self.shared.borrow().functional.contains_key(set.name) {
            let s = self.shared.borrow();
            let f = s.fitted.as_ref().context("the Laplace method predicts before it was fitted")?;
            let mut err = None;
            let r = functional(
                cx.model,
                cx.map,
                &f.posterior,
                set.data,
                &cx.data.answer_ids,
                cx.pad,
                cx.eval_batch,
                Rows::for_predictive(f.predictor.kind),
                &f.groups(),
                // Laplace-LoRA's spectral entries too: the set's cache for the prior slider.
                &[(0..f.posterior.blocks.len()).collect()],
                &f.grid,
                cx.cancel,
                &mut |done, total| {
                    if let Err(e) = cx.emit(crate::experiment::Event::Progress { stage: Stage::Laplace, done: done as u64, total: total as u64 }) {
                        err.get_or_insert(e);
                    }
                },
            )?;
            if let Some(e) = err {
                return Err(e);
            }
            let Some(r) = r else { return Ok(None) };
            drop(s);
            self.shared.borrow_mut().functional.insert(set.name.to_string(), r);
        }
        let s = self.shared.borrow();
        let fitted = s.fitted.as_ref().context("not fitted")?;
        if self.llla && fitted.llla.is_none() {
            bail!("LLLA is not carved out of a full-structure posterior over every block; run with laplace.subset = \"last_layer\" or another structure");
        }
        let fs = &s.functional[set.name];
        let probs = fs.iter().enumerate().map(|(i, f)| fitted.predictor.apply(i, &f.mu, &f.sigma[g])).collect();
        Ok(Some(SetPrediction {
            probs,
            logit_mean: Some(fs.iter().map(|f| f.mu.clone()).collect()),
            logit_cov: Some(fs.iter().map(|f| f.sigma[g].clone()).collect()),
            ..Default::default()
        }))
    }

    fn details(&self) -> serde_json::Map<String, serde_json::Value> {
        let s = self.shared.borrow();
        let mut m = serde_json::Map::new();
        if let Some(f) = &s.fitted {
            let d: Vec<f64> = match (&f.llla, self.llla) {
                (Some((idx, d)), true) => idx.iter().map(|&i| d[i]).collect(),
                _ => f.deltas.clone(),
            };
            let (lo, hi) = d.iter().fold((f64::INFINITY, 0f64), |(a, b), &x| (a.min(x), b.max(x)));
            m.insert("prior_precision_min".into(), lo.into());
            m.insert("prior_precision_max".into(), hi.into());
            m.insert("predictive".into(), f.predictor.kind.name().into());
        }
        if let Some(by) = s.fitted_by {
            m.insert("fitted_by".into(), by.into());
            m.insert("fit_seconds".into(), s.fit_seconds.into());
        }
        m
    }
}

/// `laplace/posterior.safetensors`, `laplace/laplace.json`, `laplace/spectral_cache.safetensors`
/// and `prior_curve.csv`.
pub fn write_laplace_files(run_dir: &Path, lc: &LaplaceConfig, r: &LaplaceResult) -> Result<()> {
    let dir = run_dir.join("laplace");
    std::fs::create_dir_all(&dir)?;
    r.posterior.save(&dir.join("posterior.safetensors"), &r.deltas)?;
    let scalar = |d: &[f64]| -> Option<f64> {
        let v: Vec<f64> = d.iter().copied().filter(|x| x.is_finite()).collect();
        let first = *v.first()?;
        v.iter().all(|x| (x / first - 1.0).abs() < 1e-12).then_some(first)
    };
    let llla = r.llla.as_ref().map(|(idx, d, lml)| {
        serde_json::json!({
            "blocks": idx.iter().map(|&i| r.posterior.names[i].clone()).collect::<Vec<_>>(),
            "prior_precision": scalar(d),
            "prior_precision_per_block": idx.iter().map(|&i| d[i]).collect::<Vec<_>>(),
            "log_marglik": lml,
            "prior_report": crate::laplace::prior::report(&r.posterior, idx, d),
        })
    });
    let all: Vec<usize> = (0..r.posterior.blocks.len()).collect();
    let json = serde_json::json!({
        "config": lc,
        "prior_method": lc.prior.name(),
        // Per block and in total: the effective number of parameters gamma at the chosen delta,
        // |theta|^2 split into A and B, and A's distance from its initialisation (at the optimum
        // of a marginal-likelihood prior, delta = gamma / |theta - theta_0|^2).
        "prior_report": crate::laplace::prior::report(&r.posterior, &all, &r.deltas),
        "posterior": r.posterior.meta(),
        "n_params": r.posterior.n_params(),
        "prior_precision": scalar(&r.deltas),
        "prior_precision_per_block": r.deltas,
        "log_marglik": r.log_marglik,
        "clamped_eigenvalues": r.posterior.clamped,
        "llla": llla,
        "llla_note": if r.llla.is_none() { Some("LLLA is not carved out of a full-structure posterior over every block; run with subset = \"last_layer\"") } else { None },
        "seconds_curvature": r.seconds_curvature,
        "seconds_per_test_example": r.seconds_per_test_example,
        "spectral_grid": r.grid,
        // Which logits predictions.jsonl's logit_cov and the spectral caches describe.
        "logit_cov": match Rows::for_predictive(lc.predictive) {
            Rows::Centred => "centred",
            Rows::Raw => "raw",
        },
    });
    write_json_atomic(&dir.join("laplace.json"), &json)?;
    let mut csv = String::from("delta,log_marglik,val_nll,val_ece\n");
    for p in &r.curve {
        csv.push_str(&format!("{},{},{},{}\n", p.delta, p.log_marglik, p.val_nll, p.val_ece));
    }
    write_atomic(&run_dir.join("prior_curve.csv"), csv.as_bytes())?;
    crate::laplace::cache::save_cache(
        &dir.join("spectral_cache.safetensors"),
        &r.test.iter().map(|f| f.spectral[0].clone()).collect::<Vec<_>>(),
        &r.test.iter().map(|f| f.mu.clone()).collect::<Vec<_>>(),
        &r.grid,
    )?;
    Ok(())
}
