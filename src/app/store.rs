//! The run store: everything the workbench draws, filled from the worker's events while a run
//! goes on, or from a run directory on disk. The UI reads it every frame; nothing here blocks.

use super::lazy::Lazy;
use super::uncertainty::{self, Split};
use laplace_lora::calibration::{self, Metrics};
use laplace_lora::experiment::{Event, ExperimentConfig, Stage, Summary};
use laplace_lora::laplace::predictive::Predictor;
pub use laplace_lora::train::StepReport;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// The name of the test split in the evaluation-set selector.
pub const TEST_SET: &str = "test";

/// Monte Carlo draws per item for the uncertainty split of a Gaussian over the logits.
pub const SPLIT_DRAWS: usize = 2000;

/// A display name for a method key.
pub fn method_label(m: &str) -> &str {
    match m {
        "zero_shot" => "zero-shot",
        "map" => "MAP",
        "temperature" => "temperature",
        "llla" => "LLLA",
        "laplace" => "Laplace-LoRA",
        "mc_dropout" => "MC dropout",
        "checkpoint_ensemble" => "checkpoint ens.",
        "deep_ensemble" => "deep ensemble",
        "blob" => "BLoB",
        PRIOR_METHOD => "Laplace @ slider",
        other => other,
    }
}

/// The key of the metrics recomputed at the prior slider's delta.
pub const PRIOR_METHOD: &str = "laplace_at_delta";

/// Recomputes every test predictive at a new prior precision delta (the Laplace core implements
/// it from its spectral cache; must take well under a frame).
pub trait PriorRecompute: Send {
    /// The test items' class probabilities at prior precision `delta`, in predictions order.
    fn at(&self, delta: f64) -> Vec<Vec<f64>>;
    /// The logit mean and covariance (K x K, row-major) of test item `i` at `delta`, where the
    /// implementation has them (the spectral cache does).
    fn logits_at(&self, _i: usize, _delta: f64) -> Option<(Vec<f64>, Vec<f64>)> {
        None
    }
}

/// The core's prior recompute: the Laplace stage's spectral cache
/// (`laplace/spectral_cache.safetensors`) and the run's own predictive (`laplace/laplace.json`),
/// every test item at any scalar delta in a few milliseconds per 1,000 items.
pub struct CacheRecompute(pub laplace_lora::laplace::cache::LoadedCache, pub Predictor);

impl PriorRecompute for CacheRecompute {
    fn at(&self, delta: f64) -> Vec<Vec<f64>> {
        laplace_lora::laplace::fit::recompute(&self.0.entries, &self.0.mus, delta, &self.0.grid, &self.1)
    }
    fn logits_at(&self, i: usize, delta: f64) -> Option<(Vec<f64>, Vec<f64>)> {
        let e = self.0.entries.get(i)?;
        Some((self.0.mus.get(i)?.clone(), e.sigma_f(delta, &self.0.grid)))
    }
}

/// The spectral cache of a run directory, if it has one (`None`: no cache; `Err`: unreadable).
pub fn load_recompute(dir: &Path) -> Option<Result<Box<dyn PriorRecompute>, String>> {
    cache_recompute(&dir.join("laplace").join("spectral_cache.safetensors"), dir)
}

/// A spectral cache file of the run at `run_dir` (the test split's, or an evaluation set's in
/// `eval/NAME/`) with the run's predictive; `None` when the file is not there.
fn cache_recompute(p: &Path, run_dir: &Path) -> Option<Result<Box<dyn PriorRecompute>, String>> {
    if !p.is_file() {
        return None;
    }
    Some(match laplace_lora::laplace::cache::load_cache(p) {
        Ok(c) if c.entries.is_empty() => Err(format!("{}: no items in the cache", p.display())),
        Ok(c) => Ok(Box::new(CacheRecompute(c, laplace_lora::laplace::cache::run_predictor(run_dir))) as Box<dyn PriorRecompute>),
        Err(e) => Err(format!("{e:#}")),
    })
}

#[derive(Clone, Debug, PartialEq)]
pub enum RunStatus {
    Idle,
    Running,
    Finished,
    Cancelled(String),
    Failed(String),
}

#[derive(Clone, Debug)]
pub struct ValPoint {
    pub epoch: usize,
    pub step: usize,
    pub summary: Summary,
}

