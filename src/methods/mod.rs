//! Methods are one axis (DESIGN.md section 5): each turns the fine-tuned model into per-example
//! class probabilities on any evaluation set, the same way, so that the files, the CLI table and
//! the GUI draw whatever methods a run has.
//!
//! A method ([`Method`]) first prepares what it needs beyond the shared MAP adapter (training of
//! its own, or a post-hoc fit on the validation split), then predicts on each evaluation set, and
//! saves what it needs to predict again later into `methods/NAME/` of the run directory (so that
//! `laplace-lora eval` and the workbench can evaluate a finished run on new items without
//! retraining). The methods:
//!
//! | name | what | its own training | fitted on |
//! |---|---|---|---|
//! | `zero_shot` | the base model, no adapter | - | - |
//! | `map` | the fine-tuned adapter | the MAP run | - |
//! | `temperature` | MAP logits / T | - | validation NLL |
//! | `llla`, `laplace` | Laplace over the last layer / all LoRA parameters | - | train curvature, prior |
//! | `mc_dropout` | LoRA dropout kept at test, S passes | only if its p differs from the run's | - |
//! | `checkpoint_ensemble` | the adapters of the MAP run's last M epochs | - | - |
//! | `deep_ensemble` | M adapters from M seeds (member 0 is the MAP run) | M - 1 runs | - |
//! | `blob` | a Gaussian over A trained by the ELBO (Wang et al. 2024) | one variational run | - |
//!
//! Ensembles and sampling methods average probabilities, never logits.

mod basic;
mod blob;
mod ensembles;
mod laplace;
pub use laplace::SET_CACHE;
mod mc_dropout;
pub mod runner;
pub mod settings;

use crate::experiment::{Event, ExperimentConfig, PreparedData, Stage};
use crate::lora::{LoraDropout, LoraSet};
use crate::model::Llama;
use crate::train::{self, Encoded, TrainConfig, TrainOutcome};
use anyhow::Result;
use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;

pub use blob::{train_blob, BlobPosterior, BlobTrainOpts};

/// What a method predicts on one evaluation set, per example (K entries each; classes an item
/// does not have get probability 0).
#[derive(Clone, Debug, Default)]
pub struct SetPrediction {
    pub probs: Vec<Vec<f64>>,
    /// Deterministic methods: the logits behind `probs`.
    pub logits: Option<Vec<Vec<f64>>>,
    /// Laplace methods: the Gaussian over the logits, mean (K) and covariance (K x K row-major).
    pub logit_mean: Option<Vec<Vec<f64>>>,
    pub logit_cov: Option<Vec<Vec<f64>>>,
    /// Ensembles and sampling methods: each member's or sample's probabilities (S x K).
    pub samples: Option<Vec<Vec<Vec<f64>>>>,
}

impl SetPrediction {
    pub fn from_logits(logits: Vec<Vec<f64>>) -> Self {
        let probs = logits.iter().map(|f| crate::calibration::softmax(f)).collect();
        SetPrediction { probs, logits: Some(logits), ..Default::default() }
    }

    /// The mean of S probability vectors per example (each member's softmax, then the mean:
    /// probabilities are averaged, never logits), keeping the members.
    pub fn from_member_logits(members: &[Vec<Vec<f64>>]) -> Self {
        let n = members.first().map_or(0, |m| m.len());
        let samples: Vec<Vec<Vec<f64>>> = (0..n).map(|i| members.iter().map(|m| crate::calibration::softmax(&m[i])).collect()).collect();
        let probs = samples.iter().map(|s| mean_rows(s)).collect();
        SetPrediction { probs, samples: Some(samples), ..Default::default() }
    }
}

/// The element-wise mean of equally long rows.
pub fn mean_rows(rows: &[Vec<f64>]) -> Vec<f64> {
    let k = rows.first().map_or(0, |r| r.len());
    let mut m = vec![0.0; k];
    for r in rows {
        m.iter_mut().zip(r).for_each(|(a, b)| *a += b);
    }
    m.iter_mut().for_each(|a| *a /= rows.len().max(1) as f64);
    m
}

/// One evaluation set: "test" (the run's test split) or a `[[data.eval]]` set.
pub struct EvalSet<'a> {
    pub name: &'a str,
    pub items: &'a [crate::data::Item],
    pub data: &'a [Encoded],
}

