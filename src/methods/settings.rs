//! The `[methods]` section of an experiment configuration: which methods a run evaluates, in
//! which order, and each method's own settings (DESIGN.md section 5).
//!
//! ```toml
//! [methods]
//! list = ["zero_shot", "map", "temperature", "llla", "laplace", "mc_dropout"]
//! mc_dropout = { p = 0.1, samples = 10 }
//! checkpoint_ensemble = { members = 3 }
//! deep_ensemble = { members = 3 }
//! blob = { samples = 10 }
//! ```

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Every method the workbench knows, in display order.
pub const KNOWN: [&str; 9] = ["zero_shot", "map", "temperature", "llla", "laplace", "mc_dropout", "checkpoint_ensemble", "deep_ensemble", "blob"];

/// What a run evaluates when the configuration says nothing: the methods of the first
/// workbench, which cost no training beyond the MAP run.
pub fn default_list() -> Vec<String> {
    ["zero_shot", "map", "temperature", "llla", "laplace"].iter().map(|s| s.to_string()).collect()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MethodsSection {
    /// The methods, evaluated in this order on the test split and every `[[data.eval]]` set.
    pub list: Vec<String>,
    pub mc_dropout: McDropoutSettings,
    pub checkpoint_ensemble: EnsembleSettings,
    pub deep_ensemble: EnsembleSettings,
    pub blob: BlobSettings,
}

impl Default for MethodsSection {
    fn default() -> Self {
        Self {
            list: default_list(),
            mc_dropout: McDropoutSettings::default(),
            checkpoint_ensemble: EnsembleSettings::default(),
            deep_ensemble: EnsembleSettings::default(),
            blob: BlobSettings::default(),
        }
    }
}

/// MC dropout (Gal & Ghahramani 2016) as the Laplace-LoRA paper runs it: LoRA dropout `p` during
/// training and kept at test time, `samples` stochastic passes, probabilities averaged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McDropoutSettings {
    pub p: f64,
    pub samples: usize,
}

impl Default for McDropoutSettings {
    fn default() -> Self {
        Self { p: 0.1, samples: 10 }
    }
}

/// An ensemble of `members` adapters: the last epochs of the MAP run (checkpoint ensemble) or
/// adapters trained from different seeds (deep ensemble).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnsembleSettings {
    pub members: usize,
}

impl Default for EnsembleSettings {
    fn default() -> Self {
        Self { members: 3 }
    }
}

/// BLoB (Wang et al., NeurIPS 2024): a Gaussian over the LoRA A matrices trained by the ELBO.
/// The defaults are those of the BLoB code's LLM experiments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlobSettings {
    /// Samples of A averaged at prediction (probabilities averaged); 0 predicts from the mean.
    pub samples: usize,
    /// Standard deviation of the Gaussian prior N(0, prior_std^2) over every entry of A.
    pub prior_std: f64,
    /// The initial posterior standard deviations, as the BLoB code draws them (`bayes_eps`):
    /// sigma = r^2 with r ~ U(eps / sqrt 2, eps), i.e. sigma in [eps^2 / 2, eps^2] (0.00125-0.0025
    /// for 0.05); here they are then parametrised as sigma = softplus(rho).
    pub init_eps: f64,
    /// Learning rate of the KL step (plain SGD with the training schedule), `bayes_kllr`
    /// (0.0075-0.01 in the BLoB code's LLM scripts).
    pub kl_learning_rate: f64,
    /// The KL re-weighting period M = 100 N^(pi / gamma) / batch_size steps, `bayes_gamma`.
    pub gamma: f64,
}

impl Default for BlobSettings {
    fn default() -> Self {
        Self { samples: 10, prior_std: 0.2, init_eps: 0.05, kl_learning_rate: 0.01, gamma: 8.0 }
    }
}

impl MethodsSection {
    pub fn validate(&self) -> Result<()> {
        if self.list.is_empty() {
            bail!("methods.list is empty: name at least one of {}", KNOWN.join(", "));
        }
        for (i, m) in self.list.iter().enumerate() {
            if !KNOWN.contains(&m.as_str()) {
                bail!("methods.list: {m:?} is not a method; the methods are {}", KNOWN.join(", "));
            }
            if self.list[..i].contains(m) {
                bail!("methods.list names {m:?} twice");
            }
        }
        let mc = &self.mc_dropout;
        if !(0.0..1.0).contains(&mc.p) || mc.p.is_nan() {
            bail!("methods.mc_dropout.p = {} must be in [0, 1)", mc.p);
        }
        if mc.samples == 0 {
            bail!("methods.mc_dropout.samples must be at least 1");
        }
        for (name, e) in [("checkpoint_ensemble", &self.checkpoint_ensemble), ("deep_ensemble", &self.deep_ensemble)] {
            if e.members == 0 {
                bail!("methods.{name}.members must be at least 1");
            }
        }
        let b = &self.blob;
        for (name, v) in [("prior_std", b.prior_std), ("init_eps", b.init_eps), ("gamma", b.gamma)] {
            if !(v.is_finite() && v > 0.0) {
                bail!("methods.blob.{name} = {v} must be a positive number");
            }
        }
        if !(b.kl_learning_rate.is_finite() && b.kl_learning_rate >= 0.0) {
            bail!("methods.blob.kl_learning_rate = {} must be a number >= 0", b.kl_learning_rate);
        }
        Ok(())
    }

    pub fn has(&self, m: &str) -> bool {
        self.list.iter().any(|x| x == m)
    }
}