/// One line of `predictions.jsonl` (either layout: `experiment::parse_prediction`).
pub type PredRow = laplace_lora::experiment::Prediction;

/// The MAP probabilities of a line (every run has them; empty if missing).
pub fn map_probs(p: &PredRow) -> &[f64] {
    p.probs.get("map").map(|v| v.as_slice()).unwrap_or(&[])
}

#[derive(Clone, Debug, PartialEq)]
pub struct PriorPoint {
    pub delta: f64,
    pub log_marglik: f64,
    pub val_nll: f64,
    pub val_ece: f64,
}

/// Reads `prior_curve.csv` (header `delta,log_marglik,val_nll,val_ece`, any column order).
pub fn parse_prior_curve(text: &str) -> Result<Vec<PriorPoint>, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> = lines.next().ok_or("empty file")?.split(',').map(|s| s.trim().to_ascii_lowercase()).collect();
    let col = |n: &str| header.iter().position(|h| h == n).ok_or(format!("no column {n}"));
    let (d, l, n, e) = (col("delta")?, col("log_marglik")?, col("val_nll")?, col("val_ece")?);
    let mut out = Vec::new();
    for (i, line) in lines.enumerate() {
        let f: Vec<&str> = line.split(',').collect();
        let num = |c: usize| -> Result<f64, String> { f.get(c).and_then(|s| s.trim().parse::<f64>().ok()).ok_or(format!("line {}: bad number", i + 2)) };
        let p = PriorPoint { delta: num(d)?, log_marglik: num(l)?, val_nll: num(n)?, val_ece: num(e)? };
        if p.delta > 0.0 {
            out.push(p);
        }
    }
    out.sort_by(|a, b| a.delta.total_cmp(&b.delta));
    Ok(out)
}

/// Linear interpolation of the curve at `delta` on log10(delta).
pub fn interp_prior(curve: &[PriorPoint], delta: f64) -> Option<PriorPoint> {
    let first = curve.first()?;
    let last = curve.last()?;
    if delta <= first.delta {
        return Some(PriorPoint { delta, ..first.clone() });
    }
    if delta >= last.delta {
        return Some(PriorPoint { delta, ..last.clone() });
    }
    let x = delta.log10();
    for w in curve.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if delta >= a.delta && delta <= b.delta {
            let (xa, xb) = (a.delta.log10(), b.delta.log10());
            let t = if xb > xa { (x - xa) / (xb - xa) } else { 0.0 };
            let l = |u: f64, v: f64| u + t * (v - u);
            return Some(PriorPoint {
                delta,
                log_marglik: l(a.log_marglik, b.log_marglik),
                val_nll: l(a.val_nll, b.val_nll),
                val_ece: l(a.val_ece, b.val_ece),
            });
        }
    }
    None
}

/// Everything one run shows.
pub struct RunStore {
    pub dir: Option<PathBuf>,
    pub config: Option<ExperimentConfig>,
    pub status: RunStatus,
    pub stage: Option<Stage>,
    pub stage_message: String,
    pub stage_started: Option<Instant>,
    pub progress: Option<(Stage, u64, u64)>,
    pub started: Option<Instant>,
    pub steps: Vec<StepReport>,
    pub total_steps: usize,
    pub validation: Vec<ValPoint>,
    pub metrics: BTreeMap<String, Metrics>,
    /// The run's methods in its order (metrics.json's `methods`, or as their metrics arrived).
    pub method_order: Vec<String>,
    /// Each method's metrics.json entry beyond the metrics: its cost and own numbers.
    pub method_details: BTreeMap<String, serde_json::Value>,
    /// Metrics per evaluation set beyond the test split (eval/NAME/metrics.json, or as they arrive).
    pub eval_metrics: BTreeMap<String, BTreeMap<String, Metrics>>,
    pub temperature: Option<f64>,
    pub predictions: Vec<PredRow>,
    pub prior_curve: Option<Vec<PriorPoint>>,
    pub laplace_info: Option<serde_json::Value>,
    pub chosen_delta: Option<f64>,
    pub log: Vec<String>,
    pub warnings: Vec<String>,
    pub recompute: Option<Box<dyn PriorRecompute>>,
    /// The prior slider's delta and what it gives (recomputed only when it moves).
    pub prior_delta: Option<f64>,
    pub prior_probs: Option<Vec<Vec<f64>>>,
    pub prior_metrics: Option<Metrics>,
    /// Bumped on every change, so views can cache derived data.
    pub revision: u64,
    /// Predictions of the evaluation sets beyond the test split (eval/NAME/predictions.jsonl),
    /// read on a short-lived thread when a tab first shows the set.
    pub eval_preds: BTreeMap<String, Lazy<Arc<Vec<PredRow>>>>,
    /// The uncertainty split per (set, method), one entry per item, computed when first shown.
    pub uncertainty: BTreeMap<(String, String), Lazy<Vec<Option<Split>>>>,
    /// The spectral cache of each evaluation set beyond the test split
    /// (eval/NAME/spectral_cache.safetensors), read when the Prior tab first shows the set.
    pub eval_recompute: BTreeMap<String, Lazy<Box<dyn PriorRecompute>>>,
    /// The prior slider on an evaluation set: (set, delta, its probabilities and metrics there).
    pub set_prior: Option<(String, f64, Vec<Vec<f64>>, Metrics)>,
}

