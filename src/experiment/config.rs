//! The experiment configuration (DESIGN.md section 4): one TOML file, every key checked, unknown
//! keys an error.

use crate::laplace::LaplaceConfig;
use crate::lora::{LoraConfig, Target};
use crate::methods::settings::MethodsSection;
use crate::model;
use crate::train::TrainConfig;
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

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
    #[serde(default)]
    pub methods: MethodsSection,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// A known name, a .gguf file, or a Hugging Face model folder.
    pub source: String,
    /// "cpu", "cuda", "cuda:N", "metal".
    pub device: String,
    /// The frozen matrices' storage: "auto", "f32", "bf16", "f16", "q8_0", "keep" (`model::parse_frozen_dtype`).
    /// Activations, LoRA matrices and curvature are f32 whatever this says.
    pub dtype: String,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self { source: model::source::DEFAULT_MODEL.into(), device: "cpu".into(), dtype: "auto".into() }
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
            // The GLM predictive by quadrature: within TV 0.005 of E[softmax(f)] (README, "The
            // predictive"); the probits are closed-form approximations kept to compare.
            predictive: d.predictive.name().into(),
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

pub(crate) fn one_of(field: &str, value: &str, allowed: &[&str]) -> Result<()> {
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
        let names: Vec<&str> = crate::laplace::PredictiveKind::ALL.iter().map(|k| k.name()).collect();
        one_of("laplace.predictive", &self.predictive, &names)?;
        match &self.prior {
            PriorChoice::Fixed(d) if !(d.is_finite() && *d > 0.0) => bail!("laplace.prior = {d} must be a positive number, \"grid\" or a \"marglik\" variant"),
            PriorChoice::Method(m) => {
                let names = crate::laplace::PriorMethod::names();
                one_of("laplace.prior", m, &names.iter().map(|s| s.as_str()).collect::<Vec<_>>())?
            }
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
                PriorChoice::Method(m) => PriorMethod::parse(m).unwrap_or(PriorMethod::Grid),
            },
            predictive: PredictiveKind::parse(&self.predictive).unwrap_or(PredictiveKind::Quadrature),
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
        self.methods.validate()?;
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

    /// The methods the run evaluates, in order: `[methods] list`, without the Laplace methods
    /// when `laplace.enabled = false` (the switch of the earlier layout).
    pub fn method_list(&self) -> Vec<String> {
        self.methods.list.iter().filter(|m| self.laplace.enabled || !matches!(m.as_str(), "laplace" | "llla")).cloned().collect()
    }
}