/// Everything a method may use: the model, the data, the MAP adapter and the MAP run's epoch
/// checkpoints, and the way to report progress.
pub struct Context<'a> {
    pub cfg: &'a ExperimentConfig,
    pub model: &'a Llama,
    pub data: &'a PreparedData,
    /// The fine-tuned adapter every post-hoc method builds on.
    pub map: &'a LoraSet,
    /// Seconds the MAP run trained.
    pub map_train_seconds: f64,
    /// The adapters at the end of each epoch of the MAP run, oldest first (kept when the
    /// checkpoint ensemble is listed; empty otherwise or on a restored run).
    pub checkpoints: &'a [LoraSet],
    pub pad: u32,
    pub eval_batch: usize,
    pub run_dir: &'a Path,
    pub cancel: &'a AtomicBool,
    pub send: RefCell<&'a mut dyn FnMut(Event) -> Result<()>>,
    /// The MAP adapter's logits per set name ([`TRAIN_SPLIT`], "validation", "test", eval sets),
    /// computed once for every method that needs them (MAP, temperature), or taken from a pass
    /// that ran the MAP adapter anyway (the last epoch's validation, the Laplace curvature pass).
    pub map_logits: RefCell<std::collections::HashMap<String, Vec<Vec<f64>>>>,
}

/// The `map_logits` keys of the run's own splits: no `[[data.eval]]` set may take these names
/// (`data::section::RESERVED_SET_NAMES`).
pub const TRAIN_SPLIT: &str = "train";

impl Context<'_> {
    pub fn emit(&self, e: Event) -> Result<()> {
        (self.send.borrow_mut())(e)
    }

    pub fn message(&self, stage: Stage, message: String) -> Result<()> {
        self.emit(Event::Stage { stage, message })
    }

    /// Answer logits of `set` under `lora` (None: the base model), with LoRA dropout if given;
    /// progress as `stage` events. None on a cancel.
    pub fn logits(&self, stage: Stage, lora: Option<&LoraSet>, dropout: Option<&mut LoraDropout>, set: &[Encoded]) -> Result<Option<Vec<Vec<f64>>>> {
        let mut err = None;
        let r =
            train::predict_logits_with(self.model, lora, dropout, set, &self.data.answer_ids, self.pad, self.eval_batch, self.cancel, &mut |done, total| {
                if let Err(e) = self.emit(Event::Progress { stage, done: done as u64, total: total as u64 }) {
                    err.get_or_insert(e);
                }
            })?;
        match err {
            Some(e) => Err(e),
            None => Ok(r),
        }
    }

    /// The MAP adapter's logits on a set, computed once per set name.
    pub fn map_logits(&self, stage: Stage, name: &str, data: &[Encoded]) -> Result<Option<Vec<Vec<f64>>>> {
        if let Some(l) = self.map_logits.borrow().get(name) {
            return Ok(Some(l.clone()));
        }
        let Some(l) = self.logits(stage, Some(self.map), None, data)? else { return Ok(None) };
        self.map_logits.borrow_mut().insert(name.to_string(), l.clone());
        Ok(Some(l))
    }

    /// Trains a fresh adapter as the MAP run does (same data, settings and schedule) with another
    /// seed and LoRA dropout: the extra members of a deep ensemble, MC dropout's adapter.
    /// Progress as Train-stage events under `what`. (adapter, seconds); None on a cancel.
    pub fn train_adapter(&self, what: &str, seed: u64, dropout: f64) -> Result<Option<(LoraSet, f64)>> {
        let mut lcfg = self.cfg.lora.to_config()?;
        lcfg.dropout = dropout;
        let lora = LoraSet::new(lcfg, &self.model.lora_dims(), self.data.answer_ids.clone(), seed, self.model.device())?;
        let tcfg = TrainConfig { seed, ..self.cfg.train.clone() };
        self.message(Stage::Train, format!("{what}: training {} LoRA parameters (seed {seed}, dropout {dropout})", lora.num_params()))?;
        let t0 = std::time::Instant::now();
        let outcome = self.train_lora(&lora, &tcfg, None)?;
        Ok(match outcome {
            TrainOutcome::Finished => Some((lora, t0.elapsed().as_secs_f64())),
            TrainOutcome::Cancelled { .. } => None,
        })
    }

    /// Fine-tunes `lora` on the training split with `tcfg` (and a step hook: BLoB's), progress as
    /// Train-stage events.
    pub fn train_lora(&self, lora: &LoraSet, tcfg: &TrainConfig, hook: Option<&mut dyn train::StepHook>) -> Result<TrainOutcome> {
        let mut err = None;
        let outcome = train::train_with(
            self.model,
            lora,
            &self.data.train,
            &self.data.answer_ids,
            self.pad,
            tcfg,
            hook,
            self.cancel,
            &mut |r| {
                if let Err(e) = self.emit(Event::Progress { stage: Stage::Train, done: r.step as u64, total: r.total_steps as u64 }) {
                    err.get_or_insert(e);
                }
            },
            &mut |_, _| Ok(()),
        )?;
        match err {
            Some(e) => Err(e),
            None => Ok(outcome),
        }
    }

    /// `methods/NAME/` of the run directory (created).
    pub fn method_dir(&self, name: &str) -> Result<std::path::PathBuf> {
        let d = self.run_dir.join("methods").join(name);
        std::fs::create_dir_all(&d)?;
        Ok(d)
    }

    /// Saves an adapter in PEFT's format.
    pub fn save_adapter(&self, lora: &LoraSet, dir: &Path) -> Result<()> {
        crate::peft::save(lora, self.model.cfg.vocab_size, &self.cfg.model.source, dir)
    }

    /// Loads an adapter saved by [`Context::save_adapter`].
    pub fn load_adapter(&self, dir: &Path) -> Result<LoraSet> {
        crate::peft::load(dir, self.model.cfg.num_hidden_layers, Some(self.data.answer_ids.clone()), self.model.device())
    }
}