impl Default for RunStore {
    fn default() -> Self {
        Self {
            dir: None,
            config: None,
            status: RunStatus::Idle,
            stage: None,
            stage_message: String::new(),
            stage_started: None,
            progress: None,
            started: None,
            steps: Vec::new(),
            total_steps: 0,
            validation: Vec::new(),
            metrics: BTreeMap::new(),
            method_order: Vec::new(),
            method_details: BTreeMap::new(),
            eval_metrics: BTreeMap::new(),
            temperature: None,
            predictions: Vec::new(),
            prior_curve: None,
            laplace_info: None,
            chosen_delta: None,
            log: Vec::new(),
            warnings: Vec::new(),
            recompute: None,
            prior_delta: None,
            prior_probs: None,
            prior_metrics: None,
            revision: 0,
            eval_preds: BTreeMap::new(),
            uncertainty: BTreeMap::new(),
            eval_recompute: BTreeMap::new(),
            set_prior: None,
        }
    }
}

impl RunStore {
    pub fn for_new_run(cfg: ExperimentConfig, dir: PathBuf) -> Self {
        Self { dir: Some(dir), config: Some(cfg), status: RunStatus::Running, started: Some(Instant::now()), ..Default::default() }
    }

    pub fn is_running(&self) -> bool {
        self.status == RunStatus::Running
    }

    /// The methods with metrics, in the run's order (the slider's entry last).
    pub fn methods(&self) -> Vec<String> {
        let mut v: Vec<String> = self.method_order.iter().filter(|m| self.metrics.contains_key(*m)).cloned().collect();
        for k in self.metrics.keys() {
            if !v.contains(k) && k != PRIOR_METHOD {
                v.push(k.clone());
            }
        }
        v
    }

    /// Metrics of a method, including the slider's recomputed ones.
    pub fn metrics_of(&self, m: &str) -> Option<&Metrics> {
        if m == PRIOR_METHOD {
            self.prior_metrics.as_ref()
        } else {
            self.metrics.get(m)
        }
    }

