//! An experiment: its configuration (DESIGN.md section 4), the events it emits, and the pipeline
//! that turns a configuration into a run directory.
//!
//! Stages: load model -> load data -> zero-shot evaluation -> fine-tune (MAP) -> save adapter ->
//! evaluate MAP -> temperature scaling (fitted on validation) -> metrics and predictions.

use crate::calibration::{self, Metrics};
use crate::data::{self, Format, Item, SplitSpec};
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
}

impl Default for ModelSection {
    fn default() -> Self {
        Self { source: model::source::DEFAULT_MODEL.into(), device: "cpu".into() }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    pub train: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<PathBuf>,
    pub test: PathBuf,
    #[serde(default)]
    pub format: Format,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_train: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_validation: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_test: Option<usize>,
    /// Share of the training file held out for validation when no validation file is given.
    #[serde(default = "default_validation_fraction")]
    pub validation_fraction: f64,
    /// Label set for the classification format (else the training file's labels, in order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
}

fn default_validation_fraction() -> f64 {
    0.2
}

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
}

impl Default for LaplaceSection {
    fn default() -> Self {
        Self {
            subset: "all".into(),
            structure: "kron".into(),
            curvature: "ggn".into(),
            positions: "reduce".into(),
            prior: PriorChoice::Method("marglik".into()),
            predictive: "probit".into(),
            samples: 1000,
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
            PriorChoice::Fixed(d) if !(d.is_finite() && *d > 0.0) => bail!("laplace.prior = {d} must be a positive number, \"marglik\" or \"grid\""),
            PriorChoice::Method(m) => one_of("laplace.prior", m, &["marglik", "grid"])?,
            _ => {}
        }
        if self.samples == 0 {
            bail!("laplace.samples must be at least 1");
        }
        Ok(())
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
        let fix = |p: &PathBuf| -> PathBuf {
            if p.is_absolute() || p.exists() {
                std::path::absolute(p).unwrap_or_else(|_| p.clone())
            } else if base.join(p).exists() {
                std::path::absolute(base.join(p)).unwrap_or_else(|_| base.join(p))
            } else {
                p.clone()
            }
        };
        c.data.train = fix(&c.data.train);
        c.data.test = fix(&c.data.test);
        c.data.validation = c.data.validation.as_ref().map(fix);
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
        if !(self.data.validation_fraction > 0.0 && self.data.validation_fraction < 1.0) {
            bail!("data.validation_fraction must be in (0, 1) (got {})", self.data.validation_fraction);
        }
        for (name, cap) in [("max_train", self.data.max_train), ("max_validation", self.data.max_validation), ("max_test", self.data.max_test)] {
            if cap == Some(0) {
                bail!("data.{name} = 0 leaves nothing to use; remove it or give a positive number");
            }
        }
        if self.model.source.trim().is_empty() {
            bail!("model.source is empty");
        }
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
            for f in ["metrics.json", "predictions.jsonl", "events.jsonl", "splits.json", "config.toml"] {
                let _ = std::fs::remove_file(dir.join(f));
            }
            let _ = std::fs::remove_dir_all(dir.join("adapter"));
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

pub fn load_splits(cfg: &DataSection, seed: u64) -> Result<data::Splits> {
    let labels: Option<Vec<String>> = match (&cfg.labels, cfg.format) {
        (Some(l), _) => Some(l.clone()),
        _ => {
            let f = if cfg.format == Format::Auto { data::detect_format(&cfg.train)? } else { cfg.format };
            if f == Format::Classification { Some(data::classification_labels(&cfg.train)?) } else { None }
        }
    };
    let load = |p: &Path| data::load_items_with_labels(p, cfg.format, labels.as_deref());
    let train = load(&cfg.train)?;
    let validation = cfg.validation.as_deref().map(load).transpose()?;
    let test = load(&cfg.test)?;
    let spec = SplitSpec {
        validation_fraction: cfg.validation_fraction,
        max_train: cfg.max_train,
        max_validation: cfg.max_validation,
        max_test: cfg.max_test,
        seed,
    };
    Ok(data::make_splits(train, validation, test, &spec)?)
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
    write_atomic(&run_dir.join("config.toml"), cfg.to_toml()?.as_bytes())?;
    let result = pipeline(cfg, run_dir, cancel, &mut stage, &mut |e| send(e, &mut log));
    match &result {
        Ok(Outcome::Finished) => send(Event::Finished { seconds: t0.elapsed().as_secs_f64() }, &mut log)?,
        Ok(Outcome::Cancelled) => send(Event::Cancelled { stage, message: format!("cancelled during {stage:?}") }, &mut log)?,
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
    send(Event::Stage { stage: *stage, message: format!("resolving model {}", cfg.model.source) })?;
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
    check_cancel!();
    let m = LoadedModel::load(&files, &device)?;
    send(Event::Stage { stage: *stage, message: format!("loaded {} ({} layers, hidden {})", m.path.display(), m.model.cfg.num_hidden_layers, m.model.cfg.hidden_size) })?;
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
    let k = d.answer_ids.len();

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
    let lora = LoraSet::new(lcfg, &m.model.lora_dims(), d.answer_ids.clone(), cfg.train.seed, &device)?;
    send(Event::Stage { stage: *stage, message: format!("fine-tuning {} LoRA parameters", lora.num_params()) })?;
    let val_labels = labels_of(&d.validation);
    let mut pending: Vec<Event> = Vec::new();
    let outcome = {
        let pending_ref = std::cell::RefCell::new(&mut pending);
        train::train(
            &m.model,
            &lora,
            &d.train,
            &d.answer_ids,
            pad,
            &cfg.train,
            cancel,
            &mut |r| pending_ref.borrow_mut().push(Event::from(r)),
            &mut |epoch, step| {
                let logits = train::predict_logits(&m.model, Some(&lora), &d.validation, &d.answer_ids, pad, eval_bs, cancel, &mut |_, _| {})?;
                if let Some(l) = logits {
                    let mm = calibration::metrics(&probs_of(&l), &val_labels);
                    pending_ref.borrow_mut().push(Event::Validation { epoch, step, split: "validation".into(), summary: Summary::from(&mm) });
                }
                Ok(())
            },
        )
    };
    // Events collected inside the loop are forwarded in order (the closures above cannot borrow
    // `send` while `predict` holds it).
    for e in pending.drain(..) {
        send(e)?;
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

    // 7. Files.
    *stage = Stage::Write;
    // Every method's test metrics at the same depth ({"map": {...}, "temperature": {...}}), the
    // fitted temperature inside its entry, and the training split's numbers apart under "train".
    let mut temperature = serde_json::to_value(&temp)?;
    temperature["temperature"] = serde_json::json!(fit.temperature);
    let metrics = serde_json::json!({
        "zero_shot": zs,
        "map": map,
        "temperature": temperature,
        "train": { "zero_shot": zs_train, "map": map_train },
    });
    write_json_atomic(&run_dir.join("metrics.json"), &metrics)?;
    let mut lines = Vec::new();
    for (i, it) in d.splits.test.iter().enumerate() {
        let p = Prediction {
            id: it.id.clone(),
            prompt: it.prompt.clone(),
            choices: it.choices.clone(),
            label: it.label,
            answer_token_ids: d.answer_ids[..it.num_choices()].to_vec(),
            map_logits: test_logits[i][..it.num_choices()].to_vec(),
            map_probs: map_probs[i][..it.num_choices()].to_vec(),
            temperature_probs: t_probs[i][..it.num_choices()].to_vec(),
            zero_shot_probs: Some(calibration::softmax(&zs_logits[i])[..it.num_choices()].to_vec()),
        };
        lines.extend(serde_json::to_vec(&p)?);
        lines.push(b'\n');
    }
    write_atomic(&run_dir.join("predictions.jsonl"), &lines)?;
    let _ = k;
    Ok(Outcome::Finished)
}