/// A method of the run (see the module doc).
pub trait Method {
    fn name(&self) -> &'static str;

    /// Trains or fits what the method needs beyond the MAP adapter. Ok(false) on a cancel.
    fn prepare(&mut self, cx: &Context) -> Result<bool>;

    /// The method's predictive on one evaluation set; None on a cancel.
    fn predict(&mut self, cx: &Context, set: &EvalSet) -> Result<Option<SetPrediction>>;

    /// Seconds of training of the method's own inside `prepare` (the rest was fitting);
    /// `map` and `deep_ensemble` count the MAP run too.
    fn train_seconds(&self) -> f64 {
        0.0
    }

    /// The method's own numbers for its metrics.json entry (temperature, prior precision, ...).
    fn details(&self) -> serde_json::Map<String, serde_json::Value> {
        Default::default()
    }

    /// Writes what [`restore`] needs into `methods/NAME/` (the MAP adapter and the Laplace files
    /// have their own places).
    fn save(&self, _cx: &Context) -> Result<()> {
        Ok(())
    }
}

/// State the Laplace methods share: one fit serves both `laplace` and `llla`.
pub type LaplaceShared = Rc<RefCell<laplace::Shared>>;

/// A fresh method of the given name, ready to prepare.
pub fn build(name: &str, cfg: &ExperimentConfig, shared: &LaplaceShared) -> Result<Box<dyn Method>> {
    let m = &cfg.methods;
    Ok(match name {
        "zero_shot" => Box::new(basic::ZeroShot),
        "map" => Box::new(basic::Map::default()),
        "temperature" => Box::new(basic::Temperature::default()),
        "laplace" => Box::new(laplace::LaplaceMethod::new(false, shared.clone())),
        "llla" => Box::new(laplace::LaplaceMethod::new(true, shared.clone())),
        "mc_dropout" => Box::new(mc_dropout::McDropout::new(m.mc_dropout.clone())),
        "checkpoint_ensemble" => Box::new(ensembles::CheckpointEnsemble::new(m.checkpoint_ensemble.members)),
        "deep_ensemble" => Box::new(ensembles::DeepEnsemble::new(m.deep_ensemble.members)),
        "blob" => Box::new(blob::Blob::new(m.blob.clone())),
        other => anyhow::bail!("{other:?} is not a method; the methods are {}", settings::KNOWN.join(", ")),
    })
}

/// A method of a finished run, from what it saved (its metrics.json `entry`, `methods/NAME/`,
/// the adapter, the Laplace files): ready to predict on new sets without training.
pub fn restore(name: &str, cx: &Context, entry: &serde_json::Value, shared: &LaplaceShared) -> Result<Box<dyn Method>> {
    let m = &cx.cfg.methods;
    Ok(match name {
        "zero_shot" => Box::new(basic::ZeroShot),
        "map" => Box::new(basic::Map::default()),
        "temperature" => Box::new(basic::Temperature::restore(entry)?),
        "laplace" | "llla" => Box::new(laplace::LaplaceMethod::restore(name == "llla", cx, shared.clone())?),
        "mc_dropout" => Box::new(mc_dropout::McDropout::restore(m.mc_dropout.clone(), cx)?),
        "checkpoint_ensemble" => Box::new(ensembles::CheckpointEnsemble::restore(cx)?),
        "deep_ensemble" => Box::new(ensembles::DeepEnsemble::restore(cx)?),
        "blob" => Box::new(blob::Blob::restore(m.blob.clone(), cx)?),
        other => anyhow::bail!("{other:?} is not a method; the methods are {}", settings::KNOWN.join(", ")),
    })
}