    pub fn apply(&mut self, e: &Event) {
        self.revision += 1;
        match e {
            Event::Started { run_dir, .. } => {
                if self.dir.is_none() {
                    self.dir = Some(run_dir.clone());
                }
                self.status = RunStatus::Running;
            }
            Event::Stage { stage, message } => {
                if self.stage != Some(*stage) {
                    self.stage_started = Some(Instant::now());
                    self.progress = None;
                }
                self.stage = Some(*stage);
                self.stage_message = message.clone();
                self.log.push(format!("[{}] {message}", stage_name(*stage)));
            }
            Event::Progress { stage, done, total } => {
                if self.stage != Some(*stage) {
                    self.stage = Some(*stage);
                    self.stage_started = Some(Instant::now());
                }
                self.progress = Some((*stage, *done, *total));
            }
            Event::TrainStep { step, total_steps, epoch, loss, batch_accuracy, learning_rate, grad_norm, seconds } => {
                if self.stage != Some(Stage::Train) {
                    self.stage = Some(Stage::Train);
                    self.stage_started = Some(Instant::now());
                }
                self.total_steps = *total_steps;
                self.steps.push(StepReport {
                    step: *step,
                    total_steps: *total_steps,
                    epoch: *epoch,
                    loss: *loss,
                    batch_accuracy: *batch_accuracy,
                    learning_rate: *learning_rate,
                    grad_norm: *grad_norm,
                    seconds: *seconds,
                });
                self.progress = Some((Stage::Train, *step as u64, *total_steps as u64));
            }
            Event::Validation { epoch, step, summary, .. } => {
                self.validation.push(ValPoint { epoch: *epoch, step: *step, summary: summary.clone() });
                self.log.push(format!("epoch {epoch}: validation acc {:.3} ECE {:.3} NLL {:.3}", summary.accuracy, summary.ece, summary.nll));
            }
            Event::Metrics { name, metrics, set } => {
                let on = match set {
                    Some(s) => {
                        self.eval_metrics.entry(s.clone()).or_default().insert(name.clone(), metrics.clone());
                        format!(" on {s}")
                    }
                    None => {
                        self.metrics.insert(name.clone(), metrics.clone());
                        if !self.method_order.contains(name) {
                            self.method_order.push(name.clone());
                        }
                        String::new()
                    }
                };
                self.log.push(format!("{}{on}: acc {:.3} ECE {:.3} NLL {:.3}", method_label(name), metrics.accuracy, metrics.ece, metrics.nll));
            }
            Event::Artifact { path } => self.log.push(format!("wrote {path}")),
            Event::Finished { seconds } => {
                self.status = RunStatus::Finished;
                self.log.push(format!("finished in {seconds:.1} s"));
            }
            Event::Cancelled { message, .. } => {
                self.status = RunStatus::Cancelled(message.clone());
                self.log.push(format!("cancelled: {message}"));
            }
            Event::Failed { stage, error } => {
                self.status = RunStatus::Failed(format!("{} failed: {error}", stage_name(*stage)));
                self.log.push(format!("failed during {}: {error}", stage_name(*stage)));
            }
        }
    }

    /// Estimated seconds left in the current stage: from the step times while training, else from
    /// the rate of progress since the stage began.
    pub fn time_left(&self) -> Option<f64> {
        let (stage, done, total) = self.progress?;
        if total == 0 || done >= total {
            return None;
        }
        if stage == Stage::Train && !self.steps.is_empty() {
            let recent: Vec<f64> = self.steps.iter().rev().take(10).map(|s| s.seconds).collect();
            let per = recent.iter().sum::<f64>() / recent.len() as f64;
            return Some(per * (total - done) as f64);
        }
        let el = self.stage_started?.elapsed().as_secs_f64();
        if done == 0 || el < 0.5 {
            return None;
        }
        Some(el / done as f64 * (total - done) as f64)
    }

