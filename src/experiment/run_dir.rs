//! The run directory (DESIGN.md section 4): how a new one is made ready, and the two files every
//! method writes into, `predictions.jsonl` and `metrics.json`. Every file is written atomically.

use super::config::ExperimentConfig;
use crate::runio::{write_atomic, write_json_atomic};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
            for d in ["adapter", "laplace", "methods", "eval"] {
                let _ = std::fs::remove_dir_all(dir.join(d));
            }
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

/// One line of `predictions.jsonl`: an evaluation item and what every method of the run
/// predicts for it. (Layout 2; [`parse_prediction`] reads the earlier one-field-per-method layout.)
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub id: String,
    pub prompt: String,
    pub choices: Vec<String>,
    pub label: usize,
    pub answer_token_ids: Vec<u32>,
    /// The MAP model's answer logits (the item's choices only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_logits: Option<Vec<f64>>,
    /// Every method's class probabilities, by method name.
    #[serde(default)]
    pub probs: BTreeMap<String, Vec<f64>>,
    /// The Gaussian over the logits of the Laplace methods: mean (K) ...
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub logit_mean: BTreeMap<String, Vec<f64>>,
    /// ... and covariance (K x K): of the centred logits f - mean(f) over the item's choices
    /// (C Sigma_f C) where the run's predictive is shift-invariant (quadrature, probit, mc: all
    /// it reads), of the raw logits otherwise; `laplace/laplace.json`'s "logit_cov" says which.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub logit_cov: BTreeMap<String, Vec<Vec<f64>>>,
    /// The probabilities of each member or sample of the ensemble and sampling methods (S x K),
    /// whose mean is `probs`: what the entropy decomposition needs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub samples: BTreeMap<String, Vec<Vec<f64>>>,
}

/// The first layout (one field per method), read for runs written before methods became data.
#[derive(Deserialize)]
struct LegacyPrediction {
    id: String,
    prompt: String,
    choices: Vec<String>,
    label: usize,
    answer_token_ids: Vec<u32>,
    map_logits: Vec<f64>,
    map_probs: Vec<f64>,
    temperature_probs: Vec<f64>,
    zero_shot_probs: Option<Vec<f64>>,
    #[serde(default)]
    laplace_probs: Option<Vec<f64>>,
    #[serde(default)]
    llla_probs: Option<Vec<f64>>,
    #[serde(default)]
    logit_mean: Option<Vec<f64>>,
    #[serde(default)]
    logit_cov: Option<Vec<Vec<f64>>>,
    #[serde(default)]
    llla_logit_cov: Option<Vec<Vec<f64>>>,
}

impl From<LegacyPrediction> for Prediction {
    fn from(l: LegacyPrediction) -> Self {
        let mut probs = BTreeMap::new();
        probs.insert("map".to_string(), l.map_probs);
        probs.insert("temperature".to_string(), l.temperature_probs);
        for (k, v) in [("zero_shot", l.zero_shot_probs), ("laplace", l.laplace_probs), ("llla", l.llla_probs)] {
            if let Some(v) = v {
                probs.insert(k.to_string(), v);
            }
        }
        let mut logit_mean = BTreeMap::new();
        let mut logit_cov = BTreeMap::new();
        if let (Some(m), Some(c)) = (&l.logit_mean, l.logit_cov) {
            logit_mean.insert("laplace".to_string(), m.clone());
            logit_cov.insert("laplace".to_string(), c);
        }
        if let (Some(m), Some(c)) = (&l.logit_mean, l.llla_logit_cov) {
            // LLLA linearises at the same MAP logits.
            logit_mean.insert("llla".to_string(), m.clone());
            logit_cov.insert("llla".to_string(), c);
        }
        Prediction {
            id: l.id,
            prompt: l.prompt,
            choices: l.choices,
            label: l.label,
            answer_token_ids: l.answer_token_ids,
            map_logits: Some(l.map_logits),
            probs,
            logit_mean,
            logit_cov,
            samples: BTreeMap::new(),
        }
    }
}

/// One line of `predictions.jsonl`, in either layout.
pub fn parse_prediction(line: &str) -> Result<Prediction> {
    let v: serde_json::Value = serde_json::from_str(line)?;
    if v.get("probs").is_some() {
        Ok(serde_json::from_value(v)?)
    } else if v.get("map_probs").is_some() {
        Ok(serde_json::from_value::<LegacyPrediction>(v)?.into())
    } else {
        bail!("neither \"probs\" (this layout) nor \"map_probs\" (the first layout): not a predictions.jsonl line")
    }
}

/// Reads `predictions.jsonl` (either layout); errors name the file and line.
pub fn read_predictions(path: &Path) -> Result<Vec<Prediction>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| parse_prediction(l).with_context(|| format!("{}:{}", path.display(), i + 1)))
        .collect()
}

pub fn write_predictions(path: &Path, preds: &[Prediction]) -> Result<()> {
    let mut lines = Vec::new();
    for p in preds {
        lines.extend(serde_json::to_vec(p)?);
        lines.push(b'\n');
    }
    write_atomic(path, &lines)
}

/// `metrics.json`: one entry per method (accuracy, ece, mce, nll, brier, n, bins, then the
/// method's own numbers and its `cost`), `methods` (their order), `layout`, and the training
/// split's zero-shot and MAP numbers under `train`.
#[derive(Clone, Debug, Default)]
pub struct MetricsFile {
    pub methods: Vec<(String, serde_json::Value)>,
    pub train: serde_json::Map<String, serde_json::Value>,
}

/// The layout of `predictions.jsonl` and `metrics.json` this program writes.
pub const LAYOUT: u32 = 2;

impl MetricsFile {
    /// Adds or replaces a method's entry (keeping its place).
    pub fn set(&mut self, name: &str, entry: serde_json::Value) {
        match self.methods.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = entry,
            None => self.methods.push((name.to_string(), entry)),
        }
    }

    pub fn remove(&mut self, name: &str) {
        self.methods.retain(|(n, _)| n != name);
    }

    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("layout".into(), LAYOUT.into());
        m.insert("methods".into(), self.methods.iter().map(|(n, _)| serde_json::Value::from(n.clone())).collect());
        for (n, v) in &self.methods {
            m.insert(n.clone(), v.clone());
        }
        if !self.train.is_empty() {
            m.insert("train".into(), serde_json::Value::Object(self.train.clone()));
        }
        serde_json::Value::Object(m)
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        write_json_atomic(path, &self.to_json())
    }

    /// Reads `metrics.json` in either layout (the first had no `methods` list: its method
    /// entries are the objects other than `train`, in the first workbench's order).
    pub fn read(path: &Path) -> Result<Self> {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)
            .with_context(|| format!("parsing {}", path.display()))?;
        let obj = v.as_object().with_context(|| format!("{}: not a JSON object", path.display()))?;
        let names: Vec<String> = match obj.get("methods").and_then(|m| m.as_array()) {
            Some(list) => list.iter().filter_map(|x| x.as_str().map(String::from)).collect(),
            None => ["zero_shot", "map", "temperature", "llla", "laplace"].iter().filter(|k| obj.contains_key(**k)).map(|k| k.to_string()).collect(),
        };
        let methods = names.into_iter().filter_map(|n| obj.get(&n).map(|e| (n, e.clone()))).collect();
        let train = obj.get("train").and_then(|t| t.as_object()).cloned().unwrap_or_default();
        Ok(Self { methods, train })
    }
}
