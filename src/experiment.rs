//! An experiment: its configuration (DESIGN.md section 4), the events it emits, and the pipeline
//! that turns a configuration into a run directory.
//!
//! Stages: load model -> load data -> zero-shot evaluation -> fine-tune (MAP) -> save adapter ->
//! evaluate MAP -> temperature scaling (fitted on validation) -> metrics and predictions.

use crate::calibration::{self, Metrics};
use crate::data::{self, Item};
use crate::laplace::LaplaceConfig;
use crate::lora::{LoraConfig, LoraSet, Target};
use crate::model::{self, tokenizer, FetchProgress, LoadedModel};
use crate::runio::{write_atomic, write_json_atomic, JsonLines};
use crate::train::{self, Encoded, StepReport, TrainConfig, TrainOutcome};
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

// ---------------------------------------------------------------------------------------------
// Configuration

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    #[serde(default)]
    pub model: ModelSection,
    pub data: DataSection,
    #[serde(default)]
    pub lora: LoraSection,
    #[serde(default)]
    pub train: TrainConfig,
    #[serde(default)]
    pub laplace: LaplaceSection,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// A known name, a .gguf file, or a Hugging Face model folder.
    pub source: String,
    /// "cpu", "cuda", "cuda:N", "metal".
    pub device: String,
    /// The frozen matrices' storage: "f32", "bf16", "f16" (`model::parse_frozen_dtype`).
    /// Activations, LoRA matrices and curvature are f32 whatever this says.
    pub dtype: String,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self { source: model::source::DEFAULT_MODEL.into(), device: "cpu".into(), dtype: "f32".into() }
    }
}

// The [data] section lives with the data layer (src/data/section.rs).
pub use crate::data::section::{load_splits, DataSection, EvalSet, EvalSets};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraSection {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub targets: Vec<String>,
}

impl Default for LoraSection {
    fn default() -> Self {
        Self { rank: 8, alpha: 16.0, dropout: 0.0, targets: vec!["q_proj".into(), "v_proj".into(), "lm_head".into()] }
    }
}

impl LoraSection {
    pub fn to_config(&self) -> Result<LoraConfig> {
        let targets = self.targets.iter().map(|t| Target::parse(t)).collect::<Result<Vec<_>>>()?;
        let c = LoraConfig { rank: self.rank, alpha: self.alpha, dropout: self.dropout, targets };
        c.validate()?;
        Ok(c)
    }
}

/// A prior precision: chosen by marginal likelihood, by grid search, or fixed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PriorChoice {
    Fixed(f64),
    Method(String),
}

impl PriorChoice {
    /// As typed by a user (CLI option, GUI field): a number is a fixed delta, anything else a
    /// method name (checked by `LaplaceSection::validate`).
    pub fn parse(text: &str) -> Self {
        match text.trim().parse::<f64>() {
            Ok(d) => PriorChoice::Fixed(d),
            Err(_) => PriorChoice::Method(text.trim().to_string()),
        }
    }
}

/// The Laplace settings (DESIGN.md section 2). They are validated and recorded now; the
/// posterior itself is fitted by the Laplace stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LaplaceSection {
    pub subset: String,
    pub structure: String,
    pub curvature: String,
    pub positions: String,
    pub prior: PriorChoice,
    pub predictive: String,
    pub samples: usize,
    /// Kronecker factors with a larger side are kept low-rank (top `low_rank_k` eigenpairs).
    pub low_rank_threshold: usize,
    pub low_rank_k: usize,
    /// The prior-precision grid: curve and grid search.
    pub delta_min: f64,
    pub delta_max: f64,
    pub grid_points: usize,
    /// The full structure is refused above this many parameters.
    pub max_full_params: usize,
    /// Skip the Laplace stage (MAP and temperature scaling only).
    pub enabled: bool,
}

impl Default for LaplaceSection {
    fn default() -> Self {
        let d = LaplaceConfig::default();
        Self {
            subset: "all".into(),
            structure: "kron".into(),
            curvature: "ggn".into(),
            // Closest to the exact GGN on average over the measured blocks of the default model
            // (README, "Which positions enter KFAC").
            positions: "reduce".into(),
            // Validation NLL: on the sample datasets (64 training items) the marginal likelihood,
            // scalar or per LoRA matrix, chose delta ~ 0.1-1 and an under-confident predictive
            // (README, "Choosing the prior precision").
            prior: PriorChoice::Method("grid".into()),
            predictive: "probit".into(),
            samples: d.samples,
            low_rank_threshold: d.low_rank_threshold,
            low_rank_k: d.low_rank_k,
            delta_min: d.delta_min,
            delta_max: d.delta_max,
            grid_points: d.grid_points,
            max_full_params: d.max_full_params,
            enabled: true,
        }
    }
}