    /// Reads the files that the worker writes at the end (metrics.json, predictions.jsonl, the
    /// Laplace files) into the store; a missing file is skipped, a broken one is a warning.
    pub fn load_result_files(&mut self, dir: &Path) {
        self.revision += 1;
        // What was derived from the earlier files is stale.
        self.eval_preds.clear();
        self.uncertainty.clear();
        if dir.join("metrics.json").is_file() {
            match laplace_lora::experiment::MetricsFile::read(&dir.join("metrics.json")) {
                Ok(mf) => {
                    self.method_order = mf.methods.iter().map(|(n, _)| n.clone()).collect();
                    for (m, x) in &mf.methods {
                        match serde_json::from_value::<Metrics>(x.clone()) {
                            Ok(mm) => {
                                self.metrics.insert(m.clone(), mm);
                            }
                            Err(e) => self.warnings.push(format!("metrics.json: {m}: {e}")),
                        }
                        self.method_details.insert(m.clone(), x.clone());
                    }
                    self.temperature = mf.methods.iter().find(|(n, _)| n == "temperature").and_then(|(_, t)| t.get("temperature")).and_then(|t| t.as_f64());
                }
                Err(e) => self.warnings.push(format!("{e:#}")),
            }
        }
        if let Ok(rd) = std::fs::read_dir(dir.join("eval")) {
            for e in rd.filter_map(|e| e.ok()) {
                let Ok(mf) = laplace_lora::experiment::MetricsFile::read(&e.path().join("metrics.json")) else { continue };
                let set = self.eval_metrics.entry(e.file_name().to_string_lossy().into_owned()).or_default();
                for (m, x) in mf.methods {
                    if let Ok(mm) = serde_json::from_value::<Metrics>(x) {
                        set.insert(m, mm);
                    }
                }
            }
        }
        let preds = dir.join("predictions.jsonl");
        if preds.is_file() {
            match laplace_lora::experiment::read_predictions(&preds) {
                Ok(rows) => self.predictions = rows,
                Err(e) => self.warnings.push(format!("{e:#}")),
            }
        }
        if let Ok(text) = std::fs::read_to_string(dir.join("prior_curve.csv")) {
            match parse_prior_curve(&text) {
                Ok(c) if !c.is_empty() => self.prior_curve = Some(c),
                Ok(_) => {}
                Err(e) => self.warnings.push(format!("prior_curve.csv: {e}")),
            }
        }
        if let Ok(text) = std::fs::read_to_string(dir.join("laplace").join("laplace.json")) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                self.chosen_delta = ["delta", "prior_precision", "chosen_delta"].iter().find_map(|k| v.get(*k).and_then(|d| d.as_f64()));
                self.laplace_info = Some(v);
            }
        }
        if self.chosen_delta.is_none() {
            // The curve's best marginal likelihood.
            self.chosen_delta = self.prior_curve.as_ref().and_then(|c| c.iter().max_by(|a, b| a.log_marglik.total_cmp(&b.log_marglik)).map(|p| p.delta));
        }
        if self.prior_delta.is_none() {
            self.prior_delta = self.chosen_delta;
        }
    }

    /// Sets the prior slider's delta and recomputes the test predictive if a recompute is present.
    pub fn set_prior_delta(&mut self, delta: f64) {
        self.prior_delta = Some(delta);
        self.revision += 1;
        if let Some(r) = &self.recompute {
            match probs_at(r.as_ref(), delta, &self.predictions) {
                Ok((probs, m)) => {
                    self.prior_metrics = Some(m);
                    self.prior_probs = Some(probs);
                }
                Err(e) if self.prior_probs.is_none() => self.warnings.push(e),
                Err(_) => {}
            }
        }
    }

    /// The logit mean and covariance of test item `i` (its own choices only, covariance as rows):
    /// at the prior slider's delta when the cache can give them, else the run's (chosen delta).
    pub fn item_logits(&self, i: usize) -> Option<(Vec<f64>, Vec<Vec<f64>>, bool)> {
        let p = self.predictions.get(i)?;
        let nc = p.choices.len();
        if let (Some(r), Some(d)) = (&self.recompute, self.prior_delta) {
            if let Some((mu, cov)) = r.logits_at(i, d) {
                let k = mu.len();
                if cov.len() == k * k && nc <= k {
                    let rows = (0..nc).map(|a| cov[a * k..a * k + nc].to_vec()).collect();
                    return Some((mu[..nc].to_vec(), rows, true));
                }
            }
        }
        Some((p.logit_mean.get("laplace")?.clone(), p.logit_cov.get("laplace")?.clone(), false))
    }
}

/// A set's probabilities at `delta` from its spectral cache, each item's truncated to its own
/// choices (the cache holds every answer token of the task; the others are masked to probability
/// 0), and their metrics.
fn probs_at(r: &dyn PriorRecompute, delta: f64, preds: &[PredRow]) -> Result<(Vec<Vec<f64>>, Metrics), String> {
    let mut probs = r.at(delta);
    let labels: Vec<usize> = preds.iter().map(|p| p.label).collect();
    if probs.len() != labels.len() || labels.is_empty() {
        return Err(format!("the prior recompute gives {} items, predictions.jsonl has {}", probs.len(), labels.len()));
    }
    for (q, p) in probs.iter_mut().zip(preds) {
        let nc = p.choices.len();
        if nc > 0 && q.len() > nc {
            q.truncate(nc);
            let z: f64 = q.iter().sum();
            if z > 0.0 {
                q.iter_mut().for_each(|x| *x /= z);
            }
        }
    }
    let m = calibration::metrics(&probs, &labels);
    Ok((probs, m))
}

/// The methods whose items carry what the uncertainty split needs: probability samples
/// (`samples`) or a Gaussian over the logits (`logit_mean` and `logit_cov`).
pub fn split_methods(preds: &[PredRow]) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for p in preds.iter().take(50) {
        for m in p.samples.keys().chain(p.logit_cov.keys().filter(|m| p.logit_mean.contains_key(*m))) {
            if !v.contains(m) {
                v.push(m.clone());
            }
        }
    }
    v
}

/// The uncertainty split of one item for a method: from its samples, else by seeded Monte Carlo
/// on its Gaussian over the logits (seed: the item's index, so a run always shows the same).
pub fn item_split(p: &PredRow, method: &str, i: usize) -> Option<Split> {
    if let Some(s) = p.samples.get(method) {
        return uncertainty::split_samples(s);
    }
    let (mu, cov) = (p.logit_mean.get(method)?, p.logit_cov.get(method)?);
    uncertainty::split_gaussian(mu, cov, SPLIT_DRAWS, i as u64)
}

impl RunStore {
    /// The evaluation sets beyond the test split (those with eval/NAME/metrics.json).
    pub fn eval_set_names(&self) -> Vec<String> {
        self.eval_metrics.keys().cloned().collect()
    }

    /// Starts reading a set's predictions if that has not begun (the test set is always there).
    pub fn request_set(&mut self, set: &str) {
        if set == TEST_SET || self.eval_preds.contains_key(set) {
            return;
        }
        let Some(dir) = self.dir.clone() else { return };
        let path = dir.join("eval").join(set).join("predictions.jsonl");
        self.eval_preds.insert(
            set.to_string(),
            Lazy::spawn(move || {
                if !path.is_file() {
                    return Err(format!("no {}", path.display()));
                }
                laplace_lora::experiment::read_predictions(&path).map(Arc::new).map_err(|e| format!("{e:#}"))
            }),
        );
    }

    /// A set's predictions: None while they are read (or not requested), Err when unreadable.
    pub fn set_predictions(&self, set: &str) -> Option<Result<&[PredRow], &str>> {
        if set == TEST_SET {
            return Some(Ok(self.predictions.as_slice()));
        }
        self.eval_preds.get(set)?.get().map(|r| r.map(|v| v.as_slice()))
    }

    /// Starts the uncertainty split of a set and method (once; the set must be read already).
    pub fn request_split(&mut self, set: &str, method: &str) {
        let key = (set.to_string(), method.to_string());
        if self.uncertainty.contains_key(&key) {
            return;
        }
        // Only the method's own fields travel to the thread.
        let items: Vec<PredRow> = match self.set_predictions(set) {
            Some(Ok(p)) => p
                .iter()
                .map(|p| PredRow {
                    samples: p.samples.get_key_value(method).map(|(k, v)| (k.clone(), v.clone())).into_iter().collect(),
                    logit_mean: p.logit_mean.get_key_value(method).map(|(k, v)| (k.clone(), v.clone())).into_iter().collect(),
                    logit_cov: p.logit_cov.get_key_value(method).map(|(k, v)| (k.clone(), v.clone())).into_iter().collect(),
                    ..Default::default()
                })
                .collect(),
            _ => return,
        };
        let m = method.to_string();
        self.uncertainty.insert(key, Lazy::spawn(move || Ok(items.iter().enumerate().map(|(i, p)| item_split(p, &m, i)).collect())));
    }

    /// The split per item of a set and method: None while it is computed (or not requested).
    pub fn split_of(&self, set: &str, method: &str) -> Option<Result<&[Option<Split>], &str>> {
        self.uncertainty.get(&(set.to_string(), method.to_string()))?.get().map(|r| r.map(|v| v.as_slice()))
    }

    /// The prior slider's metrics on `set` at the slider's delta: the test split's from the run's
    /// cache, another set's from its own (read, with its predictions, on first use; None
    /// meanwhile). Recomputed only when the set or the delta changed.
    pub fn prior_metrics_on(&mut self, set: &str) -> Option<Result<Metrics, String>> {
        if set == TEST_SET {
            return self.prior_metrics.clone().map(Ok);
        }
        let delta = self.prior_delta?;
        if let Some((s, d, _, m)) = &self.set_prior {
            if s == set && *d == delta {
                return Some(Ok(m.clone()));
            }
        }
        self.request_set(set);
        if !self.eval_recompute.contains_key(set) {
            let dir = self.dir.clone()?;
            let p = dir.join("eval").join(set).join("spectral_cache.safetensors");
            self.eval_recompute.insert(
                set.to_string(),
                Lazy::spawn(move || {
                    cache_recompute(&p, &dir).unwrap_or_else(|| {
                        Err(format!(
                            "no {}: the set was evaluated before the workbench kept its spectral cache; evaluate it again (laplace-lora eval RUN --data SET) to move the slider on it",
                            p.display()
                        ))
                    })
                }),
            );
        }
        let r = match self.eval_recompute.get(set)?.get()? {
            Ok(r) => r,
            Err(e) => return Some(Err(e.to_string())),
        };
        let preds = match self.set_predictions(set)? {
            Ok(p) => p,
            Err(e) => return Some(Err(e.to_string())),
        };
        match probs_at(r.as_ref(), delta, preds) {
            Ok((probs, m)) => {
                self.set_prior = Some((set.to_string(), delta, probs, m.clone()));
                Some(Ok(m))
            }
            Err(e) => Some(Err(e)),
        }
    }