fn one_of(field: &str, value: &str, allowed: &[&str]) -> Result<()> {
    if !allowed.contains(&value) {
        bail!("{field} = {value:?} is not one of {}", allowed.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", "));
    }
    Ok(())
}

impl LaplaceSection {
    pub fn validate(&self) -> Result<()> {
        one_of("laplace.subset", &self.subset, &["all", "last_layer"])?;
        one_of("laplace.structure", &self.structure, &["kron", "diag", "full"])?;
        one_of("laplace.curvature", &self.curvature, &["ggn", "fisher"])?;
        one_of("laplace.positions", &self.positions, &["expand", "reduce", "last"])?;
        one_of("laplace.predictive", &self.predictive, &["probit", "mc", "bridge"])?;
        match &self.prior {
            PriorChoice::Fixed(d) if !(d.is_finite() && *d > 0.0) => bail!("laplace.prior = {d} must be a positive number, \"marglik\", \"marglik_layer\" or \"grid\""),
            PriorChoice::Method(m) => one_of("laplace.prior", m, &["marglik", "marglik_layer", "grid"])?,
            _ => {}
        }
        self.to_config(0)?.validate()
    }

    pub fn to_config(&self, seed: u64) -> Result<LaplaceConfig> {
        use crate::laplace::*;
        Ok(LaplaceConfig {
            subset: if self.subset == "all" { Subset::All } else { Subset::LastLayer },
            structure: match self.structure.as_str() {
                "kron" => Structure::Kron,
                "diag" => Structure::Diag,
                _ => Structure::Full,
            },
            curvature: if self.curvature == "ggn" { CurvatureKind::Ggn } else { CurvatureKind::Fisher },
            positions: match self.positions.as_str() {
                "expand" => Positions::Expand,
                "reduce" => Positions::Reduce,
                _ => Positions::Last,
            },
            prior: match &self.prior {
                PriorChoice::Fixed(d) => PriorMethod::Fixed(*d),
                PriorChoice::Method(m) if m == "grid" => PriorMethod::Grid,
                PriorChoice::Method(m) if m == "marglik_layer" => PriorMethod::MarglikPerLayer,
                PriorChoice::Method(_) => PriorMethod::Marglik,
            },
            predictive: match self.predictive.as_str() {
                "probit" => PredictiveKind::Probit,
                "mc" => PredictiveKind::Mc,
                _ => PredictiveKind::Bridge,
            },
            samples: self.samples,
            low_rank_threshold: self.low_rank_threshold,
            low_rank_k: self.low_rank_k,
            max_full_params: self.max_full_params,
            delta_min: self.delta_min,
            delta_max: self.delta_max,
            grid_points: self.grid_points,
            seed,
        })
    }
}

impl ExperimentConfig {
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let c: ExperimentConfig = toml::from_str(text).map_err(|e| anyhow!("{e}"))?;
        c.validate()?;
        Ok(c)
    }

    /// Reads a configuration file; relative data paths are taken from the current folder, or
    /// failing that from the configuration file's folder, and stored absolute.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading configuration {}", path.display()))?;
        let mut c = Self::from_toml_str(&text).with_context(|| format!("in configuration {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        c.data.resolve_relative_paths(base);
        let src = PathBuf::from(&c.model.source);
        if !src.exists() && base.join(&src).exists() {
            c.model.source = std::path::absolute(base.join(&src))?.to_string_lossy().into_owned();
        }
        Ok(c)
    }

    pub fn validate(&self) -> Result<()> {
        self.lora.to_config()?;
        self.train.validate()?;
        self.laplace.validate()?;
        self.data.validate()?;
        if self.model.source.trim().is_empty() {
            bail!("model.source is empty");
        }
        // The spelling only (whether the device exists is known when the run opens it).
        let dev = self.model.device.trim().to_ascii_lowercase();
        let cuda_ok = dev.strip_prefix("cuda:").is_some_and(|n| n.parse::<usize>().is_ok());
        if !(matches!(dev.as_str(), "cpu" | "cuda" | "metal") || cuda_ok) {
            bail!("model.device = {:?} is not one of \"cpu\", \"cuda\", \"cuda:N\", \"metal\"", self.model.device);
        }
        model::parse_frozen_dtype(&self.model.dtype).context("model.dtype")?;
        Ok(())
    }

    pub fn to_toml(&self) -> Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }

    /// A short name for the run: the dataset folder or file stem.
    pub fn dataset_name(&self) -> String {
        let p = &self.data.train;
        let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        if matches!(stem.as_str(), "train" | "training") {
            p.parent().and_then(|d| d.file_name()).map(|s| s.to_string_lossy().into_owned()).unwrap_or(stem)
        } else {
            stem
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Events

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    LoadModel,
    LoadData,
    ZeroShot,
    Train,
    Evaluate,
    Calibrate,
    Laplace,
    Write,
}

/// The compact numbers of a metrics set, for curves.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    pub accuracy: f64,
    pub ece: f64,
    pub nll: f64,
    pub brier: f64,
}