    /// Takes the background results that arrived; true while any is still coming.
    pub fn poll_lazy(&mut self) -> bool {
        let mut loading = false;
        let mut arrived = false;
        for l in self.eval_preds.values_mut() {
            arrived |= l.poll();
            loading |= l.is_loading();
        }
        for l in self.uncertainty.values_mut() {
            arrived |= l.poll();
            loading |= l.is_loading();
        }
        for l in self.eval_recompute.values_mut() {
            arrived |= l.poll();
            loading |= l.is_loading();
        }
        if arrived {
            self.revision += 1;
        }
        loading
    }
}

pub fn stage_name(s: Stage) -> &'static str {
    match s {
        Stage::LoadModel => "loading model",
        Stage::LoadData => "loading data",
        Stage::ZeroShot => "zero-shot evaluation",
        Stage::Train => "fine-tuning",
        Stage::Evaluate => "evaluating MAP",
        Stage::Calibrate => "temperature scaling",
        Stage::Write => "writing files",
        Stage::Laplace => "fitting Laplace",
    }
}

/// Opens a run directory: config.toml, events.jsonl (replayed), then the result files. Any file
/// may be missing or partial (a cancelled or crashed run opens too).
pub fn load_run_dir(dir: &Path) -> RunStore {
    let mut s = RunStore { dir: Some(dir.to_path_buf()), ..Default::default() };
    match std::fs::read_to_string(dir.join("config.toml")) {
        Ok(t) => match ExperimentConfig::from_toml_str(&t) {
            Ok(c) => s.config = Some(c),
            Err(e) => s.warnings.push(format!("config.toml: {e:#}")),
        },
        Err(_) => s.warnings.push("no config.toml".into()),
    }
    let mut ended = false;
    if let Ok(text) = std::fs::read_to_string(dir.join("events.jsonl")) {
        for (i, l) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            match serde_json::from_str::<Event>(l) {
                Ok(e) => {
                    ended |= matches!(e, Event::Finished { .. } | Event::Cancelled { .. } | Event::Failed { .. });
                    s.apply(&e);
                }
                Err(e) => s.warnings.push(format!("events.jsonl line {}: {e}", i + 1)),
            }
        }
    } else {
        s.warnings.push("no events.jsonl".into());
    }
    if !ended {
        s.status = RunStatus::Cancelled("the run did not finish (no final event in events.jsonl)".into());
    }
    s.progress = None;
    s.load_result_files(dir);
    match load_recompute(dir) {
        Some(Ok(r)) => {
            s.recompute = Some(r);
            if let Some(d) = s.prior_delta.or(s.chosen_delta) {
                s.set_prior_delta(d);
            }
        }
        Some(Err(e)) => s.warnings.push(format!("prior slider unavailable: {e}")),
        None => {}
    }
    s
}

pub use super::runs_index::RunEntry;

/// Top-label confidence and correctness of a probability row.
pub fn conf_correct(p: &[f64], label: usize) -> (usize, f64, bool) {
    let (i, c) = calibration::top_label(p);
    (i, c, i == label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prior_curve_parses_and_interpolates() {
        let c = parse_prior_curve("delta,log_marglik,val_nll,val_ece\n0.1,-10,1.0,0.2\n10,-5,0.5,0.1\n").unwrap();
        assert_eq!(c.len(), 2);
        let p = interp_prior(&c, 1.0).unwrap();
        assert!((p.val_nll - 0.75).abs() < 1e-12);
    }
}