impl From<&Metrics> for Summary {
    fn from(m: &Metrics) -> Self {
        Self { accuracy: m.accuracy, ece: m.ece, nll: m.nll, brier: m.brier }
    }
}

/// One line of `events.jsonl`, and what the faces receive while a run goes on.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Started { run_dir: PathBuf, unix_time: u64 },
    Stage { stage: Stage, message: String },
    Progress { stage: Stage, done: u64, total: u64 },
    TrainStep { step: usize, total_steps: usize, epoch: usize, loss: f64, batch_accuracy: f64, learning_rate: f64, grad_norm: f64, seconds: f64 },
    Validation { epoch: usize, step: usize, split: String, summary: Summary },
    Metrics { name: String, metrics: Metrics },
    Artifact { path: String },
    Finished { seconds: f64 },
    Cancelled { stage: Stage, message: String },
    Failed { stage: Stage, error: String },
}

impl From<&StepReport> for Event {
    fn from(r: &StepReport) -> Self {
        Event::TrainStep {
            step: r.step,
            total_steps: r.total_steps,
            epoch: r.epoch,
            loss: r.loss,
            batch_accuracy: r.batch_accuracy,
            learning_rate: r.learning_rate,
            grad_norm: r.grad_norm,
            seconds: r.seconds,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Finished,
    Cancelled,
}

// ---------------------------------------------------------------------------------------------
// Run directory

/// Checks that `dir` may hold a new run: absent or empty, unless `force`.
pub fn prepare_run_dir(dir: &Path, force: bool) -> Result<()> {
    if dir.exists() {
        let non_empty = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?.next().is_some();
        if non_empty && !force {
            bail!("run directory {} already exists and is not empty; choose another --out or pass --force to overwrite it", dir.display());
        }
        if non_empty {
            // Every file a run writes: a stale one would describe another run's adapter.
            for f in ["metrics.json", "predictions.jsonl", "events.jsonl", "splits.json", "config.toml", "prior_curve.csv"] {
                let _ = std::fs::remove_file(dir.join(f));
            }
            let _ = std::fs::remove_dir_all(dir.join("adapter"));
            let _ = std::fs::remove_dir_all(dir.join("laplace"));
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create run directory {}", dir.display()))?;
    // Fail now, not after an hour of training, if the folder is not writable.
    write_atomic(&dir.join(".write-test"), b"ok").with_context(|| format!("run directory {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(dir.join(".write-test"));
    Ok(())
}

/// The default run directory: `runs/<dataset>-<YYYYmmdd-HHMMSS>`.
pub fn default_run_dir(cfg: &ExperimentConfig) -> PathBuf {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    PathBuf::from("runs").join(format!("{}-{}", cfg.dataset_name(), crate::runio::utc_stamp(secs)))
}

/// One line of `predictions.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Prediction {
    pub id: String,
    pub prompt: String,
    pub choices: Vec<String>,
    pub label: usize,
    pub answer_token_ids: Vec<u32>,
    pub map_logits: Vec<f64>,
    pub map_probs: Vec<f64>,
    pub temperature_probs: Vec<f64>,
    pub zero_shot_probs: Option<Vec<f64>>,
    /// Laplace-LoRA predictive, and the functional mean and covariance it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub laplace_probs: Option<Vec<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llla_probs: Option<Vec<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_mean: Option<Vec<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_cov: Option<Vec<Vec<f64>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llla_logit_cov: Option<Vec<Vec<f64>>>,
}

// ---------------------------------------------------------------------------------------------
// Pipeline

/// The items of one experiment, tokenized, with the answer tokens they share.
pub struct PreparedData {
    pub splits: data::Splits,
    pub answer_labels: Vec<String>,
    pub answer_ids: Vec<u32>,
    pub train: Vec<Encoded>,
    pub validation: Vec<Encoded>,
    pub test: Vec<Encoded>,
}

/// The dataset's K answer labels: those of the item with the most choices; every other item's
/// labels must be a prefix of them (fewer choices are masked).
pub fn shared_answer_labels(items: &[&Item]) -> Result<Vec<String>> {
    let widest = items.iter().max_by_key(|i| i.answer_labels.len()).ok_or_else(|| anyhow!("no items"))?;
    let labels = widest.answer_labels.clone();
    for i in items {
        if labels[..i.answer_labels.len()] != i.answer_labels[..] {
            bail!("item {} answers with {:?}, which does not fit the dataset's answer labels {:?}", i.id, i.answer_labels, labels);
        }
    }
    Ok(labels)
}

pub fn encode_items(tok: &tokenizers::Tokenizer, items: &[Item], max_length: usize) -> Result<Vec<Encoded>> {
    items
        .iter()
        .map(|it| {
            let mut ids = tokenizer::encode(tok, &it.prompt).with_context(|| format!("item {}", it.id))?;
            if ids.is_empty() {
                bail!("item {}: the prompt tokenizes to nothing", it.id);
            }
            if ids.len() > max_length {
                // Keep the end: the question's tail, the choices and "Answer:" matter most.
                ids.drain(..ids.len() - max_length);
            }
            Ok(Encoded { ids, label: it.label, num_choices: it.num_choices() })
        })
        .collect()
}

pub fn prepare_data(cfg: &ExperimentConfig, tok: &tokenizers::Tokenizer) -> Result<PreparedData> {
    let splits = load_splits(&cfg.data, cfg.train.seed)?;
    let all: Vec<&Item> = splits.train.iter().chain(&splits.validation).chain(&splits.test).collect();
    let answer_labels = shared_answer_labels(&all)?;
    let answer_ids = data::answer_token_ids(tok, &answer_labels)?;
    let ml = cfg.train.max_length;
    Ok(PreparedData {
        train: encode_items(tok, &splits.train, ml)?,
        validation: encode_items(tok, &splits.validation, ml)?,
        test: encode_items(tok, &splits.test, ml)?,
        splits,
        answer_labels,
        answer_ids,
    })
}

fn probs_of(logits: &[Vec<f64>]) -> Vec<Vec<f64>> {
    logits.iter().map(|f| calibration::softmax(f)).collect()
}

fn labels_of(data: &[Encoded]) -> Vec<usize> {
    data.iter().map(|e| e.label).collect()
}

/// Runs the whole pipeline into `run_dir` (which `prepare_run_dir` has made ready). Every event
/// goes to `events.jsonl` and to `emit`. On a cancel, the files written so far stay consistent
/// and `events.jsonl` ends with a `cancelled` event.
pub fn run(cfg: &ExperimentConfig, run_dir: &Path, cancel: &AtomicBool, emit: &mut dyn FnMut(&Event)) -> Result<Outcome> {
    cfg.validate()?;
    logged(run_dir, emit, "", |stage, send| {
        write_atomic(&run_dir.join("config.toml"), cfg.to_toml()?.as_bytes())?;
        pipeline(cfg, run_dir, cancel, stage, send)
    })
}

/// Runs `body` with every event it sends appended to `run_dir/events.jsonl` and passed to
/// `emit`, after a `started` event and before the `finished`, `cancelled` or `failed` one that
/// says at which stage it stopped (`cancel_note` is added to a cancel's message).
fn logged(
    run_dir: &Path,
    emit: &mut dyn FnMut(&Event),
    cancel_note: &str,
    body: impl FnOnce(&mut Stage, &mut dyn FnMut(Event) -> Result<()>) -> Result<Outcome>,
) -> Result<Outcome> {
    let mut log = JsonLines::create(&run_dir.join("events.jsonl"))?;
    let mut stage = Stage::LoadModel;
    let mut send = |e: Event, log: &mut JsonLines| -> Result<()> {
        log.append(&e)?;
        emit(&e);
        Ok(())
    };
    let t0 = std::time::Instant::now();
    let unix_time = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    send(Event::Started { run_dir: run_dir.to_path_buf(), unix_time }, &mut log)?;
    let result = body(&mut stage, &mut |e| send(e, &mut log));
    match &result {
        Ok(Outcome::Finished) => send(Event::Finished { seconds: t0.elapsed().as_secs_f64() }, &mut log)?,
        Ok(Outcome::Cancelled) => send(Event::Cancelled { stage, message: format!("cancelled during {stage:?}{cancel_note}") }, &mut log)?,
        Err(e) => send(Event::Failed { stage, error: format!("{e:#}") }, &mut log)?,
    }
    result
}

fn pipeline(
    cfg: &ExperimentConfig,
    run_dir: &Path,
    cancel: &AtomicBool,
    stage: &mut Stage,
    send: &mut dyn FnMut(Event) -> Result<()>,
) -> Result<Outcome> {
    macro_rules! check_cancel {
        () => {
            if cancel.load(Ordering::Relaxed) {
                return Ok(Outcome::Cancelled);
            }
        };
    }
    // 1. Model.
    *stage = Stage::LoadModel;
    let Some(m) = load_model(cfg, cancel, send)? else { return Ok(Outcome::Cancelled) };
    check_cancel!();

    // 2. Data.
    *stage = Stage::LoadData;
    let d = prepare_data(cfg, &m.tokenizer)?;
    write_json_atomic(&run_dir.join("splits.json"), &d.splits.ids())?;
    send(Event::Stage {
        stage: *stage,
        message: format!(
            "{} train / {} validation / {} test items, K = {} answers {:?}",
            d.train.len(),
            d.validation.len(),
            d.test.len(),
            d.answer_ids.len(),
            d.answer_labels
        ),
    })?;
    let pad = tokenizer::pad_id(&m.tokenizer);
    let eval_bs = (cfg.train.batch_size * 2).max(1);
    let _k = d.answer_ids.len();

    let predict = |stage: Stage, lora: Option<&LoraSet>, set: &[Encoded], send: &mut dyn FnMut(Event) -> Result<()>| -> Result<Option<Vec<Vec<f64>>>> {
        let mut err = None;
        let r = train::predict_logits(&m.model, lora, set, &d.answer_ids, pad, eval_bs, cancel, &mut |done, total| {
            if let Err(e) = send(Event::Progress { stage, done: done as u64, total: total as u64 }) {
                err = Some(e);
            }
        })?;
        if let Some(e) = err {
            return Err(e);
        }
        Ok(r)
    };

    // 3. Zero-shot (the base model, no adapter).
    *stage = Stage::ZeroShot;
    send(Event::Stage { stage: *stage, message: "evaluating the base model on the test set".into() })?;
    let Some(zs_logits) = predict(*stage, None, &d.test, send)? else { return Ok(Outcome::Cancelled) };
    let test_labels = labels_of(&d.test);
    let zs = calibration::metrics(&probs_of(&zs_logits), &test_labels);
    send(Event::Metrics { name: "zero_shot".into(), metrics: zs.clone() })?;
    // The training split too: its NLL before and after fine-tuning shows how far MAP fits (and
    // overfits) the items it saw.
    let train_labels = labels_of(&d.train);
    let Some(zs_train_logits) = predict(*stage, None, &d.train, send)? else { return Ok(Outcome::Cancelled) };
    let zs_train = calibration::metrics(&probs_of(&zs_train_logits), &train_labels);

    // 4. Fine-tune.
    *stage = Stage::Train;
    let lcfg = cfg.lora.to_config()?;
    let lora = LoraSet::new(lcfg, &m.model.lora_dims(), d.answer_ids.clone(), cfg.train.seed, m.model.device())?;
    send(Event::Stage { stage: *stage, message: format!("fine-tuning {} LoRA parameters", lora.num_params()) })?;
    let val_labels = labels_of(&d.validation);
    // Steps and validation passes go out live (the GUI draws them as they come).
    let send_err: std::cell::RefCell<Option<anyhow::Error>> = std::cell::RefCell::new(None);
    let outcome = {
        let send_cell = std::cell::RefCell::new(&mut *send);
        let forward = |e: Event| {
            if let Err(err) = (send_cell.borrow_mut())(e) {
                send_err.borrow_mut().get_or_insert(err);
            }
        };
        train::train(
            &m.model,
            &lora,
            &d.train,
            &d.answer_ids,
            pad,
            &cfg.train,
            cancel,
            &mut |r| forward(Event::from(r)),
            &mut |epoch, step| {
                let logits = train::predict_logits(&m.model, Some(&lora), &d.validation, &d.answer_ids, pad, eval_bs, cancel, &mut |_, _| {})?;
                if let Some(l) = logits {
                    let mm = calibration::metrics(&probs_of(&l), &val_labels);
                    forward(Event::Validation { epoch, step, split: "validation".into(), summary: Summary::from(&mm) });
                }
                Ok(())
            },
        )
    };
    if let Some(e) = send_err.into_inner() {
        return Err(e);
    }
    // Keep the adapter even on a cancel or a failure: it is the last good state.
    let save_adapter = || crate::peft::save(&lora, m.model.cfg.vocab_size, &cfg.model.source, &run_dir.join("adapter"));
    match outcome {
        Ok(TrainOutcome::Finished) => {}
        Ok(TrainOutcome::Cancelled { .. }) => {
            save_adapter()?;
            return Ok(Outcome::Cancelled);
        }
        Err(e) => {
            let _ = save_adapter();
            return Err(e);
        }
    }
    *stage = Stage::Write;
    save_adapter()?;
    send(Event::Artifact { path: "adapter/adapter_model.safetensors".into() })?;

    // 5. Evaluate the MAP model.
    *stage = Stage::Evaluate;
    send(Event::Stage { stage: *stage, message: "evaluating the fine-tuned (MAP) model".into() })?;
    let Some(val_logits) = predict(*stage, Some(&lora), &d.validation, send)? else { return Ok(Outcome::Cancelled) };
    let Some(test_logits) = predict(*stage, Some(&lora), &d.test, send)? else { return Ok(Outcome::Cancelled) };
    let map_probs = probs_of(&test_logits);
    let map = calibration::metrics(&map_probs, &test_labels);
    send(Event::Metrics { name: "map".into(), metrics: map.clone() })?;
    let Some(train_logits) = predict(*stage, Some(&lora), &d.train, send)? else { return Ok(Outcome::Cancelled) };
    let map_train = calibration::metrics(&probs_of(&train_logits), &train_labels);

    // 6. Temperature scaling, fitted on validation NLL.
    *stage = Stage::Calibrate;
    let fit = calibration::fit_temperature(&val_logits, &val_labels);
    let t_probs = calibration::apply_temperature(&test_logits, fit.temperature);
    let temp = calibration::metrics(&t_probs, &test_labels);
    send(Event::Stage { stage: *stage, message: format!("temperature {:.3} (validation NLL {:.4} -> {:.4})", fit.temperature, fit.nll_before, fit.nll_after) })?;
    send(Event::Metrics { name: "temperature".into(), metrics: temp.clone() })?;

    // 7. Files: MAP and temperature now, so that a failure or a cancel in the Laplace stage
    // keeps them; rewritten below with the Laplace results.
    *stage = Stage::Write;
    // Every method's test metrics at the same depth ({"map": {...}, "temperature": {...}}), the
    // fitted temperature inside its entry, and the training split's numbers apart under "train".
    let mut temperature = serde_json::to_value(&temp)?;
    temperature["temperature"] = serde_json::json!(fit.temperature);
    let mut metrics = serde_json::json!({
        "zero_shot": zs,
        "map": map,
        "temperature": temperature,
        "train": { "zero_shot": zs_train, "map": map_train },
    });
    write_json_atomic(&run_dir.join("metrics.json"), &metrics)?;
    let mut preds: Vec<Prediction> = d
        .splits
        .test
        .iter()
        .enumerate()
        .map(|(i, it)| {
            let nc = it.num_choices();
            Prediction {
                id: it.id.clone(),
                prompt: it.prompt.clone(),
                choices: it.choices.clone(),
                label: it.label,
                answer_token_ids: d.answer_ids[..nc].to_vec(),
                map_logits: test_logits[i][..nc].to_vec(),
                map_probs: map_probs[i][..nc].to_vec(),
                temperature_probs: t_probs[i][..nc].to_vec(),
                zero_shot_probs: Some(calibration::softmax(&zs_logits[i])[..nc].to_vec()),
                laplace_probs: None,
                llla_probs: None,
                logit_mean: None,
                logit_cov: None,
                llla_logit_cov: None,
            }
        })
        .collect();
    write_predictions(&run_dir.join("predictions.jsonl"), &preds)?;
    if !cfg.laplace.enabled {
        return Ok(Outcome::Finished);
    }

    // 8. Laplace-LoRA and LLLA.
    *stage = Stage::Laplace;
    let inputs = LaplaceInputs { model: &m.model, data: &d, lora: &lora, pad, batch_size: eval_bs };
    laplace_stage(cfg, run_dir, &inputs, &mut preds, &mut metrics, cancel, stage, send)
}

/// What the Laplace stage needs of the stages before it.
struct LaplaceInputs<'a> {
    model: &'a model::Llama,
    data: &'a PreparedData,
    lora: &'a LoraSet,
    pad: u32,
    batch_size: usize,
}

/// Fits Laplace-LoRA and LLLA at the MAP adapters, then writes the Laplace files and the
/// metrics and predictions with the Laplace entries added (each file atomically).
#[allow(clippy::too_many_arguments)]
fn laplace_stage(
    cfg: &ExperimentConfig,
    run_dir: &Path,
    x: &LaplaceInputs,
    preds: &mut [Prediction],
    metrics: &mut serde_json::Value,
    cancel: &AtomicBool,
    stage: &mut Stage,
    send: &mut dyn FnMut(Event) -> Result<()>,
) -> Result<Outcome> {
    *stage = Stage::Laplace;
    let d = x.data;
    let lc = cfg.laplace.to_config(cfg.train.seed)?;
    let mut fit_err = None;
    let result = crate::laplace::fit::fit(
        x.model,
        x.lora,
        &d.train,
        &d.validation,
        &d.test,
        &d.answer_ids,
        x.pad,
        x.batch_size,
        &lc,
        cancel,
        &mut |p| {
            let e = match p {
                crate::laplace::fit::FitProgress::Message(message) => Event::Stage { stage: Stage::Laplace, message },
                crate::laplace::fit::FitProgress::Step { done, total, .. } => Event::Progress { stage: Stage::Laplace, done: done as u64, total: total as u64 },
            };
            if let Err(e) = send(e) {
                fit_err = Some(e);
            }
        },
    )?;
    if let Some(e) = fit_err {
        return Err(e);
    }
    let Some(r) = result else { return Ok(Outcome::Cancelled) };
    *stage = Stage::Write;
    let test_labels = labels_of(&d.test);
    let lap = calibration::metrics(&r.test_probs, &test_labels);
    send(Event::Metrics { name: "laplace".into(), metrics: lap.clone() })?;
    metrics["laplace"] = serde_json::to_value(&lap)?;
    match &r.llla_probs {
        Some(lp) => {
            let ll = calibration::metrics(lp, &test_labels);
            send(Event::Metrics { name: "llla".into(), metrics: ll.clone() })?;
            metrics["llla"] = serde_json::to_value(&ll)?;
        }
        None => {
            if let Some(o) = metrics.as_object_mut() {
                o.remove("llla");
            }
        }
    }
    let k = d.answer_ids.len();
    for (i, p) in preds.iter_mut().enumerate() {
        let nc = p.choices.len();
        let f = &r.test[i];
        let cov = |s: &[f64]| -> Vec<Vec<f64>> { (0..nc).map(|c| s[c * k..c * k + nc].to_vec()).collect() };
        p.laplace_probs = Some(r.test_probs[i][..nc].to_vec());
        p.llla_probs = r.llla_probs.as_ref().map(|l| l[i][..nc].to_vec());
        p.logit_mean = Some(f.mu[..nc].to_vec());
        p.logit_cov = Some(cov(&f.sigma[0]));
        p.llla_logit_cov = f.sigma.get(1).map(|s| cov(s));
    }
    write_laplace_files(run_dir, &lc, &r)?;
    write_json_atomic(&run_dir.join("metrics.json"), &metrics)?;
    write_predictions(&run_dir.join("predictions.jsonl"), preds)?;
    send(Event::Artifact { path: "laplace/posterior.safetensors".into() })?;
    Ok(Outcome::Finished)
}

/// Fits (or refits) the Laplace stage on a finished run's adapter, with the run's configuration
/// or with `laplace` in place of its `[laplace]` section: the "Fit Laplace" button and the
/// `laplace` verb. The data must still give the run's splits (`splits.json`). Until the new fit is
/// complete the run directory keeps its previous files untouched, so a cancel or a failure loses
/// nothing; then the Laplace files, `metrics.json` (its "laplace" and "llla" entries),
/// `predictions.jsonl` (the Laplace fields) and `config.toml` are replaced. Events are appended
/// to the run's `events.jsonl`.
pub fn refit_laplace(run_dir: &Path, laplace: Option<&LaplaceSection>, cancel: &AtomicBool, emit: &mut dyn FnMut(&Event)) -> Result<Outcome> {
    let cfg_path = run_dir.join("config.toml");
    let mut cfg = ExperimentConfig::from_file(&cfg_path).with_context(|| format!("{} is not a finished run directory", run_dir.display()))?;
    for f in ["adapter/adapter_model.safetensors", "metrics.json", "predictions.jsonl", "splits.json"] {
        if !run_dir.join(f).exists() {
            bail!("{} has no {f}: fine-tune first (the Fine-tune or Run all button, or `laplace-lora run`)", run_dir.display());
        }
    }
    if let Some(l) = laplace {
        cfg.laplace = l.clone();
    }
    cfg.laplace.enabled = true;
    cfg.validate()?;
    logged(run_dir, emit, "; the run keeps its previous Laplace results", |stage, send| refit_pipeline(&cfg, run_dir, cancel, stage, send))
}

fn refit_pipeline(cfg: &ExperimentConfig, run_dir: &Path, cancel: &AtomicBool, stage: &mut Stage, send: &mut dyn FnMut(Event) -> Result<()>) -> Result<Outcome> {
    *stage = Stage::LoadModel;
    let Some(m) = load_model(cfg, cancel, send)? else { return Ok(Outcome::Cancelled) };
    *stage = Stage::LoadData;
    let d = prepare_data(cfg, &m.tokenizer)?;
    let splits_path = run_dir.join("splits.json");
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&splits_path).with_context(|| format!("reading {}", splits_path.display()))?)
        .with_context(|| format!("parsing {}", splits_path.display()))?;
    if saved != serde_json::to_value(d.splits.ids())? {
        bail!(
            "the dataset files no longer give the run's splits ({}): they changed since the run, so its adapter and predictions do not match them",
            splits_path.display()
        );
    }
    let lora = crate::peft::load(&run_dir.join("adapter"), m.model.cfg.num_hidden_layers, Some(d.answer_ids.clone()), m.model.device())?;
    let preds_path = run_dir.join("predictions.jsonl");
    let text = std::fs::read_to_string(&preds_path).with_context(|| format!("reading {}", preds_path.display()))?;
    let mut preds: Vec<Prediction> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{}:{}", preds_path.display(), i + 1)))
        .collect::<Result<_>>()?;
    if preds.len() != d.test.len() || preds.iter().zip(&d.splits.test).any(|(p, it)| p.id != it.id) {
        bail!("{} does not list the test split's items in order", preds_path.display());
    }
    let metrics_path = run_dir.join("metrics.json");
    let mut metrics: serde_json::Value = serde_json::from_slice(&std::fs::read(&metrics_path).with_context(|| format!("reading {}", metrics_path.display()))?)
        .with_context(|| format!("parsing {}", metrics_path.display()))?;
    send(Event::Stage { stage: Stage::LoadData, message: format!("{} train / {} validation / {} test items; adapter {}", d.train.len(), d.validation.len(), d.test.len(), run_dir.join("adapter").display()) })?;
    let pad = tokenizer::pad_id(&m.tokenizer);
    let inputs = LaplaceInputs { model: &m.model, data: &d, lora: &lora, pad, batch_size: (cfg.train.batch_size * 2).max(1) };
    let outcome = laplace_stage(cfg, run_dir, &inputs, &mut preds, &mut metrics, cancel, stage, send)?;
    if outcome == Outcome::Finished {
        write_atomic(&run_dir.join("config.toml"), cfg.to_toml()?.as_bytes())?;
    }
    Ok(outcome)
}

/// Resolves (fetching the default model on first use) and loads the configured model; None on a cancel.
fn load_model(cfg: &ExperimentConfig, cancel: &AtomicBool, send: &mut dyn FnMut(Event) -> Result<()>) -> Result<Option<LoadedModel>> {
    send(Event::Stage { stage: Stage::LoadModel, message: format!("resolving model {}", cfg.model.source) })?;
    let device = model::parse_device(&cfg.model.device)?;
    let mut fetch_err = None;
    let files = model::resolve_model(&cfg.model.source, &mut |p| {
        let e = match p {
            FetchProgress::Stage(s) => Event::Stage { stage: Stage::LoadModel, message: s },
            FetchProgress::Bytes { done, total } => Event::Progress { stage: Stage::LoadModel, done, total: total.unwrap_or(0) },
        };
        if let Err(e) = send(e) {
            fetch_err = Some(e);
        }
    })?;
    if let Some(e) = fetch_err {
        return Err(e);
    }
    if cancel.load(Ordering::Relaxed) {
        return Ok(None);
    }
    let dtype = model::parse_frozen_dtype(&cfg.model.dtype).context("model.dtype")?;
    let mut m = LoadedModel::load(&files, &device)?;
    m.model.cast_frozen(dtype)?;
    send(Event::Stage { stage: Stage::LoadModel, message: format!("loaded {} ({} layers, hidden {})", m.path.display(), m.model.cfg.num_hidden_layers, m.model.cfg.hidden_size) })?;
    Ok(Some(m))
}

fn write_predictions(path: &Path, preds: &[Prediction]) -> Result<()> {
    let mut lines = Vec::new();
    for p in preds {
        lines.extend(serde_json::to_vec(p)?);
        lines.push(b'\n');
    }
    write_atomic(path, &lines)
}

/// `laplace/posterior.safetensors`, `laplace/laplace.json`, `laplace/spectral_cache.safetensors`
/// and `prior_curve.csv`.
fn write_laplace_files(run_dir: &Path, lc: &LaplaceConfig, r: &crate::laplace::fit::LaplaceResult) -> Result<()> {
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
        })
    });
    let json = serde_json::json!({
        "config": lc,
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
